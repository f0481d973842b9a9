//! Command-line parsing. Consul's commands take Go-style single-dash long flags (`-dev`,
//! `-http-port=8501`); clap wants two dashes, so argv is rewritten first ([`go_flags`]).

mod agent;
mod catalog;
mod event;
mod kv;
mod lock;
mod rtt;
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
    /// Shows debugging information about the agent.
    Info(HttpArgs),
    /// Gracefully leaves the cluster and shuts the agent down.
    Leave(HttpArgs),
    /// Triggers the agent to reload its configuration files.
    Reload(HttpArgs),
    /// Validates config files and directories.
    Validate(agent::ValidateArgs),
    /// Prints the version.
    Version,
}

/// Flags every HTTP-speaking command takes (Consul's `-http-addr`, `-token`, `-datacenter`, `-stale`).
#[derive(Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// The agent's HTTP address (or CONSUL_HTTP_ADDR); default 127.0.0.1:8500.
    #[arg(long = "http-addr")]
    pub http_addr: Option<String>,
    /// ACL token (or CONSUL_HTTP_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// The datacenter to query; default the agent's.
    #[arg(long)]
    pub datacenter: Option<String>,
    /// Let any server answer, possibly stale.
    #[arg(long)]
    pub stale: bool,
}

impl HttpArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        if let Some(t) = &self.token {
            std::env::set_var("CONSUL_HTTP_TOKEN", t);
        }
        Client::from_env(self.http_addr.as_deref())
    }

    pub fn query(&self) -> crate::api::QueryOptions {
        crate::api::QueryOptions { stale: self.stale, datacenter: self.datacenter.clone(), ..Default::default() }
    }
}

/// Rewrites Go-style `-flag[=v]` to `--flag[=v]`. A lone `-` (stdin) and negative numbers (`-1`)
/// are values, not flags; everything after `--` is left alone. For commands that run another
/// command (`lock`, `watch`), rewriting stops at the first positional argument, as Go's flag parsing stops
/// there: the child's own flags (`ls -la`) pass through untouched.
pub fn go_flags(args: Vec<String>) -> Vec<String> {
    // Flags of `lock` and `watch` that take a separate value (`-timeout 5s`, `-type key`).
    const LOCK_VALUE_FLAGS: &[&str] = &[
        "n",
        "name",
        "timeout",
        "monitor-retry",
        "http-addr",
        "token",
        "datacenter",
        "type",
        "key",
        "prefix",
        "service",
        "tag",
        "state",
    ];
    let runs_child = args.get(1).map(|c| c == "lock" || c == "watch").unwrap_or(false);
    let mut out = Vec::with_capacity(args.len());
    let mut passthrough = false;
    let mut prev_takes_value = false;
    for (i, a) in args.into_iter().enumerate() {
        if i <= 1 || passthrough {
            out.push(a);
            continue;
        }
        if a == "--" {
            passthrough = true;
            out.push(a);
            continue;
        }
        let b = a.as_bytes();
        let is_go_flag = b.len() > 2 && b[0] == b'-' && b[1] != b'-' && !b[1].is_ascii_digit();
        let is_flag = b.len() > 1 && b[0] == b'-';
        if runs_child && !is_flag && !prev_takes_value {
            // The prefix: everything after it belongs to the child command.
            passthrough = true;
            out.push(a);
            continue;
        }
        if runs_child {
            let name = a.trim_start_matches('-');
            prev_takes_value = is_flag && !name.contains('=') && LOCK_VALUE_FLAGS.contains(&name);
        }
        out.push(if is_go_flag { format!("-{a}") } else { a });
    }
    out
}

/// Runs the command line; returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(go_flags(args)) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
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
        Cmd::Info(a) => agent::info(a).await,
        Cmd::Leave(a) => agent::leave(a).await,
        Cmd::Reload(a) => agent::reload(a).await,
        Cmd::Validate(a) => return agent::validate(a),
        Cmd::Version => {
            agent::version();
            Ok(0)
        }
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error! {e:#}");
            1
        }
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
    fn go_style_flags_become_long_flags() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            go_flags(v(&["cairn", "agent", "-dev", "-http-port=8501", "-dns-port", "-1", "--node=x"])),
            v(&["cairn", "agent", "--dev", "--http-port=8501", "--dns-port", "-1", "--node=x"])
        );
        assert_eq!(go_flags(v(&["cairn", "kv", "put", "k", "-"])), v(&["cairn", "kv", "put", "k", "-"]));
        assert_eq!(go_flags(v(&["cairn", "kv", "put", "--", "k", "-v"])), v(&["cairn", "kv", "put", "--", "k", "-v"]));
        assert_eq!(
            go_flags(v(&["cairn", "lock", "-timeout", "5s", "-child-exit-code", "app", "ls", "-la"])),
            v(&["cairn", "lock", "--timeout", "5s", "--child-exit-code", "app", "ls", "-la"])
        );
    }

    #[test]
    fn columnize_aligns() {
        let t = columnize(&[vec!["Node".into(), "Address".into()], vec!["a-long-name".into(), "1.2.3.4".into()]]);
        assert_eq!(t, "Node         Address\na-long-name  1.2.3.4\n");
    }
}
