//! The `caBundle` of the MutatingWebhookConfiguration: the mesh trust anchors as base64 PEM,
//! and the JSON Patch that puts them on every webhook of the configuration. Pure;
//! `source::kube::CaBundlePatcher` applies it under `serve --kubernetes`. In file mode nothing applies it: an operator who runs the
//! webhook outside `serve --kubernetes` sets `caBundle` from `ca.crt` themselves.

use base64::Engine as _;
use serde_json::{Value, json};

use super::error::CaBundleError;

/// The anchors (DER) as a PEM bundle: one `CERTIFICATE` block each, 64 columns per line.
pub fn pem_bundle(anchors: &[Vec<u8>]) -> String {
    let mut pem = String::new();
    for der in anchors {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = base64::engine::general_purpose::STANDARD.encode(der);
        // Base64 output is ASCII, so splitting at byte offsets splits at characters.
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// The value of `clientConfig.caBundle`: the PEM bundle, base64-encoded once more (the API
/// field is `[]byte`, which JSON carries as base64).
pub fn ca_bundle(anchors: &[Vec<u8>]) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem_bundle(anchors))
}

/// The body of a JSON Patch (RFC 6902, `application/json-patch+json`) setting `caBundle` on
/// every webhook of `configuration` (the MutatingWebhookConfiguration as last read) whose
/// bundle differs; `None` when all already carry it. Each change is guarded by a `test` of
/// the webhook's name at its index, so a configuration reordered since it was read makes the
/// API server refuse the patch instead of patching the wrong webhook.
pub fn ca_bundle_patch(
    configuration: &Value,
    anchors: &[Vec<u8>],
) -> Result<Option<Value>, CaBundleError> {
    if anchors.is_empty() {
        return Err(CaBundleError::NoAnchors);
    }
    let webhooks = match configuration.get("webhooks") {
        Some(Value::Array(w)) => w,
        other => {
            return Err(CaBundleError::NoWebhooks { found: kind(other) });
        }
    };
    let bundle = ca_bundle(anchors);
    let mut ops = Vec::new();
    for (index, webhook) in webhooks.iter().enumerate() {
        let problem = |problem| CaBundleError::Webhook { index, problem };
        let name = webhook
            .get("name")
            .and_then(Value::as_str)
            .ok_or(problem("no name"))?;
        let client_config = webhook
            .get("clientConfig")
            .filter(|c| c.is_object())
            .ok_or(problem("no clientConfig mapping"))?;
        if client_config.get("caBundle").and_then(Value::as_str) == Some(bundle.as_str()) {
            continue;
        }
        ops.push(json!({ "op": "test", "path": format!("/webhooks/{index}/name"), "value": name }));
        // `add` on an object member replaces it when present.
        ops.push(json!({
            "op": "add",
            "path": format!("/webhooks/{index}/clientConfig/caBundle"),
            "value": bundle,
        }));
    }
    Ok((!ops.is_empty()).then_some(Value::Array(ops)))
}

fn kind(v: Option<&Value>) -> &'static str {
    match v {
        None => "nothing",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "a list",
        Some(Value::Object(_)) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configuration(bundles: &[Option<&str>]) -> Value {
        let webhooks: Vec<Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, bundle)| {
                let mut client = json!({ "service": { "name": "skiff-xds", "namespace": "skiff-system", "path": "/inject" } });
                if let Some(b) = bundle {
                    client["caBundle"] = json!(b);
                }
                json!({ "name": format!("w{i}.skiff.dev"), "clientConfig": client })
            })
            .collect();
        json!({ "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "webhooks": webhooks })
    }

    #[test]
    fn the_bundle_is_base64_of_pem_of_each_anchor() {
        let anchors = vec![vec![1u8; 100], vec![2u8; 3]];
        let pem = pem_bundle(&anchors);
        let blocks = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
            .map(|b| b.expect("PEM parses").contents)
            .collect::<Vec<_>>();
        assert_eq!(blocks, anchors);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(ca_bundle(&anchors))
            .expect("base64");
        assert_eq!(decoded, pem.as_bytes());
    }

    #[test]
    fn patches_only_webhooks_whose_bundle_differs() {
        let anchors = vec![vec![7u8; 40]];
        let current = ca_bundle(&anchors);
        let config = configuration(&[None, Some(&current), Some("c3RhbGU=")]);
        let patch = ca_bundle_patch(&config, &anchors)
            .expect("valid")
            .expect("a change");
        assert_eq!(
            patch,
            json!([
                { "op": "test", "path": "/webhooks/0/name", "value": "w0.skiff.dev" },
                { "op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": current },
                { "op": "test", "path": "/webhooks/2/name", "value": "w2.skiff.dev" },
                { "op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": current },
            ])
        );
        let done = configuration(&[Some(&current)]);
        assert_eq!(ca_bundle_patch(&done, &anchors), Ok(None));
    }

    #[test]
    fn refuses_what_it_cannot_patch() {
        let anchors = vec![vec![7u8; 40]];
        assert_eq!(
            ca_bundle_patch(&configuration(&[None]), &[]),
            Err(CaBundleError::NoAnchors)
        );
        assert_eq!(
            ca_bundle_patch(&json!({ "webhooks": {} }), &anchors),
            Err(CaBundleError::NoWebhooks { found: "a mapping" })
        );
        assert_eq!(
            ca_bundle_patch(&json!({ "webhooks": [{ "name": "a" }] }), &anchors),
            Err(CaBundleError::Webhook {
                index: 0,
                problem: "no clientConfig mapping"
            })
        );
        assert_eq!(
            ca_bundle_patch(&json!({ "webhooks": [{ "clientConfig": {} }] }), &anchors),
            Err(CaBundleError::Webhook {
                index: 0,
                problem: "no name"
            })
        );
    }
}
