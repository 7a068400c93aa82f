//! Integration tests: the real `skiff` binary on loopback ports, with real clients in front of it
//! and real servers behind it. `support/` spawns everything; each module tests one concern.

mod support;

mod admin;
mod authz;
mod balance;
mod curl;
mod demo;
mod drain;
mod errors;
mod grpc;
mod headers;
mod help;
mod http1;
mod http2;
mod init;
mod malformed;
mod metrics;
mod mtls;
mod readme;
mod redirect;
mod reload;
mod resilience;
mod rotation;
mod routing;
mod sidecars;
mod tcp;
mod tracing;
mod websocket;
mod xds;
mod xds_garbage;
mod xds_load;
mod xds_scope;
