//! Command-line parsing. Consul's commands take Go-style flags (`-dev`, `-http-port=8501`,
//! `-b=false`, flags only before the first argument); [`goflag`] reads them as Go's `flag` package
//! does and hands clap an unambiguous argument vector, so clap only types the values.

mod agent;
mod catalog;
mod event;
pub mod goflag;
mod gossip;
mod keygen;
pub(crate) mod kv;
mod lock;
mod maint;
mod operator;
mod rtt;
mod snapshot;
mod tls;
mod watch;

use clap::{Args, Parser, Subcommand};

use crate::api::Client;

#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    about = "Cairn: service discovery and configuration, Consul-compatible",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Runs an agent (server or client).
    Agent(Box<agent::AgentArgs>),
    /// Interacts with the key-value store.
    Kv {
        #[command(subcommand)]
        cmd: kv::KvCmd,
    },
    /// Interacts with the catalog.
    Catalog {
        #[command(subcommand)]
        cmd: catalog::CatalogCmd,
    },
    /// Registers and deregisters services with the local agent.
    Services {
        #[command(subcommand)]
        cmd: catalog::ServicesCmd,
    },
    /// Runs a command while holding a lock or semaphore slot.
    Lock(lock::LockArgs),
    /// Watches a view (key, keyprefix, services, nodes, service, checks, event) and runs a handler on changes.
    Watch(watch::WatchArgs),
    /// Fires a user event.
    Event(event::EventArgs),
    /// Estimates the network round-trip time between two nodes.
    Rtt(rtt::RttArgs),
    /// Lists the members of the cluster.
    Members(agent::MembersArgs),
    /// Tells the agent to join a cluster through the given addresses.
    Join(gossip::JoinArgs),
    /// Forces a failed member into the left state.
    #[command(name = "force-leave")]
    ForceLeave(gossip::ForceLeaveArgs),
    /// Manages the gossip encryption keyring.
    Keyring(gossip::KeyringArgs),
    /// Saves, restores and inspects snapshots of the state.
    Snapshot {
        #[command(subcommand)]
        cmd: snapshot::SnapshotCmd,
    },
    /// Cluster-level operator tools (Raft).
    Operator {
        #[command(subcommand)]
        cmd: operator::OperatorCmd,
    },
    /// Shows debugging information about the agent.
    Info(HttpArgs),
    /// Gracefully leaves the cluster and shuts the agent down.
    Leave(HttpArgs),
    /// Triggers the agent to reload its configuration files.
    Reload(HttpArgs),
    /// Validates config files and directories.
    Validate(agent::ValidateArgs),
    /// Generates a new gossip encryption key.
    Keygen,
    /// Creates a CA and certificates for agents.
    Tls {
        #[command(subcommand)]
        cmd: tls::TlsCmd,
    },
    /// Puts the node or a service into maintenance mode, or out of it.
    Maint(maint::MaintArgs),
    /// Streams the agent's logs.
    Monitor(maint::MonitorArgs),
    /// Prints the version.
    Version(agent::VersionArgs),
}

/// Flags every HTTP-speaking command takes (Consul's client and server flags). Each one not given
/// comes from its `CONSUL_*` environment variable.
#[derive(Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// The agent's HTTP address: `host:port`, `http(s)://host:port` or `unix:///path` (or
    /// CONSUL_HTTP_ADDR); default 127.0.0.1:8500.
    #[arg(long = "http-addr")]
    pub http_addr: Option<String>,
    /// ACL token (or CONSUL_HTTP_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// A file holding the ACL token (or CONSUL_HTTP_TOKEN_FILE); wins over -token.
    #[arg(long = "token-file")]
    pub token_file: Option<String>,
    /// CA certificate(s) to verify the agent with (or CONSUL_CACERT).
    #[arg(long = "ca-file")]
    pub ca_file: Option<String>,
    /// A directory of CA certificates (or CONSUL_CAPATH).
    #[arg(long = "ca-path")]
    pub ca_path: Option<String>,
    /// Client certificate for TLS (or CONSUL_CLIENT_CERT).
    #[arg(long = "client-cert")]
    pub client_cert: Option<String>,
    /// Client key for TLS (or CONSUL_CLIENT_KEY).
    #[arg(long = "client-key")]
    pub client_key: Option<String>,
    /// The server name to verify the agent's certificate against (or CONSUL_TLS_SERVER_NAME).
    #[arg(long = "tls-server-name")]
    pub tls_server_name: Option<String>,
    /// The datacenter to query; default the agent's.
    #[arg(long)]
    pub datacenter: Option<String>,
    /// Let any server answer, possibly stale.
    #[arg(long)]
    pub stale: bool,
}

impl HttpArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::connect(&crate::api::ClientConfig {
            addr: self.http_addr.clone(),
            token: self.token.clone(),
            token_file: self.token_file.clone(),
            ca_file: self.ca_file.clone(),
            ca_path: self.ca_path.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            tls_server_name: self.tls_server_name.clone(),
        })
    }

    pub fn query(&self) -> crate::api::QueryOptions {
        crate::api::QueryOptions { stale: self.stale, datacenter: self.datacenter.clone(), ..Default::default() }
    }
}

/// Runs the command line; returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    use clap::CommandFactory;
    let argv = match goflag::normalize(&Cli::command(), args) {
        Ok(a) => a,
        Err(stop) => {
            if stop.code == 0 {
                print!("{}", stop.text);
            } else {
                eprint!("{}", stop.text);
            }
            return stop.code;
        }
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            match go_value_error(&e) {
                Some(msg) => eprintln!("{msg}"),
                None => {
                    let _ = e.print();
                }
            }
            return code;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error starting runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> i32 {
    let res = match cli.cmd {
        Cmd::Agent(a) => return agent::run_agent(*a).await,
        Cmd::Kv { cmd } => kv::run(cmd).await,
        Cmd::Catalog { cmd } => catalog::run_catalog(cmd).await,
        Cmd::Services { cmd } => catalog::run_services(cmd).await,
        Cmd::Lock(a) => lock::run(a).await,
        Cmd::Watch(a) => watch::run(a).await,
        Cmd::Event(a) => event::run(a).await,
        Cmd::Rtt(a) => rtt::run(a).await,
        Cmd::Members(a) => agent::members(a).await,
        Cmd::Join(a) => gossip::join(a).await,
        Cmd::ForceLeave(a) => gossip::force_leave(a).await,
        Cmd::Keyring(a) => gossip::keyring(a).await,
        Cmd::Operator { cmd } => operator::run(cmd).await,
        Cmd::Snapshot { cmd } => snapshot::run(cmd).await,
        Cmd::Info(a) => agent::info(a).await,
        Cmd::Leave(a) => agent::leave(a).await,
        Cmd::Reload(a) => agent::reload(a).await,
        Cmd::Validate(a) => return agent::validate(a),
        Cmd::Maint(a) => maint::maint(a).await,
        Cmd::Keygen => keygen::run(),
        Cmd::Tls { cmd } => tls::run(cmd),
        Cmd::Monitor(a) => maint::monitor(a).await,
        Cmd::Version(a) => return agent::version(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error! {e:#}");
            1
        }
    }
}

/// A value clap could not convert, in Go's words: `invalid value "x" for flag -n: parse error`.
fn go_value_error(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return None;
    }
    let arg = match e.get(ContextKind::InvalidArg)? {
        ContextValue::String(s) => s.clone(),
        _ => return None,
    };
    let value = match e.get(ContextKind::InvalidValue)? {
        ContextValue::String(s) => s.clone(),
        _ => return None,
    };
    // clap names the flag `--name <NAME>`; Go says `-name`.
    let name = arg.split_whitespace().next()?.trim_start_matches('-').to_string();
    Some(format!("invalid value {value:?} for flag -{name}: parse error"))
}

/// Resolves on SIGINT or SIGTERM: how long-running commands (`watch`, `monitor`) are stopped.
pub async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Aligns rows into columns separated by two spaces (the shape of Consul's tables).
pub fn columnize(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                line.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            } else {
                line.push_str(c);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columnize_aligns() {
        let t = columnize(&[vec!["Node".into(), "Address".into()], vec!["a-long-name".into(), "1.2.3.4".into()]]);
        assert_eq!(t, "Node         Address\na-long-name  1.2.3.4\n");
    }
}
