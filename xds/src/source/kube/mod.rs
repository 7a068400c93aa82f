//! Kubernetes source, pure core: cluster objects (Services, EndpointSlices, Pods, the mesh
//! ConfigMap) kept by key and turned into the mesh the control plane serves, with the set of
//! services each change touches. Watching the API server is left to a later layer.

mod cluster;
mod error;
pub mod objects;

#[cfg(test)]
mod tests;

pub use self::{
    cluster::{Built, ClusterSettings, ClusterState, Event, Impact, Note, Object},
    error::KubeError,
    objects::{ObjectKey, ObjectKind},
};
