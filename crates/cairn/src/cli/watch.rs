//! `cairn watch`: watches a view and runs a handler on every change, or prints the current value and
//! exits when no handler is given (as `consul watch` does).

use anyhow::{anyhow, Result};
use clap::Args;
use serde_json::json;

use cairn_agent::watches::{self, Handler};

use super::HttpArgs;

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// key, keyprefix, services, nodes, service, checks or event.
    #[arg(long = "type")]
    pub kind: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub prefix: Option<String>,
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long)]
    pub tag: Vec<String>,
    /// `true` or `false` (a string flag in Consul: `-passingonly true` works).
    #[arg(long)]
    pub passingonly: Option<String>,
    #[arg(long)]
    pub state: Option<String>,
    /// Event name (event watches).
    #[arg(long)]
    pub name: Option<String>,
    /// Run the handler through a shell.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub shell: bool,
    /// The handler command; none prints the value once and exits.
    #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub handler: Vec<String>,
}

pub async fn run(a: WatchArgs) -> Result<i32> {
    let Some(kind) = a.kind.clone().filter(|k| !k.is_empty()) else {
        eprintln!("Watch type must be specified");
        return Ok(1);
    };
    let passing = match a.passingonly.as_deref() {
        None | Some("") => false,
        Some(v) => super::goflag::go_bool(v).ok_or_else(|| {
            anyhow!("Failed to parse passingonly flag: strconv.ParseBool: parsing {v:?}: invalid syntax")
        })?,
    };
    let mut def = json!({ "type": kind, "stale": a.http.stale, "passingonly": passing, "tag": a.tag });
    for (k, v) in [
        ("key", &a.key),
        ("prefix", &a.prefix),
        ("service", &a.service),
        ("state", &a.state),
        ("name", &a.name),
        ("datacenter", &a.http.datacenter),
    ] {
        if let Some(v) = v {
            def[k] = json!(v);
        }
    }
    let args: Vec<String> = if a.shell && !a.handler.is_empty() {
        vec!["/bin/sh".into(), "-c".into(), a.handler.join(" ")]
    } else {
        a.handler.clone()
    };
    def["args"] = if args.is_empty() { json!(["true"]) } else { json!(args) };
    let mut plan = watches::parse(&def).map_err(|e| anyhow!(e))?;
    let client = a.http.client()?;
    let base = client.base().to_string();
    if a.handler.is_empty() {
        plan.handler = Handler::Print;
        let http = client.http();
        let (idx, data) = watches::fetch(http, &base, &plan, 0, std::time::Duration::ZERO)
            .await
            .map_err(|e| anyhow!("Error querying Consul agent: {e}"))?;
        watches::invoke(http, &plan.handler, idx, &data).await.map_err(|e| anyhow!(e))?;
        return Ok(0);
    }
    let stop = super::interrupted();
    if let Err(e) = watches::run(client.http().clone(), base, plan, true, stop).await {
        eprintln!("Error executing handler: {e}");
        return Ok(1);
    }
    Ok(0)
}
