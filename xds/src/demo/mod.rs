//! The demo mesh: demo HTTP and gRPC apps, and the sidecars started in front of them.
