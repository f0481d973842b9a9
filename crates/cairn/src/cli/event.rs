//! `cairn event`: fires a user event, as `consul event` does.

use anyhow::{bail, Result};
use clap::Args;

use super::HttpArgs;

#[derive(Args, Debug)]
pub struct EventArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The event's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Regular expression: only nodes whose name matches receive it.
    #[arg(long)]
    pub node: Option<String>,
    /// Regular expression: only nodes with a matching service receive it.
    #[arg(long)]
    pub service: Option<String>,
    /// Regular expression on the tags of the matching service (needs -service).
    #[arg(long)]
    pub tag: Option<String>,
    /// The payload (optional).
    #[arg(num_args = 0..=1)]
    pub payload: Option<String>,
}

pub async fn run(a: EventArgs) -> Result<i32> {
    let Some(name) = a.name.filter(|n| !n.is_empty()) else {
        bail!("Event name must be specified");
    };
    if a.tag.is_some() && a.service.is_none() {
        bail!("Cannot provide tag filter without service filter.");
    }
    let client = a.http.client()?;
    let mut q = Vec::new();
    for (k, v) in [("node", &a.node), ("service", &a.service), ("tag", &a.tag), ("dc", &a.http.datacenter)] {
        if let Some(v) = v {
            q.push((k.to_string(), v.clone()));
        }
    }
    let path = format!("/v1/event/fire/{}", crate::api::seg(&name));
    let v = client.put(&path, &q, a.payload.map(String::into_bytes)).await?;
    println!("Event ID: {}", v["ID"].as_str().unwrap_or_default());
    Ok(0)
}
