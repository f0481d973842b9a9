//! The `cairn` binary's library: the command line ([`cli`], one module per subcommand family,
//! mirroring Consul's) and the typed HTTP client ([`api`]) that the CLI and the tests use.
//!
//! Must not: hold server logic; every subcommand except `agent` talks to an agent over HTTP.

pub mod api;
pub mod cli;
