//! HashiCorp memberlist and Serf, wire-compatible, as a sans-IO core plus a tokio driver.
//!
//! Layers, bottom up: [`msgpack`] (go-msgpack's flavour), [`wire`] (memberlist's messages and
//! framing), [`keyring`] (AES-GCM), then the state machines. Nothing here knows what Consul is.

pub mod broadcast;
pub mod coordinate;
pub mod driver;
pub mod env;
pub mod keyring;
pub mod memberlist;
pub mod msgpack;
pub mod serf;
pub mod serf_wire;
pub mod snapshot;
pub mod wire;
