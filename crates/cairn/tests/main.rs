//! End-to-end tests: real `cairn` processes on loopback, driven by the CLI and the typed client.
//! One test binary for the crate (linking dominates on two cores); modules by area.

mod harness;
mod linclient;

mod agent_endpoints;
mod api_client;
mod bad_input;
mod cli;
mod cli_fidelity;
mod cluster;
mod config_and_lifecycle;
mod coordinates;
mod dns;
mod events;
mod fidelity;
mod gossip;
mod locks;
mod partition;
mod queries;
mod restart;
mod serf_interop;
mod sessions;
mod txn;
mod watches;
