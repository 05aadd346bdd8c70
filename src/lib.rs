//! kube: a whole Kubernetes cluster in one executable. `main.rs` only parses
//! the command line; each role lives in its own module and exposes `run`.

pub mod agent;
pub mod cni;
pub mod controllers;
pub mod dns;
pub mod netfilter;
pub mod server;
pub mod store;
