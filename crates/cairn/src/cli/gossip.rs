//! `cairn join`, `cairn force-leave` and `cairn keyring`, with Consul's flags, messages and exit
//! codes (docs/consul-facts/gossip.md §5).

use anyhow::Result;
use clap::Args;
use reqwest::Method;
use serde_json::json;

use super::HttpArgs;

#[derive(Args, Debug)]
pub struct JoinArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Joins the WAN pool (servers only).
    #[arg(long)]
    pub wan: bool,
    pub addrs: Vec<String>,
}

pub async fn join(a: JoinArgs) -> Result<i32> {
    if a.addrs.is_empty() {
        eprintln!("At least one address to join must be specified.");
        return Ok(1);
    }
    let c = a.http.client()?;
    let mut ok = 0;
    for addr in &a.addrs {
        match c.agent_join(addr, a.wan).await {
            Ok(()) => ok += 1,
            Err(e) => eprintln!("Error joining address '{addr}': {e}"),
        }
    }
    if ok == 0 {
        eprintln!("Failed to join any nodes.");
        return Ok(1);
    }
    // Consul counts the addresses that answered, not the nodes Serf synced with.
    println!("Successfully joined cluster by contacting {ok} nodes.");
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ForceLeaveArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Removes the node from the member list at once instead of leaving it as `left`.
    #[arg(long)]
    pub prune: bool,
    /// Acts on the WAN pool (the node as `<node>.<dc>`).
    #[arg(long)]
    pub wan: bool,
    pub node: Vec<String>,
}

pub async fn force_leave(a: ForceLeaveArgs) -> Result<i32> {
    if a.node.len() != 1 {
        eprintln!("A single node name must be specified to force leave.\n");
        return Ok(1);
    }
    if let Err(e) = a.http.client()?.agent_force_leave(&a.node[0], a.prune, a.wan).await {
        eprintln!("Error force leaving: {e}");
        return Ok(1);
    }
    // Consul prints nothing on success.
    Ok(0)
}

#[derive(Args, Debug)]
pub struct KeyringArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[arg(long)]
    pub install: Option<String>,
    #[arg(long = "use")]
    pub use_key: Option<String>,
    #[arg(long)]
    pub remove: Option<String>,
    #[arg(long)]
    pub list: bool,
    #[arg(long = "list-primary")]
    pub list_primary: bool,
    #[arg(long = "relay-factor", default_value_t = 0)]
    pub relay_factor: i64,
    #[arg(long = "local-only")]
    pub local_only: bool,
}

pub async fn keyring(a: KeyringArgs) -> Result<i32> {
    let actions = [a.install.is_some(), a.use_key.is_some(), a.remove.is_some(), a.list, a.list_primary]
        .iter()
        .filter(|x| **x)
        .count();
    if actions == 0 {
        eprintln!("Usage: cairn keyring [options]\n\n  Manages the gossip encryption keyring: -install, -use, -remove, -list or -list-primary.");
        return Ok(1);
    }
    if actions > 1 {
        eprintln!("Only a single action is allowed");
        return Ok(1);
    }
    if !(0..=5).contains(&a.relay_factor) {
        eprintln!("Error parsing relay factor: Relay factor must be in range: [0, 5]");
        return Ok(1);
    }
    if a.local_only && !a.list {
        eprintln!("Error validating local-only: local-only can only be set for list requests");
        return Ok(1);
    }
    let c = a.http.client()?;
    let mut q = vec![("relay-factor".to_string(), a.relay_factor.to_string())];
    if a.local_only {
        q.push(("local-only".into(), "true".into()));
    }
    let (method, key, msg) = if let Some(k) = &a.install {
        (Method::POST, Some(k), "Installing new gossip encryption key...")
    } else if let Some(k) = &a.use_key {
        (Method::PUT, Some(k), "Changing primary gossip encryption key...")
    } else if let Some(k) = &a.remove {
        (Method::DELETE, Some(k), "Removing gossip encryption key...")
    } else if a.list_primary {
        (Method::GET, None, "Gathering installed primary encryption keys...")
    } else {
        (Method::GET, None, "Gathering installed encryption keys...")
    };
    println!("==> {msg}");
    let body = key.map(|k| serde_json::to_vec(&json!({ "Key": k }))).transpose()?;
    let r = match c.call(method.clone(), "/v1/operator/keyring", &q, body).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    if method != Method::GET {
        return Ok(0);
    }
    for pool in r.as_array().into_iter().flatten() {
        let name = if pool["WAN"].as_bool().unwrap_or(false) {
            "WAN".to_string()
        } else {
            format!("{} (LAN)", pool["Datacenter"].as_str().unwrap_or_default())
        };
        println!("\n{name}:");
        for (node, m) in pool["Messages"].as_object().into_iter().flatten() {
            println!("  ===> {node}: {}", m.as_str().unwrap_or_default());
        }
        let n = pool["NumNodes"].as_i64().unwrap_or(0);
        let keys = if a.list_primary { &pool["PrimaryKeys"] } else { &pool["Keys"] };
        for (k, count) in keys.as_object().into_iter().flatten() {
            println!("  {k} [{}/{n}]", count.as_i64().unwrap_or(0));
        }
    }
    Ok(0)
}
