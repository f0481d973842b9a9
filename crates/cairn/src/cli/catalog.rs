//! `cairn catalog datacenters|nodes|services` and `cairn services register|deregister`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{columnize, HttpArgs};

#[derive(Subcommand, Debug)]
pub enum CatalogCmd {
    /// Lists known datacenters.
    Datacenters(HttpArgs),
    /// Lists nodes.
    Nodes(NodesArgs),
    /// Lists services.
    Services(ServicesArgs),
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[arg(long)]
    pub detailed: bool,
    /// Only nodes providing this service.
    #[arg(long)]
    pub service: Option<String>,
    /// A filter expression, `@file` to read it from a file, or `-` for stdin.
    #[arg(long)]
    pub filter: Option<String>,
    /// Sort by round-trip time from this node (`_agent`: this agent).
    #[arg(long)]
    pub near: Option<String>,
    /// Only nodes with this `key=value` metadata (repeatable).
    #[arg(long = "node-meta")]
    pub node_meta: Vec<String>,
}

/// Consul's `LoadDataSource`: a literal, `@file`, or `-` for stdin.
fn data_source(v: &str) -> Result<String> {
    use std::io::Read;
    match v {
        "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| anyhow::anyhow!("Failed to read stdin: {e}"))?;
            Ok(s)
        }
        f if f.starts_with('@') => {
            std::fs::read_to_string(&f[1..]).map_err(|e| anyhow::anyhow!("Failed to read file: {e}"))
        }
        lit => Ok(lit.to_string()),
    }
}

#[derive(Args, Debug)]
pub struct ServicesArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Only services on this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Show tags.
    #[arg(long)]
    pub tags: bool,
}

pub async fn run_catalog(cmd: CatalogCmd) -> Result<i32> {
    match cmd {
        CatalogCmd::Datacenters(h) => {
            for dc in h.client()?.catalog_datacenters().await? {
                println!("{dc}");
            }
            Ok(0)
        }
        CatalogCmd::Nodes(a) => nodes(a).await,
        CatalogCmd::Services(a) => services(a).await,
    }
}

async fn nodes(a: NodesArgs) -> Result<i32> {
    let c = a.http.client()?;
    let mut q = a.http.query();
    q.filter = match &a.filter {
        None => None,
        Some(f) => Some(data_source(f).map_err(|e| anyhow::anyhow!("Could not process filter argument: {e}"))?),
    };
    q.near = a.near.clone();
    for kv in &a.node_meta {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("invalid value {kv:?} for flag -node-meta: Missing \"=\" value in argument: {kv}");
        };
        q.node_meta.push((k.to_string(), v.to_string()));
    }
    let mut nodes = c.catalog_nodes(&q).await?.0;
    if let Some(svc) = &a.service {
        let names: Vec<String> =
            c.catalog_service(svc, None, &a.http.query()).await?.0.into_iter().map(|s| s.node).collect();
        nodes.retain(|n| names.contains(&n.node));
    }
    if nodes.is_empty() {
        eprintln!("No nodes match the given query - try expanding your search.");
        return Ok(0);
    }
    let mut rows = vec![];
    if a.detailed {
        rows.push(vec![
            "Node".into(),
            "ID".into(),
            "Address".into(),
            "DC".into(),
            "TaggedAddresses".into(),
            "Meta".into(),
        ]);
    } else {
        rows.push(vec!["Node".into(), "ID".into(), "Address".into(), "DC".into()]);
    }
    for n in nodes {
        let id = if a.detailed { n.id.clone() } else { n.id.chars().take(8).collect() };
        let mut row = vec![n.node.clone(), id, n.address.clone(), n.datacenter.clone()];
        if a.detailed {
            let kv =
                |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
            row.push(kv(&n.tagged_addresses));
            row.push(kv(&n.meta));
        }
        rows.push(row);
    }
    print!("{}", columnize(&rows));
    Ok(0)
}

async fn services(a: ServicesArgs) -> Result<i32> {
    let c = a.http.client()?;
    let services: BTreeMap<String, Vec<String>> = match &a.node {
        Some(node) => {
            let (v, _) = c
                .get_json::<Value>(&format!("/v1/catalog/node/{}", crate::api::seg(node)), &[], Some(&a.http.query()))
                .await?;
            let mut m = BTreeMap::new();
            if let Some(svcs) = v.as_ref().and_then(|v| v.get("Services")).and_then(Value::as_object) {
                for s in svcs.values() {
                    let name = s["Service"].as_str().unwrap_or_default().to_string();
                    let tags: Vec<String> = s["Tags"]
                        .as_array()
                        .map(|t| t.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    m.entry(name).or_insert_with(Vec::new).extend(tags);
                }
            }
            m
        }
        None => c.catalog_services(&a.http.query()).await?.0,
    };
    if services.is_empty() {
        eprintln!("No services match the given query - try expanding your search.");
        return Ok(0);
    }
    if a.tags {
        let rows: Vec<Vec<String>> = services.iter().map(|(k, t)| vec![k.clone(), t.join(",")]).collect();
        print!("{}", columnize(&rows));
    } else {
        for k in services.keys() {
            println!("{k}");
        }
    }
    Ok(0)
}

#[derive(Subcommand, Debug)]
pub enum ServicesCmd {
    /// Registers a service with the local agent, from flags or from definition files.
    Register(RegisterArgs),
    /// Deregisters a service from the local agent.
    Deregister(DeregisterArgs),
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub address: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long)]
    pub tag: Vec<String>,
    /// key=value
    #[arg(long)]
    pub meta: Vec<String>,
    /// Service definition files (HCL or JSON), each with `service {}` or `services []`.
    pub files: Vec<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct DeregisterArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[arg(long)]
    pub id: Option<String>,
    pub files: Vec<std::path::PathBuf>,
}

/// The service definitions in one file.
fn defs_from_file(p: &std::path::Path) -> Result<Vec<Value>> {
    let v = cairn_agent::config::read_file(p, None)?;
    let mut out = Vec::new();
    // Every form Consul documents: `service` or `services`, an object or a list of them, in any
    // case (`{"Service": {...}}`, `Services [...]`, HCL `service { }` blocks).
    for (k, val) in v.as_object().into_iter().flatten() {
        if !k.eq_ignore_ascii_case("service") && !k.eq_ignore_ascii_case("services") {
            continue;
        }
        match val {
            Value::Array(a) => out.extend(a.iter().cloned()),
            o @ Value::Object(_) => out.push(o.clone()),
            _ => bail!("{}: {k} must be an object or a list of objects", p.display()),
        }
    }
    if out.is_empty() {
        bail!("{}: no service definitions found", p.display());
    }
    Ok(out.into_iter().map(cairn_types::normalize::normalize).collect())
}

pub async fn run_services(cmd: ServicesCmd) -> Result<i32> {
    match cmd {
        ServicesCmd::Register(a) => {
            let c = a.http.client()?;
            let defs = if a.files.is_empty() {
                let Some(name) = &a.name else {
                    bail!("Service name must be specified with the -name flag or a definition file")
                };
                let mut meta = serde_json::Map::new();
                for kv in &a.meta {
                    let Some((k, v)) = kv.split_once('=') else { bail!("Invalid -meta {kv:?}: want key=value") };
                    meta.insert(k.into(), json!(v));
                }
                vec![json!({
                    "Name": name,
                    "ID": a.id.clone().unwrap_or_default(),
                    "Address": a.address.clone().unwrap_or_default(),
                    "Port": a.port.unwrap_or(0),
                    "Tags": a.tag,
                    "Meta": meta,
                })]
            } else {
                let mut v = Vec::new();
                for f in &a.files {
                    v.extend(defs_from_file(f)?);
                }
                // -tag on the command line adds to each definition's own tags.
                for d in &mut v {
                    if a.tag.is_empty() {
                        continue;
                    }
                    let mut tags: Vec<Value> = d.get("Tags").and_then(Value::as_array).cloned().unwrap_or_default();
                    tags.extend(a.tag.iter().map(|t| json!(t)));
                    d["Tags"] = Value::Array(tags);
                }
                v
            };
            for d in defs {
                c.agent_service_register(&d).await?;
                println!("Registered service: {}", d["Name"].as_str().unwrap_or_default());
            }
            Ok(0)
        }
        ServicesCmd::Deregister(a) => {
            let c = a.http.client()?;
            let ids: Vec<String> = match (&a.id, a.files.is_empty()) {
                (Some(id), true) => vec![id.clone()],
                (None, false) => {
                    let mut ids = Vec::new();
                    for f in &a.files {
                        for d in defs_from_file(f)? {
                            let id =
                                d["ID"].as_str().filter(|s| !s.is_empty()).or(d["Name"].as_str()).unwrap_or_default();
                            ids.push(id.to_string());
                        }
                    }
                    ids
                }
                _ => bail!("Either -id or definition files must be given, not both"),
            };
            for id in ids {
                c.agent_service_deregister(&id).await?;
                println!("Deregistered service: {id}");
            }
            Ok(0)
        }
    }
}
