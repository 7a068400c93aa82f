//! `skiff-api`: the mesh model and the discovery API shared by the proxy and the control plane.
//! Parses a mesh file, validates it naming every bad field by path, compiles it into versioned
//! discovery resources and rebuilds a mesh file from received ones; `skiff run --config` and
//! `skiff-xds check` run exactly this validation.

pub mod duration;
pub mod model;
pub mod resource;
pub mod validate;

/// The discovery API generated from `proto/skiff/xds/v1/xds.proto`: the `Discovery` service
/// (client and server) and the resource messages.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("skiff.xds.v1");
}

pub use duration::Dur;
pub use validate::{ConfigError, FieldError, load, load_fragment, summary};
