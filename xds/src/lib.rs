//! `skiff-xds`: the Skiff control plane. For now it validates mesh files (`check`) and runs
//! a whole demo mesh on loopback (`demo`); the discovery server arrives with issue 4.

pub mod check;
pub mod demo;

/// Generated code for the demo echo service (`proto/demo.proto`).
pub mod pb {
    tonic::include_proto!("skiff.demo.v1");
}
