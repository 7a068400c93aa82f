//! Skiff, the sidecar proxy: one module per concern (see DESIGN.md's module table).
//! The binary (`main.rs`) is only the command line; benches reach the pieces through here.

pub mod admin;
pub mod app;
pub mod authz;
pub mod balance;
pub mod bootstrap;
pub mod cluster;
pub mod conn;
pub mod describe;
pub mod detect;
pub mod http;
pub mod inbound;
pub mod init;
pub mod io;
pub mod listener;
pub mod ondemand;
pub mod outbound;
pub mod resilience;
pub mod route;
pub mod snapshot;
pub mod state;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod xds_client;
