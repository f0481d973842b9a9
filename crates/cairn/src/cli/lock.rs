//! `cairn lock`: runs a command while holding a lock (or one of `-n` semaphore slots) under a KV
//! prefix, as `consul lock` does. Layout as Consul's: a lock is the key `<prefix>/.lock` acquired
//! with a session; a semaphore is one contender key `<prefix>/<session>` per contender plus
//! `<prefix>/.lock` holding `{"Limit": N, "Holders": {...}}`, updated with check-and-set.
//! The child sees `CONSUL_LOCK_HELD=true`; if the lock is lost it gets SIGTERM, then SIGKILL 5 s later.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use super::HttpArgs;
use crate::api::{kv_path, Client, QueryOptions};

/// Consul's flag values marking a key as a lock or a semaphore (so the two are not mixed up).
const LOCK_FLAG: u64 = 0x2ddc_cbc0_58a5_0c18;
const SEMAPHORE_FLAG: u64 = 0xe0f6_9a2b_aa41_4de0;
const SESSION_TTL: Duration = Duration::from_secs(15);
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Number of holders allowed (more than 1 makes a semaphore).
    #[arg(short = 'n', long = "n", default_value_t = 1)]
    pub n: u32,
    /// Session name.
    #[arg(long)]
    pub name: Option<String>,
    /// Give up acquiring after this long (e.g. 30s); 0 waits forever.
    #[arg(long, default_value = "0s")]
    pub timeout: String,
    /// Retries of the lock monitor on errors before the lock counts as lost.
    #[arg(long = "monitor-retry", default_value_t = 3)]
    pub monitor_retry: u32,
    /// Exit with the child's exit code.
    #[arg(long = "child-exit-code")]
    pub child_exit_code: bool,
    /// Run the command through a shell.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub shell: bool,
    /// Pass stdin to the child.
    #[arg(long = "pass-stdin")]
    pub pass_stdin: bool,
    /// Deprecated alias of -timeout, as in Consul.
    #[arg(long = "try")]
    pub try_: Option<String>,
    /// Say what happens at each step.
    #[arg(long)]
    pub verbose: bool,
    /// KV prefix of the lock.
    pub prefix: String,
    /// The command (and its arguments).
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub async fn run(a: LockArgs) -> Result<i32> {
    let c = a.http.client()?;
    if a.n == 0 {
        bail!("Lock holder limit must be positive");
    }
    let t = a.try_.as_deref().unwrap_or(&a.timeout);
    let timeout = cairn_types::duration::parse(t).map_err(|e| anyhow!("invalid value {t:?} for flag -timeout: {e}"))?;
    let prefix = a.prefix.trim_matches('/').to_string();
    let say = |m: &str| {
        if a.verbose {
            println!("{m}");
        }
    };
    if a.n == 1 {
        say(&format!("Setting up lock at path: {prefix}/.lock"));
    } else {
        say(&format!("Setting up semaphore (limit {}) at prefix: {prefix}", a.n));
    }
    let name = a.name.clone().unwrap_or_else(|| format!("Consul lock for '{}' at '{}'", a.command.join(" "), prefix));
    // As Consul's api.Lock and api.Semaphore: a semaphore's contender key goes with its session.
    let behavior = if a.n == 1 { "release" } else { "delete" };
    let body = json!({"Name": name, "TTL": cairn_types::duration::format(SESSION_TTL), "Behavior": behavior});
    let sess = c.put("/v1/session/create", &[], Some(body.to_string().into_bytes())).await?;
    let sid = sess["ID"].as_str().ok_or_else(|| anyhow!("no session ID in {sess}"))?.to_string();
    let renewer = tokio::spawn(renew_loop(c.clone(), sid.clone()));

    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    say("Attempting lock acquisition");
    let acquired = if a.n == 1 {
        acquire_lock(&c, &prefix, &sid, deadline).await
    } else {
        acquire_semaphore(&c, &prefix, &sid, a.n, deadline).await
    };
    let code = match acquired {
        Ok(true) => hold(&a, &c, &prefix, &sid).await,
        Ok(false) => {
            eprintln!("Shutdown triggered or timeout during lock acquisition");
            Ok(1)
        }
        Err(e) => Err(anyhow!("Lock acquisition failed: {e}")),
    };
    renewer.abort();
    // Clean up whatever happened: release (keeping the lock's flags, as Consul's Unlock does),
    // destroy the session, then remove the keys if no other holder is left (Consul's Destroy), so
    // a later lock on this prefix, by Cairn or by a Consul client, finds nothing in its way.
    if a.n == 1 {
        let q = [("release".to_string(), sid.clone()), ("flags".to_string(), LOCK_FLAG.to_string())];
        let _ = c.put(&kv_path(&format!("{prefix}/.lock")), &q, Some(Vec::new())).await;
    } else {
        let _ = release_semaphore(&c, &prefix, &sid).await;
    }
    let _ = c.put(&format!("/v1/session/destroy/{sid}"), &[], None).await;
    match destroy(&c, &prefix, a.n).await {
        Ok(true) => say("Cleanup succeeded"),
        Ok(false) => say("Cleanup aborted, lock in use"),
        Err(e) => {
            eprintln!("Lock cleanup failed: {e}");
            return Ok(1);
        }
    }
    code
}

/// Consul's `Lock.Destroy` / `Semaphore.Destroy`: deletes the lock key (check-and-set) when no one
/// holds it. `Ok(false)`: someone still does, and the key stays.
async fn destroy(c: &Client, prefix: &str, n: u32) -> Result<bool> {
    let key = format!("{prefix}/.lock");
    if n == 1 {
        let (cur, _) = c.kv_get(&key, &QueryOptions::default()).await?;
        let Some(e) = cur else { return Ok(true) };
        if e.flags != LOCK_FLAG {
            bail!("Existing key does not match lock use");
        }
        if !e.session.is_empty() {
            return Ok(false);
        }
        return c.kv_delete(&key, false, Some(e.modify_index)).await;
    }
    let (st, _) = sem_state(c, prefix).await?;
    if st.index == 0 {
        return Ok(true);
    }
    if !st.holders.is_empty() {
        return Ok(false);
    }
    c.kv_delete(&key, false, Some(st.index)).await
}

async fn renew_loop(c: Client, sid: String) {
    loop {
        tokio::time::sleep(SESSION_TTL / 2).await;
        if c.put(&format!("/v1/session/renew/{sid}"), &[], None).await.is_err() {
            // The monitor notices the lost lock; keep trying in case it was a transient error.
            continue;
        }
    }
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.map(|d| Instant::now() >= d).unwrap_or(false)
}

/// Blocks on `key` (or the prefix, recursively) until its index passes `index` or `max` elapses.
async fn wait_change(c: &Client, path: &str, recurse: bool, index: u64, max: Duration) -> u64 {
    let q = QueryOptions { index, wait: Some(max), ..Default::default() };
    let extra: Vec<(String, String)> = if recurse { vec![("recurse".into(), String::new())] } else { vec![] };
    match c.get_json::<Value>(path, &extra, Some(&q)).await {
        Ok((_, m)) => m.index,
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            index
        }
    }
}

async fn acquire_lock(c: &Client, prefix: &str, sid: &str, deadline: Option<Instant>) -> Result<bool> {
    let key = format!("{prefix}/.lock");
    let path = kv_path(&key);
    let mut index = 0;
    loop {
        if past(deadline) {
            return Ok(false);
        }
        let (cur, meta) = c.kv_get(&key, &QueryOptions::default()).await?;
        if let Some(e) = &cur {
            if e.flags != LOCK_FLAG && e.flags != 0 {
                bail!("Existing key does not match lock use");
            }
        }
        if cur.as_ref().map(|e| e.session.is_empty()).unwrap_or(true) {
            let ok = c
                .put(
                    &path,
                    &[("acquire".into(), sid.into()), ("flags".into(), LOCK_FLAG.to_string())],
                    Some(Vec::new()),
                )
                .await?;
            if ok == Value::Bool(true) {
                return Ok(true);
            }
            // Free but not acquirable: lock-delay after an invalidated holder. Retry shortly.
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        let wait = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(15))
            .min(Duration::from_secs(15));
        index = wait_change(c, &path, false, meta.index.max(index), wait).await;
    }
}

#[derive(Default)]
struct SemState {
    limit: u32,
    holders: BTreeMap<String, bool>,
    index: u64,
}

/// Reads `.lock` and the contender keys, dropping holders whose contender key no session holds.
async fn sem_state(c: &Client, prefix: &str) -> Result<(SemState, u64)> {
    let (entries, meta) = c.kv_list(&format!("{prefix}/"), &QueryOptions::default()).await?;
    let mut st = SemState::default();
    let mut live = Vec::new();
    for e in &entries {
        let rest = &e.key[prefix.len() + 1..];
        if rest == ".lock" {
            if e.flags != SEMAPHORE_FLAG && e.flags != 0 {
                bail!("Existing key does not match semaphore use");
            }
            let v: Value = serde_json::from_slice(e.value.as_deref().unwrap_or(b"{}")).unwrap_or(json!({}));
            st.limit = v["Limit"].as_u64().unwrap_or(0) as u32;
            if let Some(h) = v["Holders"].as_object() {
                st.holders = h.keys().map(|k| (k.clone(), true)).collect();
            }
            st.index = e.modify_index;
        } else if !e.session.is_empty() {
            live.push(e.session.clone());
        }
    }
    st.holders.retain(|s, _| live.contains(s));
    Ok((st, meta.index))
}

async fn write_sem(c: &Client, prefix: &str, st: &SemState, limit: u32) -> Result<bool> {
    let body = json!({"Limit": limit, "Holders": st.holders});
    let q = vec![("cas".to_string(), st.index.to_string()), ("flags".into(), SEMAPHORE_FLAG.to_string())];
    Ok(c.put(&kv_path(&format!("{prefix}/.lock")), &q, Some(body.to_string().into_bytes())).await? == Value::Bool(true))
}

async fn acquire_semaphore(c: &Client, prefix: &str, sid: &str, n: u32, deadline: Option<Instant>) -> Result<bool> {
    let contender = kv_path(&format!("{prefix}/{sid}"));
    let ok = c
        .put(
            &contender,
            &[("acquire".into(), sid.into()), ("flags".into(), SEMAPHORE_FLAG.to_string())],
            Some(Vec::new()),
        )
        .await?;
    if ok != Value::Bool(true) {
        bail!("failed to create the contender key");
    }
    loop {
        if past(deadline) {
            return Ok(false);
        }
        let (mut st, index) = sem_state(c, prefix).await?;
        if st.limit != 0 && st.limit != n {
            bail!("Semaphore limit conflict (lock: {}, local: {n})", st.limit);
        }
        if (st.holders.len() as u32) < n {
            st.holders.insert(sid.to_string(), true);
            if write_sem(c, prefix, &st, n).await? {
                return Ok(true);
            }
            continue; // lost the race for .lock: re-read
        }
        let wait = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(15))
            .min(Duration::from_secs(15));
        wait_change(c, &kv_path(&format!("{prefix}/")), true, index, wait).await;
    }
}

async fn release_semaphore(c: &Client, prefix: &str, sid: &str) -> Result<()> {
    for _ in 0..10 {
        let (mut st, _) = sem_state(c, prefix).await?;
        if st.holders.remove(sid).is_none() {
            break;
        }
        let limit = st.limit;
        if write_sem(c, prefix, &st, limit).await? {
            break;
        }
    }
    c.kv_delete(&format!("{prefix}/{sid}"), false, None).await?;
    Ok(())
}

/// Whether we still hold: the lock key's session, or our place among the semaphore's holders.
async fn still_held(c: &Client, prefix: &str, sid: &str, n: u32) -> Result<bool> {
    if n == 1 {
        let (e, _) = c.kv_get(&format!("{prefix}/.lock"), &QueryOptions::default()).await?;
        return Ok(e.map(|e| e.session == sid).unwrap_or(false));
    }
    let (st, _) = sem_state(c, prefix).await?;
    Ok(st.holders.contains_key(sid))
}

async fn hold(a: &LockArgs, c: &Client, prefix: &str, sid: &str) -> Result<i32> {
    let mut cmd = if a.shell {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(a.command.join(" "));
        c
    } else {
        let mut c = tokio::process::Command::new(&a.command[0]);
        c.args(&a.command[1..]);
        c
    };
    cmd.env("CONSUL_LOCK_HELD", "true");
    // Its own process group, so that stopping it also stops what it started (`sh -c` children).
    cmd.process_group(0);
    if !a.pass_stdin {
        cmd.stdin(std::process::Stdio::null());
    }
    if a.verbose {
        println!("Starting handler");
    }
    let mut child = cmd.spawn().with_context(|| format!("Error starting handler {:?}", a.command))?;
    let watch_path = if a.n == 1 { kv_path(&format!("{prefix}/.lock")) } else { kv_path(&format!("{prefix}/")) };
    let mut index = 0;
    let mut errors = 0;
    // The child has its own process group, so signals to us must be passed on.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let q = QueryOptions { index, wait: Some(Duration::from_secs(10)), ..Default::default() };
        let extra: Vec<(String, String)> = if a.n == 1 { vec![] } else { vec![("recurse".into(), String::new())] };
        let watch = c.get_json::<Value>(&watch_path, &extra, Some(&q));
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                if a.verbose {
                    println!("Child terminated, releasing lock");
                }
                if status.success() {
                    return Ok(0);
                }
                // Go's exec error text; Consul exits 2 for it only with -child-exit-code.
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(c), _) => eprintln!("Error running handler: exit status {c}"),
                    (None, Some(9)) => eprintln!("Error running handler: signal: killed"),
                    (None, sig) => eprintln!("Error running handler: signal: {}", sig.unwrap_or(0)),
                }
                return Ok(if a.child_exit_code { 2 } else { 0 });
            }
            _ = tokio::signal::ctrl_c() => {
                terminate(&mut child).await;
                return Ok(1);
            }
            _ = term.recv() => {
                terminate(&mut child).await;
                return Ok(1);
            }
            r = watch => {
                match r {
                    Ok((_, m)) => index = m.index,
                    Err(_) => {
                        errors += 1;
                        if errors <= a.monitor_retry {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                let held = if errors > a.monitor_retry { false } else { still_held(c, prefix, sid, a.n).await.unwrap_or(false) };
                if !held {
                    eprintln!("Lock lost, killing child");
                    terminate(&mut child).await;
                    return Ok(1);
                }
            }
        }
    }
}

/// SIGTERM to the child's process group, then SIGKILL after the grace period.
async fn terminate(child: &mut tokio::process::Child) {
    let Some(pid) = child.id() else { return };
    let group = -(pid as i32);
    // SAFETY: kill(2) on the process group of our own child.
    unsafe {
        libc::kill(group, libc::SIGTERM);
    }
    if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
        // SAFETY: as above.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = child.wait().await;
    }
}
