//! `cairn rtt node1 [node2]`: the estimated round-trip time between two nodes from their network
//! coordinates, as `consul rtt` prints it. Without `node2`, the agent's own node.

use anyhow::{anyhow, bail, Result};
use clap::Args;

use super::HttpArgs;

#[derive(Args, Debug)]
pub struct RttArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// WAN coordinates (servers across datacenters) are not available yet.
    #[arg(long)]
    pub wan: bool,
    pub nodes: Vec<String>,
}

pub async fn run(a: RttArgs) -> Result<i32> {
    if a.wan {
        bail!("-wan: WAN coordinates need the WAN pool, which is not implemented yet");
    }
    let (n1, n2) = match a.nodes.as_slice() {
        [n1] => (n1.clone(), None),
        [n1, n2] => (n1.clone(), Some(n2.clone())),
        _ => bail!("One or two node names must be specified"),
    };
    let client = a.http.client()?;
    let n2 = match n2 {
        Some(n) => n,
        None => {
            let me = client.agent_self().await?;
            me["Config"]["NodeName"]
                .as_str()
                .ok_or_else(|| anyhow!("Unable to look up the agent's node name"))?
                .to_string()
        }
    };
    let (coords, _) = client.coordinate_nodes(&a.http.query()).await?;
    let find = |n: &str| {
        coords
            .iter()
            .find(|e| e.node.eq_ignore_ascii_case(n) && e.segment.is_empty())
            .map(|e| e.coord.clone())
            .ok_or_else(|| anyhow!("Could not find a coordinate for node {n:?}"))
    };
    let (c1, c2) = (find(&n1)?, find(&n2)?);
    let secs = c1.distance_to(&c2).ok_or_else(|| anyhow!("Coordinates of {n1:?} and {n2:?} are not compatible"))?;
    println!("Estimated {n1} <-> {n2} rtt: {:.3} ms (using LAN coordinates)", secs * 1000.0);
    Ok(0)
}
