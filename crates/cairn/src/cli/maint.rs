//! `cairn maint` and `cairn monitor`: an agent's maintenance mode and its log stream, as
//! `consul maint` and `consul monitor`.

use anyhow::{anyhow, bail, Result};
use clap::Args;

use super::HttpArgs;
use cairn_types::structs::{NODE_MAINT_CHECK_ID, SERVICE_MAINT_PREFIX};

#[derive(Args, Debug)]
pub struct MaintArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Enable maintenance mode.
    #[arg(long)]
    pub enable: bool,
    /// Disable maintenance mode.
    #[arg(long)]
    pub disable: bool,
    /// Why (shown in the maintenance check's notes).
    #[arg(long)]
    pub reason: Option<String>,
    /// A service ID instead of the whole node.
    #[arg(long)]
    pub service: Option<String>,
}

pub async fn maint(a: MaintArgs) -> Result<i32> {
    if a.enable && a.disable {
        bail!("Only one of -enable or -disable may be provided");
    }
    let reason = a.reason.clone().unwrap_or_default();
    if !a.enable && !reason.is_empty() {
        bail!("Reason may only be provided with -enable");
    }
    if !a.enable && !a.disable && a.service.is_some() {
        bail!("Service requires either -enable or -disable");
    }
    let c = a.http.client()?;
    if !a.enable && !a.disable {
        // List what is in maintenance, as Consul's blocks.
        let node = c.agent_self().await.map_err(|e| anyhow!("Error querying Consul agent: {e}"))?;
        let node = node["Config"]["NodeName"].as_str().unwrap_or_default().to_string();
        let checks = c.agent_checks().await.map_err(|e| anyhow!("Error getting checks: {e}"))?;
        for (id, ch) in &checks {
            if id == NODE_MAINT_CHECK_ID {
                println!("Node:\n  Name:   {node}\n  Reason: {}\n", ch.notes);
            } else if let Some(svc) = id.strip_prefix(SERVICE_MAINT_PREFIX) {
                println!("Service:\n  ID:     {svc}\n  Reason: {}\n", ch.notes);
            }
        }
        return Ok(0);
    }
    let (verb, done) = if a.enable { ("enabling", "enabled") } else { ("disabling", "disabled") };
    match &a.service {
        None => {
            c.agent_maintenance(a.enable, &reason).await.map_err(|e| anyhow!("Error {verb} node maintenance: {e}"))?;
            println!("Node maintenance is now {done}");
        }
        Some(id) => {
            c.agent_service_maintenance(id, a.enable, &reason)
                .await
                .map_err(|e| anyhow!("Error {verb} service maintenance: {e}"))?;
            println!("Service maintenance is now {done} for {id:?}");
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// trace, debug, info, warn or err.
    #[arg(long = "log-level", default_value = "INFO")]
    pub log_level: String,
    /// Lines as JSON.
    #[arg(long = "log-json")]
    pub log_json: bool,
}

pub async fn monitor(a: MonitorArgs) -> Result<i32> {
    use std::io::Write;
    let c = a.http.client()?;
    let mut resp =
        c.agent_monitor(&a.log_level, a.log_json).await.map_err(|e| anyhow!("Error starting monitor: {e}"))?;
    let stop = super::interrupted();
    tokio::pin!(stop);
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = &mut stop => return Ok(0),
        };
        match chunk {
            Ok(Some(b)) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&b);
                let _ = out.flush();
            }
            Ok(None) | Err(_) => {
                eprintln!(
                    "\nRemote side ended the monitor! This usually means that the\nremote side has exited or crashed."
                );
                return Ok(1);
            }
        }
    }
}
