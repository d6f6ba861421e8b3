//! A bounded load test on loopback: one `redis-server`, one npm `oidc-provider`, two `flexgate
//! serve` instances sharing Redis, and N complete logins driven concurrently, each begun on one
//! instance and finished on the other. Every Response is verified (signature, audience,
//! recipient, InResponseTo) with flexgate's verifier; any failure counts as an error.
//!
//!   cargo run --release --example loadtest -- [--logins 2000] [--concurrency 16]
//!
//! Prints logins/s, p50/p99 login latency, and each instance's peak RSS (VmHWM). Needs the test
//! peers (`scripts/install-test-deps`). Everything listens on 127.0.0.1 and stops by itself.

use base64::Engine;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JQ: &str = "JQ0123456789abcdef0123456789abcdef";

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of /proc/PID/stat (utime, stime) are 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn instance(
    bin: &Path,
    dir: &Path,
    name: &str,
    port: u16,
    public: u16,
    issuer: &str,
    redis: &str,
) -> Proc {
    let cfg = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{public}"
[idp]
entity_id = "https://sso.example.com/saml/metadata"
key = "idp-key.pem"
cert = "idp-cert.pem"
[upstream]
issuer = "{issuer}"
client_id = "flexgate"
client_secret = "load-secret"
[[sp]]
name = "flex"
flex_connection = "{JQ}"
[sp.attributes]
email = "email"
full_name = "name"
roles = "https://flex.example.com/roles"
[store]
url = "{redis}"
[log]
level = "warn"
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, cfg).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_port(port);
    Proc(child)
}

struct Target {
    sso_on: String,
    finish_on: String,
    public: String,
}

async fn one_login(
    t: &Target,
    key: &openssl::pkey::PKey<openssl::pkey::Public>,
) -> Result<(), String> {
    let c = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let id = format!("_{}", hex::encode(rand::random::<[u8; 16]>()));
    let xml = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" AssertionConsumerServiceURL="https://login.flex.us1.twilio.com/login/callback?connection={JQ}" Destination="{}/saml/sso" ID="{id}" IssueInstant="{}" Version="2.0"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">urn:flex:{JQ}</saml:Issuer></samlp:AuthnRequest>"#,
        t.public,
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(xml.as_bytes()).map_err(|e| e.to_string())?;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(e.finish().map_err(|e| e.to_string())?);
    let q: String = url::form_urlencoded::byte_serialize(b64.as_bytes()).collect();
    let mut resp = c
        .get(format!("{}/saml/sso?SAMLRequest={q}", t.sso_on))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut interactions = 0;
    for _ in 0..20 {
        if !resp.status().is_redirection() {
            break;
        }
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("no Location")?
            .to_string();
        let mut url = resp.url().join(&loc).map_err(|e| e.to_string())?;
        if url
            .as_str()
            .starts_with(&format!("{}/oidc/callback", t.public))
        {
            // The load balancer sends the callback to the other instance.
            url = url::Url::parse(&url.as_str().replacen(&t.public, &t.finish_on, 1))
                .map_err(|e| e.to_string())?;
        }
        resp = if url.path().starts_with("/interaction/") {
            let form: Vec<(&str, &str)> = if interactions == 0 {
                vec![("prompt", "login"), ("login", "agent1"), ("password", "x")]
            } else {
                vec![("prompt", "consent")]
            };
            interactions += 1;
            c.post(url)
                .form(&form)
                .send()
                .await
                .map_err(|e| e.to_string())?
        } else {
            c.get(url).send().await.map_err(|e| e.to_string())?
        };
    }
    if resp.status() != 200 {
        return Err(format!("final status {}", resp.status()));
    }
    let body = resp.text().await.map_err(|e| e.to_string())?;
    let start = body
        .find("name=\"SAMLResponse\" value=\"")
        .ok_or("no SAMLResponse")?
        + 27;
    let end = body[start..].find('"').ok_or("bad form")? + start;
    let xml = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&body[start..end])
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let exp = flexgate::saml::verify::Expectations {
        audience: &format!("urn:flex:{JQ}"),
        recipient: &format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}"),
        in_response_to: Some(&id),
        issuer: Some("https://sso.example.com/saml/metadata"),
        now: chrono::Utc::now(),
        skew: chrono::Duration::seconds(5),
        require_response_signature: true,
        require_assertion_signature: false,
        policy: Default::default(),
    };
    flexgate::saml::verify::verify_response(&xml, std::slice::from_ref(key), &exp)
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let logins = arg("--logins", 2000);
    let concurrency = arg("--concurrency", 16);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = repo.join("target/release/flexgate");
    assert!(bin.exists(), "build it first: cargo build --release");
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new(&bin)
        .args(["keygen", "--out"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let cert = std::fs::read(dir.path().join("idp-cert.pem")).unwrap();
    let key = openssl::x509::X509::from_pem(&cert)
        .unwrap()
        .public_key()
        .unwrap();

    let rport = free_port();
    let _redis = Proc(
        Command::new("/usr/bin/redis-server")
            .args([
                "--port",
                &rport.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/install-test-deps)"),
    );
    wait_port(rport);
    let (pa, pb) = (free_port(), free_port());
    let op_cfg = serde_json::json!({
        "port": 0,
        "clients": [{"client_id": "flexgate", "client_secret": "load-secret", "redirect_uris": [format!("http://127.0.0.1:{pa}/oidc/callback"), format!("http://127.0.0.1:{pb}/oidc/callback")], "token_endpoint_auth_method": "client_secret_basic"}],
        "users": {"agent1": {"email": "agent1@example.com", "name": "Ada Agent", "https://flex.example.com/roles": ["agent"]}}
    });
    std::fs::write(dir.path().join("op.json"), op_cfg.to_string()).unwrap();
    let mut op = Command::new("node")
        .arg(repo.join("tests/peers/op.mjs"))
        .arg(dir.path().join("op.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(op.stdout.take().unwrap()).lines();
    let issuer = loop {
        let l = lines.next().expect("op started").unwrap();
        if let Some(i) = l.strip_prefix("READY ") {
            break i.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let op_pid = op.id();
    let _op = Proc(op);
    let redis_url = format!("redis://127.0.0.1:{rport}");
    // Both instances share one public URL (A's), as behind a load balancer; logins begun on A
    // finish on B and vice versa.
    let a = instance(&bin, dir.path(), "a", pa, pa, &issuer, &redis_url);
    let b = instance(&bin, dir.path(), "b", pb, pa, &issuer, &redis_url);
    let (pid_a, pid_b) = (a.0.id(), b.0.id());
    let rss_before = (rss_kib(pid_a, "VmRSS:"), rss_kib(pid_b, "VmRSS:"));
    let cpu_before = cpu_secs(pid_a) + cpu_secs(pid_b);

    let public = format!("http://127.0.0.1:{pa}");
    let targets = Arc::new([
        Target {
            sso_on: format!("http://127.0.0.1:{pa}"),
            finish_on: format!("http://127.0.0.1:{pb}"),
            public: public.clone(),
        },
        Target {
            sso_on: format!("http://127.0.0.1:{pb}"),
            finish_on: format!("http://127.0.0.1:{pa}"),
            public: public.clone(),
        },
    ]);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let key = Arc::new(key);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (targets, next, errors, key) =
            (targets.clone(), next.clone(), errors.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= logins || Instant::now() > deadline {
                    break;
                }
                let t0 = Instant::now();
                match one_login(&targets[n % 2], &key).await {
                    Ok(()) => latencies.push(t0.elapsed()),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("login {n} failed: {e}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let cpu = cpu_secs(pid_a) + cpu_secs(pid_b) - cpu_before;
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let errors = errors.load(Ordering::Relaxed);
    let op_rss = rss_kib(op_pid, "VmHWM:");
    println!("loadtest: {} logins ({} ok, {errors} errors), concurrency {concurrency}, 2 instances + Redis", lat.len() + errors, lat.len());
    println!(
        "  throughput     {:.1} logins/s over {:.1} s",
        lat.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  login latency  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (whole flow, upstream included)",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  flexgate CPU   {:.2} ms per login (both instances, user + system)",
        cpu * 1e3 / lat.len().max(1) as f64
    );
    println!(
        "  peak RSS       instance A {:.1} MiB (start {:.1}), instance B {:.1} MiB (start {:.1}); oidc-provider {:.1} MiB",
        rss_kib(pid_a, "VmHWM:") as f64 / 1024.0,
        rss_before.0 as f64 / 1024.0,
        rss_kib(pid_b, "VmHWM:") as f64 / 1024.0,
        rss_before.1 as f64 / 1024.0,
        op_rss as f64 / 1024.0
    );
    drop((a, b));
    if errors > 0 {
        for name in ["a", "b"] {
            let log =
                std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
            for line in log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .take(10)
            {
                eprintln!("instance {name}: {line}");
            }
        }
    }
    // Everything started here stops before the exit code is set.
    drop((_op, _redis, dir));
    if errors > 0 {
        std::process::exit(1);
    }
}
