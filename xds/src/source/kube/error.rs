//! Errors of the Kubernetes source: an object that does not decode, a mesh ConfigMap that is
//! refused (naming the field), and a merged mesh that fails validation.

use skiff_api::ConfigError;

use super::objects::ObjectKind;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The JSON is not a `kind` object of the shape the source reads.
    #[error("{kind} object does not decode: {source}")]
    Decode {
        kind: ObjectKind,
        #[source]
        source: serde_json::Error,
    },
    /// The mesh ConfigMap has no `mesh.yaml`; the previous mesh settings are kept.
    #[error("ConfigMap {namespace}/{name} has no key {key:?}")]
    MissingMeshKey {
        namespace: String,
        name: String,
        key: &'static str,
    },
    /// The mesh ConfigMap's `mesh.yaml` was refused (paths as in that file); the previous
    /// one is kept.
    #[error("ConfigMap {namespace}/{name} key {key}: {source}")]
    ConfigMap {
        namespace: String,
        name: String,
        key: &'static str,
        #[source]
        source: ConfigError,
    },
    /// The cluster's services merged with the ConfigMap do not validate, typically a route or
    /// policy naming a Service the cluster does not have. ConfigMap services keep their index
    /// (`services[i]`), so such paths read as in `mesh.yaml`. The caller keeps serving the
    /// last good mesh.
    #[error("the mesh built from the cluster and the ConfigMap is invalid: {0}")]
    Merged(#[source] ConfigError),
}

impl KubeError {
    /// The refused fields, when the error is a validation one.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match self {
            KubeError::ConfigMap { source, .. } | KubeError::Merged(source) => Some(source),
            KubeError::Decode { .. } | KubeError::MissingMeshKey { .. } => None,
        }
    }
}
