//! Test harness for end-to-end tests: starts the real peers (npm `oidc-provider` as the upstream,
//! `flexgate serve` as a child process), drives logins over HTTP like a browser, and hands every
//! SAML Response to independent SP implementations (python3-saml strict, `@node-saml/node-saml`,
//! the `xmlsec1` CLI). A second, independent upstream is Debian's glewlwyd ([`glewlwyd`]).
//! A missing peer fails the test and names `scripts/install-test-deps`.
#![allow(dead_code)]

pub mod glewlwyd;
pub mod google;
pub mod graph;
pub mod redis;
pub mod shapes;

use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub const ROLES_CLAIM: &str = "https://flex.example.com/roles";
pub const JQ: &str = "JQ0123456789abcdef0123456789abcdef";
pub const AC: &str = "AC0123456789abcdef0123456789abcdef";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} is missing ({}); run scripts/install-test-deps",
        path.display()
    );
}

pub fn venv_python() -> PathBuf {
    let p = repo().join(".peers/venv/bin/python");
    require(&p, "the python3-saml venv");
    p
}

pub fn node_modules() -> PathBuf {
    let p = repo().join("tests/peers/node_modules");
    require(&p.join("oidc-provider"), "npm oidc-provider");
    require(&p.join("@node-saml/node-saml"), "npm @node-saml/node-saml");
    p
}

pub fn xmlsec1() -> PathBuf {
    let p = PathBuf::from("/usr/bin/xmlsec1");
    require(&p, "xmlsec1");
    p
}

/// A loopback port for a child process to listen on.
///
/// Not "bind port 0 and let go": the kernel hands ports out of its ephemeral range to every
/// `bind(0)` and every outgoing connection of every process here (the OP, the stand-ins, the
/// HTTP clients), so a port let go can be taken again before the child binds it; CI once failed
/// on exactly that ("Address already in use"). These ports come from below the ephemeral range,
/// which nothing allocates automatically, from a counter that never hands one out twice in this
/// test process and starts at a place set by the process id, so test binaries run one after the
/// other do not walk the same ports; a port something already listens on is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
        })
        .unwrap_or(32768);
    // [FLOOR, low): at least a few thousand ports outside the ephemeral range.
    const FLOOR: u32 = 12000;
    let span = low.saturating_sub(FLOOR).max(1000);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = FLOOR + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if let Ok(port) = u16::try_from(port) {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    panic!("no free loopback port in {FLOOR}..{}", FLOOR + span)
}

/// The test users of the upstream.
pub fn users() -> Value {
    json!({
        "agent1": {"email": "agent1@example.com", "email_verified": true, "name": "Ada Agent",
                   "picture": "https://img.example.com/a.png", ROLES_CLAIM: ["agent"],
                   "app_metadata": {"flex": {"roles": ["agent"]}}, "amr": ["pwd"]},
        "sup1": {"email": "sup1@example.com", "name": "Sam Supervisor", ROLES_CLAIM: "supervisor, wfo.team_leader, owner",
                 "app_metadata": {"flex": {"roles": ["supervisor", "wfo.team_leader"]}}},
        "norole": {"email": "norole@example.com", "name": "Nora Norole", "app_metadata": {"flex": {}}},
        "markup": {"email": "zoe@example.com", "name": "Zoë \"Zed\" <O'Brien> & Co -->",
                   "picture": "https://img.example.com/z.png?a=1&b=<2>", ROLES_CLAIM: ["agent"],
                   "app_metadata": {"flex": {"roles": ["agent"]}}}
    })
}

/// A running `oidc-provider`. Dropping it stops the process.
pub struct Op {
    pub issuer: String,
    child: Child,
    _stdin: ChildStdin,
    pub dir: tempfile::TempDir,
}

impl Drop for Op {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- oidc-provider log ---\n{}",
                std::fs::read_to_string(self.dir.path().join("op.log")).unwrap_or_default()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Op {
    /// What the OP wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("op.log")).unwrap_or_default()
    }

    pub fn start(redirect_uri: &str, client_id: &str, secret: &str, extra: Value) -> Op {
        node_modules();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = json!({
            "port": 0,
            "clients": [{"client_id": client_id, "client_secret": secret, "redirect_uris": [redirect_uri],
                         "token_endpoint_auth_method": "client_secret_basic"}],
            "users": users(),
        });
        if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let path = dir.path().join("op.json");
        std::fs::write(&path, cfg.to_string()).expect("write op config");
        // A Node process that hangs before READY is started again once, not waited on forever.
        let (child, stdin, issuer) = match Self::spawn(dir.path(), &path) {
            Some(started) => started,
            None => Self::spawn(dir.path(), &path).unwrap_or_else(|| {
                panic!(
                    "oidc-provider did not start (run scripts/install-test-deps): {}",
                    std::fs::read_to_string(dir.path().join("op.log")).unwrap_or_default()
                )
            }),
        };
        if std::env::var_os("FLEXGATE_TEST_KEEP").is_some() {
            eprintln!("op log: {}", dir.path().join("op.log").display());
        }
        Op {
            issuer,
            child,
            _stdin: stdin,
            dir,
        }
    }

    /// Starts `op.mjs` and waits up to 30 s for its `READY` line; `None` (the process killed)
    /// when it does not come. Its stdout keeps being read afterwards: a closed pipe would kill
    /// it at its next console.log.
    fn spawn(dir: &Path, config: &Path) -> Option<(Child, ChildStdin, String)> {
        let err = std::fs::File::create(dir.join("op.log")).expect("op log");
        let mut child = Command::new("node")
            .arg(repo().join("tests/peers/op.mjs"))
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("cannot start node (Node 20 required; run scripts/install-test-deps)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("READY ") {
                    let _ = tx.send(issuer.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(issuer) => Some((child, stdin, issuer)),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }
}

/// A plain-node stand-in for a cloud API (`node tests/peers/SCRIPT CONFIG.json`, which prints
/// `READY URL` once it listens). Dropping it stops the process.
pub struct NodePeer {
    pub url: String,
    child: Child,
    _stdin: ChildStdin,
    _dir: tempfile::TempDir,
}

impl Drop for NodePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodePeer {
    /// Starts `tests/peers/{script}` with `cfg` and waits for its `READY` line; `what` names it in
    /// the panic when it does not start. Its stderr is the test's when `show_stderr`.
    pub fn start(script: &str, cfg: &Value, what: &str, show_stderr: bool) -> NodePeer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, cfg.to_string()).expect("write the stand-in's config");
        let mut child = Command::new("node")
            .arg(repo().join("tests/peers").join(script))
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if show_stderr {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("cannot start node (Node 20 required; run scripts/install-test-deps)");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = match lines.next() {
            Some(Ok(l)) if l.starts_with("READY ") => l[6..].trim().to_string(),
            other => {
                let _ = child.kill();
                panic!("{what} did not start: {other:?}")
            }
        };
        // Keep reading: a closed pipe would kill it at its next console.log.
        std::thread::spawn(move || for _ in lines {});
        NodePeer {
            url,
            child,
            _stdin: stdin,
            _dir: dir,
        }
    }

    /// Its test-only `GET /__stats` counters.
    pub async fn stats(&self) -> Value {
        ::reqwest::get(format!("{}/__stats", self.url))
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }
}

/// The Auth0 Management API stand-in (`tests/peers/auth0_mgmt.mjs`).
pub struct Mgmt {
    pub url: String,
    peer: NodePeer,
}

impl Mgmt {
    pub fn start(cfg: Value) -> Mgmt {
        let peer = NodePeer::start("auth0_mgmt.mjs", &cfg, "the Management API stand-in", false);
        Mgmt {
            url: peer.url.clone(),
            peer,
        }
    }

    pub async fn stats(&self) -> Value {
        self.peer.stats().await
    }
}

/// SoftHSM2's module, as Debian/Ubuntu install it (`scripts/install-test-deps`).
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 configuration whose token directory is `dir/tokens` (made here); its path, for
/// `SOFTHSM2_CONF`. Panics naming the fix when SoftHSM2 is missing.
pub fn softhsm_conf(dir: &Path) -> PathBuf {
    assert!(
        Path::new(SOFTHSM_MODULE).exists(),
        "SoftHSM2 is missing: run scripts/install-test-deps (apt-get install softhsm2 opensc)"
    );
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).expect("token dir");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("softhsm2.conf");
    conf
}

/// A Prometheus sample's value on the flexgate whose admin listener is at `admin`, e.g.
/// `flexgate_roles_reads_total{source="snapshot"}` (0 when absent).
pub async fn metric(admin: &str, sample: &str) -> f64 {
    let text = ::reqwest::get(format!("{admin}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A running `flexgate serve` with its config and keys in a temp dir.
pub struct Flexgate {
    pub base: String,
    /// The admin listener (`server.admin_listen`): `/metrics`, the detailed `/readyz`.
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub cert_pem: String,
    pub entity_id: String,
    child: Child,
    pub log: PathBuf,
}

impl Drop for Flexgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test: cargo's, or `FLEXGATE_TEST_BIN` (a copy, when several worktrees share
/// one target directory and rebuild it concurrently).
pub fn flexgate_bin() -> PathBuf {
    match std::env::var_os("FLEXGATE_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_flexgate")),
    }
}

/// Generates a key pair with `flexgate keygen` into `dir`.
pub fn keygen(dir: &Path) {
    let out = Command::new(flexgate_bin())
        .args(["keygen", "--out"])
        .arg(dir)
        .output()
        .expect("run keygen");
    assert!(
        out.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SP section used by most tests: Enhanced (namespaced roles claim), Legacy
/// (`app_metadata.flex.roles`), and Enhanced variants signing the assertion or both.
pub fn default_sps() -> String {
    format!(
        r#"
[[sp]]
name = "flex"
kind = "flex-enhanced"
flex_connection = "{JQ}"
default_relay_state = "https://flex.twilio.com/default"

[sp.attributes]
email = "email"
full_name = "name"
image_url = "picture"
roles = "{ROLES_CLAIM}"

[[sp]]
name = "legacy"
kind = "flex-legacy"
account_sid = "{AC}"

[[sp]]
name = "flex-ie1"
kind = "flex-enhanced"
flex_connection = "JQ11111111111111111111111111111111"
region = "ie1"
sign = "assertion"

[[sp]]
name = "flex-both"
kind = "flex-enhanced"
flex_connection = "JQ22222222222222222222222222222222"
sign = "both"
"#
    )
}

impl Flexgate {
    /// Starts flexgate on `port` against `issuer`, with `sps` (TOML) and `extra` TOML lines for
    /// `[upstream]`.
    pub fn start(
        port: u16,
        issuer: &str,
        secret: &str,
        sps: &str,
        upstream_extra: &str,
    ) -> Flexgate {
        let dir = tempfile::tempdir().expect("tempdir");
        keygen(dir.path());
        let idp = "key = \"idp-key.pem\"\ncert = \"idp-cert.pem\"";
        Self::start_in(dir, port, issuer, secret, sps, upstream_extra, idp, &[])
    }

    /// Starts flexgate with its config in `dir` (which holds `idp-cert.pem`), the `[idp]` lines
    /// `idp` and extra environment `env`.
    #[allow(clippy::too_many_arguments)]
    pub fn start_in(
        dir: tempfile::TempDir,
        port: u16,
        issuer: &str,
        secret: &str,
        sps: &str,
        upstream_extra: &str,
        idp: &str,
        env: &[(&str, &str)],
    ) -> Flexgate {
        let base = format!("http://127.0.0.1:{port}");
        let admin_port = free_port();
        let config = format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
public_url = "{base}"

[idp]
{idp}

[upstream]
issuer = "{issuer}"
client_id = "flexgate"
client_secret = "${{TEST_CLIENT_SECRET}}"
{upstream_extra}
{sps}"#
        );
        let cfg_path = dir.path().join("flexgate.toml");
        std::fs::write(&cfg_path, config).expect("write config");
        let log = dir.path().join("flexgate.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(flexgate_bin())
            .args(["serve", "--config"])
            .arg(&cfg_path)
            .env("TEST_CLIENT_SECRET", secret)
            .env("FLEXGATE_LOG", "flexgate=trace,info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start flexgate");
        let cert_pem = std::fs::read_to_string(dir.path().join("idp-cert.pem")).expect("cert");
        let mut fg = Flexgate {
            entity_id: format!("{base}/saml/metadata"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            base,
            dir,
            cert_pem,
            child,
            log,
        };
        fg.wait_healthy();
        fg
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/healthz", self.base);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "flexgate exited ({status}) during start-up; log:\n{}",
                    self.log_text()
                );
            }
            if let Ok(r) = tinyhttp::blocking_get(&url) {
                if r {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("flexgate did not become healthy; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it contains `needle` (or after 5 s): flexgate's log writer is non-blocking,
    /// so a line may land just after the response that caused it.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log_text();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn sso_url(&self) -> String {
        format!("{}/saml/sso", self.base)
    }

    /// The server's process id (its CPU time is read from `/proc/PID/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Tiny blocking helpers built on std only (the async client is used for logins).
pub mod tinyhttp {
    use std::io::{Read, Write};
    pub fn blocking_get(url: &str) -> std::io::Result<bool> {
        let u = url::Url::parse(url).map_err(std::io::Error::other)?;
        let addr = format!("{}:{}", u.host_str().unwrap_or(""), u.port().unwrap_or(80));
        let addr: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        s.set_write_timeout(Some(std::time::Duration::from_secs(2)))?;
        write!(s, "GET {} HTTP/1.0\r\nHost: x\r\n\r\n", u.path())?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200"))
    }
}

/// What an SP expects of the Response to an Enhanced (us1) SP-initiated request `request_id`
/// through `env`: signed Response, unsigned assertion.
pub fn enhanced_expect(env: &Env, request_id: &str) -> SpExpect {
    SpExpect {
        cert_pem: env.fg.cert_pem.clone(),
        idp_entity_id: env.fg.entity_id.clone(),
        sp_entity_id: format!("urn:flex:{JQ}"),
        acs_url: format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}"),
        request_id: Some(request_id.to_string()),
        response_signed: true,
        assertion_signed: false,
    }
}

/// Logs `user` in through an Enhanced SP-initiated request (Redirect binding) in a new browser;
/// gives the request ID and the outcome.
pub async fn enhanced_login(env: &Env, user: &str) -> (String, Outcome) {
    let id = unique_id("_");
    let xml = enhanced_request(&id, JQ, "us1", &env.fg.sso_url());
    let url = format!(
        "{}?SAMLRequest={}",
        env.fg.sso_url(),
        url::form_urlencoded::byte_serialize(deflate_b64(&xml).as_bytes()).collect::<String>()
    );
    let b = Browser::new();
    let out = b.login(b.client.get(url), user).await;
    (id, out)
}

/// One upstream + one flexgate, wired to each other.
pub struct Env {
    pub op: Op,
    pub fg: Flexgate,
}

impl Env {
    pub fn start() -> Env {
        Self::start_with(&default_sps(), "", json!({}))
    }

    pub fn start_with(sps: &str, upstream_extra: &str, op_extra: Value) -> Env {
        let port = free_port();
        let secret = "test-secret-5f1d2c";
        let op = Op::start(
            &format!("http://127.0.0.1:{port}/oidc/callback"),
            "flexgate",
            secret,
            op_extra,
        );
        let fg = Flexgate::start(port, &op.issuer, secret, sps, upstream_extra);
        Env { op, fg }
    }
}

pub fn now_instant() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An AuthnRequest shaped like the one Flex (Enhanced) sends through its Auth0 SAML connection.
pub fn enhanced_request(id: &str, jq: &str, region: &str, destination: &str) -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" AssertionConsumerServiceURL="https://login.flex.{region}.twilio.com/login/callback?connection={jq}" Destination="{destination}" ID="{id}" IssueInstant="{}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Version="2.0"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">urn:flex:{jq}</saml:Issuer></samlp:AuthnRequest>"#,
        now_instant()
    )
}

/// An AuthnRequest shaped like Flex Legacy's (OneLogin toolkit).
pub fn legacy_request(id: &str, destination: &str) -> String {
    format!(
        r#"<samlp:AuthnRequest
  xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
  xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"
  ID="{id}"
  Version="2.0"
  IssueInstant="{}"
  Destination="{destination}"
  ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
  AssertionConsumerServiceURL="https://iam.twilio.com/v1/Accounts/{AC}/saml2">
  <saml:Issuer>https://iam.twilio.com/v1/Accounts/{AC}/saml2/metadata</saml:Issuer>
  <samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress" AllowCreate="true" />
  <samlp:RequestedAuthnContext Comparison="exact">
    <saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef>
  </samlp:RequestedAuthnContext>
</samlp:AuthnRequest>"#,
        now_instant()
    )
}

pub fn deflate_b64(xml: &str) -> String {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(xml.as_bytes()).expect("deflate");
    base64::engine::general_purpose::STANDARD.encode(e.finish().expect("deflate"))
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// A browser: one cookie jar, redirects followed by hand.
pub struct Browser {
    pub client: ::reqwest::Client,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

/// What the last step of a login produced.
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    pub body: String,
    /// For a 200 POST form: the form's action, SAMLResponse (base64), RelayState.
    pub form: Option<PostForm>,
    pub headers: ::reqwest::header::HeaderMap,
}

#[derive(Debug, Clone)]
pub struct PostForm {
    pub action: String,
    pub saml_response: String,
    pub relay_state: Option<String>,
}

impl PostForm {
    pub fn xml(&self) -> String {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&self.saml_response)
                .expect("SAMLResponse is base64"),
        )
        .expect("SAMLResponse is UTF-8")
    }
}

pub fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn attr_after(html: &str, marker: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html_unescape(&html[start..start + end]))
}

pub fn parse_post_form(html: &str) -> Option<PostForm> {
    Some(PostForm {
        action: attr_after(html, "<form id=\"f\" method=\"post\" action=\"")?,
        saml_response: attr_after(html, "name=\"SAMLResponse\" value=\"")?,
        relay_state: attr_after(html, "name=\"RelayState\" value=\""),
    })
}

impl Browser {
    pub fn new() -> Self {
        Browser {
            client: ::reqwest::Client::builder()
                .cookie_store(true)
                .redirect(::reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    /// Sends `first` and follows the login through the upstream as user `login`, until flexgate
    /// answers the callback (or something stops earlier).
    pub async fn login(&self, first: ::reqwest::RequestBuilder, login: &str) -> Outcome {
        self.drive(first, login, None).await.1
    }

    /// Like `login`, but stops before following the upstream's redirect to a URL starting with
    /// `stop_at` and returns that URL.
    pub async fn login_until(
        &self,
        first: ::reqwest::RequestBuilder,
        login: &str,
        stop_at: &str,
    ) -> String {
        self.drive(first, login, Some(stop_at))
            .await
            .0
            .expect("the login never reached the callback")
    }

    async fn drive(
        &self,
        first: ::reqwest::RequestBuilder,
        login: &str,
        stop_at: Option<&str>,
    ) -> (Option<String>, Outcome) {
        let mut resp = first.send().await.expect("first request");
        let mut interactions = 0;
        for _ in 0..20 {
            let status = resp.status();
            if !status.is_redirection() {
                break;
            }
            let loc = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("redirect without Location")
                .to_string();
            let url = resp.url().join(&loc).expect("Location is a URL");
            if let Some(stop) = stop_at {
                if url.as_str().starts_with(stop) {
                    let o = Outcome {
                        status: status.as_u16(),
                        body: String::new(),
                        form: None,
                        headers: resp.headers().clone(),
                    };
                    return (Some(url.to_string()), o);
                }
            }
            if url.path().starts_with("/interaction/") {
                let form: Vec<(&str, &str)> = if interactions == 0 {
                    vec![("prompt", "login"), ("login", login), ("password", "x")]
                } else {
                    vec![("prompt", "consent")]
                };
                interactions += 1;
                resp = self
                    .client
                    .post(url)
                    .form(&form)
                    .send()
                    .await
                    .expect("interaction");
            } else if glewlwyd::is_login_page(&url) {
                resp = glewlwyd::sign_in(&self.client, &url, login).await;
            } else {
                resp = self.client.get(url).send().await.expect("follow redirect");
            }
        }
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        let form = if status == 200 {
            parse_post_form(&body)
        } else {
            None
        };
        (
            None,
            Outcome {
                status,
                body,
                form,
                headers,
            },
        )
    }
}

/// What an SP expects; checked by every validator.
#[derive(Debug, Clone)]
pub struct SpExpect {
    pub cert_pem: String,
    pub idp_entity_id: String,
    pub sp_entity_id: String,
    pub acs_url: String,
    pub request_id: Option<String>,
    pub response_signed: bool,
    pub assertion_signed: bool,
}

/// The attributes as the SP libraries report them.
pub type Attrs = std::collections::BTreeMap<String, Vec<String>>;

fn run_json(cmd: &mut Command, input: &str) -> (bool, Value) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start validator");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write validator input");
    let out = child.wait_with_output().expect("validator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "validator printed no JSON: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn validator_input(b64: &str, e: &SpExpect) -> String {
    json!({
        "saml_response": b64,
        "idp_cert_pem": e.cert_pem,
        "idp_entity_id": e.idp_entity_id,
        "sp_entity_id": e.sp_entity_id,
        "acs_url": e.acs_url,
        "request_id": e.request_id,
        "want_messages_signed": e.response_signed,
        "want_assertions_signed": e.assertion_signed,
        "now": null
    })
    .to_string()
}

fn to_attrs(v: &Value) -> Attrs {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let vals = match v {
                        Value::Array(a) => a
                            .iter()
                            .map(|x| x.as_str().unwrap_or("").to_string())
                            .collect(),
                        Value::String(s) => vec![s.clone()],
                        _ => vec![],
                    };
                    (k.clone(), vals)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// python3-saml in strict mode. Returns `Ok((name_id, attributes))` or the error.
pub fn python3_saml(b64: &str, e: &SpExpect) -> Result<(String, Attrs), String> {
    let (ok, v) = run_json(
        Command::new(venv_python()).arg(repo().join("tests/peers/validate_py.py")),
        &validator_input(b64, e),
    );
    if ok && v["ok"] == json!(true) {
        Ok((
            v["nameid"].as_str().unwrap_or("").to_string(),
            to_attrs(&v["attributes"]),
        ))
    } else {
        Err(format!("{} ({})", v["error"], v["reason"]))
    }
}

/// `@node-saml/node-saml` 5.
pub fn node_saml(b64: &str, e: &SpExpect) -> Result<(String, Attrs), String> {
    node_modules();
    let (ok, v) = run_json(
        Command::new("node").arg(repo().join("tests/peers/validate_node.mjs")),
        &validator_input(b64, e),
    );
    if ok && v["ok"] == json!(true) {
        Ok((
            v["profile"]["nameID"].as_str().unwrap_or("").to_string(),
            to_attrs(&v["attributes"]),
        ))
    } else {
        Err(v["error"].to_string())
    }
}

/// The xmlsec1 CLI: `which` is "Response" or "Assertion"; only `cert_pem` is trusted.
pub fn xmlsec1_verify(xml: &str, cert_pem: &str, which: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("r.xml");
    let c = dir.path().join("c.pem");
    std::fs::write(&f, xml).expect("write");
    std::fs::write(&c, cert_pem).expect("write");
    let (id_attr, xpath) = match which {
        "Response" => (
            "urn:oasis:names:tc:SAML:2.0:protocol:Response",
            "/*[local-name()='Response']/*[local-name()='Signature']",
        ),
        _ => (
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
            "//*[local-name()='Assertion']/*[local-name()='Signature']",
        ),
    };
    let out = Command::new(xmlsec1())
        .args([
            "--verify",
            "--id-attr:ID",
            id_attr,
            "--enabled-key-data",
            "raw-x509-cert",
            "--pubkey-cert-pem",
        ])
        .arg(&c)
        .args(["--node-xpath", xpath])
        .arg(&f)
        .output()
        .expect("run xmlsec1");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs every independent validator on a Response and checks they agree; returns the attributes.
pub fn validate_everywhere(form: &PostForm, e: &SpExpect) -> (String, Attrs) {
    let xml = form.xml();
    assert_eq!(form.action, e.acs_url, "the form posts to the ACS");
    if e.response_signed {
        xmlsec1_verify(&xml, &e.cert_pem, "Response")
            .unwrap_or_else(|err| panic!("xmlsec1 (Response): {err}\n{xml}"));
    }
    if e.assertion_signed {
        xmlsec1_verify(&xml, &e.cert_pem, "Assertion")
            .unwrap_or_else(|err| panic!("xmlsec1 (Assertion): {err}\n{xml}"));
    }
    let py = python3_saml(&form.saml_response, e)
        .unwrap_or_else(|err| panic!("python3-saml refused: {err}\n{xml}"));
    let node = node_saml(&form.saml_response, e)
        .unwrap_or_else(|err| panic!("node-saml refused: {err}\n{xml}"));
    assert_eq!(py, node, "python3-saml and node-saml disagree");
    py
}

pub fn attrs(pairs: &[(&str, &[&str])]) -> Attrs {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

/// The reference id an error page shows (what a person reads out to support).
pub fn page_reference(body: &str) -> String {
    let at = body
        .find("Reference: <code>")
        .expect("a reference on the page")
        + 17;
    body[at..at + body[at..].find('<').expect("end of the reference")].to_string()
}
