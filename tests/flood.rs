//! The service stays up under a flood (issue 11): while 4 clients send the costliest request
//! shape flat out, `/healthz` keeps answering fast and ordinary logins still start. A behaviour
//! check that no parse or signature check of attacker input blocks the reactor; the measured
//! latencies are quoted in BENCHMARKS.md (`benches/cost` prints them), the assertion bounds are
//! generous on purpose.

mod common;
use common::shapes::*;
use common::*;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;
const FLOOD_SECS: u64 = 3;
/// At most this many flood requests per client, whatever the machine's speed.
const MAX_PER_CLIENT: usize = 20_000;

/// One `GET path` on a fresh connection, with std only (this thread is not the test's runtime,
/// so a busy runtime cannot delay the probe). Returns the latency and whether it was a 200.
fn probe(addr: &str, path: &str) -> (Duration, bool) {
    let start = Instant::now();
    let ok = (|| -> std::io::Result<bool> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200"))
    })()
    .unwrap_or(false);
    (start.elapsed(), ok)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_logins_answer_while_four_clients_flood() {
    let key_dir = tempfile::tempdir().unwrap();
    keygen(key_dir.path());
    let env = Env::start_with(&sps_with_signed(key_dir.path()), "", serde_json::json!({}));
    let base = env.fg.base.clone();
    let sso = env.fg.sso_url();
    let addr = base.trim_start_matches("http://").to_string();
    let shapes = attacker_shapes(&sso);
    let costliest = std::env::var("FLOOD_SHAPE").unwrap_or_else(|_| {
        "signed SP, POST enveloped signature, right digest: 1,000 elements".into()
    });
    let flood = shapes
        .iter()
        .find(|s| s.name == costliest)
        .unwrap_or_else(|| panic!("no shape named {costliest:?}"))
        .send
        .clone();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, sent, flood, base) = (stop.clone(), sent.clone(), flood.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            for _ in 0..MAX_PER_CLIENT {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(r) = flood.request(&c, &base).send().await {
                    let _ = r.bytes().await;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The probes run on their own thread, every 20 ms; every 10th probe is an ordinary login.
    let prober = {
        let (stop, addr, sso) = (stop.clone(), addr.clone(), sso.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let (mut health, mut logins, mut failed) = (Vec::new(), Vec::new(), Vec::new());
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (t, ok) = probe(&addr, "/healthz");
                health.push(t);
                if !ok {
                    failed.push(format!("/healthz failed after {t:?}"));
                }
                if i % 10 == 0 {
                    let Send::Get(pq) = ordinary(&sso) else {
                        unreachable!()
                    };
                    let (t, _) = probe(&addr, &pq);
                    logins.push(t);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (health, logins, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(FLOOD_SECS)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let (health, logins, failed) = prober.join().unwrap();
    let (h, l) = (median(health.clone()), median(logins.clone()));
    println!(
        "flood of {:?}: {} requests from {CLIENTS} clients in {FLOOD_SECS} s; /healthz median {h:?} over {} probes (max {:?}); ordinary login median {l:?} over {}",
        costliest,
        sent.load(Ordering::Relaxed),
        health.len(),
        health.iter().max().copied().unwrap_or_default(),
        logins.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(health.len() >= 10, "too few probes: {}", health.len());
    assert!(
        h < Duration::from_millis(200),
        "/healthz median {h:?} under the flood"
    );
    assert!(
        l < Duration::from_millis(1000),
        "an ordinary login took {l:?} (median) under the flood"
    );
    // flexgate is still there and answers an ordinary login.
    let (_, ok) = probe(&addr, "/healthz");
    assert!(ok, "flexgate stopped answering:\n{}", env.fg.log_text());
}
