//! One AdmissionReview v1 in, one out: the pure mapping from a request body to the answer,
//! with no I/O. Pods being created are injected by `inject::inject_pod` (the CLI's logic); every
//! other object is allowed untouched; a pod injection refuses is denied with code 400.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::error::ReviewError;
use crate::inject::{InjectError, PatchOp, Settings, Value, controller_name, inject_pod};

/// The only AdmissionReview version served (what `admissionReviewVersions: [v1]` asks for).
pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

#[derive(Deserialize)]
struct ReviewIn {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<RequestIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    #[serde(default)]
    uid: String,
    kind: Option<GroupVersionKind>,
    sub_resource: Option<String>,
    operation: Option<String>,
    object: Option<Value>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

#[derive(Serialize)]
struct ReviewOut {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// The `metav1.Status` of a denial.
#[derive(Serialize)]
struct StatusOut {
    status: &'static str,
    reason: &'static str,
    code: u16,
    message: String,
}

/// What the webhook decided for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Admitted; `patch` is empty when the object is left as it is.
    Allow {
        patch: Vec<PatchOp>,
        warnings: Vec<String>,
    },
    /// Refused with code 400; the message names each bad annotation or field.
    Deny { message: String },
}

/// Answers one request body: the AdmissionReview to send back (HTTP 200), or why the body is
/// not an AdmissionReview (HTTP 400).
pub fn answer(body: &[u8], settings: &Settings) -> Result<Vec<u8>, ReviewError> {
    let review: ReviewIn = serde_json::from_slice(body).map_err(|e| ReviewError::Syntax {
        // serde_json's message names the line and column, never more than a token of input.
        reason: e.to_string(),
    })?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return Err(ReviewError::NotAdmissionReview {
            api_version: review.api_version,
            kind: review.kind,
        });
    }
    let request = review.request.ok_or(ReviewError::NoRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::NoUid);
    }
    let decision = decide(&request, settings);
    let response = response(request.uid, decision);
    // Serializing plain strings, bools and a `Value` tree cannot fail; an error here would be
    // a bug in those types, answered as a syntax problem rather than a panic.
    serde_json::to_vec(&ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response,
    })
    .map_err(|e| ReviewError::Syntax {
        reason: format!("cannot encode the answer: {e}"),
    })
}

fn decide(request: &RequestIn, settings: &Settings) -> Decision {
    let allow = || Decision::Allow {
        patch: Vec::new(),
        warnings: Vec::new(),
    };
    let is_pod = request
        .kind
        .as_ref()
        .is_some_and(|k| k.group.is_empty() && k.kind == "Pod");
    let is_create = request.operation.as_deref() == Some("CREATE");
    let is_subresource = request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty());
    // The webhook configuration selects pod CREATE only; anything else that reaches us (a
    // broader selector, an ephemeral-container update) is none of injection's business.
    if !is_pod || !is_create || is_subresource {
        return allow();
    }
    let Some(pod) = request.object.as_ref().filter(|o| **o != Value::Null) else {
        return Decision::Deny {
            message: "request.object: missing; a pod CREATE carries the pod".to_owned(),
        };
    };
    let owner = controller_name(pod);
    match inject_pod(pod, owner.as_deref(), settings) {
        Ok(injected) => Decision::Allow {
            patch: injected.patch,
            warnings: injected.report.warnings,
        },
        Err(errors) => Decision::Deny {
            message: deny_message(&errors),
        },
    }
}

fn deny_message(errors: &[InjectError]) -> String {
    let mut message = "skiff injection refused the pod: ".to_owned();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            message.push_str("; ");
        }
        message.push_str(&e.to_string());
    }
    message
}

fn response(uid: String, decision: Decision) -> ResponseOut {
    match decision {
        Decision::Allow { patch, warnings } => {
            // Encoding a `Value` tree to JSON does not fail (non-finite floats become null).
            let patch = match patch.is_empty() {
                true => None,
                false => serde_json::to_vec(&patch)
                    .ok()
                    .map(|json| base64::engine::general_purpose::STANDARD.encode(json)),
            };
            ResponseOut {
                uid,
                allowed: true,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                status: None,
                warnings,
            }
        }
        Decision::Deny { message } => ResponseOut {
            uid,
            allowed: false,
            patch_type: None,
            patch: None,
            status: Some(StatusOut {
                status: "Failure",
                reason: "BadRequest",
                code: 400,
                message,
            }),
            warnings: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests;
