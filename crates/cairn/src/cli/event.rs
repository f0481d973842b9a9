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
    let filters: Vec<(&str, &str)> =
        [("node", &a.node), ("service", &a.service), ("tag", &a.tag), ("dc", &a.http.datacenter)]
            .into_iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
            .collect();
    let ev = client.event_fire(&name, a.payload.as_deref().map(str::as_bytes), &filters).await?;
    println!("Event ID: {}", ev.id);
    Ok(0)
}
