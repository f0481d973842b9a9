//! `raft-sim`: runs the Raft cluster simulation ([`cairn_sim::raft_sim`]) over a range of seeds
//! and reports each failing seed with the command that replays it.
//!
//! `raft-sim [--first-seed N] [--seeds M] [--servers 3|5] [--seconds S] [--max-drift F] [--rates R1,R2,..] [--lease-ms MS]
//! [--restore-leader] [--no-vote-gate] [--trace]`

use std::time::{Duration, Instant};

use cairn_sim::raft_sim::{run, RaftSimConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut first = 1u64;
    let mut seeds = 10u64;
    let mut cfg = RaftSimConfig::default();
    let mut trace = false;
    let mut i = 0;
    let num = |i: usize| -> u64 {
        args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("{} needs a number", args[i]);
            std::process::exit(2)
        })
    };
    while i < args.len() {
        match args[i].as_str() {
            "--first-seed" => first = num(i),
            "--seeds" => seeds = num(i),
            "--servers" => cfg.servers = num(i) as usize,
            "--seconds" => cfg.duration = Duration::from_secs(num(i)),
            "--clients" => cfg.clients = num(i) as usize,
            "--max-drift" => {
                cfg.max_drift = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .filter(|d: &f64| (0.0..1.0).contains(d))
                    .unwrap_or_else(|| {
                        eprintln!("--max-drift needs a number from 0 to 1");
                        std::process::exit(2)
                    })
            }
            "--rates" => {
                cfg.rates =
                    args.get(i + 1).map(|v| v.split(',').filter_map(|r| r.parse().ok()).collect()).unwrap_or_default()
            }
            "--lease-ms" => cfg.lease = Duration::from_millis(num(i)),
            "--no-vote-gate" => {
                cfg.vote_gate = false;
                i += 1;
                continue;
            }
            "--restore-leader" => {
                cfg.restore_leader = true;
                i += 1;
                continue;
            }
            "--trace" => {
                trace = true;
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2)
            }
        }
        i += 2;
    }
    let t0 = Instant::now();
    let mut failed = Vec::new();
    let (mut ops, mut acked, mut unknown, mut faults, mut crashes, mut snaps, mut lost) = (0, 0, 0, 0, 0, 0, 0);
    let mut locks = 0;
    for seed in first..first + seeds {
        let r = run(seed, &cfg);
        ops += r.operations;
        acked += r.acknowledged_writes;
        locks += r.locks_taken;
        unknown += r.unknown_outcomes;
        faults += r.faults;
        crashes += r.crashes;
        snaps += r.snapshots_installed;
        lost += r.records_lost;
        if trace {
            for line in &r.trace {
                println!("  seed {seed}: {line}");
            }
        }
        if r.violations.is_empty() {
            println!(
                "seed {seed}: ok ({} ops, {} acknowledged writes, {} locks taken, {} unknown, {} faults, {} crashes ({} unsynced records lost), {} leaders, {} snapshots installed)",
                r.operations, r.acknowledged_writes, r.locks_taken, r.unknown_outcomes, r.faults, r.crashes, r.records_lost, r.leaders, r.snapshots_installed
            );
        } else {
            println!("seed {seed}: FAILED");
            for v in &r.violations {
                println!("  {v}");
            }
            println!(
                "  replay: cargo run --release -p cairn-sim --bin raft-sim -- --first-seed {seed} --seeds 1 --servers {} --seconds {} --max-drift {} --trace",
                cfg.servers,
                cfg.duration.as_secs(),
                cfg.max_drift
            );
            failed.push(seed);
        }
    }
    println!(
        "{} servers, {} seeds x {} s simulated in {:.1} s: {} failed; {ops} operations, {acked} acknowledged writes ({locks} locks taken), {unknown} unknown outcomes, {faults} faults, {crashes} crashes ({lost} unsynced log records lost), {snaps} snapshots installed; clocks drift up to {}",
        cfg.servers,
        seeds,
        cfg.duration.as_secs(),
        t0.elapsed().as_secs_f64(),
        failed.len(),
        cfg.max_drift
    );
    if !failed.is_empty() {
        println!("failing seeds: {failed:?}");
        std::process::exit(1);
    }
}
