//! Secrets and tokens never reach the logs, at any level.
//!
//! Each test runs real logins through `flexgate serve` with `FLEXGATE_LOG=trace` for EVERY crate
//! (hyper, reqwest, axum, … included), captures stderr, and searches it for every secret the login
//! handled: the client secret (and its Basic-auth form), the authorization code, the `state`, the
//! browser-binding cookie, the nonce, anything that looks like a JWT (the ID token; the PKCE verifier
//! cannot be seen from outside, so a JWT or the verifier-bearing token request would show as `eyJ`
//! or the code), the SAMLResponse, the private key's PEM lines, and — with the Auth0 Management API
//! configured — its client secret and the access token it issued.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use base64::Engine;
use common::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "cs-Zq8vW3kT9pLm2XrB7yN4";
const MGMT_SECRET: &str = "mgmt-S3cr3t-Hv6Jd1Kq0Wz";

/// `flexgate serve` with `FLEXGATE_LOG=trace` (tests/common's starter sets `flexgate=trace,info`).
struct Traced {
    base: String,
    dir: tempfile::TempDir,
    child: Child,
    log: PathBuf,
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Traced {
    fn start(port: u16, issuer: &str, secret: &str, upstream_extra: &str) -> Traced {
        let dir = tempfile::tempdir().expect("tempdir");
        keygen(dir.path());
        let base = format!("http://127.0.0.1:{port}");
        let config = format!(
            r#"[server]
listen = "127.0.0.1:{port}"
public_url = "{base}"

[idp]
key = "idp-key.pem"
cert = "idp-cert.pem"

[upstream]
issuer = "{issuer}"
client_id = "flexgate"
client_secret = "${{TEST_CLIENT_SECRET}}"
{upstream_extra}
{}"#,
            default_sps()
        );
        let cfg = dir.path().join("flexgate.toml");
        std::fs::write(&cfg, config).expect("config");
        let log = dir.path().join("flexgate.log");
        let child = Command::new(flexgate_bin())
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("TEST_CLIENT_SECRET", secret)
            .env("FLEXGATE_MGMT_SECRET", MGMT_SECRET)
            .env("FLEXGATE_LOG", "trace")
            .env("RUST_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start flexgate");
        let mut t = Traced {
            base,
            dir,
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = t.child.try_wait() {
                panic!("flexgate exited ({s}); log:\n{}", t.log_text());
            }
            if tinyhttp::blocking_get(&format!("{}/healthz", t.base)).unwrap_or(false) {
                return t;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("flexgate did not become healthy; log:\n{}", t.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it contains `needle` `times` times (flexgate's writer is non-blocking, so a
    /// line may land after the response), plus a moment for whatever follows it.
    async fn log_after(&self, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.log_text().matches(needle).count() < times && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.log_text()
    }

    fn sso_url(&self) -> String {
        format!("{}/saml/sso", self.base)
    }

    fn callback_prefix(&self) -> String {
        format!("{}/oidc/callback", self.base)
    }

    /// The private key's PEM body lines.
    fn key_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("idp-key.pem"))
            .expect("key")
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            .map(str::to_string)
            .collect()
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{name} missing in {url}"))
}

/// Every way `s` could be written into a log line: as is, percent-encoded, JSON-escaped.
fn forms(s: &str) -> Vec<String> {
    let mut v = vec![s.to_string(), urlencode(s)];
    let json = serde_json::to_string(s).unwrap();
    v.push(json.trim_matches('"').to_string());
    v.sort();
    v.dedup();
    v
}

/// Fails naming each secret found in `log`, with the line it is on.
fn assert_absent(log: &str, secrets: &[(&str, String)]) {
    let mut leaks = Vec::new();
    for (what, secret) in secrets {
        assert!(
            secret.len() >= 8,
            "{what} is too short to search for: {secret:?}"
        );
        for f in forms(secret) {
            if let Some(line) = log.lines().find(|l| l.contains(&f)) {
                leaks.push(format!("{what} ({f}) in: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets in the log:\n{}",
        leaks.join("\n")
    );
}

fn assert_no_jwt(log: &str) {
    // Any JWT (ID token, a JWT access token) starts with base64url("{\"") = "eyJ".
    let hits: Vec<&str> = log.lines().filter(|l| l.contains("eyJ")).collect();
    assert!(
        hits.is_empty(),
        "JWT-like text in the log:\n{}",
        hits.join("\n")
    );
}

/// The log really is at trace level for all crates (else the test proves nothing).
fn assert_trace_everywhere(log: &str) {
    assert!(
        log.lines().filter(|l| l.contains("TRACE")).count() >= 5,
        "too few TRACE lines:\n{log}"
    );
    // hyper's connection pool logs at trace: other crates' trace output is on too.
    assert!(
        log.contains("idle connection"),
        "no trace output from the HTTP stack:\n{log}"
    );
}

struct Started {
    location: String,
    cookie: String,
}

/// GET /saml/sso; returns the authorize URL and the binding cookie's value.
async fn start_login(b: &Browser, fg: &Traced, xml: &str) -> Started {
    let url = format!(
        "{}?SAMLRequest={}&RelayState=relay-1",
        fg.sso_url(),
        urlencode(&deflate_b64(xml))
    );
    let r = b.client.get(url).send().await.expect("sso");
    assert_eq!(r.status(), 302);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("cookie value");
    Started {
        location: r.headers()["location"].to_str().unwrap().to_string(),
        cookie,
    }
}

fn basic(id: &str, secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_login_at_trace_level_logs_no_secret() {
    full_login_logs_no_secret("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_login_at_trace_level_logs_no_secret_in_json() {
    // `[log] format = "json"` writes every field of every event (spans included) as JSON values.
    let log = full_login_logs_no_secret("\n[log]\nformat = \"json\"\n").await;
    let events: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(events.len() >= 20, "{log}");
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "login completed" && e["outcome"] == "completed"),
        "{log}"
    );
}

/// Two logins (one with interaction, one on the OP's session) at trace level for every crate;
/// returns the log after checking that none of the secrets they handled is in it.
async fn full_login_logs_no_secret(config_extra: &str) -> String {
    let port = free_port();
    let op = Op::start(
        &format!("http://127.0.0.1:{port}/oidc/callback"),
        "flexgate",
        SECRET,
        json!({}),
    );
    let fg = tokio::task::block_in_place(|| Traced::start(port, &op.issuer, SECRET, config_extra));
    let b = Browser::new();
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &fg.sso_url());
    let started = start_login(&b, &fg, &xml).await;
    let nonce = query_param(&started.location, "nonce");
    let cb = b
        .login_until(
            b.client.get(&started.location),
            "agent1",
            &fg.callback_prefix(),
        )
        .await;
    let code = query_param(&cb, "code");
    let state = query_param(&cb, "state");
    let r = b.client.get(&cb).send().await.expect("callback");
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let form = parse_post_form(&body).expect("a SAMLResponse form");
    let saml = form.saml_response.clone();
    assert!(saml.len() > 200);
    // A second login in the same browser (the OP has a session: no interaction).
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &fg.sso_url());
    let again = start_login(&b, &fg, &xml).await;
    let out = b.login(b.client.get(&again.location), "agent1").await;
    assert_eq!(out.status, 200, "{}", out.body);

    let log = fg.log_after("login completed", 2).await;
    assert_eq!(log.matches("login completed").count(), 2, "{log}");
    assert_trace_everywhere(&log);
    let mut secrets = vec![
        ("client secret", SECRET.to_string()),
        ("Basic credentials", basic("flexgate", SECRET)),
        ("authorization code", code),
        ("state", state),
        ("browser cookie", started.cookie),
        ("browser cookie (2nd login)", again.cookie),
        ("nonce", nonce),
        ("SAMLResponse", saml.clone()),
        ("SAMLResponse (a slice)", saml[100..180].to_string()),
        (
            "SAMLResponse (2nd)",
            out.form.expect("form").saml_response[100..180].to_string(),
        ),
    ];
    for (i, l) in fg.key_lines().into_iter().enumerate() {
        secrets.push((
            if i == 0 {
                "private key"
            } else {
                "private key line"
            },
            l,
        ));
    }
    assert_absent(&log, &secrets);
    assert_no_jwt(&log);
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_token_exchange_logs_no_secret() {
    // flexgate's secret differs from the one the OP knows: the token endpoint says invalid_client.
    let port = free_port();
    let op_secret = "op-side-secret-Tq2Lr8";
    let op = Op::start(
        &format!("http://127.0.0.1:{port}/oidc/callback"),
        "flexgate",
        op_secret,
        json!({}),
    );
    let fg = tokio::task::block_in_place(|| Traced::start(port, &op.issuer, SECRET, ""));
    let b = Browser::new();
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &fg.sso_url());
    let started = start_login(&b, &fg, &xml).await;
    let cb = b
        .login_until(
            b.client.get(&started.location),
            "agent1",
            &fg.callback_prefix(),
        )
        .await;
    let code = query_param(&cb, "code");
    let state = query_param(&cb, "state");
    let r = b.client.get(&cb).send().await.expect("callback");
    assert_eq!(r.status(), 502);
    let page = r.text().await.unwrap();
    assert!(!page.contains("SAMLResponse"));

    let log = fg.log_after("login failed", 1).await;
    assert!(log.contains("login failed"), "{log}");
    assert!(
        log.contains("invalid_client"),
        "the reason is logged: {log}"
    );
    assert_trace_everywhere(&log);
    let mut secrets = vec![
        ("client secret", SECRET.to_string()),
        ("Basic credentials", basic("flexgate", SECRET)),
        ("authorization code", code),
        ("state", state),
        ("browser cookie", started.cookie),
    ];
    for l in fg.key_lines() {
        secrets.push(("private key line", l));
    }
    assert_absent(&log, &secrets);
    assert_absent(&page, &[("client secret", SECRET.to_string())]);
    assert_no_jwt(&log);
}

// ---------------------------------------------------------------- Management API

/// A recording proxy in front of the Management API stand-in: it hands the access tokens the
/// stand-in issues to the test (the stand-in mints random ones) and rewrites the `audience`
/// flexgate sends for the proxy's URL to the stand-in's.
struct Recorder {
    target: String,
    base: String,
    client: reqwest::Client,
    access_tokens: Mutex<Vec<String>>,
}

async fn forward(State(p): State<Arc<Recorder>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    let path = parts.uri.path().to_string();
    let pq = parts
        .uri
        .path_and_query()
        .map(|x| x.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut out = bytes.to_vec();
    if path == "/oauth/token" {
        if let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) {
            if v["audience"] == json!(format!("{}/api/v2/", p.base)) {
                v["audience"] = json!(format!("{}/api/v2/", p.target));
            }
            out = serde_json::to_vec(&v).unwrap();
        }
    }
    let mut rb = p
        .client
        .request(parts.method.clone(), format!("{}{pq}", p.target))
        .body(out);
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.send().await.expect("forward");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("body");
    if path == "/oauth/token" {
        if let Some(t) = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_string))
        {
            p.access_tokens.lock().push(t);
        }
    }
    let mut r = Response::builder().status(StatusCode::from_u16(status.as_u16()).unwrap());
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" {
            r = r.header(k, v);
        }
    }
    r.body(Body::from(body)).unwrap()
}

async fn recorder(target: &str) -> Arc<Recorder> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let p = Arc::new(Recorder {
        target: target.to_string(),
        base,
        client: reqwest::Client::new(),
        access_tokens: Mutex::new(Vec::new()),
    });
    let app = Router::new().fallback(forward).with_state(p.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_api_credentials_and_tokens_stay_out_of_the_log() {
    let mgmt = Mgmt::start(json!({
        "port": 0,
        "client_id": "mgmt",
        "client_secret": MGMT_SECRET,
        "token_ttl": 86400,
        "users": {"agent1": {"email": "agent1@example.com", "app_metadata": {"flex": {"roles": ["agent"]}}}},
    }));
    let proxy = recorder(&mgmt.url).await;
    let port = free_port();
    let op = Op::start(
        &format!("http://127.0.0.1:{port}/oidc/callback"),
        "flexgate",
        SECRET,
        json!({}),
    );
    // Roles read at login here; the second instance below keeps the bulk read on (the default),
    // so its failure with the wrong secret is logged too.
    let extra = format!(
        "[upstream.management]\nurl = \"{}\"\nclient_id = \"mgmt\"\nclient_secret = \"${{FLEXGATE_MGMT_SECRET}}\"\nprefetch_secs = 0\n",
        proxy.base
    );
    let fg = tokio::task::block_in_place(|| Traced::start(port, &op.issuer, SECRET, &extra));

    // Flex Legacy reads roles from app_metadata.flex.roles, which now comes from the Management API.
    let b = Browser::new();
    let xml = legacy_request(&unique_id("ONELOGIN_"), &fg.sso_url());
    let started = start_login(&b, &fg, &xml).await;
    let cb = b
        .login_until(
            b.client.get(&started.location),
            "agent1",
            &fg.callback_prefix(),
        )
        .await;
    let code = query_param(&cb, "code");
    let r = b.client.get(&cb).send().await.expect("callback");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let stats = mgmt.stats().await;
    assert_eq!(stats["token_requests"], 1, "{stats}");
    assert_eq!(stats["user_requests"], 1, "{stats}");

    // A second flexgate whose Management secret is wrong: the login fails, the secret stays out.
    let port2 = free_port();
    let op2 = Op::start(
        &format!("http://127.0.0.1:{port2}/oidc/callback"),
        "flexgate",
        SECRET,
        json!({}),
    );
    let wrong = "mgmt-wrong-Secret-9Xc4";
    let extra2 = format!(
        "[upstream.management]\nurl = \"{}\"\nclient_id = \"mgmt\"\nclient_secret = \"{wrong}\"\n",
        proxy.base
    );
    let fg2 = tokio::task::block_in_place(|| Traced::start(port2, &op2.issuer, SECRET, &extra2));
    let b2 = Browser::new();
    let xml = legacy_request(&unique_id("ONELOGIN_"), &fg2.sso_url());
    let s2 = start_login(&b2, &fg2, &xml).await;
    let out = b2.login(b2.client.get(&s2.location), "agent1").await;
    assert_eq!(out.status, 502, "{}", out.body);
    assert!(out.body.contains("Flex roles could not be read"));

    let tokens = proxy.access_tokens.lock().clone();
    assert_eq!(tokens.len(), 1, "one Management API token was issued");
    let log = fg.log_after("login completed", 1).await;
    assert!(log.contains("login completed"), "{log}");
    assert_trace_everywhere(&log);
    let mut secrets = vec![
        ("Management client secret", MGMT_SECRET.to_string()),
        ("Management access token", tokens[0].clone()),
        ("client secret", SECRET.to_string()),
        ("authorization code", code),
        ("browser cookie", started.cookie),
    ];
    for l in fg.key_lines() {
        secrets.push(("private key line", l));
    }
    assert_absent(&log, &secrets);
    assert_no_jwt(&log);

    let log2 = fg2.log_after("login failed", 1).await;
    assert!(log2.contains("login failed"), "{log2}");
    assert!(
        log2.contains("roles snapshot could not be refreshed"),
        "the bulk read's failure is logged too: {log2}"
    );
    assert_absent(
        &log2,
        &[
            ("wrong Management client secret", wrong.to_string()),
            ("client secret", SECRET.to_string()),
            ("browser cookie", s2.cookie),
        ],
    );
    assert_no_jwt(&log2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_the_callback_cannot_forge_log_lines() {
    // Anyone can start a login and so own a valid state + cookie; the error/error_description
    // they then put in the callback are logged. A newline in them must not start a new line.
    let port = free_port();
    let op = Op::start(
        &format!("http://127.0.0.1:{port}/oidc/callback"),
        "flexgate",
        SECRET,
        json!({}),
    );
    let fg = tokio::task::block_in_place(|| Traced::start(port, &op.issuer, SECRET, ""));
    let b = Browser::new();
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &fg.sso_url());
    let started = start_login(&b, &fg, &xml).await;
    let state = query_param(&started.location, "state");
    let forged = "2020-01-01T00:00:00.000000Z  INFO login completed sp=flex subject=forged-admin";
    let url = format!(
        "{}?state={}&error={}&error_description={}",
        fg.callback_prefix(),
        urlencode(&state),
        urlencode(&format!("access_denied\n{forged} via-error")),
        urlencode(&format!("no\r\n{forged} via-description"))
    );
    let r = b.client.get(url).send().await.expect("callback");
    assert_eq!(r.status(), 403);
    let log = fg.log_after("upstream_denied", 1).await;
    assert!(log.contains("upstream_denied"), "{log}");
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("2020-01-01") || l.contains("\r"))
        .collect();
    assert!(bad.is_empty(), "forged log lines:\n{}", bad.join("\n"));
}

/// `flexgate trace ARGS --config` of `fg`, with the environment its config reads.
fn trace_output(fg: &Traced, args: &[&str]) -> String {
    let out = Command::new(flexgate_bin())
        .arg("trace")
        .args(args)
        .arg("--config")
        .arg(fg.dir.path().join("flexgate.toml"))
        .env("TEST_CLIENT_SECRET", SECRET)
        .env("FLEXGATE_MGMT_SECRET", MGMT_SECRET)
        .output()
        .expect("flexgate trace");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "flexgate trace {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_enters_a_trace_in_any_output_format() {
    let mgmt = Mgmt::start(json!({
        "port": 0,
        "client_id": "mgmt",
        "client_secret": MGMT_SECRET,
        "token_ttl": 86400,
        "users": {
            "agent1": {"email": "agent1@example.com", "app_metadata": {"flex": {"roles": ["agent"]}}},
            "norole": {"email": "norole@example.com", "app_metadata": {"flex": {}}},
        },
    }));
    let proxy = recorder(&mgmt.url).await;
    let redis = common::redis::Redis::start(free_port());
    let port = free_port();
    let op = Op::start(
        &format!("http://127.0.0.1:{port}/oidc/callback"),
        "flexgate",
        SECRET,
        json!({}),
    );
    let extra = format!(
        "[upstream.management]\nurl = \"{}\"\nclient_id = \"mgmt\"\nclient_secret = \"${{FLEXGATE_MGMT_SECRET}}\"\nprefetch_secs = 0\n\n[store]\nurl = \"{}\"\n",
        proxy.base,
        redis.url()
    );
    let fg = tokio::task::block_in_place(|| Traced::start(port, &op.issuer, SECRET, &extra));

    // A completed login (Legacy: roles from the Management API) and a failed one.
    let b = Browser::new();
    let xml = legacy_request(&unique_id("ONELOGIN_"), &fg.sso_url());
    let started = start_login(&b, &fg, &xml).await;
    let nonce = query_param(&started.location, "nonce");
    let cb = b
        .login_until(
            b.client.get(&started.location),
            "agent1",
            &fg.callback_prefix(),
        )
        .await;
    let (code, state) = (query_param(&cb, "code"), query_param(&cb, "state"));
    let r = b.client.get(&cb).send().await.expect("callback");
    let status = r.status();
    let page = r.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{page}");
    // The Response's signature: with it, a trace would be a login anyone reading the store
    // could post to Flex while it is valid.
    let posted = parse_post_form(&page).expect("the auto-submitting form");
    let response_xml = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&posted.saml_response)
            .unwrap(),
    )
    .unwrap();
    let signature_value = response_xml
        .split("<ds:SignatureValue>")
        .nth(1)
        .and_then(|t| t.split("</ds:SignatureValue>").next())
        .expect("a SignatureValue")
        .to_string();
    let b2 = Browser::new();
    let xml = legacy_request(&unique_id("ONELOGIN_"), &fg.sso_url());
    let failed = start_login(&b2, &fg, &xml).await;
    let cb2 = b2
        .login_until(
            b2.client.get(&failed.location),
            "norole",
            &fg.callback_prefix(),
        )
        .await;
    let code2 = query_param(&cb2, "code");
    let r = b2.client.get(&cb2).send().await.expect("callback");
    assert_eq!(r.status(), 403);
    // The same callback again (the state is used): a trace of its own, with the code in the URL.
    let r = b2.client.get(&cb2).send().await.expect("callback again");
    assert_eq!(r.status(), 400);
    let stale = page_reference(&r.text().await.unwrap());
    let tokens = proxy.access_tokens.lock().clone();
    assert!(!tokens.is_empty(), "the Management API issued a token");

    let outputs = tokio::task::block_in_place(|| {
        let mut o = Vec::new();
        for who in ["agent1@example.com", "norole@example.com", &stale] {
            o.push(trace_output(&fg, &[who, "--json"]));
            o.push(trace_output(&fg, &[who]));
        }
        o
    });
    let json: Value = serde_json::from_str(&outputs[0]).expect("JSON");
    let mut html = String::new();
    for out in [&outputs[0], &outputs[2], &outputs[4]] {
        for v in serde_json::from_str::<Vec<flexgate::trace::View>>(out).unwrap() {
            html.push_str(&flexgate::web::admin_logins::trace_page_html(&v));
        }
    }
    let all = format!("{}\n{html}", outputs.join("\n"));
    // The traces are real: claims, the Management API's roles, the Response, the failure.
    assert_eq!(json[0]["status"], "completed", "{}", outputs[0]);
    assert!(
        all.contains("app_metadata") && all.contains("agent1@example.com"),
        "{all}"
    );
    assert!(
        all.contains("SignatureValue"),
        "the Response as sent is in the trace"
    );
    assert!(
        all.contains("no_role") && all.contains("bad_state"),
        "{all}"
    );
    // Where the roles came from: this login read them from the Management API itself.
    assert!(
        all.contains("read from the Auth0 Management API now"),
        "{all}"
    );
    let mut secrets = vec![
        ("client secret", SECRET.to_string()),
        ("Basic credentials", basic("flexgate", SECRET)),
        ("Management client secret", MGMT_SECRET.to_string()),
        ("authorization code", code),
        ("authorization code (failed login)", code2),
        ("state", state),
        ("browser cookie", started.cookie),
        ("browser cookie (failed login)", failed.cookie),
        ("nonce", nonce),
        ("the Response's SignatureValue", signature_value.clone()),
        (
            "the Response's SignatureValue (its first 40 characters)",
            signature_value[..40].to_string(),
        ),
    ];
    for t in tokens {
        secrets.push(("Management access token", t));
    }
    // The key's lines that encode the modulus are public (the certificate carries the same
    // bytes, and the Response carries the certificate); every other line must be absent.
    let cert: String = std::fs::read_to_string(fg.dir.path().join("idp-cert.pem"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for l in fg
        .key_lines()
        .into_iter()
        .filter(|l| !cert.contains(l.as_str()))
    {
        secrets.push(("private key line", l));
    }
    assert_absent(&all, &secrets);
    // The ID token (a JWT) and the OP's access token never reach flexgate's login code; only
    // the claims do. Any JWT would show as "eyJ".
    assert_no_jwt(&all);
}
