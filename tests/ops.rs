//! Production operations: two `flexgate serve` instances sharing a real `redis-server`, Redis
//! restarts and absence, `/metrics`, JSON logs, SIGHUP reload, graceful shutdown, TLS.

mod common;
use common::redis::*;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `flexgate serve` with its own listen port, sharing keys and `public_url` with its peers
/// (as instances behind one load balancer do).
struct Instance {
    child: Child,
    port: u16,
    /// The admin listener's port (`server.admin_listen`, added to every instance's config).
    admin: u16,
    log: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(port: u16, public_port: u16, issuer: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{public_port}"
shutdown_grace_secs = 5
{extra}
[idp]
entity_id = "https://sso.example.com/saml/metadata"
key = "idp-key.pem"
cert = "idp-cert.pem"

[upstream]
issuer = "{issuer}"
client_id = "flexgate"
client_secret = "test-secret-5f1d2c"
{sps}"#,
        sps = default_sps()
    )
}

impl Instance {
    fn start_text(dir: &Path, name: &str, port: u16, text: String) -> Instance {
        Instance::start_env(dir, name, port, text, &[])
    }
    fn start_env(
        dir: &Path,
        name: &str,
        port: u16,
        text: String,
        env: &[(&str, &Path)],
    ) -> Instance {
        let admin = free_port();
        let text = text.replacen(
            "[server]\n",
            &format!("[server]\nadmin_listen = \"127.0.0.1:{admin}\"\n"),
            1,
        );
        Instance::spawn(dir, name, port, admin, text, env)
    }
    /// Starts `text` as it is (no admin listener added); `admin` is only remembered.
    fn spawn(
        dir: &Path,
        name: &str,
        port: u16,
        admin: u16,
        text: String,
        env: &[(&str, &Path)],
    ) -> Instance {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(flexgate_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut i = Instance {
            child,
            port,
            admin,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = i.child.try_wait() {
                panic!("{name} exited ({s}): {}", i.log_text());
            }
            if tinyhttp::blocking_get(&format!("http://127.0.0.1:{port}/healthz")).unwrap_or(false)
            {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not start: {}",
                i.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// The admin listener: `/metrics`, the detailed `/readyz`.
    fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin)
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

/// The OP with the `flexgate` client whose callback is on 127.0.0.1:`p`.
fn start_op(p: u16, extra: serde_json::Value) -> Op {
    Op::start(
        &format!("http://127.0.0.1:{p}/oidc/callback"),
        "flexgate",
        "test-secret-5f1d2c",
        extra,
    )
}

fn start_op_https(p: u16, extra: serde_json::Value) -> Op {
    Op::start(
        &format!("https://127.0.0.1:{p}/oidc/callback"),
        "flexgate",
        "test-secret-5f1d2c",
        extra,
    )
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn sso(public_port: u16, on: &Instance, id: &str) -> String {
    let xml = enhanced_request(
        id,
        JQ,
        "us1",
        &format!("http://127.0.0.1:{public_port}/saml/sso"),
    );
    format!(
        "{}/saml/sso?SAMLRequest={}",
        on.base(),
        urlencode(&deflate_b64(&xml))
    )
}

fn on_instance(url: &str, public_port: u16, to: &Instance) -> String {
    url.replace(
        &format!("127.0.0.1:{public_port}"),
        &format!("127.0.0.1:{}", to.port),
    )
}

fn keys(dir: &Path) {
    keygen(dir);
}

/// The detailed `/readyz` (the admin listener's).
async fn readyz(i: &Instance) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{}/readyz", i.admin())).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// What two instances sharing Redis need: a folder with the keys, `redis-server`, the two
/// instances' ports (A's is the public one) and an OP that sends the callback to A.
fn redis_pair() -> (tempfile::TempDir, Redis, u16, u16, Op) {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let redis = Redis::start(free_port());
    let (pa, pb) = (free_port(), free_port());
    let op = Op::start(
        &format!("http://127.0.0.1:{pa}/oidc/callback"),
        "flexgate",
        "test-secret-5f1d2c",
        json!({}),
    );
    (dir, redis, pa, pb, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_redis() {
    let (dir, redis, pa, pb, op) = redis_pair();
    let a = start_with_store(dir.path(), "a", pa, pa, &op.issuer, &redis.url());
    let b = start_with_store(dir.path(), "b", pb, pa, &op.issuer, &redis.url());
    assert_eq!(readyz(&a).await.0, 200);
    assert_eq!(readyz(&b).await.1["checks"]["store"], "ok");

    // A login begun on A finishes on B.
    let id = unique_id("_");
    let br = Browser::new();
    let cb = br
        .login_until(
            br.client.get(sso(pa, &a, &id)),
            "agent1",
            &format!("http://127.0.0.1:{pa}/oidc/callback"),
        )
        .await;
    let r = br
        .client
        .get(on_instance(&cb, pa, &b))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let form = parse_post_form(&r.text().await.unwrap()).expect("a POST form from B");
    let cert = std::fs::read_to_string(dir.path().join("idp-cert.pem")).unwrap();
    let e = SpExpect {
        cert_pem: cert,
        idp_entity_id: "https://sso.example.com/saml/metadata".into(),
        sp_entity_id: format!("urn:flex:{JQ}"),
        acs_url: format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}"),
        request_id: Some(id.clone()),
        response_signed: true,
        assertion_signed: false,
    };
    python3_saml(&form.saml_response, &e).expect("python3-saml accepts B's response");
    // The same callback on A: the state was used on B.
    let r = br.client.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // A request ID used on A is refused on B.
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let id = unique_id("_");
    assert_eq!(c.get(sso(pa, &a, &id)).send().await.unwrap().status(), 302);
    let r = c.get(sso(pa, &b, &id)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("already used"));

    // Redis restarts mid-login: the login in flight fails with a clear page; new ones succeed
    // without restarting flexgate.
    let br = Browser::new();
    let cb = br
        .login_until(
            br.client.get(sso(pa, &a, &unique_id("_"))),
            "agent1",
            &format!("http://127.0.0.1:{pa}/oidc/callback"),
        )
        .await;
    let port = redis.port;
    drop(redis);
    let r = br.client.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 503, "Redis down: a page, not a hang");
    assert!(r.text().await.unwrap().contains("temporarily unavailable"));
    let (status, v) = readyz(&a).await;
    assert_eq!(status, 503);
    assert!(
        v["checks"]["store"].as_str().unwrap().contains("Redis"),
        "{v}"
    );
    let redis = Redis::start(port);
    let mut ok = false;
    for _ in 0..50 {
        if readyz(&b).await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "B recovers once Redis is back");
    let id = unique_id("_");
    let br = Browser::new();
    let out = br.login(br.client.get(sso(pa, &a, &id)), "agent1").await;
    assert_eq!(out.status, 200, "{}", out.body);
    drop(redis);
    drop((a, b, op));
}

fn start_with_store(
    dir: &Path,
    name: &str,
    port: u16,
    public: u16,
    issuer: &str,
    url: &str,
) -> Instance {
    start_with_store_env(dir, name, port, public, issuer, url, &[])
}

fn start_with_store_env(
    dir: &Path,
    name: &str,
    port: u16,
    public: u16,
    issuer: &str,
    url: &str,
    env: &[(&str, &Path)],
) -> Instance {
    Instance::start_env(
        dir,
        name,
        port,
        config_text(port, public, issuer, "")
            + &format!("\n[store]\nurl = \"{url}\"\ntimeout_ms = 500\n"),
        env,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_absent_at_start() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let p = free_port();
    let op = start_op(p, json!({}));
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let i = start_with_store(dir.path(), "c", p, p, &op.issuer, &dead);
    let (status, v) = readyz(&i).await;
    assert_eq!(status, 503);
    assert!(
        v["checks"]["store"].as_str().unwrap().contains("Redis"),
        "{v}"
    );
    assert_eq!(v["checks"]["upstream"], "ok");
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let started = Instant::now();
    let r = c.get(sso(p, &i, &unique_id("_"))).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    assert!(r.text().await.unwrap().contains("temporarily unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_json_logs_reload_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let p = free_port();
    let op = start_op(p, json!({}));
    let config = dir.path().join("m.toml");
    let text = config_text(p, p, &op.issuer, "") + "\n[log]\nformat = \"json\"\n";
    let mut i = Instance::start_text(dir.path(), "m", p, text.clone());

    // One good login, one without roles.
    let b = Browser::new();
    let out = b
        .login(b.client.get(sso(p, &i, &unique_id("_"))), "agent1")
        .await;
    assert_eq!(out.status, 200);
    let b = Browser::new();
    let out = b
        .login(b.client.get(sso(p, &i, &unique_id("_"))), "norole")
        .await;
    assert_eq!(out.status, 403);

    let m = reqwest::get(format!("{}/metrics", i.admin()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "flexgate_logins_started_total{sp=\"flex\"} 2",
        "flexgate_logins_completed_total{sp=\"flex\"} 1",
        "flexgate_logins_failed_total{reason=\"no_role\",sp=\"flex\"} 1",
        "flexgate_signing_duration_seconds_count 1",
        "flexgate_upstream_request_duration_seconds_count{call=\"token\"} 2",
        "flexgate_login_duration_seconds_count{sp=\"flex\"} 1",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    // agent1's ID token carries every mapped claim, so userinfo is not called for it; norole's
    // lacks the roles claim, so it is (once).
    assert!(
        m.contains("flexgate_upstream_request_duration_seconds_count{call=\"userinfo\"} 1"),
        "{m}"
    );

    // JSON logs: every line is JSON; one event per login outcome with SP, subject, outcome, duration.
    wait_for(|| i.log_text().contains("login failed"));
    let logs = i.log_text();
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let done = events
        .iter()
        .find(|e| e["message"] == "login completed")
        .expect("a completed event");
    assert_eq!(done["sp"], "flex");
    assert_eq!(done["subject"], "agent1");
    assert_eq!(done["outcome"], "completed");
    assert!(done["duration_ms"].is_number());
    let failed = events
        .iter()
        .find(|e| e["message"] == "login failed")
        .expect("a failed event");
    assert_eq!(failed["sp"], "flex");
    assert_eq!(failed["reason"], "no_role");

    // SIGHUP: a bad config is refused and the old one kept...
    std::fs::write(
        &config,
        text.replace(
            "flex_connection = \"JQ0123456789abcdef0123456789abcdef\"",
            "flex_connection = \"JQ-bad\"",
        ),
    )
    .unwrap();
    i.signal("-HUP");
    wait_for(|| i.log_text().contains("reload refused"));
    let md = reqwest::get(format!("{}/saml/metadata", i.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(md.contains("https://sso.example.com/saml/metadata"));
    // ...a good one is taken, without a restart, and requests keep flowing.
    std::fs::write(
        &config,
        text.replace(
            "entity_id = \"https://sso.example.com/saml/metadata\"",
            "entity_id = \"https://sso2.example.com/saml/metadata\"",
        ),
    )
    .unwrap();
    i.signal("-HUP");
    wait_for(|| i.log_text().contains("configuration and keys reloaded"));
    let md = reqwest::get(format!("{}/saml/metadata", i.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        md.contains("https://sso2.example.com/saml/metadata"),
        "{md}"
    );
    let b = Browser::new();
    let out = b
        .login(b.client.get(sso(p, &i, &unique_id("_"))), "agent1")
        .await;
    assert_eq!(out.status, 200);
    assert!(out
        .form
        .unwrap()
        .xml()
        .contains("https://sso2.example.com/saml/metadata"));

    // SIGTERM: exits 0, promptly.
    i.signal("-TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = i.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // The log writer batches lines; the last ones, logged just before exit, are on stderr.
    let log = i.log_text();
    assert!(
        log.contains("shutdown requested")
            && log
                .trim_end()
                .lines()
                .last()
                .is_some_and(|l| l.contains("flexgate stopped")),
        "the last log lines were not written at exit:\n{log}"
    );
}

fn wait_for(f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_a_reverse_proxy() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let tls = tempfile::tempdir().unwrap();
    keygen(tls.path());
    let p = free_port();
    let op = start_op_https(p, json!({}));
    let extra = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        tls.path().join("idp-cert.pem").display(),
        tls.path().join("idp-key.pem").display()
    );
    let config = dir.path().join("t.toml");
    let text = config_text(p, p, &op.issuer, "header_timeout_secs = 1")
        .replace("public_url = \"http://", "public_url = \"https://");
    let text = text.replace("[idp]", &format!("{extra}\n[idp]"));
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("t.log");
    let mut child = Command::new(flexgate_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let c = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = c.get(format!("https://127.0.0.1:{p}/healthz")).send().await {
            ok = r.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    if !ok {
        let _ = child.kill();
        let _ = child.wait();
        panic!("https /healthz: {log_text}");
    }
    let url = format!(
        "https://127.0.0.1:{p}/saml/sso?SAMLRequest={}",
        urlencode(&deflate_b64(&enhanced_request(
            &unique_id("_"),
            JQ,
            "us1",
            &format!("https://127.0.0.1:{p}/saml/sso"),
        )))
    );
    let r = c.get(url).send().await.unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    // A TCP connection that never starts the TLS handshake is cut by the header timeout.
    let mut silent = std::net::TcpStream::connect(format!("127.0.0.1:{p}")).unwrap();
    let (_, after) = read_until_closed("silent TLS", &mut silent, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status(), 302, "{cookie}");
    // On https the binding cookie has the __Host- prefix: Secure, Path=/, no Domain.
    assert!(
        cookie.starts_with("__Host-flexgate_browser=")
            && cookie.contains("; Secure")
            && cookie.contains("; Path=/;")
            && cookie.contains("HttpOnly")
            && !cookie.to_ascii_lowercase().contains("domain"),
        "{cookie}"
    );
    assert!(
        after >= Duration::from_millis(800),
        "cut too early: {after:?}"
    );
}

fn spawn_quiet(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis (run scripts/install-test-deps)")
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_tcp(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two instances on one store URL: a login begun on A finishes on B; an ID used on A is refused on B.
async fn shared_store_works(dir: &Path, store_url: &str) {
    shared_store_works_env(dir, store_url, &[]).await
}

async fn shared_store_works_env(dir: &Path, store_url: &str, env: &[(&str, &Path)]) {
    keys(dir);
    let (pa, pb) = (free_port(), free_port());
    let op = Op::start(
        &format!("http://127.0.0.1:{pa}/oidc/callback"),
        "flexgate",
        "test-secret-5f1d2c",
        json!({}),
    );
    let a = start_with_store_env(dir, "a", pa, pa, &op.issuer, store_url, env);
    let b = start_with_store_env(dir, "b", pb, pa, &op.issuer, store_url, env);
    let mut ready = false;
    for _ in 0..100 {
        if readyz(&a).await.0 == 200 && readyz(&b).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "{:?} / {:?}", readyz(&a).await, readyz(&b).await);
    let br = Browser::new();
    let cb = br
        .login_until(
            br.client.get(sso(pa, &a, &unique_id("_"))),
            "agent1",
            &format!("http://127.0.0.1:{pa}/oidc/callback"),
        )
        .await;
    let r = br
        .client
        .get(on_instance(&cb, pa, &b))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", b.log_text());
    assert!(parse_post_form(&r.text().await.unwrap()).is_some());
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let id = unique_id("_");
    assert_eq!(c.get(sso(pa, &a, &id)).send().await.unwrap().status(), 302);
    assert_eq!(c.get(sso(pa, &b, &id)).send().await.unwrap().status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel() {
    let dir = tempfile::tempdir().unwrap();
    sentinel_store_works(dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path());
    sentinel_store_works(dir.path(), Some(&tls)).await;
}

/// A master and one Sentinel watching it (TLS-only with `tls`, Sentinel to master too), then
/// `shared_store_works` through the Sentinel.
async fn sentinel_store_works(dir: &Path, tls: Option<&TlsFiles>) {
    let (master, sentinel) = (free_port(), free_port());
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!("dir {}\nsentinel monitor mymaster 127.0.0.1 {master} 1\nsentinel down-after-milliseconds mymaster 2000\n", dir.display()),
    )
    .unwrap();
    let (master_args, sentinel_args) = match tls {
        // the Sentinel takes the listening and TLS options, not the persistence ones
        Some(t) => (t.server_args(master), t.listen_args(sentinel)),
        None => (plain_args(master), plain_listen_args(sentinel)),
    };
    let _procs = Procs(vec![
        spawn_quiet(Command::new("/usr/bin/redis-server").args(&master_args)),
        spawn_quiet(
            Command::new("/usr/bin/redis-server")
                .arg(&conf)
                .args(&sentinel_args)
                .arg("--sentinel"),
        ),
    ]);
    wait_tcp(master);
    wait_tcp(sentinel);
    match tls {
        Some(t) => {
            let url = format!("rediss+sentinel://127.0.0.1:{sentinel}/mymaster");
            shared_store_works_env(dir, &url, &[("SSL_CERT_FILE", &t.ca)]).await
        }
        None => {
            let url = format!("redis+sentinel://127.0.0.1:{sentinel}/mymaster");
            shared_store_works(dir, &url).await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    let dir = tempfile::tempdir().unwrap();
    cluster_store_works(dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path());
    cluster_store_works(dir.path(), Some(&tls)).await;
}

/// A 3-node Redis Cluster (TLS-only with `tls`: clients and the cluster bus), then
/// `shared_store_works` on it.
async fn cluster_store_works(dir: &Path, tls: Option<&TlsFiles>) {
    let ports = [free_port(), free_port(), free_port()];
    let mut procs = Vec::new();
    for p in ports {
        let mut args: Vec<String> = match tls {
            Some(t) => {
                let mut a = t.server_args(p);
                a.extend(["--tls-cluster".into(), "yes".into()]);
                a
            }
            None => plain_args(p),
        };
        // The cluster bus port is the client port + 10000 unless named: name one known free, so
        // a busy p + 10000 (possibly in the ephemeral range) cannot stop the node.
        args.extend([
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            format!("nodes-{p}.conf"),
            "--cluster-port".into(),
            free_port().to_string(),
        ]);
        procs.push(spawn_quiet(
            Command::new("/usr/bin/redis-server")
                .current_dir(dir)
                .args(&args),
        ));
    }
    let _procs = Procs(procs);
    for p in ports {
        wait_tcp(p);
    }
    let cli_tls: Vec<String> = match tls {
        Some(t) => vec![
            "--tls".into(),
            "--cacert".into(),
            t.ca.display().to_string(),
        ],
        None => vec![],
    };
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(&cli_tls)
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli (run scripts/install-test-deps)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = Command::new("redis-cli")
            .args(&cli_tls)
            .args(["-p", &ports[0].to_string(), "cluster", "info"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster did not form");
        std::thread::sleep(Duration::from_millis(100));
    }
    match tls {
        Some(t) => {
            let url = format!("rediss+cluster://{}", nodes.join(","));
            shared_store_works_env(dir, &url, &[("SSL_CERT_FILE", &t.ca)]).await
        }
        None => shared_store_works(dir, &format!("redis+cluster://{}", nodes.join(","))).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_request_has_a_deadline_and_a_page() {
    // upstream.timeout_secs is 10 (the default), the token endpoint takes 8 s, and the request
    // deadline is 5 s: the person gets a page at 5 s, not a hung tab or a bare 504.
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let p = free_port();
    let op = start_op(p, json!({"token_delay_ms": 8000}));
    let i = Instance::start_text(
        dir.path(),
        "d",
        p,
        config_text(p, p, &op.issuer, "request_timeout_secs = 5"),
    );
    let b = Browser::new();
    let started = Instant::now();
    let out = b
        .login(b.client.get(sso(p, &i, &unique_id("_"))), "agent1")
        .await;
    assert_eq!(out.status, 504, "{}", out.body);
    assert!(out.body.contains("took too long"), "{}", out.body);
    assert!(started.elapsed() < Duration::from_secs(8));
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
fn read_until_closed(
    what: &str,
    s: &mut std::net::TcpStream,
    limit: Duration,
) -> (Vec<u8>, Duration) {
    use std::io::Read;
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, started.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (got, started.elapsed())
            }
            Err(e) => panic!(
                "{what}: the connection was still open after {:?} ({e}); got {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_and_idle_connections_are_cut() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let p = free_port();
    let op = start_op(p, json!({}));
    let i = Instance::start_text(
        dir.path(),
        "h",
        p,
        config_text(p, p, &op.issuer, "header_timeout_secs = 1"),
    );
    let addr = format!("127.0.0.1:{p}");

    // A client trickling its request head (slowloris) is cut after the header timeout.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    // A connection that never sends a byte is cut too.
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    let (got, after) = read_until_closed("slow head", &mut slow, Duration::from_secs(10));
    assert!(
        after >= Duration::from_millis(800),
        "cut too early: {after:?}"
    );
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "a half-sent request was answered: {}",
        String::from_utf8_lossy(&got)
    );
    let (_, _) = read_until_closed("silent", &mut silent, Duration::from_secs(10));

    // A kept-alive connection is answered, then closed once it idles past the timeout.
    let mut kept = std::net::TcpStream::connect(&addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (got, after) = read_until_closed("kept alive", &mut kept, Duration::from_secs(10));
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        after >= Duration::from_millis(800),
        "closed too early: {after:?}"
    );

    // Meanwhile the server serves everyone else, logins included.
    let b = Browser::new();
    let out = b
        .login(b.client.get(sso(p, &i, &unique_id("_"))), "agent1")
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.form.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_login_in_flight_finish() {
    // The token endpoint takes 3 s; SIGTERM arrives while the callback waits for it. The login
    // still ends at the ACS form, new connections are refused, and the process exits 0.
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let p = free_port();
    let op = start_op(p, json!({"token_delay_ms": 3000}));
    let mut i = Instance::start_text(dir.path(), "t", p, config_text(p, p, &op.issuer, ""));
    let first = sso(p, &i, &unique_id("_"));
    let login = tokio::spawn(async move {
        let b = Browser::new();
        b.login(b.client.get(first), "agent1").await
    });
    // wait until the callback has reached flexgate (the OP logs the token request it delays)
    let started = Instant::now();
    loop {
        if op.log_text().contains("delaying POST /token")
            || started.elapsed() > Duration::from_secs(15)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    i.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{p}")).is_err(),
        "still accepting connections after SIGTERM"
    );
    let out = login.await.unwrap();
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out
        .form
        .unwrap()
        .xml()
        .contains("StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\""));
    let status = loop {
        if let Some(s) = i.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// A private CA and a server certificate for 127.0.0.1 (IP SAN), made with the openssl CLI.
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn tls_files(dir: &Path) -> TlsFiles {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=flexgate test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "redis-key.pem",
        "-out",
        "redis.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "redis.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "redis-cert.pem",
    ]);
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("redis-cert.pem"),
        key: dir.join("redis-key.pem"),
    }
}

impl TlsFiles {
    /// redis-server / sentinel options: TLS only (`port 0`), TLS to replicas and masters too.
    /// Listening options: TLS only on 127.0.0.1 (`port 0`), TLS to masters and replicas too.
    fn listen_args(&self, tls_port: u16) -> Vec<String> {
        [
            "--port",
            "0",
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &self.cert.display().to_string(),
            "--tls-key-file",
            &self.key.display().to_string(),
            "--tls-ca-cert-file",
            &self.ca.display().to_string(),
            "--tls-auth-clients",
            "no",
            "--tls-replication",
            "yes",
            "--bind",
            "127.0.0.1",
        ]
        .map(String::from)
        .to_vec()
    }

    /// redis-server options: `listen_args` and nothing on disk.
    fn server_args(&self, tls_port: u16) -> Vec<String> {
        [self.listen_args(tls_port), no_disk()].concat()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls() {
    // rediss:// with a password: the server's certificate is checked (a private CA is trusted via
    // SSL_CERT_FILE); without the CA, flexgate refuses the connection and /readyz says so.
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path());
    let port = free_port();
    let mut args = tls.server_args(port);
    args.extend(["--requirepass".into(), "s3cret-redis".into()]);
    let _procs = Procs(vec![spawn_quiet(
        Command::new("/usr/bin/redis-server").args(&args),
    )]);
    wait_tcp(port);
    let url = format!("rediss://:s3cret-redis@127.0.0.1:{port}/0");
    shared_store_works_env(dir.path(), &url, &[("SSL_CERT_FILE", &tls.ca)]).await;

    let p = free_port();
    let op = start_op(p, json!({}));
    let untrusting = start_with_store_env(dir.path(), "u", p, p, &op.issuer, &url, &[]);
    let (status, body) = readyz(&untrusting).await;
    assert_eq!(status, 503, "{body}");
    let why = body.to_string().to_lowercase();
    assert!(why.contains("certificate") || why.contains("tls"), "{body}");
    assert!(why.contains("ssl_cert_file"), "the fix is named: {body}");
}

/// An instance reading roles through `mgmt` every `prefetch_secs`, sharing them through Redis.
fn prefetching(
    dir: &Path,
    name: &str,
    (port, public_port): (u16, u16),
    issuer: &str,
    mgmt: &Mgmt,
    redis: &Redis,
    prefetch_secs: u64,
) -> Instance {
    let management = format!(
        "client_secret = \"test-secret-5f1d2c\"\ntimeout_secs = 30\n[upstream.management]\nurl = \"{}\"\nclient_id = \"mgmt\"\nclient_secret = \"mgmt-secret\"\nprefetch_secs = {prefetch_secs}\n",
        mgmt.url
    );
    let text = config_text(port, public_port, issuer, "").replacen(
        "client_secret = \"test-secret-5f1d2c\"\n",
        &management,
        1,
    ) + &format!("\n[store]\nurl = \"{}\"\ntimeout_ms = 500\n", redis.url());
    Instance::start_text(dir, name, port, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_one_roles_snapshot_through_redis() {
    let (dir, redis, pa, pb, op) = redis_pair();
    let mgmt = Mgmt::start(json!({
        "client_id": "mgmt", "client_secret": "mgmt-secret", "rate": {"per_sec": 2, "burst": 10},
        "users": {"norole": {"email": "norole@example.com", "app_metadata": {"flex": {"roles": ["supervisor"]}}}},
    }));
    let start = |name: &str, port: u16| {
        prefetching(dir.path(), name, (port, pa), &op.issuer, &mgmt, &redis, 60)
    };
    let a = start("a", pa);
    let b = start("b", pb);

    // Both serve from one snapshot, read once.
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in [&a, &b] {
        while metric(&i.admin(), "flexgate_roles_snapshot_users").await < 1.0 {
            assert!(Instant::now() < deadline, "no snapshot: {}", i.log_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let stats = mgmt.stats().await;
    assert_eq!(
        stats["by_route"]["search_users"], 1,
        "one instance read: {stats}"
    );
    let refreshes = "flexgate_roles_snapshot_refreshes_total{result=\"ok\"}";
    assert_eq!(
        metric(&a.admin(), refreshes).await + metric(&b.admin(), refreshes).await,
        1.0
    );

    // A login begun on each instance gets its roles with no per-login call.
    let cert = std::fs::read_to_string(dir.path().join("idp-cert.pem")).unwrap();
    for on in [&a, &b] {
        assert_eq!(legacy_roles(on, pa, &cert).await, vec!["supervisor"]);
    }
    assert_eq!(mgmt.stats().await["user_requests"], 0);

    // `flexgate roles set --config` writes Auth0 and the shared snapshot: both instances serve
    // the new role long before the next bulk read (60 s), still with no per-login call.
    let out = Command::new(flexgate_bin())
        .args(["roles", "set", "norole@example.com", "agent", "--config"])
        .arg(dir.path().join("a.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("shared roles snapshot was updated"), "{said}");
    for on in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(25);
        while legacy_roles(on, pa, &cert).await != vec!["agent"] {
            assert!(Instant::now() < deadline, "{}", on.log_text());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let stats = mgmt.stats().await;
    assert_eq!(stats["user_requests"], 0, "{stats}");
    assert_eq!(
        stats["by_route"]["search_users"], 1,
        "no second bulk read: {stats}"
    );
}

/// A Legacy-SP login of `norole` begun on `on` (public URL on `public_port`).
async fn legacy_login(on: &Instance, public_port: u16, id: &str) -> Outcome {
    let xml = legacy_request(id, &format!("http://127.0.0.1:{public_port}/saml/sso"));
    let url = format!(
        "{}/saml/sso?SAMLRequest={}",
        on.base(),
        urlencode(&deflate_b64(&xml))
    );
    let br = Browser::new();
    br.login(br.client.get(url), "norole").await
}

/// A Legacy-SP login begun on `on` (public URL on `public_port`), checked by python3-saml; the
/// roles Flex would receive.
async fn legacy_roles(on: &Instance, public_port: u16, cert: &str) -> Vec<String> {
    let id = unique_id("ONELOGIN_");
    let out = legacy_login(on, public_port, &id).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let e = SpExpect {
        cert_pem: cert.to_string(),
        idp_entity_id: "https://sso.example.com/saml/metadata".into(),
        sp_entity_id: format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2/metadata"),
        acs_url: format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2"),
        request_id: Some(id),
        response_signed: true,
        assertion_signed: false,
    };
    let (_, got) = python3_saml(&out.form.unwrap().saml_response, &e).expect("python3-saml");
    got["roles"].clone()
}

/// `flexgate trace QUERY --config C` run to its end: (exit code, stdout, stderr).
fn trace_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(flexgate_bin())
        .arg("trace")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_on_one_instance_are_traced_from_a_config_that_shares_its_redis() {
    let (dir, redis, pa, _pb, op) = redis_pair();
    let a = start_with_store(dir.path(), "a", pa, pa, &op.issuer, &redis.url());
    // Support's config: another listen port, never started; only the Redis (and the IdP
    // certificate, for the Response checks) is shared with A.
    let support = dir.path().join("support.toml");
    let text = config_text(free_port(), pa, &op.issuer, "")
        + &format!("\n[store]\nurl = \"{}\"\n", redis.url());
    std::fs::write(&support, text).unwrap();

    // A successful login on A: found by its AuthnRequest ID, its Response ID and the email.
    let id = unique_id("_");
    let b = Browser::new();
    let out = b.login(b.client.get(sso(pa, &a, &id)), "agent1").await;
    assert_eq!(out.status, 200, "{}", out.body);
    let xml = out.form.expect("a POST form").xml();
    let at = xml.find(" ID=\"").unwrap() + 5;
    let response_id = xml[at..at + xml[at..].find('"').unwrap()].to_string();
    let (code, json, err) = tokio::task::block_in_place(|| trace_cli(&support, &[&id, "--json"]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let t = &v[0];
    assert_eq!(t["status"], "completed", "{json}");
    assert_eq!(t["request_id"], id.as_str());
    assert_eq!(t["response_id"], response_id.as_str());
    assert_eq!(t["email"], "agent1@example.com");
    assert_eq!(t["binding"], "HTTP-Redirect");
    let stages: Vec<&str> = t["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "request_received",
            "request_checks",
            "to_upstream",
            "callback",
            "token",
            "id_token_checks",
            "mfa_decision",
            "roles_source",
            "mapping",
            "signing",
            "response_sent"
        ],
        "{json}"
    );
    assert!(t["authn_request_xml"].as_str().unwrap().contains(&id));
    // The Response as sent, but for its signature value: a trace is not a usable login.
    assert_eq!(
        t["response"]["xml"].as_str().unwrap(),
        flexgate::trace::elide_signature_values(&xml)
    );
    assert_ne!(flexgate::trace::elide_signature_values(&xml), xml);
    let checks = t["checks"].as_array().unwrap();
    assert!(checks.len() >= 10, "{json}");
    for c in checks {
        assert_eq!(c["ok"], true, "{c}");
    }
    let claims = t["claims"].to_string();
    assert!(
        claims.contains("\"Ada Agent\"") && claims.contains(ROLES_CLAIM),
        "{claims}"
    );
    for q in [response_id.as_str(), "agent1@example.com"] {
        let (code, text, err) = tokio::task::block_in_place(|| trace_cli(&support, &[q]));
        assert_eq!(code, 0, "{q}: {err}");
        assert!(
            text.contains(&id) && text.contains("✔ Audience"),
            "{q}: {text}"
        );
    }

    // A failed login: the page's reference id finds the stage that stopped it and the fix.
    let b = Browser::new();
    let out = b
        .login(b.client.get(sso(pa, &a, &unique_id("_"))), "norole")
        .await;
    assert_eq!(out.status, 403, "{}", out.body);
    let reference = page_reference(&out.body);
    assert!(!reference.starts_with('-'));
    let (code, text, err) = tokio::task::block_in_place(|| trace_cli(&support, &[&reference]));
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("Outcome        failed"), "{text}");
    assert!(text.contains("✗ mapping"), "{text}");
    assert!(text.contains("fix: give the user a Flex role"), "{text}");
    assert!(text.contains("norole@example.com"), "{text}");
    // The same person's attempts, newest first, as many as asked.
    let (code, json, _) = tokio::task::block_in_place(|| {
        trace_cli(&support, &["norole@example.com", "--json", "--limit", "1"])
    });
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["reference"], reference.as_str());

    // A login sent upstream that never came back is found too.
    let id = unique_id("_");
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(c.get(sso(pa, &a, &id)).send().await.unwrap().status(), 302);
    let (code, json, err) = tokio::task::block_in_place(|| trace_cli(&support, &[&id, "--json"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap()[0]["status"],
        "upstream"
    );

    // Nothing found: exit 1; bad usage: exit 2.
    let (code, _, err) =
        tokio::task::block_in_place(|| trace_cli(&support, &["nobody@example.com"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no trace matches"), "{err}");
    for bad in [&["--limit", "0", "x"][..], &[][..], &["x", "--nope"][..]] {
        let (code, _, err) = tokio::task::block_in_place(|| trace_cli(&support, bad));
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
    let memory = dir.path().join("memory.toml");
    std::fs::write(&memory, config_text(free_port(), pa, &op.issuer, "")).unwrap();
    let (code, _, err) = tokio::task::block_in_place(|| trace_cli(&memory, &["x"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("admin listener"), "{err}");
}

/// The TCP ports process `pid` listens on: its socket inodes (`/proc/PID/fd`) matched with the
/// LISTEN rows (state 0A) of `/proc/net/tcp` and `tcp6`.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().to_string();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for row in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort_unstable();
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let p = free_port();
    let op = start_op(p, json!({}));
    let text = config_text(p, p, &op.issuer, "");
    assert!(!text.contains("admin_listen"));
    let i = Instance::spawn(dir.path(), "off", p, 0, text, &[]);
    assert_eq!(listening_ports(i.child.id()), vec![p], "only server.listen");
    let r = reqwest::get(format!("{}/metrics", i.base())).await.unwrap();
    assert_eq!(r.status(), 404, "no public /metrics");
    assert!(!i.log_text().contains("admin listener"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_detail_and_metrics_are_served_only_by_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let p = free_port();
    // A recognisable failure text: the (dead) upstream's URL is in the reason.
    let marker = "tenant-marker-7f3a";
    let issuer = format!("http://127.0.0.1:{}/{marker}/", free_port());
    let config = dir.path().join("adm.toml");
    let text = config_text(p, p, &issuer, "").replace(
        "client_secret = \"test-secret-5f1d2c\"\n",
        "client_secret = \"test-secret-5f1d2c\"\ntimeout_secs = 2\n",
    );
    let mut i = Instance::start_text(dir.path(), "adm", p, text);
    assert_eq!(listening_ports(i.child.id()), {
        let mut both = vec![p, i.admin];
        both.sort_unstable();
        both
    });

    // Public: which check fails, nothing more; no /metrics.
    let r = reqwest::get(format!("{}/readyz", i.base())).await.unwrap();
    assert_eq!(r.status(), 503);
    let public = r.text().await.unwrap();
    assert!(
        !public.contains(marker) && !public.contains("reached"),
        "{public}"
    );
    let v: serde_json::Value = serde_json::from_str(&public).unwrap();
    assert_eq!(
        v,
        json!({"ready": false, "checks": {"keys": "ok", "upstream": "failing", "store": "ok"}})
    );
    let r = reqwest::get(format!("{}/metrics", i.base())).await.unwrap();
    assert_eq!(r.status(), 404);

    // Admin: the reason, and the metrics.
    let (status, v) = readyz(&i).await;
    assert_eq!(status, 503);
    assert!(
        v["checks"]["upstream"].as_str().unwrap().contains(marker),
        "{v}"
    );
    let r = reqwest::get(format!("{}/metrics", i.admin()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text().await.unwrap().contains("flexgate_"),
        "metrics text"
    );

    // SIGHUP: a changed admin_listen waits for a restart; the admin listener keeps serving.
    let cfg_text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("admin_listen = \"127.0.0.1:{}\"", i.admin),
        &format!("admin_listen = \"127.0.0.1:{}\"", free_port()),
    );
    std::fs::write(&config, cfg_text).unwrap();
    i.signal("-HUP");
    wait_for(|| i.log_text().contains("configuration and keys reloaded"));
    assert!(
        i.log_text().contains("server.admin_listen"),
        "{}",
        i.log_text()
    );
    assert_eq!(readyz(&i).await.0, 503);

    // SIGTERM stops both listeners.
    i.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = i.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", i.admin)).is_err());
}

/// The HTTP status of a login of `norole` on `on` (403: Flex's no-role page).
async fn login_status(on: &Instance, public_port: u16) -> u16 {
    legacy_login(on, public_port, &unique_id("ONELOGIN_"))
        .await
        .status
}

/// Issue 18, item 1: `flexgate roles set EMAIL --none --config` while a bulk read that began
/// before it is in flight (the stand-in answers the second search 20 s after reading the users).
/// Both instances give the no-role page within 15 s (the reading one included, while its read
/// is still in flight), and still after the slow read publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_sticks_on_every_instance_while_a_bulk_read_spans_it() {
    let (dir, redis, pa, pb, op) = redis_pair();
    let mgmt = Mgmt::start(json!({
        "client_id": "mgmt", "client_secret": "mgmt-secret",
        "search_delay_ms": 20000, "search_delay_after": 1,
        "users": {"norole": {"email": "norole@example.com", "app_metadata": {"flex": {"roles": ["supervisor"]}}}},
    }));
    let start = |name: &str, port: u16| {
        prefetching(dir.path(), name, (port, pa), &op.issuer, &mgmt, &redis, 20)
    };
    let a = start("a", pa);
    let b = start("b", pb);
    let cert = std::fs::read_to_string(dir.path().join("idp-cert.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in [&a, &b] {
        while metric(&i.admin(), "flexgate_roles_snapshot_users").await < 1.0 {
            assert!(Instant::now() < deadline, "no snapshot: {}", i.log_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(legacy_roles(&a, pa, &cert).await, vec!["supervisor"]);

    // The second bulk read (one interval on) reads the users, then takes 20 s to answer.
    let deadline = Instant::now() + Duration::from_secs(40);
    while mgmt.stats().await["slow_searches_begun"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "no second bulk read");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = Command::new(flexgate_bin())
        .args(["roles", "set", "norole@example.com", "--none", "--config"])
        .arg(dir.path().join("a.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("shared roles snapshot was updated"), "{said}");
    let removed = Instant::now();
    assert_eq!(
        mgmt.stats().await["slow_searches_done"].as_u64(),
        None,
        "the slow read is still in flight"
    );
    for on in [&a, &b] {
        while login_status(on, pa).await != 403 {
            assert!(
                removed.elapsed() < Duration::from_secs(15),
                "{}",
                on.log_text()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert_eq!(
        mgmt.stats().await["slow_searches_done"].as_u64(),
        None,
        "both refuse the person while the slow read is still in flight"
    );

    // The slow read publishes what it read before the change; the change holds on both.
    let refreshes = "flexgate_roles_snapshot_refreshes_total{result=\"ok\"}";
    let deadline = Instant::now() + Duration::from_secs(40);
    while metric(&a.admin(), refreshes).await + metric(&b.admin(), refreshes).await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "{}{}",
            a.log_text(),
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every instance loads it within one tick (5 s): look for 8 s.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(8) {
        for on in [&a, &b] {
            assert_eq!(login_status(on, pa).await, 403, "{}", on.log_text());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        mgmt.stats().await["slow_searches_done"].as_u64(),
        Some(1),
        "the slow read was answered"
    );
}
