//! Watches: a blocking-query loop over one view (`key`, `keyprefix`, `services`, `nodes`, `service`,
//! `checks`, `event`) that hands each real change to a handler: a script (JSON on stdin, `CONSUL_INDEX` in
//! its environment) or an HTTP endpoint. Used by `cairn watch` and by `watches` in agent config;
//! like Consul's, they are clients of an agent's HTTP API.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Key(String),
    KeyPrefix(String),
    Services,
    Nodes,
    Service {
        name: String,
        tags: Vec<String>,
        passing_only: bool,
    },
    Checks {
        service: Option<String>,
        state: Option<String>,
    },
    /// User events, optionally of one name. The handler gets the events that arrived since its
    /// last call (all the agent holds on the first).
    Event {
        name: Option<String>,
    },
}

/// What to do on a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// Print the JSON and exit (the CLI without a handler).
    Print,
    Script(Vec<String>),
    Http {
        path: String,
        method: String,
        header: BTreeMap<String, Vec<String>>,
        timeout: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub view: View,
    pub handler: Handler,
    pub datacenter: Option<String>,
    pub stale: bool,
}

impl View {
    /// The HTTP path and query of the view's read.
    pub fn request(&self) -> (String, Vec<(String, String)>) {
        let kv = |k: &str| format!("/v1/kv/{}", k.trim_start_matches('/'));
        match self {
            View::Key(k) => (kv(k), vec![]),
            View::KeyPrefix(p) => (kv(p), vec![("recurse".into(), String::new())]),
            View::Services => ("/v1/catalog/services".into(), vec![]),
            View::Nodes => ("/v1/catalog/nodes".into(), vec![]),
            View::Service { name, tags, passing_only } => {
                let mut q: Vec<(String, String)> = tags.iter().map(|t| ("tag".to_string(), t.clone())).collect();
                if *passing_only {
                    q.push(("passing".into(), String::new()));
                }
                (format!("/v1/health/service/{name}"), q)
            }
            View::Checks { service: Some(s), .. } => (format!("/v1/health/checks/{s}"), vec![]),
            View::Checks { service: None, state } => {
                (format!("/v1/health/state/{}", state.as_deref().unwrap_or("any")), vec![])
            }
            View::Event { name } => {
                ("/v1/event/list".into(), name.iter().map(|n| ("name".to_string(), n.clone())).collect())
            }
        }
    }

    /// A missing key reads as `null`, and an empty prefix as `[]`, rather than an error.
    fn empty(&self) -> Value {
        match self {
            View::Key(_) => Value::Null,
            _ => Value::Array(vec![]),
        }
    }
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string).filter(|x| !x.is_empty())
}

/// Parses a watch definition in Consul's config shape (`type`, `key`, `prefix`, `service`, `tag`,
/// `passingonly`, `state`, `handler_type`, `args`, `http_handler_config`, `datacenter`, `stale`).
pub fn parse(v: &Value) -> Result<Plan, String> {
    let kind = s(v, "type").ok_or("watch: missing type")?;
    let view = match kind.as_str() {
        "key" => View::Key(s(v, "key").ok_or("watch: key type requires key")?),
        "keyprefix" => View::KeyPrefix(s(v, "prefix").ok_or("watch: keyprefix type requires prefix")?),
        "services" => View::Services,
        "nodes" => View::Nodes,
        "service" => View::Service {
            name: s(v, "service").ok_or("watch: service type requires service")?,
            tags: match v.get("tag") {
                Some(Value::String(t)) => vec![t.clone()],
                Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                _ => vec![],
            },
            passing_only: v.get("passingonly").and_then(Value::as_bool).unwrap_or(false),
        },
        "checks" => View::Checks { service: s(v, "service"), state: s(v, "state") },
        "event" => View::Event { name: s(v, "name") },
        other => return Err(format!("watch: unsupported type {other:?}")),
    };
    let handler = match s(v, "handler_type").as_deref().unwrap_or("script") {
        "script" => {
            let args: Vec<String> = match (v.get("args"), s(v, "handler")) {
                (Some(Value::Array(a)), _) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                (_, Some(h)) => vec!["/bin/sh".into(), "-c".into(), h],
                _ => return Err("watch: script handler requires args".into()),
            };
            if args.is_empty() {
                return Err("watch: script handler requires args".into());
            }
            Handler::Script(args)
        }
        "http" => {
            let c = v.get("http_handler_config").cloned().unwrap_or(Value::Null);
            let c = match c {
                Value::Array(mut a) if !a.is_empty() => a.remove(0),
                o => o,
            };
            let path = s(&c, "path").ok_or("watch: http handler requires http_handler_config.path")?;
            let header = c
                .get("header")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_array()
                                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                                    .unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let timeout = s(&c, "timeout")
                .map(|t| cairn_types::duration::parse(&t))
                .transpose()?
                .unwrap_or(Duration::from_secs(10));
            Handler::Http {
                path,
                method: s(&c, "method").unwrap_or_else(|| "POST".into()).to_uppercase(),
                header,
                timeout,
            }
        }
        other => return Err(format!("watch: unsupported handler_type {other:?}")),
    };
    Ok(Plan {
        view,
        handler,
        datacenter: s(v, "datacenter"),
        stale: v.get("stale").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Reads the view once: (index, JSON).
pub async fn fetch(
    http: &reqwest::Client,
    base: &str,
    plan: &Plan,
    index: u64,
    wait: Duration,
) -> Result<(u64, Value), String> {
    let (path, mut q) = plan.view.request();
    if index > 0 {
        q.push(("index".into(), index.to_string()));
        q.push(("wait".into(), format!("{}ms", wait.as_millis())));
    }
    if let Some(dc) = &plan.datacenter {
        q.push(("dc".into(), dc.clone()));
    }
    if plan.stale {
        q.push(("stale".into(), String::new()));
    }
    let mut url = format!("{base}{path}");
    if !q.is_empty() {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &q {
            ser.append_pair(k, v);
        }
        url.push('?');
        url.push_str(&ser.finish());
    }
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    let idx =
        resp.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let status = resp.status();
    if status.as_u16() == 404 {
        return Ok((idx, plan.view.empty()));
    }
    if !status.is_success() {
        return Err(format!("{status}: {}", resp.text().await.unwrap_or_default()));
    }
    let mut v: Value = resp.json().await.map_err(|e| e.to_string())?;
    if let (View::Key(_), Value::Array(a)) = (&plan.view, &mut v) {
        // A key watch hands over the entry itself, not a list of one.
        v = a.pop().unwrap_or(Value::Null);
    }
    Ok((idx, v))
}

/// The events after the one whose index is `seen` (all of them when it is no longer listed).
fn new_events(list: &Value, seen: u64) -> Value {
    let Value::Array(evs) = list else { return list.clone() };
    let pos = evs
        .iter()
        .position(|e| e["ID"].as_str().is_some_and(|id| cairn_cluster::gossip::user_events::id_to_index(id) == seen));
    Value::Array(match pos {
        Some(p) => evs[p + 1..].to_vec(),
        None => evs.clone(),
    })
}

/// Runs the handler once for a change.
pub async fn invoke(http: &reqwest::Client, handler: &Handler, index: u64, data: &Value) -> Result<(), String> {
    match handler {
        Handler::Print => {
            println!("{}", serde_json::to_string_pretty(data).unwrap_or_default());
            Ok(())
        }
        Handler::Script(args) => {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new(&args[0])
                .args(&args[1..])
                .env("CONSUL_INDEX", index.to_string())
                .stdin(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("failed to run handler {:?}: {e}", args[0]))?;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(data.to_string().as_bytes()).await;
            }
            let st = child.wait().await.map_err(|e| e.to_string())?;
            if !st.success() {
                // Go's exec error text, which Consul prints.
                use std::os::unix::process::ExitStatusExt;
                return Err(match (st.code(), st.signal()) {
                    (Some(c), _) => format!("exit status {c}"),
                    (None, Some(9)) => "signal: killed".into(),
                    (None, Some(s)) => format!("signal: {s}"),
                    (None, None) => st.to_string(),
                });
            }
            Ok(())
        }
        Handler::Http { path, method, header, timeout } => {
            let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
            let mut req = http
                .request(m, path)
                .timeout(*timeout)
                .header("X-Consul-Index", index.to_string())
                .body(data.to_string());
            for (k, vals) in header {
                for v in vals {
                    req = req.header(k.as_str(), v.as_str());
                }
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("http handler answered {}", resp.status()));
            }
            Ok(())
        }
    }
}

/// Watches until `stop` resolves: each change (new index and new content) goes to the handler;
/// errors back off exponentially up to 30 s. The first read always fires.
/// With `stop_on_handler_error` (the CLI's `consul watch`), a failing handler ends the watch with
/// its error; otherwise (the agent's configured watches) it is logged and the watch goes on.
pub async fn run(
    http: reqwest::Client,
    base: String,
    plan: Plan,
    stop_on_handler_error: bool,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    tokio::pin!(stop);
    let mut index = 0u64;
    let mut last: Option<Value> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let step = async {
            match fetch(&http, &base, &plan, index, Duration::from_secs(300)).await {
                Ok((idx, data)) => {
                    backoff = Duration::from_millis(100);
                    let prev = index;
                    index = match plan.view {
                        // The event list's index identifies the newest event; it is not ordered.
                        View::Event { .. } => idx,
                        // The index may go backwards (a restore): start over, as Consul clients must.
                        _ if idx < index => 0,
                        _ => idx,
                    };
                    if last.as_ref() != Some(&data) {
                        let out = match plan.view {
                            View::Event { .. } if last.is_some() => new_events(&data, prev),
                            _ => data.clone(),
                        };
                        let nothing_new = matches!(&out, Value::Array(a) if a.is_empty()) && last.is_some();
                        last = Some(data);
                        if !nothing_new {
                            if let Err(e) = invoke(&http, &plan.handler, idx, &out).await {
                                if stop_on_handler_error {
                                    return Err(e);
                                }
                                tracing::warn!(target: "agent.watch", error = %e, "watch handler failed");
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "agent.watch", error = %e, "watch query failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            Ok(())
        };
        tokio::select! {
            r = step => r?,
            _ = &mut stop => return Ok(()),
        }
    }
}
