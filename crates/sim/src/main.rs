//! `gossip-sim`: the gossip pool benchmark in virtual time (see docs/benchmarks.md).
//!
//! `cargo run --release -p cairn-sim -- [--nodes N] [--seeds S] [--loss P] [--minutes M]
//! [--slow-delay-ms D] [--first-seed K] [--fa-nodes F] [--fa-only] [--fa-modes on|off|both]
//! [--no-suspect-check]`: for each seed, a pool of N nodes with Consul's LAN
//! timings converges, one node crashes (time until 99% know it failed), one user event is fired
//! (time until 99% have it), and bandwidth is measured; then, with one slow node, M simulated
//! minutes per seed count false suspicions and false failures with Lifeguard on and off.

use std::time::{Duration, Instant};

use cairn_sim::{detection_and_spread, false_accusations, NetConfig};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = arg(&args, "--nodes", 1000);
    let seeds: u64 = arg(&args, "--seeds", 20);
    let first: u64 = arg(&args, "--first-seed", 1);
    let loss: f64 = arg(&args, "--loss", 0.01);
    let minutes: u64 = arg(&args, "--minutes", 50);
    let fa_nodes: usize = arg(&args, "--fa-nodes", 100);
    let slow_ms: u64 = arg(&args, "--slow-delay-ms", 1500);
    let fa_only = args.iter().any(|a| a == "--fa-only");
    // Plain memberlist: a suspicion that runs out is declared dead without asking the suspect.
    let suspect_check = !args.iter().any(|a| a == "--no-suspect-check");
    let modes: String = arg(&args, "--fa-modes", "both".to_string());
    let modes: Vec<bool> = match modes.as_str() {
        "on" => vec![true],
        "off" => vec![false],
        "both" => vec![true, false],
        other => {
            eprintln!("gossip-sim: --fa-modes must be on, off or both, not {other:?}");
            std::process::exit(2);
        }
    };
    if !fa_only {
        detection(nodes, seeds, first, loss);
    }
    println!(
        "false accusations: {fa_nodes} nodes, one node {slow_ms} ms slow, {:.1}% loss, {minutes} simulated minutes x {seeds} seeds per mode",
        loss * 100.0
    );
    for lifeguard in modes {
        let (mut by_slow, mut by_others, mut failed, mut checked, mut withdrawn) = (0, 0, 0, 0, 0);
        let t = Instant::now();
        for seed in first..first + seeds {
            let net = NetConfig {
                loss,
                slow_node: Some(fa_nodes / 3),
                slow_delay: Duration::from_millis(slow_ms),
                lifeguard,
                suspect_check,
                ..NetConfig::default()
            };
            let a = false_accusations(fa_nodes, seed, minutes, net);
            if fa_only {
                println!(
                    "  seed {seed}: {} failed, {} suspicions by the slow node, {} by the others; {} unconfirmed suspicions checked with the suspect, {} withdrawn",
                    a.failures, a.by_slow, a.by_others, a.checked, a.withdrawn
                );
            }
            by_slow += a.by_slow;
            by_others += a.by_others;
            failed += a.failures;
            checked += a.checked;
            withdrawn += a.withdrawn;
        }
        println!(
            "  lifeguard {:>3}: {failed} live nodes declared failed; suspicions raised by the slow node {by_slow}, by the others {by_others}; {checked} unconfirmed suspicions checked with the suspect, {withdrawn} withdrawn; over {} simulated minutes ({:.0}s wall)",
            if lifeguard { "on" } else { "off" },
            minutes * seeds,
            t.elapsed().as_secs_f64()
        );
    }
}

fn detection(nodes: usize, seeds: u64, first: u64, loss: f64) {
    println!(
        "gossip-sim: {nodes} nodes, LAN defaults, {:.1}% packet loss, latency 1-3 ms, seeds {first}..{}",
        loss * 100.0,
        first + seeds - 1
    );
    println!("{:>5} {:>10} {:>14} {:>14} {:>14}", "seed", "converge", "detect 99%", "spread 99%", "bytes/node/s");
    let (mut det, mut spr, mut bw) = (Vec::new(), Vec::new(), Vec::new());
    for seed in first..first + seeds {
        let t = Instant::now();
        let net = NetConfig { loss, ..NetConfig::default() };
        let f = detection_and_spread(nodes, seed, net);
        let fmt = |d: Option<Duration>| d.map(|d| format!("{:.2}s", d.as_secs_f64())).unwrap_or_else(|| "never".into());
        println!(
            "{seed:>5} {:>9.1}s {:>14} {:>14} {:>14.0}   ({:.1}s wall)",
            f.converge.as_secs_f64(),
            fmt(f.detect_99),
            fmt(f.spread_99),
            f.bytes_per_node_sec,
            t.elapsed().as_secs_f64()
        );
        det.push(f.detect_99.map_or(f64::INFINITY, |d| d.as_secs_f64()));
        spr.push(f.spread_99.map_or(f64::INFINITY, |d| d.as_secs_f64()));
        bw.push(f.bytes_per_node_sec);
    }
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "summary: detect 99% mean {:.2}s max {:.2}s (goal <= 15s); spread 99% mean {:.2}s max {:.2}s (goal <= 1.6s); {:.0} bytes/node/s",
        mean(&det),
        max(&det),
        mean(&spr),
        max(&spr),
        mean(&bw)
    );
    let per = cairn_sim::memory_per_member(10_000);
    println!("memory: {per:.0} bytes per member in one agent's view of a 10,000-member pool (Consul client tags, live heap bytes)");
}
