//! Starting and stopping real agents. Every wait is a poll with a deadline; nothing sleeps to
//! synchronise.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// A free loopback port (bound and released; good enough on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Agent {
    pub child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Agent {
    /// `cairn agent -dev` on a free HTTP port, node `e2e`, plus `extra` flags.
    pub fn dev(extra: &[&str]) -> Agent {
        let mut args = vec!["-dev", "-node=e2e"];
        args.extend_from_slice(extra);
        Agent::start(&args)
    }

    /// Starts `cairn agent <args>` with a free HTTP port and other listeners off; waits for a leader.
    pub fn start(args: &[&str]) -> Agent {
        let a = Agent::spawn(args, free_port());
        a.wait_ready();
        a
    }

    pub fn spawn(args: &[&str], port: u16) -> Agent {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("agent.log");
        let f = std::fs::File::create(&log).unwrap();
        // DNS is off unless a test asks for it (many agents run at once; 8600 is shared).
        let dns_off = if args.iter().any(|a| a.starts_with("-dns-port")) { None } else { Some("-dns-port=-1") };
        // Gossip is off too unless the test gives the pool's port.
        let off = |flag: &str| (!args.iter().any(|a| a.starts_with(flag))).then(|| format!("{flag}=-1"));
        let child = Command::new(BIN)
            .arg("agent")
            .args(args)
            .arg(format!("-http-port={port}"))
            .args(dns_off)
            .arg("-grpc-port=-1")
            .args(off("-serf-lan-port"))
            .args(off("-serf-wan-port"))
            // And the server port, for the lone servers most tests run.
            .args(off("-server-port"))
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn cairn");
        Agent { child: Some(child), port, log, _logdir: logdir }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the HTTP API answers (a client agent has no leader to wait for).
    pub fn wait_http(&self) {
        let url = self.url("/v1/agent/self");
        wait_for(Duration::from_secs(20), "agent's HTTP API", || {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", &url])
                .output()
                .ok()?;
            (String::from_utf8_lossy(&out.stdout) == "200").then_some(())
        });
    }

    pub fn wait_ready(&self) {
        let url = self.url("/v1/status/leader");
        let log = self.log.clone();
        wait_for(Duration::from_secs(20), "agent to elect a leader", || {
            let out = Command::new("curl").args(["-s", "--max-time", "2", &url]).output().ok()?;
            let body = String::from_utf8_lossy(&out.stdout).to_string();
            if body.len() > 2 && body.starts_with('"') {
                Some(())
            } else {
                let _ = &log;
                None
            }
        });
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, None)
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        cli_at(&self.addr(), args, stdin)
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (with a deadline) for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let st = wait_for(Duration::from_secs(10), "agent to exit after SIGTERM", || c.try_wait().ok().flatten());
        st.code()
    }

    /// Waits for the process to exit by itself (e.g. after `leave`).
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let st = wait_for(Duration::from_secs(10), "agent to exit", || c.try_wait().ok().flatten());
        st.code()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn cli_at(addr: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("CONSUL_HTTP_ADDR", addr).env_remove("CONSUL_HTTP_TOKEN");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn cli");
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A raw HTTP call with curl: (status, headers, body).
pub fn http(method: &str, url: &str, body: Option<&[u8]>) -> (u16, String, Vec<u8>) {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let hdr = dir.path().join("h");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "30", "-X", method, "-D"]).arg(&hdr).arg(url);
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(b) = body {
        child.stdin.take().unwrap().write_all(b).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
    (status_of(&headers), headers, out.stdout)
}

/// The status of the headers curl dumped (`-D`); 0 when none came. The last status line counts:
/// curl records `100 Continue` first for large bodies.
pub fn status_of(headers: &str) -> u16 {
    headers
        .lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A `cairn watch` process whose handler appends the JSON it gets and `IDX=$CONSUL_INDEX` to a file.
pub struct RecordingWatch {
    pub child: Child,
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

impl RecordingWatch {
    /// Starts `cairn watch <args> <handler>` against `a`.
    pub fn start(a: &Agent, args: &[&str]) -> RecordingWatch {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("calls");
        let handler = format!("(cat; echo; echo IDX=$CONSUL_INDEX) >> {}", file.display());
        let child = Command::new(BIN)
            .arg("watch")
            .args(args)
            .arg(&handler)
            .env("CONSUL_HTTP_ADDR", a.addr())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        RecordingWatch { child, file, _dir: dir }
    }

    /// Waits until the handler has run at least `n` times; returns everything it recorded.
    pub fn calls(&self, n: usize) -> String {
        wait_for(Duration::from_secs(10), &format!("{n} handler calls"), || {
            let t = std::fs::read_to_string(&self.file).unwrap_or_default();
            (t.matches("IDX=").count() >= n).then_some(t)
        })
    }

    /// SIGTERM, wait for the exit; returns how many times the handler ran.
    pub fn stop(mut self) -> usize {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        wait_for(Duration::from_secs(10), "watch to exit", || self.child.try_wait().ok().flatten());
        std::fs::read_to_string(&self.file).unwrap_or_default().matches("IDX=").count()
    }
}
