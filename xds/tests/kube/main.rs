//! The `serve --kubernetes` tests: a fake API server the real kube-rs client talks to.
#![cfg(feature = "kubernetes")]

mod apiserver;
mod apiserver_tests;
#[path = "../common/mod.rs"]
mod common;
mod source;
