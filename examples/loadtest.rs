//! A bounded load test on loopback: one `redis-server`, one npm `oidc-provider`, two `flexgate
//! serve` instances sharing Redis, and complete logins, each begun on one instance and finished on
//! the other. Every Response is verified (signature, audience, recipient, InResponseTo) with
//! flexgate's verifier; any failure counts as an error.
//!
//! Closed loop (N logins, C at a time; prints logins/s, p50/p99 login latency, each instance's
//! peak RSS):
//!
//!   cargo run --release --example loadtest -- [--logins 2000] [--concurrency 16]
//!
//! Shift start (roles read at login from the Auth0 Management API, under its rate limit): also
//! starts the Management API stand-in (`tests/peers/auth0_mgmt.mjs`) with USERS agents whose Flex
//! roles live only in `app_metadata` (the OP's ID token carries none), and drives open-loop
//! arrivals: a login is started every 1/L s whatever the others are doing, each with a fresh
//! cookie jar and its own user (agent0, agent1, … wrapping at USERS), so a slow Management API
//! shows up as latency and failed logins, not as a lower offered rate. A login counts as failed
//! unless it ends in a verified Response whose `roles` attribute is `agent`.
//!
//!   cargo run --release --example loadtest -- --management 10000 [--mgmt-rate 8]
//!       [--mgmt-burst 16] [--rate 16] [--duration 60] [--warmup-secs 5] [--prefetch-secs P]
//!       [--concurrency 1000] [--log-level warn,flexgate::auth0::prefetch=info]
//!
//! `--mgmt-rate`/`--mgmt-burst`: the stand-in's token bucket (requests/s sustained, bucket size;
//! the burst defaults to twice the rate). `--rate`: offered logins/s (default twice the Management
//! API rate). `--prefetch-secs P` adds `prefetch_secs = P` to `[upstream.management]` (left out
//! when not given). `--warmup-secs`: wait after both instances are up, before the first login.
//! `--concurrency` caps logins in flight (an arrival past the cap is not started and counts as
//! failed). Prints the failed logins by cause, the Management API calls during the login window
//! and in total (from the stand-in's `GET /__stats`), latency of successful logins, flexgate CPU,
//! and one `RESULT {json}` line.
//!
//! Needs the test peers (`scripts/install-test-deps`) and `cargo build --release` (the flexgate
//! binary in this example's target directory, or `FLEXGATE_TEST_BIN`). Everything listens on
//! 127.0.0.1, and every process started here is stopped before exit.

use base64::Engine;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JQ: &str = "JQ0123456789abcdef0123456789abcdef";
/// A shift-start login still unfinished after this long counts as failed.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
const FLAGS: &[&str] = &[
    "--logins",
    "--concurrency",
    "--management",
    "--mgmt-rate",
    "--mgmt-burst",
    "--rate",
    "--duration",
    "--warmup-secs",
    "--prefetch-secs",
    "--log-level",
];

/// The instances' `[log] level` in the shift-start mode (an EnvFilter directive).
const SHIFT_LOG_LEVEL: &str = "warn,flexgate::auth0::prefetch=info";

type Key = openssl::pkey::PKey<openssl::pkey::Public>;

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

/// The value after `name`, if the flag is given; exits on a value that does not parse.
fn arg<T: FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    match args.get(i + 1).map(|v| v.parse()) {
        Some(Ok(v)) => Some(v),
        _ => {
            eprintln!("loadtest: {name} needs a value (see the header of examples/loadtest.rs)");
            std::process::exit(2);
        }
    }
}

fn check_flags() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for (i, a) in args.iter().enumerate() {
        let is_value = i > 0 && FLAGS.contains(&args[i - 1].as_str());
        if !is_value && !FLAGS.contains(&a.as_str()) {
            eprintln!(
                "loadtest: unknown argument {a:?}; flags: {}",
                FLAGS.join(" ")
            );
            std::process::exit(2);
        }
    }
}

/// The shift-start mode's settings.
struct Shift {
    users: usize,
    mgmt_rate: f64,
    mgmt_burst: f64,
    rate: f64,
    duration: f64,
    warmup: f64,
    prefetch: Option<u64>,
    cap: usize,
}

fn shift_opts() -> Option<Shift> {
    let users: usize = match arg("--management") {
        Some(u) => u,
        None if std::env::args().any(|a| a == "--rate") => {
            eprintln!("loadtest: --rate is the shift-start mode's; it needs --management USERS");
            std::process::exit(2);
        }
        None => return None,
    };
    let mgmt_rate = arg("--mgmt-rate").unwrap_or(8.0);
    let s = Shift {
        users: users.max(1),
        mgmt_rate,
        mgmt_burst: arg("--mgmt-burst").unwrap_or(2.0 * mgmt_rate),
        rate: arg("--rate").unwrap_or(2.0 * mgmt_rate),
        duration: arg("--duration").unwrap_or(60.0),
        warmup: arg("--warmup-secs").unwrap_or(5.0),
        prefetch: arg("--prefetch-secs"),
        cap: arg("--concurrency").unwrap_or(1000),
    };
    if !(s.rate > 0.0 && s.duration > 0.0 && s.warmup >= 0.0 && s.mgmt_rate > 0.0) {
        eprintln!("loadtest: --rate, --duration and --mgmt-rate must be positive");
        std::process::exit(2);
    }
    Some(s)
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

/// `FLEXGATE_TEST_BIN` (as `tests/common` has it), else the flexgate binary of the same target
/// directory as this example (which runs from `TARGET/release/examples/`), so a private
/// CARGO_TARGET_DIR works too.
fn flexgate_bin(repo: &Path) -> PathBuf {
    if let Some(bin) = std::env::var_os("FLEXGATE_TEST_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().ok();
    let target = exe.as_deref().and_then(|e| e.parent()?.parent()?.parent());
    match target.map(|t| t.join("release/flexgate")) {
        Some(bin) if bin.exists() => bin,
        _ => repo.join("target/release/flexgate"),
    }
}

/// What differs between the two modes in an instance's configuration.
struct InstanceCfg<'a> {
    issuer: &'a str,
    redis: &'a str,
    /// Lines appended to `[upstream]` (may open `[upstream.management]`).
    upstream_extra: &'a str,
    roles: &'a str,
    log_level: &'a str,
}

fn instance(bin: &Path, dir: &Path, name: &str, port: u16, public: u16, c: &InstanceCfg) -> Proc {
    let (issuer, redis, extra, roles, level) =
        (c.issuer, c.redis, c.upstream_extra, c.roles, c.log_level);
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
{extra}[[sp]]
name = "flex"
flex_connection = "{JQ}"
[sp.attributes]
email = "email"
full_name = "name"
roles = "{roles}"
[store]
url = "{redis}"
[log]
level = "{level}"
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

/// Starts `node SCRIPT CONFIG.json` (stdin a pipe, so it also stops when we die) and waits for
/// its `READY URL` line. Its stderr goes to `{name}.err` in `dir`.
fn start_node(repo: &Path, dir: &Path, name: &str, script: &str, cfg: &serde_json::Value) -> Node {
    let cfg_path = dir.join(format!("{name}.json"));
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
    let t = Instant::now();
    let mut child = Command::new("node")
        .arg(repo.join(script))
        .arg(&cfg_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = child.id();
    let proc = Proc(child);
    let url = loop {
        let l = lines
            .next()
            .unwrap_or_else(|| panic!("{script} ended before READY (see {name}.err)"))
            .unwrap();
        if let Some(u) = l.strip_prefix("READY ") {
            break u.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Node {
        _proc: proc,
        pid,
        url,
        started_in: t.elapsed(),
    }
}

struct Node {
    _proc: Proc,
    pid: u32,
    url: String,
    started_in: Duration,
}

struct Target {
    sso_on: String,
    finish_on: String,
    public: String,
}

/// Why a login failed: `kind` groups failures in the report, `detail` says more.
#[derive(Debug)]
struct Fail {
    kind: String,
    detail: String,
}

impl Fail {
    fn new(kind: &str, detail: impl std::fmt::Display) -> Fail {
        Fail {
            kind: kind.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// `?`-able conversion of any error into a failure of one kind.
trait Kind<T> {
    fn kind(self, kind: &str) -> Result<T, Fail>;
}
impl<T, E: std::fmt::Display> Kind<T> for Result<T, E> {
    fn kind(self, kind: &str) -> Result<T, Fail> {
        self.map_err(|e| Fail::new(kind, e))
    }
}
impl<T> Kind<T> for Option<T> {
    fn kind(self, kind: &str) -> Result<T, Fail> {
        self.ok_or_else(|| Fail::new(kind, kind))
    }
}

/// The SP-initiated start of a login: the AuthnRequest's ID and the redirect binding URL.
fn authn_request(t: &Target) -> Result<(String, String), Fail> {
    let id = format!("_{}", hex::encode(rand::random::<[u8; 16]>()));
    let xml = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" AssertionConsumerServiceURL="https://login.flex.us1.twilio.com/login/callback?connection={JQ}" Destination="{}/saml/sso" ID="{id}" IssueInstant="{}" Version="2.0"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">urn:flex:{JQ}</saml:Issuer></samlp:AuthnRequest>"#,
        t.public,
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(xml.as_bytes()).kind("deflate")?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(e.finish().kind("deflate")?);
    let q: String = url::form_urlencoded::byte_serialize(b64.as_bytes()).collect();
    Ok((id, format!("{}/saml/sso?SAMLRequest={q}", t.sso_on)))
}

/// Follows the redirects of one login through the OP (logging in as `login`) and back,
/// sending the OIDC callback to the other instance; returns the last response.
async fn drive(
    c: &reqwest::Client,
    t: &Target,
    start: String,
    login: &str,
) -> Result<reqwest::Response, Fail> {
    let mut resp = c.get(start).send().await.kind("transport")?;
    let mut interactions = 0;
    for _ in 0..20 {
        if !resp.status().is_redirection() {
            break;
        }
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .kind("no Location")?
            .to_string();
        let mut url = resp.url().join(&loc).kind("bad Location")?;
        if url
            .as_str()
            .starts_with(&format!("{}/oidc/callback", t.public))
        {
            // The load balancer sends the callback to the other instance.
            url = url::Url::parse(&url.as_str().replacen(&t.public, &t.finish_on, 1))
                .kind("bad Location")?;
        }
        resp = if url.path().starts_with("/interaction/") {
            let form: Vec<(&str, &str)> = if interactions == 0 {
                vec![("prompt", "login"), ("login", login), ("password", "x")]
            } else {
                vec![("prompt", "consent")]
            };
            interactions += 1;
            c.post(url).form(&form).send().await.kind("transport")?
        } else {
            c.get(url).send().await.kind("transport")?
        };
    }
    Ok(resp)
}

/// The page's `<title>`, e.g. flexgate's "Your Flex roles could not be read".
fn title_of(html: &str) -> Option<&str> {
    let start = html.find("<title>")? + 7;
    let end = html[start..].find("</title>")? + start;
    Some(html[start..end].trim())
}

/// The SAMLResponse of the final page, verified as an SP would.
async fn verified(
    resp: reqwest::Response,
    id: &str,
    key: &Key,
) -> Result<flexgate::saml::verify::VerifiedResponse, Fail> {
    let status = resp.status();
    let body = resp.text().await.kind("transport")?;
    if status != 200 {
        let kind = match title_of(&body) {
            Some(title) => format!("{} {title}", status.as_u16()),
            None => format!("{}", status.as_u16()),
        };
        return Err(Fail::new(&kind, format!("final status {status} ({kind})")));
    }
    let start = body
        .find("name=\"SAMLResponse\" value=\"")
        .kind("no SAMLResponse")?
        + 27;
    let end = body[start..].find('"').kind("no SAMLResponse")? + start;
    let xml = base64::engine::general_purpose::STANDARD
        .decode(&body[start..end])
        .kind("bad SAMLResponse")?;
    let xml = String::from_utf8(xml).kind("bad SAMLResponse")?;
    let exp = flexgate::saml::verify::Expectations {
        audience: &format!("urn:flex:{JQ}"),
        recipient: &format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}"),
        in_response_to: Some(id),
        issuer: Some("https://sso.example.com/saml/metadata"),
        now: chrono::Utc::now(),
        skew: chrono::Duration::seconds(5),
        require_response_signature: true,
        require_assertion_signature: false,
        policy: Default::default(),
    };
    flexgate::saml::verify::verify_response(&xml, std::slice::from_ref(key), &exp)
        .kind("Response did not verify")
}

/// The TLS connector every login's client shares (all traffic here is plain http). A fresh one
/// per client would load the system's CA bundle each time (OpenSSL's default verify paths): with
/// OpenSSL 3 that made this driver, not flexgate or the peers, the busiest process here.
fn tls_connector() -> Result<native_tls::TlsConnector, Fail> {
    static CONNECTOR: std::sync::OnceLock<Result<native_tls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| native_tls::TlsConnector::new().map_err(|e| e.to_string()))
        .clone()
        .kind("client")
}

/// One complete login as `login`; with `roles`, the Response's `roles` attribute must be exactly
/// that one value.
async fn one_login(t: &Target, key: &Key, login: &str, roles: Option<&str>) -> Result<(), Fail> {
    let c = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(tls_connector()?)
        .build()
        .kind("client")?;
    let (id, start) = authn_request(t)?;
    let resp = drive(&c, t, start, login).await?;
    let v = verified(resp, &id, key).await?;
    if let Some(want) = roles {
        let got = v
            .attributes
            .iter()
            .find(|(n, _)| n == "roles")
            .map(|(_, v)| v);
        if got.map(|g| g.as_slice()) != Some(&[want.to_string()]) {
            return Err(Fail::new(
                "Response without the expected roles",
                format!("roles attribute {got:?}, expected [{want:?}]"),
            ));
        }
    }
    Ok(())
}

/// Everything a run needs: peers, the two instances, the IdP's verifying key.
/// Fields drop in order: the instances, then the peers, then the directory.
struct Env {
    a: Option<Proc>,
    b: Option<Proc>,
    op: Node,
    mgmt: Option<Node>,
    _redis: Proc,
    dir: tempfile::TempDir,
    key: Arc<Key>,
    targets: Arc<[Target; 2]>,
    pid_a: u32,
    pid_b: u32,
}

fn keygen(bin: &Path, dir: &Path) -> Key {
    let ok = Command::new(bin)
        .args(["keygen", "--out"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let cert = std::fs::read(dir.join("idp-cert.pem")).unwrap();
    openssl::x509::X509::from_pem(&cert)
        .unwrap()
        .public_key()
        .unwrap()
}

fn redis() -> (Proc, String) {
    let rport = free_port();
    let redis = Proc(
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
    (redis, format!("redis://127.0.0.1:{rport}"))
}

/// The OP's users: closed loop, agent1 with the roles claim; shift start, agent0…agentN-1 with
/// email and name only (their roles are in the Management API).
fn op_users(shift: Option<&Shift>) -> serde_json::Value {
    let Some(s) = shift else {
        return serde_json::json!({"agent1": {"email": "agent1@example.com", "name": "Ada Agent", "https://flex.example.com/roles": ["agent"]}});
    };
    let users: serde_json::Map<String, serde_json::Value> = (0..s.users)
        .map(|i| {
            let v = serde_json::json!({"email": format!("agent{i}@example.com"), "name": format!("Agent {i}")});
            (format!("agent{i}"), v)
        })
        .collect();
    users.into()
}

/// The Management API stand-in: the same logins as user ids, roles in app_metadata.
fn start_mgmt(repo: &Path, dir: &Path, s: &Shift) -> Node {
    let users: serde_json::Map<String, serde_json::Value> = (0..s.users)
        .map(|i| {
            let v = serde_json::json!({"email": format!("agent{i}@example.com"), "app_metadata": {"flex": {"roles": ["agent"]}}});
            (format!("agent{i}"), v)
        })
        .collect();
    let cfg = serde_json::json!({
        "port": 0, "client_id": "mgmt", "client_secret": "mgmt-secret", "users": users,
        "rate": {"per_sec": s.mgmt_rate, "burst": s.mgmt_burst},
    });
    start_node(repo, dir, "mgmt", "tests/peers/auth0_mgmt.mjs", &cfg)
}

fn upstream_extra(shift: Option<&Shift>, mgmt: Option<&Node>) -> String {
    let (Some(s), Some(m)) = (shift, mgmt) else {
        return String::new();
    };
    let prefetch = s
        .prefetch
        .map(|p| format!("prefetch_secs = {p}\n"))
        .unwrap_or_default();
    format!(
        "timeout_secs = 10\n[upstream.management]\nurl = \"{}\"\nclient_id = \"mgmt\"\nclient_secret = \"mgmt-secret\"\n{prefetch}",
        m.url
    )
}

impl Env {
    fn start(shift: Option<&Shift>, log_level: &str) -> Env {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let bin = flexgate_bin(&repo);
        assert!(bin.exists(), "build it first: cargo build --release");
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(&bin, dir.path());
        let (redis, redis_url) = redis();
        let (pa, pb) = (free_port(), free_port());
        let op_cfg = serde_json::json!({
            "port": 0,
            "clients": [{"client_id": "flexgate", "client_secret": "load-secret", "redirect_uris": [format!("http://127.0.0.1:{pa}/oidc/callback"), format!("http://127.0.0.1:{pb}/oidc/callback")], "token_endpoint_auth_method": "client_secret_basic"}],
            "users": op_users(shift),
        });
        let op = start_node(&repo, dir.path(), "op", "tests/peers/op.mjs", &op_cfg);
        let mgmt = shift.map(|s| start_mgmt(&repo, dir.path(), s));
        let extra = upstream_extra(shift, mgmt.as_ref());
        let c = InstanceCfg {
            issuer: &op.url,
            redis: &redis_url,
            upstream_extra: &extra,
            roles: match shift {
                Some(_) => "app_metadata.flex.roles",
                None => "https://flex.example.com/roles",
            },
            log_level,
        };
        // Both instances share one public URL (A's), as behind a load balancer; logins begun on
        // A finish on B and vice versa.
        let a = instance(&bin, dir.path(), "a", pa, pa, &c);
        let b = instance(&bin, dir.path(), "b", pb, pa, &c);
        let (pid_a, pid_b) = (a.0.id(), b.0.id());
        let (ua, ub) = (
            format!("http://127.0.0.1:{pa}"),
            format!("http://127.0.0.1:{pb}"),
        );
        let targets = Arc::new([
            Target {
                sso_on: ua.clone(),
                finish_on: ub.clone(),
                public: ua.clone(),
            },
            Target {
                sso_on: ub,
                finish_on: ua.clone(),
                public: ua,
            },
        ]);
        Env {
            dir,
            key: Arc::new(key),
            targets,
            a: Some(a),
            b: Some(b),
            pid_a,
            pid_b,
            op,
            mgmt,
            _redis: redis,
        }
    }

    fn flexgate_cpu(&self) -> f64 {
        cpu_secs(self.pid_a) + cpu_secs(self.pid_b)
    }

    /// Stops both instances (so their logs are complete) and returns each one's log.
    fn stop_instances(&mut self) -> Vec<(&'static str, String)> {
        drop((self.a.take(), self.b.take()));
        ["a", "b"]
            .into_iter()
            .map(|n| {
                let p = self.dir.path().join(format!("{n}.log"));
                (n, std::fs::read_to_string(p).unwrap_or_default())
            })
            .collect()
    }
}

fn print_warnings(logs: &[(&str, String)]) {
    for (name, log) in logs {
        for line in log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(10)
        {
            eprintln!("instance {name}: {line}");
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The closed-loop mode: `logins` logins, `concurrency` at a time.
async fn closed_loop(logins: usize, concurrency: usize, log_level: &str) {
    let mut env = Env::start(None, log_level);
    let (pid_a, pid_b) = (env.pid_a, env.pid_b);
    let rss_before = (rss_kib(pid_a, "VmRSS:"), rss_kib(pid_b, "VmRSS:"));
    let cpu_before = env.flexgate_cpu();
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (targets, next, errors, key) = (
            env.targets.clone(),
            next.clone(),
            errors.clone(),
            env.key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= logins || Instant::now() > deadline {
                    break;
                }
                let t0 = Instant::now();
                match one_login(&targets[n % 2], &key, "agent1", None).await {
                    Ok(()) => latencies.push(t0.elapsed()),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("login {n} failed: {}", e.detail);
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
    let cpu = env.flexgate_cpu() - cpu_before;
    lat.sort();
    let errors = errors.load(Ordering::Relaxed);
    let op_rss = rss_kib(env.op.pid, "VmHWM:");
    println!("loadtest: {} logins ({} ok, {errors} errors), concurrency {concurrency}, 2 instances + Redis", lat.len() + errors, lat.len());
    println!(
        "  throughput     {:.1} logins/s over {:.1} s",
        lat.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  login latency  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (whole flow, upstream included)",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
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
    let logs = env.stop_instances();
    if errors > 0 {
        print_warnings(&logs);
    }
    // Everything started here stops before the exit code is set.
    drop(env);
    if errors > 0 {
        std::process::exit(1);
    }
}

/// The stand-in's test counters (`GET /__stats`).
async fn mgmt_stats(url: &str) -> Result<serde_json::Value, String> {
    let r = reqwest::get(format!("{url}/__stats"))
        .await
        .map_err(|e| e.to_string())?;
    r.json().await.map_err(|e| e.to_string())
}

/// The Management API counters that matter here, and their difference over a window.
#[derive(Default, Clone, Copy)]
struct Calls {
    token: u64,
    api: u64,
    user: u64,
    limited: u64,
}

impl Calls {
    fn of(v: &serde_json::Value) -> Calls {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Calls {
            token: n("token_requests"),
            api: n("requests"),
            user: n("user_requests"),
            limited: n("rate_limited"),
        }
    }
    fn minus(self, o: Calls) -> Calls {
        Calls {
            token: self.token - o.token.min(self.token),
            api: self.api - o.api.min(self.api),
            user: self.user - o.user.min(self.user),
            limited: self.limited - o.limited.min(self.limited),
        }
    }
    /// Every request that reached the stand-in's API: token + /api/v2 (429s included).
    fn all(self) -> u64 {
        self.token + self.api
    }
}

fn by_route_diff(after: &serde_json::Value, before: &serde_json::Value) -> BTreeMap<String, u64> {
    let empty = serde_json::Map::new();
    let routes = after["by_route"].as_object().unwrap_or(&empty);
    routes
        .iter()
        .map(|(k, v)| {
            let was = before["by_route"][k].as_u64().unwrap_or(0);
            (k.clone(), v.as_u64().unwrap_or(0).saturating_sub(was))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

enum Outcome {
    Ok(Duration),
    Failed(Fail, Duration),
}

/// Open-loop arrivals: login n starts at n/rate s, whatever the others are doing. Returns every
/// login's outcome once all have ended, and how long the arrivals took.
async fn arrivals(env: &Env, s: &Shift) -> (Vec<Outcome>, Duration) {
    let total = (s.rate * s.duration).round().max(1.0) as usize;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(s.cap));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / s.rate)).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let f = Fail::new("not started: --concurrency cap reached", s.cap);
            tasks.push(tokio::spawn(
                async move { Outcome::Failed(f, Duration::ZERO) },
            ));
            continue;
        };
        let (targets, key) = (env.targets.clone(), env.key.clone());
        let user = format!("agent{}", n % s.users);
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = tokio::time::timeout(
                LOGIN_TIMEOUT,
                one_login(&targets[n % 2], &key, &user, Some("agent")),
            )
            .await;
            drop(permit);
            match r {
                Ok(Ok(())) => Outcome::Ok(t0.elapsed()),
                Ok(Err(f)) => Outcome::Failed(f, t0.elapsed()),
                Err(_) => Outcome::Failed(
                    Fail::new(
                        "no answer within the client timeout",
                        LOGIN_TIMEOUT.as_secs(),
                    ),
                    t0.elapsed(),
                ),
            }
        }));
    }
    let arrival_time = start.elapsed();
    let mut out = Vec::with_capacity(total);
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| {
            Outcome::Failed(Fail::new("login task panicked", e), Duration::ZERO)
        }));
    }
    (out, arrival_time)
}

/// What a shift-start run measured.
struct Measured {
    outcomes: Vec<Outcome>,
    arrival_time: Duration,
    window: Duration,
    window_calls: Calls,
    total_calls: Calls,
    routes: BTreeMap<String, u64>,
    flexgate_cpu: f64,
    op_cpu: f64,
    mgmt_cpu: f64,
    slices: Vec<Calls>,
}

async fn measure(env: &Env, s: &Shift, mgmt: &Node) -> Result<Measured, String> {
    tokio::time::sleep(Duration::from_secs_f64(s.warmup)).await;
    let before = mgmt_stats(&mgmt.url).await?;
    let cpu0 = (env.flexgate_cpu(), cpu_secs(env.op.pid), cpu_secs(mgmt.pid));
    let t0 = Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let poller = tokio::spawn(per_slice(mgmt.url.clone(), Calls::of(&before), stopped));
    let (outcomes, arrival_time) = arrivals(env, s).await;
    let window = t0.elapsed();
    let _ = stop.send(());
    let slices = poller.await.unwrap_or_default();
    let cpu1 = (env.flexgate_cpu(), cpu_secs(env.op.pid), cpu_secs(mgmt.pid));
    let after = mgmt_stats(&mgmt.url).await?;
    Ok(Measured {
        outcomes,
        arrival_time,
        window,
        window_calls: Calls::of(&after).minus(Calls::of(&before)),
        total_calls: Calls::of(&after),
        routes: by_route_diff(&after, &before),
        flexgate_cpu: cpu1.0 - cpu0.0,
        op_cpu: cpu1.1 - cpu0.1,
        mgmt_cpu: cpu1.2 - cpu0.2,
        slices,
    })
}

/// Seconds of the login window per slice of the Management API calls timeline.
const SLICE_SECS: u64 = 10;

/// The Management API calls of each SLICE_SECS of the window (the last slice may be shorter),
/// read from `/__stats` until `stop` fires.
async fn per_slice(
    url: String,
    start: Calls,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<Calls> {
    let mut slices = Vec::new();
    let mut last = start;
    let mut tick = tokio::time::interval(Duration::from_secs(SLICE_SECS));
    tick.tick().await;
    loop {
        let done = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut stop => true,
        };
        if let Ok(v) = mgmt_stats(&url).await {
            let now = Calls::of(&v);
            slices.push(now.minus(last));
            last = now;
        }
        if done {
            return slices;
        }
    }
}

/// Latencies of the successful logins (sorted), of the failed ones, and failures by kind.
type Split = (Vec<Duration>, Vec<Duration>, BTreeMap<String, usize>);

fn split(outcomes: &[Outcome]) -> Split {
    let (mut ok, mut failed, mut kinds) = (Vec::new(), Vec::new(), BTreeMap::new());
    let mut shown = 0;
    for o in outcomes {
        match o {
            Outcome::Ok(d) => ok.push(*d),
            Outcome::Failed(f, d) => {
                failed.push(*d);
                *kinds.entry(f.kind.clone()).or_insert(0) += 1;
                if shown < 5 {
                    eprintln!("login failed: {}", f.detail);
                    shown += 1;
                }
            }
        }
    }
    ok.sort();
    failed.sort();
    (ok, failed, kinds)
}

fn report(s: &Shift, env: &Env, mgmt: &Node, m: &Measured) -> serde_json::Value {
    let (ok, failed, kinds) = split(&m.outcomes);
    let attempted = m.outcomes.len();
    let per = |n: u64| n as f64 / attempted.max(1) as f64;
    let (w, t) = (m.window_calls, m.total_calls);
    let win = m.window.as_secs_f64();
    println!(
        "loadtest shift start: {} users, Management API stand-in {} req/s (burst {}), prefetch_secs {}, warm-up {} s",
        s.users, s.mgmt_rate, s.mgmt_burst,
        s.prefetch.map_or("not set".to_string(), |p| p.to_string()), s.warmup
    );
    println!(
        "  offered        {} logins/s open loop for {} s: {attempted} attempted (arrivals took {:.1} s = {:.1} logins/s; window until the last ended {win:.1} s)",
        s.rate, s.duration, m.arrival_time.as_secs_f64(),
        attempted as f64 / m.arrival_time.as_secs_f64().max(1e-9)
    );
    println!(
        "  logins         {} ok, {} FAILED ({:.1} %)",
        ok.len(),
        failed.len(),
        100.0 * failed.len() as f64 / attempted.max(1) as f64
    );
    for (kind, n) in &kinds {
        println!("    {n:>6}  {kind}");
    }
    println!(
        "  Management API during the window: {} calls ({:.2} per login; {} token, {} /api/v2 of which {} answered user reads = {:.2} per login), {} answered 429",
        w.all(), per(w.all()), w.token, w.api, w.user, per(w.user), w.limited
    );
    println!("    by route     {:?}", m.routes);
    let reads: Vec<u64> = m.slices.iter().map(|c| c.user).collect();
    let limited: Vec<u64> = m.slices.iter().map(|c| c.limited).collect();
    println!("    per {SLICE_SECS} s    user reads {reads:?}, 429s {limited:?}");
    println!(
        "  Management API in total (start-up, warm-up and window): {} calls ({} token, {} /api/v2, {} user reads), {} answered 429",
        t.all(), t.token, t.api, t.user, t.limited
    );
    println!(
        "  login latency  ok: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; failed: p50 {:.1} ms, max {:.1} ms",
        ms(percentile(&ok, 0.5)), ms(percentile(&ok, 0.99)), ms(ok.last().copied().unwrap_or_default()),
        ms(percentile(&failed, 0.5)), ms(failed.last().copied().unwrap_or_default())
    );
    let cpu_ms = m.flexgate_cpu * 1e3 / ok.len().max(1) as f64;
    println!(
        "  flexgate CPU   {cpu_ms:.2} ms per successful login, {:.2} ms per attempted one (both instances, user + system; {:.1} % of one core)",
        m.flexgate_cpu * 1e3 / attempted.max(1) as f64,
        100.0 * m.flexgate_cpu / win
    );
    println!(
        "  peers' CPU     oidc-provider {:.1} % of one core, Management API stand-in {:.1} % (started in {:.1} s / {:.1} s)",
        100.0 * m.op_cpu / win, 100.0 * m.mgmt_cpu / win,
        env.op.started_in.as_secs_f64(), mgmt.started_in.as_secs_f64()
    );
    serde_json::json!({
        "mode": "shift-start", "users": s.users, "mgmt_rate": s.mgmt_rate, "mgmt_burst": s.mgmt_burst,
        "prefetch_secs": s.prefetch, "warmup_secs": s.warmup, "offered_rate": s.rate, "duration_secs": s.duration,
        "attempted": attempted, "ok": ok.len(), "failed": failed.len(), "failures": kinds,
        "mgmt_calls_window": w.all(), "mgmt_calls_per_login": per(w.all()), "mgmt_token_window": w.token,
        "mgmt_user_reads_window": w.user, "mgmt_user_reads_per_login": per(w.user), "mgmt_429_window": w.limited,
        "mgmt_routes_window": m.routes, "mgmt_calls_total": t.all(), "mgmt_user_reads_total": t.user,
        "mgmt_429_total": t.limited,
        "mgmt_user_reads_per_10s": m.slices.iter().map(|c| c.user).collect::<Vec<_>>(),
        "mgmt_429_per_10s": m.slices.iter().map(|c| c.limited).collect::<Vec<_>>(),
        "p50_ms": ms(percentile(&ok, 0.5)), "p99_ms": ms(percentile(&ok, 0.99)),
        "max_ms": ms(ok.last().copied().unwrap_or_default()),
        "flexgate_cpu_ms_per_login": cpu_ms,
        "flexgate_cpu_ms_per_attempt": m.flexgate_cpu * 1e3 / attempted.max(1) as f64,
        "arrival_secs": m.arrival_time.as_secs_f64(), "op_cpu_pct": 100.0 * m.op_cpu / win,
        "mgmt_cpu_pct": 100.0 * m.mgmt_cpu / win, "window_secs": win,
    })
}

/// The shape of a warning or error line: its level, `reason=` and message with the
/// per-login details (user names, references, numbers) left out.
fn log_shape(line: &str) -> String {
    let level = if line.contains("ERROR") {
        "ERROR"
    } else {
        "WARN"
    };
    let reason = line
        .split_once("reason=\"")
        .and_then(|(_, r)| r.split('"').next())
        .unwrap_or("-");
    let error = line.split_once("error=").map_or(line, |(_, e)| e);
    let error = error.split_once(": ").map_or(error, |(_, e)| e);
    let plain: String = error
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .take(90)
        .collect();
    format!("{level} reason={reason}: {plain}")
}

/// What the instances logged: lines about the prefetch, and warnings and errors by shape.
fn print_instance_logs(logs: &[(&str, String)]) {
    for (name, log) in logs {
        eprintln!("instance {name}: {} log lines", log.lines().count());
        let about =
            |l: &&str| l.contains("prefetch") || l.contains("snapshot") || l.contains("export");
        for line in log.lines().filter(about).take(10) {
            eprintln!("instance {name}: {line}");
        }
        let mut shapes: BTreeMap<String, (usize, &str)> = BTreeMap::new();
        let bad = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"));
        for line in bad {
            shapes.entry(log_shape(line)).or_insert((0, line)).0 += 1;
        }
        for (shape, (n, example)) in shapes {
            eprintln!("instance {name}: {n:>5} x {shape}\n      e.g. {example}");
        }
    }
}

/// The shift-start mode (see the header).
async fn shift_start(s: Shift, log_level: &str) {
    let mut env = Env::start(Some(&s), log_level);
    let mgmt = env.mgmt.take().expect("the stand-in was started");
    let measured = measure(&env, &s, &mgmt).await;
    let logs = env.stop_instances();
    match measured {
        Ok(m) => {
            let result = report(&s, &env, &mgmt, &m);
            print_instance_logs(&logs);
            println!("RESULT {result}");
        }
        Err(e) => {
            print_instance_logs(&logs);
            eprintln!("loadtest: the Management API stand-in's /__stats failed: {e}");
            drop((env, mgmt));
            std::process::exit(1);
        }
    }
    // Everything started here stops before returning.
    drop((env, mgmt));
}

#[tokio::main]
async fn main() {
    check_flags();
    let log_level = arg::<String>("--log-level");
    match shift_opts() {
        // The prefetch reports each snapshot it reads at info.
        Some(s) => {
            let level = log_level.unwrap_or_else(|| SHIFT_LOG_LEVEL.to_string());
            shift_start(s, &level).await
        }
        None => {
            let log_level = log_level.unwrap_or_else(|| "warn".to_string());
            closed_loop(
                arg("--logins").unwrap_or(2000),
                arg("--concurrency").unwrap_or(16),
                &log_level,
            )
            .await
        }
    }
}
