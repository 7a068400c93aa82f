//! `skiff-api`: the mesh model shared by the proxy and the control plane.
//! Parses a mesh file, validates it naming every bad field by path, and hands back typed
//! resources; `skiff run --config` and `skiff-xds check` run exactly this code.

pub mod duration;
pub mod model;
pub mod validate;

pub use duration::Dur;
pub use validate::{ConfigError, FieldError, load, summary};
