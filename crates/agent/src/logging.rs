//! Logs to stderr through `tracing`, at the configured level, as text or JSON (`-log-json`).
//! The level can change at runtime (`/v1/agent/reload`).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static RELOAD: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Consul's level names to tracing's.
fn directive(level: &str) -> String {
    let l = match level {
        "err" | "error" => "error",
        "warn" => "warn",
        "debug" => "debug",
        "trace" => "trace",
        _ => "info",
    };
    // openraft and hickory (a line per DNS request) are chatty at debug: keep them quieter unless
    // tracing everything.
    if l == "trace" {
        l.to_string()
    } else {
        format!("{l},openraft=warn,hickory_server=warn,hickory_net=warn")
    }
}

/// Installs the global subscriber once; later calls only change the level.
pub fn init(level: &str, json: bool) {
    if let Some(h) = RELOAD.get() {
        let _ = h.modify(|f| *f = EnvFilter::new(directive(level)));
        return;
    }
    let (filter, handle) = reload::Layer::new(EnvFilter::new(directive(level)));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(true);
    let res = if json {
        tracing_subscriber::registry().with(filter).with(fmt.json()).try_init()
    } else {
        tracing_subscriber::registry().with(filter).with(fmt).try_init()
    };
    if res.is_ok() {
        let _ = RELOAD.set(handle);
    }
}
