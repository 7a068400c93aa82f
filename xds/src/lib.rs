//! `skiff-xds`: the Skiff control plane. `serve` streams the mesh file's resources to
//! proxies over gRPC (`source`, `server`, `admin`), `status` shows who is in sync, `check`
//! validates a mesh file, `inject` meshes Kubernetes manifests (and `webhook` pods at admission)
//! and `demo` runs a whole demo mesh on loopback.

pub mod admin;
pub mod ca;
pub mod check;
pub mod demo;
pub mod describe;
pub mod inject;
pub mod logging;
pub mod metrics;
pub mod serve;
pub mod server;
pub mod source;
pub mod status;
pub mod webhook;

/// Generated code for the demo echo service (`proto/demo.proto`).
pub mod pb {
    tonic::include_proto!("skiff.demo.v1");
}
