//! The request → response mapping without sockets: what is patched, allowed untouched,
//! denied with code 400, or refused as not an AdmissionReview.

use base64::Engine as _;
use serde_json::{Value as Json, json};

use super::*;

fn review(kind: &str, operation: &str, object: Json) -> Json {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": kind },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "default",
            "operation": operation,
            "object": object,
        }
    })
}

fn pod(annotations: Json, host_network: bool) -> Json {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-5d9c8b7f4-",
            "labels": { "app": "reviews", "pod-template-hash": "5d9c8b7f4" },
            "annotations": annotations,
        },
        "spec": {
            "hostNetwork": host_network,
            "containers": [ { "name": "app", "image": "reviews:1", "ports": [ { "containerPort": 9080 } ] } ],
        }
    })
}

/// The answer's `response`, checked to be a v1 AdmissionReview with the request's uid.
fn respond(body: &Json) -> Json {
    let out = answer(&serde_json::to_vec(body).unwrap(), &Settings::default()).unwrap();
    let out: Json = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = out["response"].clone();
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    response
}

fn decoded_patch(response: &Json) -> Json {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn a_pod_being_created_is_patched_as_inject_pod_says() {
    let object = pod(json!({}), false);
    let response = respond(&review("Pod", "CREATE", object.clone()));
    assert_eq!(response["allowed"], true);
    let as_value: Value = serde_json::from_value(object).unwrap();
    let expected = inject_pod(&as_value, None, &Settings::default()).unwrap();
    assert_eq!(
        decoded_patch(&response),
        serde_json::to_value(&expected.patch).unwrap()
    );
    let ops = decoded_patch(&response);
    let paths: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/spec/initContainers"), "{paths:?}");
    assert!(response.get("status").is_none());
}

#[test]
fn a_pod_without_labels_is_named_after_its_deployment() {
    let mut object = pod(json!({}), false);
    object["metadata"]["labels"] = json!({ "pod-template-hash": "5d9c8b7f4" });
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-5d9c8b7f4",
        "uid": "u", "controller": true, "blockOwnerDeletion": true
    }]);
    let ops = decoded_patch(&respond(&review("Pod", "CREATE", object)));
    let text = ops.to_string();
    assert!(
        text.contains(r#"{"name":"SKIFF_WORKLOAD","value":"reviews-v1"}"#),
        "{text}"
    );
}

#[test]
fn skipped_pods_and_other_objects_are_allowed_unpatched() {
    let cases = [
        review("Pod", "CREATE", pod(json!({}), true)),
        review(
            "Pod",
            "CREATE",
            pod(json!({ "skiff.dev/inject": "disabled" }), false),
        ),
        review("Pod", "UPDATE", pod(json!({}), false)),
        review(
            "Service",
            "CREATE",
            json!({ "kind": "Service", "spec": {} }),
        ),
        review("Pod", "DELETE", Json::Null),
    ];
    for case in &cases {
        let response = respond(case);
        assert_eq!(response["allowed"], true, "{case}");
        assert!(response.get("patch").is_none(), "{case}");
        assert!(response.get("patchType").is_none(), "{case}");
    }
    // Already injected: the injected pod, reviewed again, gets no patch.
    let object = pod(json!({}), false);
    let as_value: Value = serde_json::from_value(object).unwrap();
    let injected = inject_pod(&as_value, None, &Settings::default())
        .unwrap()
        .pod;
    let response = respond(&review(
        "Pod",
        "CREATE",
        serde_json::to_value(&injected).unwrap(),
    ));
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
}

#[test]
fn bad_annotations_are_denied_with_400_naming_them() {
    let object = pod(
        json!({ "skiff.dev/opaque-ports": "http", "skiff.dev/proxy-cpu-request": "lots" }),
        false,
    );
    let response = respond(&review("Pod", "CREATE", object));
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    assert_eq!(response["status"]["reason"], "BadRequest");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("skiff.dev/opaque-ports"), "{message}");
    assert!(message.contains("skiff.dev/proxy-cpu-request"), "{message}");
    assert!(response.get("patch").is_none());
}

#[test]
fn unknown_annotations_come_back_as_warnings() {
    let object = pod(json!({ "skiff.dev/opaque-port": "3306" }), false);
    let response = respond(&review("Pod", "CREATE", object));
    assert_eq!(response["allowed"], true);
    let warnings = response["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("did you mean skiff.dev/opaque-ports?")
    );
}

#[test]
fn a_pod_create_without_its_object_or_of_the_wrong_shape_is_denied() {
    let response = respond(&review("Pod", "CREATE", Json::Null));
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    let response = respond(&review("Pod", "CREATE", json!({ "spec": [] })));
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec: expected a mapping")
    );
}

#[test]
fn bodies_that_are_not_admission_reviews_are_refused() {
    let refused = |body: &[u8]| answer(body, &Settings::default()).unwrap_err();
    assert!(matches!(
        refused(b"\xff\x00garbage"),
        ReviewError::Syntax { .. }
    ));
    assert!(matches!(refused(b""), ReviewError::Syntax { .. }));
    assert!(matches!(refused(b"[1,2]"), ReviewError::Syntax { .. }));
    assert_eq!(
        refused(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#),
        ReviewError::NotAdmissionReview {
            api_version: "admission.k8s.io/v1beta1".to_owned(),
            kind: "AdmissionReview".to_owned()
        }
    );
    assert_eq!(
        refused(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
        ReviewError::NoRequest
    );
    assert_eq!(
        refused(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#),
        ReviewError::NoUid
    );
    // Nesting deeper than the parser allows is an error, not a stack overflow.
    let deep = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"x","object":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(
        refused(deep.as_bytes()),
        ReviewError::Syntax { .. }
    ));
}

#[test]
fn wrongly_typed_fields_are_syntax_errors_not_panics() {
    let bodies = [
        r#"{"apiVersion":1,"kind":"AdmissionReview","request":{"uid":"x"}}"#,
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","kind":"Pod"}}"#,
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":[]}"#,
    ];
    for body in bodies {
        assert!(
            matches!(
                answer(body.as_bytes(), &Settings::default()),
                Err(ReviewError::Syntax { .. })
            ),
            "{body}"
        );
    }
    // A pod of odd but valid JSON shapes gets an answer, never a panic.
    for object in [
        json!(1),
        json!("pod"),
        json!([]),
        json!({"metadata": 3, "spec": {}}),
    ] {
        let response = respond(&review("Pod", "CREATE", object.clone()));
        assert_eq!(response["allowed"], false, "{object}");
    }
}
