//! Bounded cost (issue 11): no request shape an attacker can send costs flexgate much more CPU
//! than an ordinary Flex login request. flexgate's CPU is read from outside, from
//! `/proc/PID/stat` (utime + stime of all its threads), before and after a run of requests of
//! one shape; the ratio is taken to the same count of ordinary AuthnRequests (HTTP-Redirect,
//! ~1 KB) sent to the same server in the same test.
//!
//! The bound asserted here is generous (50 ×, the goal is 10 ×, see BENCHMARKS.md) so that a
//! noisy machine cannot fail it, while a quadratic parse (hundreds to thousands ×) cannot pass.
//! `benches/cost` runs this test in release mode with more requests and prints the table
//! (`COST_TABLE=path` writes it as Markdown).

mod common;
use common::shapes::*;
use common::*;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on every Linux ABI).
const TICKS_PER_SEC: f64 = 100.0;

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("flexgate (pid {pid}) is gone: {e}"));
    // Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / TICKS_PER_SEC
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    count: usize,
    cpu: f64,
    statuses: Vec<u16>,
    /// The first answer's message (the first paragraph of the error page).
    said: String,
}

fn first_paragraph(html: &str) -> String {
    let p = html
        .split_once("<p>")
        .and_then(|(_, rest)| rest.split_once("</p>"))
        .map_or("", |(p, _)| p);
    let short: String = p.chars().take(90).collect();
    short.replace('|', "/")
}

/// Sends `n` requests (or as many as fit in `budget` of wall time, at least 3) one after the
/// other on one keep-alive connection; returns the count and flexgate's CPU seconds.
async fn run(
    c: &reqwest::Client,
    base: &str,
    pid: u32,
    sends: &mut dyn FnMut() -> Send,
    n: usize,
    budget: Duration,
) -> Run {
    // One untimed request first: connection set-up and lazy initialisation are not the shape's.
    let _ = sends().request(c, base).send().await;
    let batch: Vec<Send> = (0..n).map(|_| sends()).collect();
    let start = Instant::now();
    let before = cpu_secs(pid);
    let mut statuses = Vec::new();
    let mut said = String::new();
    for s in &batch {
        // No answer (status 0) is a failure the caller reports.
        match s.request(c, base).send().await {
            Ok(r) => {
                statuses.push(r.status().as_u16());
                let body = r.text().await.unwrap_or_default();
                if said.is_empty() {
                    said = first_paragraph(&body);
                }
            }
            Err(_) => {
                statuses.push(0);
                break;
            }
        }
        if statuses.len() >= 3 && start.elapsed() > budget {
            break;
        }
    }
    Run {
        count: statuses.len(),
        cpu: cpu_secs(pid) - before,
        statuses,
        said,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attacker_shape_costs_at_most_a_few_ordinary_requests() {
    let key_dir = tempfile::tempdir().unwrap();
    keygen(key_dir.path());
    let env = Env::start_with(&sps_with_signed(key_dir.path()), "", serde_json::json!({}));
    let base = env.fg.base.clone();
    let sso = env.fg.sso_url();
    let pid = env.fg.pid();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let n = env_usize("COST_N", 250);
    let budget = Duration::from_secs(env_usize("COST_BUDGET_SECS", 3) as u64);

    let ordinary_run = run(&c, &base, pid, &mut || ordinary(&sso), n * 2, budget * 2).await;
    assert!(
        ordinary_run.statuses.iter().all(|s| *s == 302),
        "ordinary requests must start logins: {:?}",
        ordinary_run.statuses.iter().find(|s| **s != 302)
    );
    // At least one clock tick per request of the yardstick's run, so a run too short to measure
    // cannot make every ratio look huge.
    let ordinary_cpu = (ordinary_run.cpu / ordinary_run.count as f64)
        .max(1.0 / TICKS_PER_SEC / ordinary_run.count as f64);

    let mut rows = vec![format!(
        "| an ordinary Flex AuthnRequest (HTTP-Redirect, ~1 KB) | {} | {:.3} ms | 1.0 × | (302 to the upstream) |",
        ordinary_run.count,
        ordinary_cpu * 1000.0
    )];
    let mut failures = Vec::new();
    for shape in attacker_shapes(&sso) {
        let send = shape.send.clone();
        let r = run(&c, &base, pid, &mut || send.clone(), n, budget).await;
        let per = r.cpu / r.count as f64;
        eprintln!(
            "{}: {} requests, {:.3} ms each",
            shape.name,
            r.count,
            per * 1000.0
        );
        let ratio = per / ordinary_cpu;
        rows.push(format!(
            "| {} | {} | {:.3} ms | {:.1} × | {} |",
            shape.name,
            r.count,
            per * 1000.0,
            ratio,
            r.said
        ));
        if let Some(s) = r.statuses.iter().find(|s| !(400..500).contains(*s)) {
            failures.push(format!(
                "{}: answered {s}, expected a 4xx refusal",
                shape.name
            ));
        }
        if ratio > 50.0 {
            failures.push(format!("{}: {ratio:.1} × an ordinary request", shape.name));
        }
    }
    let table = format!(
        "| request shape | requests | flexgate CPU per request | × ordinary | answer |\n|---|---:|---:|---:|---|\n{}\n",
        rows.join("\n")
    );
    println!("{table}");
    if let Ok(path) = std::env::var("COST_TABLE") {
        std::fs::write(path, &table).expect("write COST_TABLE");
    }
    assert!(failures.is_empty(), "{}\n\n{table}", failures.join("\n"));
}
