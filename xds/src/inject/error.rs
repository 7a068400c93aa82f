//! Why a pod cannot be injected: a bad override annotation (named, with its value), a request
//! above its limit, a pod spec of the wrong shape, a name clash. One message per problem,
//! written for the person who wrote the manifest; the webhook returns the same text.

/// One reason a pod was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InjectError {
    /// An override annotation whose value does not parse.
    #[error("annotation {annotation}: {reason}")]
    Annotation { annotation: String, reason: String },
    /// A request above its limit (the API server would refuse the pod).
    #[error(
        "{request_from} ({request}) is above {limit_from} ({limit}); the {resource} request must not exceed the limit"
    )]
    RequestAboveLimit {
        resource: String,
        request: String,
        limit: String,
        /// Where each value came from: an annotation name, or "the default request".
        request_from: String,
        limit_from: String,
    },
    /// A field of the wrong type: `spec.initContainers` not a list, say.
    #[error("{path}: expected {expected}, found {found}")]
    Shape {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    /// A workload kind without its pod template.
    #[error("{path}: missing; a {kind} needs a pod template")]
    NoTemplate { kind: String, path: String },
    /// Nothing to call the workload by.
    #[error(
        "no workload name: the pod has no app.kubernetes.io/name or app label, no owner and no name"
    )]
    NoWorkloadName,
    /// The pod already uses a name injection adds.
    #[error("{what} {name:?} already exists in the pod; injection adds one of that name")]
    NameTaken { what: &'static str, name: String },
}
