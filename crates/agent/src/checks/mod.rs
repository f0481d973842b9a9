//! Health checks: parsing Consul check definitions and one runner per check kind (TTL, HTTP, TCP,
//! script). Runners report through [`LocalState::update_check`]; anti-entropy carries results to
//! the catalog.
//!
//! gRPC, H2PING, UDP, Docker and alias checks are accepted and stored but not run yet: they are
//! reported with a critical status saying so, rather than silently passing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use cairn_types::duration;
use cairn_types::structs::{HealthCheck, HEALTH_CRITICAL, HEALTH_PASSING, HEALTH_WARNING};

use crate::local::LocalState;

/// Consul truncates check output to 4 KiB by default.
pub const OUTPUT_MAX: usize = 4096;
/// The shortest interval a runner uses (Consul: 1s minimum for most checks).
const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CheckKind {
    /// No runner: status changes only through the API (e.g. maintenance checks).
    #[default]
    Manual,
    Ttl(Duration),
    Http {
        url: String,
        method: String,
        header: Vec<(String, String)>,
        body: String,
        tls_skip_verify: bool,
    },
    Tcp(String),
    Script(Vec<String>),
    /// Known to Consul, not run by Cairn yet (gRPC, H2PING, UDP, Docker, alias, OS service).
    Unsupported(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckDef {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub deregister_critical_after: Option<Duration>,
    pub output_max: usize,
}

fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

fn str_of(v: &Value, k: &str) -> String {
    get(v, k).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn dur_of(v: &Value, k: &str) -> Result<Option<Duration>, String> {
    match get(v, k) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => duration::parse(s).map(Some).map_err(|e| format!("Invalid {k}: {e}")),
        Some(Value::Number(n)) => {
            n.as_u64().map(|n| Some(Duration::from_nanos(n))).ok_or_else(|| format!("Invalid {k}"))
        }
        Some(_) => Err(format!("Invalid {k}: expected a duration string")),
    }
}

/// Parses a (normalised, PascalCase) check definition into the catalog row and the runner's def.
/// `service_id` binds it to a service; `default_id` is used when the body has no ID.
pub fn parse_check(
    v: &Value,
    node: &str,
    default_id: &str,
    default_name: &str,
    script_ok: bool,
) -> Result<(HealthCheck, CheckDef), String> {
    if !v.is_object() {
        return Err("check definition must be an object".into());
    }
    let mut id = str_of(v, "CheckID");
    if id.is_empty() {
        id = str_of(v, "ID");
    }
    let mut name = str_of(v, "Name");
    if name.is_empty() {
        name = default_name.to_string();
    }
    if id.is_empty() {
        id = if default_id.is_empty() { name.clone() } else { default_id.to_string() };
    }
    if name.is_empty() {
        return Err("Missing check name".into());
    }
    let interval = dur_of(v, "Interval")?;
    let timeout = dur_of(v, "Timeout")?.unwrap_or(Duration::from_secs(10));
    let ttl = dur_of(v, "TTL")?;
    let mut args: Vec<String> = match get(v, "Args").or_else(|| get(v, "ScriptArgs")) {
        Some(Value::Array(a)) => {
            a.iter().map(|x| x.as_str().map(str::to_string).ok_or("Args must be strings")).collect::<Result<_, _>>()?
        }
        Some(_) => return Err("Args must be a list of strings".into()),
        None => Vec::new(),
    };
    if args.is_empty() {
        if let Some(s) = get(v, "Script").and_then(Value::as_str) {
            args = vec!["/bin/sh".into(), "-c".into(), s.into()];
        }
    }
    let http = str_of(v, "HTTP");
    let tcp = str_of(v, "TCP");
    let need_interval = |what: &str| -> Result<Duration, String> {
        match interval {
            Some(i) if !i.is_zero() => Ok(i.max(MIN_INTERVAL)),
            _ => Err(format!("Interval must be > 0 for {what} checks")),
        }
    };
    let (kind, check_type, interval) = if let Some(t) = ttl {
        if t.is_zero() {
            return Err("TTL must be > 0 for TTL checks".into());
        }
        (CheckKind::Ttl(t), "ttl", Duration::ZERO)
    } else if !http.is_empty() {
        let i = need_interval("HTTP")?;
        let header = match get(v, "Header") {
            Some(Value::Object(o)) => o
                .iter()
                .flat_map(|(k, vals)| match vals {
                    Value::Array(a) => {
                        a.iter().filter_map(|x| x.as_str()).map(|x| (k.clone(), x.to_string())).collect::<Vec<_>>()
                    }
                    Value::String(s) => vec![(k.clone(), s.clone())],
                    _ => vec![],
                })
                .collect(),
            _ => Vec::new(),
        };
        let method = match str_of(v, "Method") {
            m if m.is_empty() => "GET".to_string(),
            m => m.to_uppercase(),
        };
        let tls_skip_verify = get(v, "TLSSkipVerify").and_then(Value::as_bool).unwrap_or(false);
        (CheckKind::Http { url: http, method, header, body: str_of(v, "Body"), tls_skip_verify }, "http", i)
    } else if !tcp.is_empty() {
        (CheckKind::Tcp(tcp), "tcp", need_interval("TCP")?)
    } else if !args.is_empty() {
        if !script_ok {
            return Err("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true".into());
        }
        (CheckKind::Script(args), "script", need_interval("script")?)
    } else if !str_of(v, "GRPC").is_empty() {
        (CheckKind::Unsupported("grpc"), "grpc", need_interval("gRPC")?)
    } else if !str_of(v, "H2PING").is_empty() {
        (CheckKind::Unsupported("h2ping"), "h2ping", need_interval("H2PING")?)
    } else if !str_of(v, "UDP").is_empty() {
        (CheckKind::Unsupported("udp"), "udp", need_interval("UDP")?)
    } else if !str_of(v, "DockerContainerID").is_empty() {
        (CheckKind::Unsupported("docker"), "docker", need_interval("Docker")?)
    } else if !str_of(v, "AliasNode").is_empty() || !str_of(v, "AliasService").is_empty() {
        (CheckKind::Unsupported("alias"), "alias", Duration::ZERO)
    } else {
        return Err(
            "Must provide TTL or Script/DockerContainerID/HTTP/H2PING/TCP/UDP/GRPC/AliasNode/AliasService and Interval"
                .into(),
        );
    };
    let mut status = str_of(v, "Status");
    if status.is_empty() {
        status = HEALTH_CRITICAL.into();
    }
    if !cairn_types::structs::valid_status(&status) {
        return Err(format!("Invalid initial status {status:?}: must be passing, warning or critical"));
    }
    let dca = dur_of(v, "DeregisterCriticalServiceAfter")?;
    let output_max =
        get(v, "OutputMaxSize").and_then(Value::as_u64).map(|n| n as usize).filter(|n| *n > 0).unwrap_or(OUTPUT_MAX);
    let check = HealthCheck {
        node: node.to_string(),
        check_id: id,
        name,
        status,
        notes: str_of(v, "Notes"),
        output: String::new(),
        service_id: str_of(v, "ServiceID"),
        check_type: check_type.into(),
        interval: if interval.is_zero() { String::new() } else { duration::format(interval) },
        timeout: if matches!(kind, CheckKind::Ttl(_)) { String::new() } else { duration::format(timeout) },
        definition: serde_json::json!({}),
        ..Default::default()
    };
    Ok((check, CheckDef { kind, interval, timeout, deregister_critical_after: dca, output_max }))
}

/// A running check: its task, and for TTL checks the heartbeat channel that resets the timer.
type Running = (JoinHandle<()>, Option<watch::Sender<u64>>);

/// Runs checks in background tasks, one per check.
#[derive(Default)]
pub struct CheckRunner {
    tasks: Mutex<HashMap<String, Running>>,
}

impl CheckRunner {
    /// Starts (or restarts) the runner for a check.
    pub fn start(&self, local: &Arc<LocalState>, id: &str, def: &CheckDef) {
        self.stop(id);
        let local = local.clone();
        let id_s = id.to_string();
        let (task, ttl_tx) = match def.kind.clone() {
            CheckKind::Manual => return,
            CheckKind::Ttl(ttl) => {
                let (tx, rx) = watch::channel(0u64);
                (tokio::spawn(run_ttl(local, id_s, ttl, rx)), Some(tx))
            }
            CheckKind::Unsupported(kind) => {
                local.update_check(id, HEALTH_CRITICAL, &format!("{kind} checks are not supported by this agent yet"));
                return;
            }
            _ => (tokio::spawn(run_periodic(local, id_s, def.clone())), None),
        };
        self.tasks.lock().expect("checks").insert(id.to_string(), (task, ttl_tx));
    }

    pub fn stop(&self, id: &str) {
        if let Some((t, _)) = self.tasks.lock().expect("checks").remove(id) {
            t.abort();
        }
    }

    /// A TTL heartbeat: restarts the TTL timer. False if `id` is not a running TTL check.
    pub fn ttl_heartbeat(&self, id: &str) -> bool {
        match self.tasks.lock().expect("checks").get(id) {
            Some((_, Some(tx))) => {
                tx.send_modify(|v| *v += 1);
                true
            }
            _ => false,
        }
    }

    pub fn stop_all(&self) {
        for (_, (t, _)) in self.tasks.lock().expect("checks").drain() {
            t.abort();
        }
    }
}

async fn run_ttl(local: Arc<LocalState>, id: String, ttl: Duration, mut beats: watch::Receiver<u64>) {
    loop {
        match tokio::time::timeout(ttl, beats.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return,
            Err(_) => {
                let out = match local.check(&id) {
                    Some(c) if !c.check.output.is_empty() && c.check.status != HEALTH_CRITICAL => {
                        format!("TTL expired (last output before timeout follows): {}", c.check.output)
                    }
                    _ => "TTL expired".to_string(),
                };
                local.update_check(&id, HEALTH_CRITICAL, &out);
                // Stay critical until the next heartbeat.
                if beats.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn run_periodic(local: Arc<LocalState>, id: String, def: CheckDef) {
    // Spread first runs so that many checks registered together do not fire together.
    let stagger = Duration::from_millis(rand::random::<u64>() % (def.interval.as_millis() as u64).clamp(1, 1000));
    tokio::time::sleep(stagger).await;
    let client = match &def.kind {
        CheckKind::Http { tls_skip_verify, .. } => {
            reqwest::Client::builder().timeout(def.timeout).danger_accept_invalid_certs(*tls_skip_verify).build().ok()
        }
        _ => None,
    };
    loop {
        let (status, output) = match &def.kind {
            CheckKind::Http { url, method, header, body, .. } => {
                http_check(client.as_ref(), url, method, header, body, def.output_max).await
            }
            CheckKind::Tcp(addr) => tcp_check(addr, def.timeout).await,
            CheckKind::Script(args) => script_check(args, def.timeout, def.output_max).await,
            _ => return,
        };
        if !local.update_check(&id, status, &output) {
            return;
        }
        tokio::time::sleep(def.interval).await;
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

async fn http_check(
    client: Option<&reqwest::Client>,
    url: &str,
    method: &str,
    header: &[(String, String)],
    body: &str,
    max: usize,
) -> (&'static str, String) {
    let Some(client) = client else { return (HEALTH_CRITICAL, "HTTP client unavailable".into()) };
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return (HEALTH_CRITICAL, format!("invalid HTTP method {method:?}"));
    };
    let mut req = client.request(m, url);
    for (k, v) in header {
        req = req.header(k.as_str(), v.as_str());
    }
    if !body.is_empty() {
        req = req.body(body.to_string());
    }
    match req.send().await {
        Err(e) => (HEALTH_CRITICAL, format!("{method} {url}: {e}")),
        Ok(resp) => {
            let code = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let out = truncate(
                format!(
                    "HTTP {method} {url}: {} {} Output: {text}",
                    code.as_u16(),
                    code.canonical_reason().unwrap_or("")
                ),
                max,
            );
            // Consul: 2xx passing, 429 Too Many Requests warning, anything else critical.
            let status = if code.is_success() {
                HEALTH_PASSING
            } else if code.as_u16() == 429 {
                HEALTH_WARNING
            } else {
                HEALTH_CRITICAL
            };
            (status, out)
        }
    }
}

async fn tcp_check(addr: &str, timeout: Duration) -> (&'static str, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (HEALTH_PASSING, format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => (HEALTH_CRITICAL, format!("dial tcp {addr}: {e}")),
        Err(_) => (HEALTH_CRITICAL, format!("dial tcp {addr}: i/o timeout")),
    }
}

async fn script_check(args: &[String], timeout: Duration, max: usize) -> (&'static str, String) {
    let mut cmd = tokio::process::Command::new(&args[0]);
    cmd.args(&args[1..]).kill_on_drop(true).stdin(std::process::Stdio::null());
    match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => (HEALTH_CRITICAL, format!("Timed out ({}) running check", duration::format(timeout))),
        Ok(Err(e)) => (HEALTH_CRITICAL, format!("Failed to run {:?}: {e}", args[0])),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            // Consul: exit 0 passing, 1 warning, anything else critical.
            let status = match out.status.code() {
                Some(0) => HEALTH_PASSING,
                Some(1) => HEALTH_WARNING,
                _ => HEALTH_CRITICAL,
            };
            (status, truncate(text, max))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_kinds_and_validates() {
        let (c, d) = parse_check(&json!({"Name": "t", "TTL": "15s"}), "n", "", "", false).unwrap();
        assert_eq!(c.check_type, "ttl");
        assert_eq!(c.status, "critical");
        assert_eq!(d.kind, CheckKind::Ttl(Duration::from_secs(15)));
        let (c, _) =
            parse_check(&json!({"Name": "h", "HTTP": "http://x/", "Interval": "10s"}), "n", "", "", false).unwrap();
        assert_eq!((c.check_type.as_str(), c.interval.as_str(), c.timeout.as_str()), ("http", "10s", "10s"));
        assert!(parse_check(&json!({"Name": "h", "HTTP": "http://x/"}), "n", "", "", false)
            .unwrap_err()
            .contains("Interval"));
        assert!(parse_check(&json!({"Name": "s", "Args": ["true"], "Interval": "1s"}), "n", "", "", false)
            .unwrap_err()
            .contains("Scripts are disabled"));
        assert!(parse_check(&json!({"Name": "x"}), "n", "", "", false).is_err());
        assert!(parse_check(&json!({"Name": "x", "TTL": "bogus"}), "n", "", "", false).is_err());
        assert!(parse_check(&json!({"Name": "x", "TTL": "5s", "Status": "great"}), "n", "", "", false).is_err());
        let (c, _) = parse_check(&json!({"TTL": "5s"}), "n", "service:web", "Service 'web' check", false).unwrap();
        assert_eq!((c.check_id.as_str(), c.name.as_str()), ("service:web", "Service 'web' check"));
    }
}
