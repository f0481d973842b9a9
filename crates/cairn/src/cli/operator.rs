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
    }
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
