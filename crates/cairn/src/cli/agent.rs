//! `cairn agent`, `members`, `info`, `leave`, `reload`, `validate`, `version`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use cairn_agent::{Agent, Config, Flags};
use cairn_types::{CAIRN_VERSION, CONSUL_COMPAT_VERSION};

use super::{columnize, HttpArgs};

#[derive(Args, Debug, Default)]
pub struct AgentArgs {
    /// Development mode: an in-memory server that bootstraps itself, on loopback.
    #[arg(long)]
    pub dev: bool,
    #[arg(long)]
    pub server: bool,
    #[arg(long)]
    pub bootstrap: bool,
    #[arg(long = "bootstrap-expect")]
    pub bootstrap_expect: Option<i64>,
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long = "node-id")]
    pub node_id: Option<String>,
    #[arg(long)]
    pub datacenter: Option<String>,
    #[arg(long = "data-dir")]
    pub data_dir: Option<String>,
    #[arg(long)]
    pub client: Option<String>,
    #[arg(long)]
    pub bind: Option<String>,
    #[arg(long)]
    pub advertise: Option<String>,
    #[arg(long = "http-port", allow_negative_numbers = true)]
    pub http_port: Option<i64>,
    #[arg(long = "https-port", allow_negative_numbers = true)]
    pub https_port: Option<i64>,
    #[arg(long = "dns-port", allow_negative_numbers = true)]
    pub dns_port: Option<i64>,
    #[arg(long = "grpc-port", allow_negative_numbers = true)]
    pub grpc_port: Option<i64>,
    #[arg(long = "serf-lan-port", allow_negative_numbers = true)]
    pub serf_lan_port: Option<i64>,
    #[arg(long = "serf-wan-port", allow_negative_numbers = true)]
    pub serf_wan_port: Option<i64>,
    #[arg(long = "server-port", allow_negative_numbers = true)]
    pub server_port: Option<i64>,
    #[arg(long = "config-file")]
    pub config_file: Vec<PathBuf>,
    #[arg(long = "config-dir")]
    pub config_dir: Vec<PathBuf>,
    #[arg(long = "config-format")]
    pub config_format: Option<String>,
    /// Extra HCL configuration, applied after files.
    #[arg(long)]
    pub hcl: Vec<String>,
    #[arg(long = "log-level")]
    pub log_level: Option<String>,
    #[arg(long = "log-json")]
    pub log_json: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<String>,
    #[arg(long = "enable-script-checks")]
    pub enable_script_checks: bool,
    #[arg(long = "enable-local-script-checks")]
    pub enable_local_script_checks: bool,
    #[arg(long = "node-meta")]
    pub node_meta: Vec<String>,
    #[arg(long)]
    pub domain: Option<String>,
    #[arg(long)]
    pub ui: bool,
    /// Joins the LAN pool through this address at start (repeatable; deprecated in Consul for -retry-join).
    #[arg(long)]
    pub join: Vec<String>,
    /// Joins the LAN pool through this address, retrying until it answers (repeatable).
    #[arg(long = "retry-join")]
    pub retry_join: Vec<String>,
    #[arg(long = "join-wan")]
    pub join_wan: Vec<String>,
    #[arg(long = "retry-join-wan")]
    pub retry_join_wan: Vec<String>,
    #[arg(long = "retry-interval")]
    pub retry_interval: Option<String>,
    #[arg(long = "retry-interval-wan")]
    pub retry_interval_wan: Option<String>,
    #[arg(long = "retry-max")]
    pub retry_max: Option<i64>,
    #[arg(long = "retry-max-wan")]
    pub retry_max_wan: Option<i64>,
    /// The gossip encryption key (base64 of 16, 24 or 32 bytes; `cairn keygen` makes one).
    #[arg(long)]
    pub encrypt: Option<String>,
    #[arg(long = "advertise-wan")]
    pub advertise_wan: Option<String>,
    /// Ignores a previous leave and rejoins the pool.
    #[arg(long)]
    pub rejoin: bool,
    #[arg(long = "disable-keyring-file")]
    pub disable_keyring_file: bool,
}

impl AgentArgs {
    fn flags(self) -> Flags {
        Flags {
            dev: self.dev,
            server: self.server,
            bootstrap: self.bootstrap,
            bootstrap_expect: self.bootstrap_expect,
            node: self.node,
            node_id: self.node_id,
            datacenter: self.datacenter,
            data_dir: self.data_dir,
            client: self.client,
            bind: self.bind,
            advertise: self.advertise,
            http_port: self.http_port,
            https_port: self.https_port,
            dns_port: self.dns_port,
            grpc_port: self.grpc_port,
            serf_lan_port: self.serf_lan_port,
            serf_wan_port: self.serf_wan_port,
            server_port: self.server_port,
            config_files: self.config_file,
            config_dirs: self.config_dir,
            config_format: self.config_format,
            hcl: self.hcl,
            log_level: self.log_level,
            log_json: self.log_json,
            pid_file: self.pid_file,
            enable_script_checks: self.enable_script_checks,
            enable_local_script_checks: self.enable_local_script_checks,
            node_meta: self.node_meta,
            domain: self.domain,
            ui: self.ui,
            join: self.join,
            retry_join: self.retry_join,
            join_wan: self.join_wan,
            retry_join_wan: self.retry_join_wan,
            retry_interval: self.retry_interval,
            retry_interval_wan: self.retry_interval_wan,
            retry_max: self.retry_max,
            retry_max_wan: self.retry_max_wan,
            encrypt: self.encrypt,
            advertise_wan: self.advertise_wan,
            rejoin: self.rejoin,
            disable_keyring_file: self.disable_keyring_file,
        }
    }
}

pub async fn run_agent(args: AgentArgs) -> i32 {
    let agent = match Agent::start(args.flags()).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("==> {e}");
            return 1;
        }
    };
    let cfg = agent.config();
    if let Some(p) = &cfg.pid_file {
        if let Err(e) = std::fs::write(p, format!("{}", std::process::id())) {
            eprintln!("==> Error writing pid file {}: {e}", p.display());
            agent.stop().await;
            return 1;
        }
    }
    eprintln!(
        "==> Cairn agent running! Node {:?} in datacenter {:?}, HTTP on {:?}",
        cfg.node_name,
        cfg.datacenter,
        agent.http_addrs()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).expect("signal handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!(target: "agent", "caught interrupt, shutting down");
                // Consul: clients leave on SIGINT, servers skip it (skip_leave_on_interrupt).
                if !cfg.skip_leave_on_interrupt {
                    agent.leave_pools().await;
                }
                break;
            }
            _ = term.recv() => {
                tracing::info!(target: "agent", "caught terminate, shutting down");
                // Consul: clients leave on SIGTERM, servers do not (leave_on_terminate).
                if cfg.leave_on_terminate {
                    agent.leave_pools().await;
                }
                break;
            }
            _ = hup.recv() => {
                match agent.reload() {
                    Ok(()) => tracing::info!(target: "agent", "configuration reloaded"),
                    Err(e) => tracing::error!(target: "agent", error = %e, "configuration reload failed"),
                }
            }
            _ = agent.shutting_down() => { tracing::info!(target: "agent", "leave requested, shutting down"); break; }
        }
    }
    agent.request_shutdown();
    // Give in-flight HTTP responses (e.g. the leave call itself) a moment to drain.
    let _ = tokio::time::timeout(Duration::from_secs(5), agent.stop()).await;
    if let Some(p) = &cfg.pid_file {
        let _ = std::fs::remove_file(p);
    }
    eprintln!("==> Cairn agent stopped");
    agent.exit_code()
}

#[derive(Args, Debug)]
pub struct MembersArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Shows all tags.
    #[arg(long)]
    pub detailed: bool,
    /// Lists WAN members.
    #[arg(long)]
    pub wan: bool,
    /// Only members whose status matches this regular expression.
    #[arg(long)]
    pub status: Option<String>,
}

fn status_name(s: i64) -> &'static str {
    match s {
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "none",
    }
}

pub async fn members(a: MembersArgs) -> Result<i32> {
    let status_re = match &a.status {
        None => None,
        Some(r) => match regex::Regex::new(r) {
            Ok(re) => Some(re),
            Err(e) => {
                eprintln!("Failed to compile status regexp: {e}");
                return Ok(1);
            }
        },
    };
    let c = a.http.client()?;
    let mut ms = c.agent_members(a.wan).await?;
    // Consul lists servers first, then by name.
    ms.sort_by_key(|m| {
        (m["Tags"]["role"].as_str() != Some("consul"), m["Name"].as_str().unwrap_or_default().to_string())
    });
    let mut rows = vec![];
    if a.detailed {
        rows.push(vec!["Node".into(), "Address".into(), "Status".into(), "Tags".into()]);
    } else {
        rows.push(
            ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    }
    for m in &ms {
        let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let tag = |k: &str| m["Tags"].get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let status = status_name(m["Status"].as_i64().unwrap_or(0)).to_string();
        if status_re.as_ref().is_some_and(|re| !re.is_match(&status)) {
            continue;
        }
        let addr = format!("{}:{}", s("Addr"), m["Port"].as_i64().unwrap_or(0));
        if a.detailed {
            let mut tags: Vec<String> = m["Tags"]
                .as_object()
                .map(|o| o.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
                .unwrap_or_default();
            tags.sort();
            rows.push(vec![s("Name"), addr, status, tags.join(",")]);
        } else {
            let server = tag("role") == "consul";
            let build = tag("build");
            let build = build.split(':').next().unwrap_or_default().to_string();
            rows.push(vec![
                s("Name"),
                addr,
                status,
                if server { "server".into() } else { "client".into() },
                build,
                tag("vsn"),
                tag("dc"),
                "default".into(),
                if server { "<all>".into() } else { "<default>".into() },
            ]);
        }
    }
    // Consul: no member matching the filter is exit 2 with no output.
    if rows.len() == 1 {
        return Ok(2);
    }
    print!("{}", columnize(&rows));
    Ok(0)
}

pub async fn info(a: HttpArgs) -> Result<i32> {
    let c = a.client()?;
    let s = c.agent_self().await?;
    let Some(stats) = s.get("Stats").and_then(Value::as_object) else { anyhow::bail!("agent returned no stats") };
    // Consul prints sections and keys sorted.
    let mut sections: Vec<(&String, &Value)> = stats.iter().collect();
    sections.sort_by(|a, b| a.0.cmp(b.0));
    for (section, kv) in sections {
        println!("{section}:");
        if let Some(o) = kv.as_object() {
            let mut keys: Vec<(&String, &Value)> = o.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in keys {
                let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                println!("\t{k} = {v}");
            }
        }
    }
    Ok(0)
}

pub async fn leave(a: HttpArgs) -> Result<i32> {
    a.client()?.agent_leave().await?;
    println!("Graceful leave complete");
    Ok(0)
}

pub async fn reload(a: HttpArgs) -> Result<i32> {
    a.client()?.agent_reload().await?;
    println!("Configuration reload triggered");
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Config files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long = "config-format")]
    pub config_format: Option<String>,
    /// Only print errors.
    #[arg(long)]
    pub quiet: bool,
}

pub fn validate(a: ValidateArgs) -> i32 {
    let mut flags = Flags { config_format: a.config_format.clone(), ..Default::default() };
    for p in &a.paths {
        if p.is_dir() {
            flags.config_dirs.push(p.clone());
        } else {
            flags.config_files.push(p.clone());
        }
    }
    // As Consul: the files must make a whole config (data_dir included); nothing is written.
    match Config::load(&flags) {
        Ok(cfg) => {
            if !a.quiet {
                for k in &cfg.ignored {
                    println!("Note: config key {k} is accepted but not implemented yet");
                }
                println!("Configuration is valid!");
            }
            0
        }
        Err(e) => {
            eprintln!("Config validation failed: {e}");
            1
        }
    }
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// `pretty` or `json`.
    #[arg(long, default_value = "pretty")]
    pub format: String,
}

pub fn version(a: VersionArgs) -> i32 {
    match a.format.as_str() {
        "pretty" => {
            println!("Cairn v{CAIRN_VERSION}");
            println!("Consul API compatibility: v{CONSUL_COMPAT_VERSION}");
            println!("Protocol 2 spoken by default, understands 2 to 3 (agent will automatically use protocol >2 when speaking to compatible agents)");
            println!();
            0
        }
        "json" => {
            // Consul's fields, in its order, indented by three spaces as its json.MarshalIndent is.
            let v = serde_json::json!({
                "Version": CAIRN_VERSION,
                "Revision": "",
                "Prerelease": "",
                "BuildDate": "",
                "ConsulCompat": CONSUL_COMPAT_VERSION,
                "RPC": { "Default": 2, "Min": 2, "Max": 3 },
            });
            let mut buf = Vec::new();
            let mut ser =
                serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(b"   "));
            if serde::Serialize::serialize(&v, &mut ser).is_err() {
                return 1;
            }
            println!("{}", String::from_utf8_lossy(&buf));
            0
        }
        other => {
            eprintln!("Unknown format: {other}");
            1
        }
    }
}
