//! `cairn operator raft list-peers|remove-peer|transfer-leader`, as Consul prints them.

use anyhow::Result;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::{columnize, HttpArgs};

#[derive(Subcommand, Debug)]
pub enum OperatorCmd {
    /// Operates on the Raft configuration.
    Raft {
        #[command(subcommand)]
        cmd: RaftCmd,
    },
    /// Reads and changes autopilot's configuration and state.
    Autopilot {
        #[command(subcommand)]
        cmd: AutopilotCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum AutopilotCmd {
    /// Shows autopilot's configuration.
    #[command(name = "get-config")]
    GetConfig(HttpArgs),
    /// Changes autopilot's configuration (only the flags given), atomically.
    #[command(name = "set-config")]
    SetConfig(SetConfigArgs),
    /// Shows autopilot's view of the servers.
    State(HttpArgs),
}

#[derive(Args, Debug)]
pub struct SetConfigArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[arg(long = "cleanup-dead-servers", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub cleanup_dead_servers: Option<bool>,
    #[arg(long = "max-trailing-logs")]
    pub max_trailing_logs: Option<u64>,
    #[arg(long = "min-quorum")]
    pub min_quorum: Option<u64>,
    #[arg(long = "last-contact-threshold")]
    pub last_contact_threshold: Option<String>,
    #[arg(long = "server-stabilization-time")]
    pub server_stabilization_time: Option<String>,
    #[arg(long = "redundancy-zone-tag")]
    pub redundancy_zone_tag: Option<String>,
    #[arg(long = "disable-upgrade-migration", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub disable_upgrade_migration: Option<bool>,
    #[arg(long = "upgrade-version-tag")]
    pub upgrade_version_tag: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RaftCmd {
    /// Lists the Raft peers.
    #[command(name = "list-peers")]
    ListPeers(ListPeersArgs),
    /// Removes a server from the Raft configuration.
    #[command(name = "remove-peer")]
    RemovePeer(RemovePeerArgs),
    /// Hands Raft leadership to another server.
    #[command(name = "transfer-leader")]
    TransferLeader(TransferLeaderArgs),
    /// Recovers a stopped server of a cluster that lost its quorum (run on each survivor).
    Recover(RecoverArgs),
}

#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// The stopped server's data directory.
    #[arg(long = "data-dir")]
    pub data_dir: String,
    /// The servers of the new configuration, `<node-id>@<ip:port>,...` (default: this server).
    #[arg(long)]
    pub peers: Option<String>,
    /// Write the new configuration (without it, only the plan is shown).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub yes: Option<bool>,
}

#[derive(Args, Debug)]
pub struct ListPeersArgs {
    /// (`-stale` is among the HTTP flags.)
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct RemovePeerArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The address to remove from the Raft configuration.
    #[arg(long)]
    pub address: Option<String>,
    /// The ID to remove from the Raft configuration.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Args, Debug)]
pub struct TransferLeaderArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The ID of the node to transfer leadership to.
    #[arg(long)]
    pub id: Option<String>,
}

pub async fn run(cmd: OperatorCmd) -> Result<i32> {
    match cmd {
        OperatorCmd::Raft { cmd: RaftCmd::ListPeers(a) } => list_peers(a).await,
        OperatorCmd::Raft { cmd: RaftCmd::RemovePeer(a) } => remove_peer(a).await,
        OperatorCmd::Raft { cmd: RaftCmd::TransferLeader(a) } => transfer_leader(a).await,
        OperatorCmd::Raft { cmd: RaftCmd::Recover(a) } => recover(a).await,
        OperatorCmd::Autopilot { cmd: AutopilotCmd::GetConfig(h) } => get_config(h).await,
        OperatorCmd::Autopilot { cmd: AutopilotCmd::SetConfig(a) } => set_config(a).await,
        OperatorCmd::Autopilot { cmd: AutopilotCmd::State(h) } => state(h).await,
    }
}

async fn fetch_config(h: &HttpArgs) -> Result<Option<Value>> {
    let q: Vec<(String, String)> = if h.stale { vec![("stale".into(), String::new())] } else { Vec::new() };
    match h.client()?.get_json::<Value>("/v1/operator/autopilot/configuration", &q, None).await {
        Ok((v, _)) => Ok(v),
        Err(e) => {
            eprintln!("Error querying Autopilot configuration: {e}");
            Ok(None)
        }
    }
}

async fn get_config(h: HttpArgs) -> Result<i32> {
    let Some(c) = fetch_config(&h).await? else { return Ok(1) };
    // Consul's layout: `Name = value`, strings quoted only where they may be empty.
    println!("CleanupDeadServers = {}", c["CleanupDeadServers"]);
    println!("LastContactThreshold = {}", c["LastContactThreshold"].as_str().unwrap_or_default());
    println!("MaxTrailingLogs = {}", c["MaxTrailingLogs"]);
    println!("MinQuorum = {}", c["MinQuorum"]);
    println!("ServerStabilizationTime = {}", c["ServerStabilizationTime"].as_str().unwrap_or_default());
    println!("RedundancyZoneTag = {:?}", c["RedundancyZoneTag"].as_str().unwrap_or_default());
    println!("DisableUpgradeMigration = {}", c["DisableUpgradeMigration"]);
    println!("UpgradeVersionTag = {:?}", c["UpgradeVersionTag"].as_str().unwrap_or_default());
    Ok(0)
}

async fn set_config(a: SetConfigArgs) -> Result<i32> {
    let Some(mut c) = fetch_config(&a.http).await? else { return Ok(1) };
    let index = c["ModifyIndex"].as_u64().unwrap_or(0);
    if let Some(v) = a.cleanup_dead_servers {
        c["CleanupDeadServers"] = v.into();
    }
    if let Some(v) = a.max_trailing_logs {
        c["MaxTrailingLogs"] = v.into();
    }
    if let Some(v) = a.min_quorum {
        c["MinQuorum"] = v.into();
    }
    for (flag, field) in
        [(&a.last_contact_threshold, "LastContactThreshold"), (&a.server_stabilization_time, "ServerStabilizationTime")]
    {
        if let Some(v) = flag {
            if let Err(e) = cairn_types::duration::parse(v) {
                eprintln!("invalid value {v:?} for {field}: {e}");
                return Ok(1);
            }
            c[field] = v.clone().into();
        }
    }
    if let Some(v) = &a.redundancy_zone_tag {
        c["RedundancyZoneTag"] = v.clone().into();
    }
    if let Some(v) = a.disable_upgrade_migration {
        c["DisableUpgradeMigration"] = v.into();
    }
    if let Some(v) = &a.upgrade_version_tag {
        c["UpgradeVersionTag"] = v.clone().into();
    }
    let q = vec![("cas".to_string(), index.to_string())];
    match a.http.client()?.put("/v1/operator/autopilot/configuration", &q, Some(serde_json::to_vec(&c)?)).await {
        Ok(Value::Bool(true)) => {
            println!("Configuration updated!");
            Ok(0)
        }
        Ok(_) => {
            println!("Configuration could not be atomically updated, please try again");
            Ok(1)
        }
        Err(e) => {
            eprintln!("Error setting Autopilot configuration: {e}");
            Ok(1)
        }
    }
}

async fn state(h: HttpArgs) -> Result<i32> {
    let v = match h.client()?.get_json::<Value>("/v1/operator/autopilot/state", &[], None).await {
        Ok((Some(v), _)) => v,
        Ok((None, _)) => Value::Null,
        Err(e) => {
            eprintln!("Error querying Autopilot state: {e}");
            return Ok(1);
        }
    };
    println!("Healthy:                      {}", v["Healthy"]);
    println!("Failure Tolerance:            {}", v["FailureTolerance"]);
    println!("Optimistic Failure Tolerance: {}", v["OptimisticFailureTolerance"]);
    println!("Leader:                       {}", v["Leader"].as_str().unwrap_or_default());
    let voters: Vec<&str> = v["Voters"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    println!("Voters:");
    for id in &voters {
        println!("   {id}");
    }
    println!("\nServers:");
    for (id, s) in v["Servers"].as_object().into_iter().flatten() {
        println!("   {id}");
        println!("      Name:            {}", s["Name"].as_str().unwrap_or_default());
        println!("      Address:         {}", s["Address"].as_str().unwrap_or_default());
        println!("      Version:         {}", s["Version"].as_str().unwrap_or_default());
        println!("      Status:          {}", s["Status"].as_str().unwrap_or_default());
        println!("      Node Status:     {}", s["NodeStatus"].as_str().unwrap_or_default());
        println!("      Healthy:         {}", s["Healthy"]);
        println!("      Last Contact:    {}", s["LastContact"].as_str().unwrap_or_default());
        println!("      Last Term:       {}", s["LastTerm"]);
        println!("      Last Index:      {}", s["LastIndex"]);
    }
    Ok(0)
}

async fn list_peers(a: ListPeersArgs) -> Result<i32> {
    let c = a.http.client()?;
    let q: Vec<(String, String)> = if a.http.stale { vec![("stale".into(), String::new())] } else { Vec::new() };
    let v: Value = match c.get_json("/v1/operator/raft/configuration", &q, None).await {
        Ok((Some(v), _)) => v,
        Ok((None, _)) => Value::Null,
        Err(e) => {
            eprintln!("Error getting peers: Failed to retrieve raft configuration: {e}");
            return Ok(1);
        }
    };
    let servers = v["Servers"].as_array().cloned().unwrap_or_default();
    let leader_index = servers.iter().find(|s| s["Leader"] == true).and_then(|s| s["LastIndex"].as_u64());
    let mut rows =
        vec![["Node", "ID", "Address", "State", "Voter", "RaftProtocol", "Commit Index", "Trails Leader By"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()];
    for s in &servers {
        let leader = s["Leader"] == true;
        let last = s["LastIndex"].as_u64().unwrap_or(0);
        let proto = s["ProtocolVersion"].as_str().filter(|p| !p.is_empty()).unwrap_or("<=1");
        let trails = if leader {
            "-".to_string()
        } else {
            // Consul's wording: "1 commit", otherwise "N commits" (0 included).
            let n = leader_index.unwrap_or(last).saturating_sub(last);
            if n == 1 {
                "1 commit".to_string()
            } else {
                format!("{n} commits")
            }
        };
        rows.push(vec![
            s["Node"].as_str().unwrap_or_default().to_string(),
            s["ID"].as_str().unwrap_or_default().to_string(),
            s["Address"].as_str().unwrap_or_default().to_string(),
            if leader { "leader" } else { "follower" }.to_string(),
            s["Voter"].as_bool().unwrap_or(false).to_string(),
            proto.to_string(),
            last.to_string(),
            trails,
        ]);
    }
    print!("{}", columnize(&rows));
    Ok(0)
}

async fn remove_peer(a: RemovePeerArgs) -> Result<i32> {
    let (q, what) = match (&a.address, &a.id) {
        (None, None) => {
            eprintln!("Error removing peer: an address or id is required for the peer to remove");
            return Ok(1);
        }
        (Some(_), Some(_)) => {
            eprintln!("Error removing peer: cannot give both an address and id");
            return Ok(1);
        }
        (Some(addr), None) => (vec![("address".to_string(), addr.clone())], format!("address {addr:?}")),
        (None, Some(id)) => (vec![("id".to_string(), id.clone())], format!("id {id:?}")),
    };
    match a.http.client()?.delete("/v1/operator/raft/peer", &q).await {
        Ok(_) => {
            println!("Removed peer with {what}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("Error removing peer: {e}");
            Ok(1)
        }
    }
}

async fn transfer_leader(a: TransferLeaderArgs) -> Result<i32> {
    let q: Vec<(String, String)> = a.id.iter().map(|id| ("id".to_string(), id.clone())).collect();
    match a.http.client()?.call(Method::POST, "/v1/operator/raft/transfer-leader", &q, None).await {
        Ok(v) if v["Success"] == true => {
            println!("Success");
            Ok(0)
        }
        // Consul's spelling and punctuation.
        Ok(_) => {
            eprintln!("Error transfering leadership: Failed to transfer leadership");
            Ok(1)
        }
        Err(e) => {
            eprintln!("Error transfering leadership: Failed to transfer leadership {e}");
            Ok(1)
        }
    }
}

async fn recover(a: RecoverArgs) -> Result<i32> {
    let dir = std::path::Path::new(&a.data_dir);
    let Ok(node_id) = std::fs::read_to_string(dir.join("node-id")) else {
        eprintln!("Error: no node-id in {}: is this a server's data dir?", dir.display());
        return Ok(1);
    };
    let me = cairn_cluster::raft_id(node_id.trim());
    let raft_dir = dir.join("raft");
    // The current configuration, to show and to find this server's address.
    let probe = match cairn_cluster::recover::plan(&raft_dir, &Default::default()).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error reading the Raft state (is the agent still running?): {e}");
            return Ok(1);
        }
    };
    let peers: std::collections::BTreeMap<u64, String> = match &a.peers {
        Some(list) => {
            let mut m = std::collections::BTreeMap::new();
            for p in list.split(',').filter(|p| !p.is_empty()) {
                let Some((id, addr)) = p.split_once('@') else {
                    eprintln!("Error: peer {p:?} is not <node-id>@<ip:port>");
                    return Ok(1);
                };
                m.insert(cairn_cluster::raft_id(id), addr.to_string());
            }
            m
        }
        None => match probe.current.get(&me) {
            Some(addr) => [(me, addr.clone())].into(),
            None => {
                eprintln!("Error: this server is not in the current configuration; name the new one with -peers");
                return Ok(1);
            }
        },
    };
    let plan = cairn_cluster::recover::Plan { new: peers, ..probe };
    println!("Current configuration (last index {}, term {}):", plan.last_index, plan.term);
    for (id, addr) in &plan.current {
        println!("  {addr}{}", if *id == me { " (this server)" } else { "" });
    }
    println!("New configuration:");
    for addr in plan.new.values() {
        println!("  {addr}");
    }
    let answering = cairn_cluster::recover::reachable(&plan, me).await;
    let quorum = plan.current.len() / 2 + 1;
    // This server is stopped, but it is one of the voters a restart would bring back.
    let alive = answering + usize::from(plan.current.contains_key(&me));
    if alive >= quorum {
        eprintln!(
            "Refusing to recover: {alive} of the {} servers of the current configuration are up or answering, a quorum of {quorum}. Start this server again, or remove failed servers with `cairn operator raft remove-peer`.",
            plan.current.len()
        );
        return Ok(1);
    }
    if !a.yes.unwrap_or(false) {
        println!(
            "{answering} other server(s) answer; a quorum is lost. Run again with -yes to write the new configuration."
        );
        return Ok(0);
    }
    if let Err(e) = cairn_cluster::recover::apply(&raft_dir, me, &plan).await {
        eprintln!("Error writing the new configuration: {e}");
        return Ok(1);
    }
    println!("Recovered: start this server (and the other survivors) to elect a leader among them.");
    Ok(0)
}
