//! `cairn kv get|put|delete|export|import`, with Consul's flags and output.

use std::io::Read;

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::HttpArgs;
use crate::api::DirEntry;

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Reads a value, or lists keys or entries under a prefix.
    Get(GetArgs),
    /// Writes a value.
    Put(PutArgs),
    /// Deletes a key or a prefix.
    Delete(DeleteArgs),
    /// Exports a prefix as JSON.
    Export(ExportArgs),
    /// Imports JSON produced by export.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[arg(long)]
    pub recurse: bool,
    #[arg(long)]
    pub keys: bool,
    /// The separator for -keys (default `/`; with -recurse, none unless given).
    #[arg(long)]
    pub separator: Option<String>,
    #[arg(long)]
    pub detailed: bool,
    #[arg(long)]
    pub base64: bool,
    pub key: Option<String>,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Check-and-set: write only if the key's ModifyIndex is -modify-index (0: only if absent).
    #[arg(long)]
    pub cas: bool,
    #[arg(long = "modify-index")]
    pub modify_index: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub flags: u64,
    /// Acquire the key's lock for -session.
    #[arg(long)]
    pub acquire: bool,
    /// Release the key's lock held by -session.
    #[arg(long)]
    pub release: bool,
    /// The session for -acquire or -release.
    #[arg(long)]
    pub session: Option<String>,
    /// The data is base64-encoded.
    #[arg(long)]
    pub base64: bool,
    pub key: String,
    /// The value, `@file`, or `-` for stdin. Empty if omitted.
    #[arg(allow_hyphen_values = true)]
    pub data: Option<String>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[arg(long)]
    pub recurse: bool,
    #[arg(long)]
    pub cas: bool,
    #[arg(long = "modify-index")]
    pub modify_index: Option<u64>,
    pub key: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    pub prefix: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Prepended to every imported key.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// JSON, `@file`, or `-` for stdin.
    #[arg(allow_hyphen_values = true)]
    pub data: Option<String>,
}

/// The export format (`consul kv export`): lowercase keys, base64 values.
#[derive(Serialize, Deserialize, Debug)]
struct Exported {
    key: String,
    flags: u64,
    value: String,
}

pub async fn run(cmd: KvCmd) -> Result<i32> {
    match cmd {
        KvCmd::Get(a) => get(a).await,
        KvCmd::Put(a) => put(a).await,
        KvCmd::Delete(a) => delete(a).await,
        KvCmd::Export(a) => export(a).await,
        KvCmd::Import(a) => import(a).await,
    }
}

fn show_value(v: &Option<Vec<u8>>, b64: bool) -> String {
    let v = v.clone().unwrap_or_default();
    if b64 {
        base64::engine::general_purpose::STANDARD.encode(v)
    } else {
        String::from_utf8_lossy(&v).into_owned()
    }
}

fn detailed(e: &DirEntry, b64: bool) -> String {
    let session = if e.session.is_empty() { "-".to_string() } else { e.session.clone() };
    let rows = [
        ("CreateIndex", e.create_index.to_string()),
        ("Flags", e.flags.to_string()),
        ("Key", e.key.clone()),
        ("LockIndex", e.lock_index.to_string()),
        ("ModifyIndex", e.modify_index.to_string()),
        ("Session", session),
        ("Value", show_value(&e.value, b64)),
    ];
    // Consul prints these through Go's tabwriter with a padding of 6: the label column is the
    // longest label plus six spaces wide.
    let w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 6;
    rows.iter().map(|(l, v)| format!("{l:<w$}{v}\n")).collect()
}

async fn get(a: GetArgs) -> Result<i32> {
    let c = a.http.client()?;
    let q = a.http.query();
    let key = a.key.clone().unwrap_or_default();
    if a.keys {
        let sep = match (&a.separator, a.recurse) {
            (Some(s), _) => s.as_str(),
            (None, true) => "",
            (None, false) => "/",
        };
        let (keys, _) = c.kv_keys(&key, sep, &q).await?;
        for k in keys {
            println!("{k}");
        }
        return Ok(0);
    }
    if a.recurse {
        let (entries, _) = c.kv_list(&key, &q).await?;
        for (i, e) in entries.iter().enumerate() {
            if a.detailed {
                if i > 0 {
                    println!();
                }
                print!("{}", detailed(e, a.base64));
            } else {
                println!("{}:{}", e.key, show_value(&e.value, a.base64));
            }
        }
        return Ok(0);
    }
    if key.is_empty() {
        bail!("Missing KEY argument");
    }
    match c.kv_get(&key, &q).await? {
        (Some(e), _) => {
            if a.detailed {
                print!("{}", detailed(&e, a.base64));
            } else {
                println!("{}", show_value(&e.value, a.base64));
            }
            Ok(0)
        }
        (None, _) => {
            eprintln!("Error! No key exists at: {key}");
            Ok(1)
        }
    }
}

/// A value argument: literal, `@file`, or `-` for stdin.
fn read_data(d: Option<&str>) -> Result<Vec<u8>> {
    match d {
        None => Ok(Vec::new()),
        Some("-") => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).context("reading stdin")?;
            Ok(b)
        }
        Some(s) if s.starts_with('@') => {
            std::fs::read(&s[1..]).with_context(|| format!("Failed to read file {:?}", &s[1..]))
        }
        Some(s) => Ok(s.as_bytes().to_vec()),
    }
}

async fn put(a: PutArgs) -> Result<i32> {
    let c = a.http.client()?;
    let mut data = read_data(a.data.as_deref())?;
    if a.base64 {
        data = base64::engine::general_purpose::STANDARD
            .decode(String::from_utf8_lossy(&data).trim())
            .context("Failed to base64 decode data")?;
    }
    let session = a.session.clone().unwrap_or_default();
    if (a.acquire || a.release) && session.is_empty() {
        bail!("Missing -session (required with -acquire and -release)");
    }
    // Consul's precedence: -cas, then -acquire, then -release.
    if !a.cas && (a.acquire || a.release) {
        let ok = c.kv_lock(&a.key, &data, a.flags, &session, !a.acquire).await?;
        return Ok(match (a.acquire, ok) {
            (true, true) => {
                println!("Success! Lock acquired on: {}", a.key);
                0
            }
            (true, false) => {
                eprintln!("Error! Did not acquire lock");
                1
            }
            (false, true) => {
                println!("Success! Lock released on: {}", a.key);
                0
            }
            (false, false) => {
                eprintln!("Error! Did not release lock");
                1
            }
        });
    }
    let cas = cas_index(a.cas, a.modify_index)?;
    if c.kv_put(&a.key, &data, a.flags, cas).await? {
        println!("Success! Data written to: {}", a.key);
        Ok(0)
    } else {
        eprintln!("Error! Did not write to {}: CAS failed", a.key);
        Ok(1)
    }
}

/// `-cas` needs `-modify-index`: the index to check, or none for a plain write.
fn cas_index(cas: bool, modify_index: Option<u64>) -> Result<Option<u64>> {
    match (cas, modify_index) {
        (false, _) => Ok(None),
        (true, Some(i)) => Ok(Some(i)),
        (true, None) => bail!("Must specify -modify-index with -cas!"),
    }
}

async fn delete(a: DeleteArgs) -> Result<i32> {
    let c = a.http.client()?;
    // Consul strips one leading slash and checks in this order.
    let key = a.key.clone().unwrap_or_default();
    let key = key.strip_prefix('/').unwrap_or(&key).to_string();
    if key.is_empty() && !a.recurse {
        bail!("Missing KEY argument");
    }
    let modify_index = a.modify_index.unwrap_or(0);
    if a.cas && modify_index == 0 {
        bail!("Cannot delete a key that does not exist. Provide a -modify-index greater than than 0.");
    }
    if modify_index != 0 && !a.cas {
        bail!("Cannot specify -modify-index without -cas!");
    }
    if a.cas && a.recurse {
        bail!("Cannot specify both -cas and -recurse!");
    }
    let cas = a.cas.then_some(modify_index);
    if !c.kv_delete(&key, a.recurse, cas).await? {
        eprintln!("Error! Did not delete key {key}: CAS failed");
        return Ok(1);
    }
    if a.recurse {
        println!("Success! Deleted keys with prefix: {key}");
    } else {
        println!("Success! Deleted key: {key}");
    }
    Ok(0)
}

async fn export(a: ExportArgs) -> Result<i32> {
    let c = a.http.client()?;
    let (entries, _) = c.kv_list(a.prefix.as_deref().unwrap_or(""), &a.http.query()).await?;
    let out: Vec<Exported> = entries
        .iter()
        .map(|e| Exported {
            key: e.key.clone(),
            flags: e.flags,
            value: base64::engine::general_purpose::STANDARD.encode(e.value.clone().unwrap_or_default()),
        })
        .collect();
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    out.serialize(&mut ser)?;
    println!("{}", String::from_utf8_lossy(&buf));
    Ok(0)
}

async fn import(a: ImportArgs) -> Result<i32> {
    let Some(arg) = a.data.as_deref() else { bail!("Missing DATA argument") };
    if arg.is_empty() {
        bail!("Empty DATA argument");
    }
    let c = a.http.client()?;
    let data = read_data(Some(arg))?;
    let entries: Vec<Exported> = serde_json::from_slice(&data).context("Cannot unmarshal data")?;
    for e in entries {
        let value = base64::engine::general_purpose::STANDARD
            .decode(&e.value)
            .with_context(|| format!("Cannot base 64 decode value of key {}", e.key))?;
        let key = format!("{}{}", a.prefix, e.key);
        c.kv_put(&key, &value, e.flags, None)
            .await
            .with_context(|| format!("Error! Failed writing data for key {key}"))?;
        println!("Imported: {key}");
    }
    Ok(0)
}
