//! Kubernetes source: cluster objects (Services, EndpointSlices, Pods, the mesh ConfigMap)
//! kept by key and turned into the mesh the control plane serves, with the set of services
//! each change touches. `cluster` and `feed` are pure; `watch` (feature `kubernetes`) is the
//! kube-rs I/O that drives them.

#[cfg(feature = "kubernetes")]
mod ca_bundle;
mod cluster;
mod error;
pub mod feed;
pub mod objects;
#[cfg(feature = "kubernetes")]
mod watch;

#[cfg(test)]
mod tests;

#[cfg(feature = "kubernetes")]
pub use self::{ca_bundle::CaBundlePatcher, watch::KubeSource};
pub use self::{
    cluster::{Built, ClusterSettings, ClusterState, Event, Impact, Note, Object},
    error::KubeError,
    objects::{ObjectKey, ObjectKind},
};
