//! The command line as SPEC.md promises it: `keygen`, `metadata`, `serve` (start-up refusals),
//! `check` (against a real OpenID provider, npm `oidc-provider`) and `verify`; every exit code
//! (0 ok, 1 a check or verification failed, 2 bad usage or bad config) and the messages that name
//! the file, the key and the fix.

mod common;

use common::{keygen, repo, Op, JQ, ROLES_CLAIM};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::x509::{X509NameBuilder, X509};
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PUBLIC: &str = "https://sso.example.com";

fn bin() -> Command {
    let mut c = Command::new(common::flexgate_bin());
    c.env_remove("FLEXGATE_CONFIG").env_remove("FLEXGATE_LOG");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run flexgate")
}

fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flexgate");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = w.join();
    out
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn both(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

#[track_caller]
fn assert_exit(o: &Output, want: i32) {
    assert_eq!(
        code(o),
        Some(want),
        "exit code; stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

// ------------------------------------------------------------------------------------- keygen

#[test]
fn keygen_writes_a_private_key_and_a_matching_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("certs");
    let o = run(&["keygen", "--out", p(&out)]);
    assert_exit(&o, 0);
    let key_path = out.join("idp-key.pem");
    let cert_path = out.join("idp-cert.pem");
    assert_eq!(mode(&key_path), 0o600, "the key must be mode 0600");
    let key = PKey::private_key_from_pem(&std::fs::read(&key_path).expect("key")).expect("PEM key");
    let cert = X509::from_pem(&std::fs::read(&cert_path).expect("cert")).expect("PEM cert");
    assert_eq!(key.bits(), 2048, "default size");
    assert!(
        cert.public_key().expect("pubkey").public_eq(&key),
        "the certificate belongs to the key"
    );
    assert!(cert.verify(&key).expect("verify"), "self-signed");
    let now = Asn1Time::days_from_now(0).expect("now");
    assert!(cert.not_before() <= now && cert.not_after() > now);
}

#[test]
fn keygen_never_overwrites_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    assert_exit(&run(&["keygen", "--out", p(out)]), 0);
    let key_path = out.join("idp-key.pem");
    let cert_path = out.join("idp-cert.pem");
    let key1 = std::fs::read(&key_path).expect("key");
    let cert1 = std::fs::read(&cert_path).expect("cert");

    let o = run(&["keygen", "--out", p(out)]);
    assert_exit(&o, 2);
    let msg = stderr(&o);
    assert!(msg.contains("idp-key.pem"), "names the file: {msg}");
    assert!(msg.contains("--force"), "names --force: {msg}");
    assert_eq!(
        std::fs::read(&key_path).expect("key"),
        key1,
        "key untouched"
    );
    assert_eq!(
        std::fs::read(&cert_path).expect("cert"),
        cert1,
        "cert untouched"
    );
    assert_eq!(mode(&key_path), 0o600);

    // Only the certificate left over: still refused, the certificate still untouched.
    std::fs::remove_file(&key_path).expect("rm");
    let o = run(&["keygen", "--out", p(out)]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("idp-cert.pem"), "{}", stderr(&o));
    assert!(!key_path.exists(), "no half-written pair");
    assert_eq!(std::fs::read(&cert_path).expect("cert"), cert1);

    let o = run(&["keygen", "--out", p(out), "--force"]);
    assert_exit(&o, 0);
    let key2 = std::fs::read(&key_path).expect("key");
    let cert2 = std::fs::read(&cert_path).expect("cert");
    assert_ne!(key2, key1, "--force writes a new key");
    assert_ne!(cert2, cert1, "--force writes a new certificate");
    assert_eq!(mode(&key_path), 0o600, "--force keeps mode 0600");
    let key = PKey::private_key_from_pem(&key2).expect("key");
    let cert = X509::from_pem(&cert2).expect("cert");
    assert!(cert.public_key().expect("pubkey").public_eq(&key));
}

#[test]
fn keygen_force_tightens_a_loose_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    assert_exit(&run(&["keygen", "--out", p(out)]), 0);
    let key_path = out.join("idp-key.pem");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_exit(&run(&["keygen", "--out", p(out), "--force"]), 0);
    assert_eq!(mode(&key_path), 0o600);
}

/// `--force` replaces a symlink planted at the key path; it never writes through it (before, the
/// victim file was truncated and overwritten with the new private key, readable as the victim was).
#[test]
fn keygen_force_never_writes_through_a_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("keys");
    std::fs::create_dir(&out).expect("mkdir");
    let victim = dir.path().join("victim.conf");
    std::fs::write(&victim, b"important = true\n").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::symlink(&victim, out.join("idp-key.pem")).expect("symlink");
    std::os::unix::fs::symlink(&victim, out.join("idp-cert.pem")).expect("symlink");
    assert_exit(&run(&["keygen", "--out", p(&out), "--force"]), 0);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "important = true\n",
        "the symlink's target is untouched"
    );
    assert_eq!(mode(&victim), 0o644);
    let key_path = out.join("idp-key.pem");
    assert!(
        !std::fs::symlink_metadata(&key_path)
            .expect("key")
            .file_type()
            .is_symlink(),
        "the key is a file of its own"
    );
    assert_eq!(mode(&key_path), 0o600);
    let key = PKey::private_key_from_pem(&std::fs::read(&key_path).expect("key")).expect("key");
    let cert =
        X509::from_pem(&std::fs::read(out.join("idp-cert.pem")).expect("cert")).expect("cert");
    assert!(cert.public_key().expect("pubkey").public_eq(&key));
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn keygen_refuses_weak_keys_and_zero_days() {
    for args in [
        &["--bits", "1024"][..],
        &["--bits", "1000"][..],
        &["--days", "0"][..],
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut all = vec!["keygen", "--out", p(dir.path())];
        all.extend_from_slice(args);
        let o = run(&all);
        assert_exit(&o, 2);
        assert!(
            stderr(&o).contains(args[0]),
            "the message names {}: {}",
            args[0],
            stderr(&o)
        );
        assert!(
            !dir.path().join("idp-key.pem").exists() && !dir.path().join("idp-cert.pem").exists(),
            "nothing written for {args:?}"
        );
    }
}

#[test]
fn keygen_bits_3072_and_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(&[
        "keygen",
        "--out",
        p(dir.path()),
        "--bits",
        "3072",
        "--days",
        "10",
        "--common-name",
        "QA signing",
    ]);
    assert_exit(&o, 0);
    let key =
        PKey::private_key_from_pem(&std::fs::read(dir.path().join("idp-key.pem")).expect("key"))
            .expect("key");
    assert_eq!(key.rsa().expect("RSA").size() * 8, 3072);
    let cert = X509::from_pem(&std::fs::read(dir.path().join("idp-cert.pem")).expect("cert"))
        .expect("cert");
    assert_eq!(cert.public_key().expect("pubkey").bits(), 3072);
    let cn = cert
        .subject_name()
        .entries()
        .next()
        .expect("CN")
        .data()
        .to_string()
        .expect("utf8");
    assert_eq!(cn, "QA signing");
    let d = Asn1Time::days_from_now(0)
        .expect("now")
        .diff(cert.not_after())
        .expect("diff");
    assert!(
        (9..=10).contains(&d.days),
        "--days 10: {} days left",
        d.days
    );
}

#[test]
fn keygen_next_leaves_the_current_pair_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    assert_exit(&run(&["keygen", "--out", p(out)]), 0);
    let key1 = std::fs::read(out.join("idp-key.pem")).expect("key");
    let cert1 = std::fs::read(out.join("idp-cert.pem")).expect("cert");
    let o = run(&["keygen", "--out", p(out), "--next"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("next_cert"),
        "says how to publish it: {}",
        stdout(&o)
    );
    assert_eq!(std::fs::read(out.join("idp-key.pem")).expect("key"), key1);
    assert_eq!(
        std::fs::read(out.join("idp-cert.pem")).expect("cert"),
        cert1
    );
    let next_key = out.join("idp-key-next.pem");
    assert_eq!(mode(&next_key), 0o600);
    let nk = PKey::private_key_from_pem(&std::fs::read(&next_key).expect("key")).expect("key");
    let nc =
        X509::from_pem(&std::fs::read(out.join("idp-cert-next.pem")).expect("cert")).expect("cert");
    assert!(nc.public_key().expect("pubkey").public_eq(&nk));
    assert!(!nc
        .public_key()
        .expect("pubkey")
        .public_eq(&PKey::private_key_from_pem(&key1).expect("key")));
    // A second --next refuses like the first pair does.
    let o = run(&["keygen", "--out", p(out), "--next"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("idp-key-next.pem") && stderr(&o).contains("--force"));
}

// ------------------------------------------------------------------------------------- config

/// A deployment folder: key pair (0600) and `flexgate.toml`.
struct Deploy {
    dir: tempfile::TempDir,
}

impl Deploy {
    fn new() -> Deploy {
        let dir = tempfile::tempdir().expect("tempdir");
        keygen(dir.path());
        Deploy { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("flexgate.toml")
    }

    /// Writes the config: `idp_extra` lines go into `[idp]`, `upstream_extra` into `[upstream]`.
    fn write(&self, issuer: &str, idp_extra: &str, upstream_extra: &str, sp_extra: &str) -> &Self {
        let text = format!(
            r#"[server]
listen = "127.0.0.1:{port}"
public_url = "{PUBLIC}"

[idp]
key = "idp-key.pem"
cert = "idp-cert.pem"
{idp_extra}

[upstream]
issuer = "{issuer}"
client_id = "flexgate"
client_secret = "${{CLI_TEST_SECRET}}"
timeout_secs = 3
{upstream_extra}

[[sp]]
name = "flex"
kind = "flex-enhanced"
flex_connection = "{JQ}"
{sp_extra}

[sp.attributes]
email = "email"
full_name = "name"
image_url = "picture"
roles = "{ROLES_CLAIM}"
"#,
            port = common::free_port()
        );
        std::fs::write(self.config(), text).expect("write config");
        self
    }

    fn cmd(&self, args: &[&str]) -> Output {
        bin()
            .args(args)
            .env("CLI_TEST_SECRET", "cli-secret")
            .current_dir(self.dir.path())
            .output()
            .expect("run flexgate")
    }

    fn cert_pem(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("cert")
    }
}

fn cert_b64(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// Asserts a config error: exit 2, the key named, a `fix:` line.
#[track_caller]
fn assert_config_error(o: &Output, key: &str) {
    assert_exit(o, 2);
    let msg = stderr(o);
    assert!(msg.contains(key), "{key:?} not named: {msg}");
    assert!(
        msg.lines().any(|l| l.trim_start().starts_with("fix:")),
        "no `fix:` line: {msg}"
    );
}

// ----------------------------------------------------------------------------------- metadata

fn metadata_facts(xml: &str) -> (String, Vec<(String, String)>, Vec<String>) {
    let doc = roxmltree::Document::parse(xml).expect("metadata is XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "EntityDescriptor");
    let entity = root.attribute("entityID").expect("entityID").to_string();
    let sso = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "SingleSignOnService")
        .map(|n| {
            (
                n.attribute("Binding").expect("Binding").to_string(),
                n.attribute("Location").expect("Location").to_string(),
            )
        })
        .collect();
    let certs = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "KeyDescriptor")
        .map(|kd| {
            kd.descendants()
                .find(|n| n.tag_name().name() == "X509Certificate")
                .and_then(|n| n.text())
                .expect("X509Certificate")
                .split_whitespace()
                .collect()
        })
        .collect();
    (entity, sso, certs)
}

#[test]
fn metadata_prints_entity_id_both_bindings_and_the_cert() {
    let d = Deploy::new();
    d.write("https://example.us.auth0.com/", "", "", "");
    let o = d.cmd(&["metadata", "--config", p(&d.config())]);
    assert_exit(&o, 0);
    let (entity, sso, certs) = metadata_facts(&stdout(&o));
    assert_eq!(entity, format!("{PUBLIC}/saml/metadata"));
    let loc = format!("{PUBLIC}/saml/sso");
    for binding in ["HTTP-Redirect", "HTTP-POST"] {
        let b = format!("urn:oasis:names:tc:SAML:2.0:bindings:{binding}");
        assert!(
            sso.contains(&(b.clone(), loc.clone())),
            "{binding} missing: {sso:?}"
        );
    }
    assert_eq!(certs, vec![cert_b64(&d.cert_pem("idp-cert.pem"))]);
}

#[test]
fn metadata_publishes_the_next_cert_after_the_live_one() {
    let d = Deploy::new();
    assert_exit(&run(&["keygen", "--out", p(d.dir.path()), "--next"]), 0);
    d.write(
        "https://example.us.auth0.com/",
        "next_cert = \"idp-cert-next.pem\"\nentity_id = \"urn:example:idp\"",
        "",
        "",
    );
    let o = d.cmd(&["metadata", "--config", p(&d.config())]);
    assert_exit(&o, 0);
    let (entity, _, certs) = metadata_facts(&stdout(&o));
    assert_eq!(entity, "urn:example:idp");
    assert_eq!(
        certs,
        vec![
            cert_b64(&d.cert_pem("idp-cert.pem")),
            cert_b64(&d.cert_pem("idp-cert-next.pem"))
        ],
        "two KeyDescriptors, the live one first"
    );
}

#[test]
fn metadata_bad_config_names_the_key_and_the_fix() {
    let d = Deploy::new();
    d.write("https://example.us.auth0.com/", "", "", "");
    let text = std::fs::read_to_string(d.config())
        .expect("config")
        .replace(JQ, "JQ123");
    std::fs::write(d.config(), text).expect("write");
    let o = d.cmd(&["metadata", "--config", p(&d.config())]);
    assert_config_error(&o, "sp[0].flex_connection");
    assert!(stderr(&o).contains("flexgate.toml"), "names the file");
    assert!(stdout(&o).is_empty(), "no partial metadata");

    // Unknown key (a typo) is an error too.
    d.write("https://example.us.auth0.com/", "kee = \"x\"", "", "");
    let o = d.cmd(&["metadata", "--config", p(&d.config())]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("kee"), "{}", stderr(&o));
}

#[test]
fn metadata_reads_flexgate_config_from_the_environment() {
    let d = Deploy::new();
    d.write("https://example.us.auth0.com/", "", "", "");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let o = bin()
        .arg("metadata")
        .env("FLEXGATE_CONFIG", d.config())
        .env("CLI_TEST_SECRET", "x")
        .current_dir(elsewhere.path())
        .output()
        .expect("run");
    assert_exit(&o, 0);
    assert!(stdout(&o).contains(&format!("entityID=\"{PUBLIC}/saml/metadata\"")));

    // --config wins over the variable.
    let o = bin()
        .args(["metadata", "--config"])
        .arg(d.config())
        .env("FLEXGATE_CONFIG", elsewhere.path().join("nope.toml"))
        .env("CLI_TEST_SECRET", "x")
        .output()
        .expect("run");
    assert_exit(&o, 0);

    // Neither: ./flexgate.toml, which is not there.
    let o = bin()
        .arg("metadata")
        .current_dir(elsewhere.path())
        .output()
        .expect("run");
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("flexgate.toml"), "{}", stderr(&o));
    assert!(stderr(&o).contains("fix:"), "{}", stderr(&o));
}

#[test]
fn an_unset_secret_variable_is_a_config_error() {
    let d = Deploy::new();
    d.write("https://example.us.auth0.com/", "", "", "");
    let o = bin()
        .args(["metadata", "--config"])
        .arg(d.config())
        .output()
        .expect("run");
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("CLI_TEST_SECRET"), "{}", stderr(&o));
}

// -------------------------------------------------------------------------------------- serve

/// `serve` must stop with exit 2 quickly, and never listen.
#[track_caller]
fn assert_serve_refuses(d: &Deploy, key: &str) {
    let text = std::fs::read_to_string(d.config()).expect("config");
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("listen")
        .to_string();
    let mut child = bin()
        .args(["serve", "--config"])
        .arg(d.config())
        .env("CLI_TEST_SECRET", "x")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve kept running with a bad config ({key})");
        }
        assert!(
            std::net::TcpStream::connect(&listen).is_err(),
            "serve listens on {listen} with a bad config ({key})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().expect("output");
    assert_config_error(&o, key);
}

#[test]
fn serve_refuses_a_bad_config_before_listening() {
    // A wrong flex_connection.
    let d = Deploy::new();
    d.write("https://example.us.auth0.com/", "", "", "");
    let text = std::fs::read_to_string(d.config())
        .expect("config")
        .replace(JQ, "JQ0123456789ABCDEF0123456789abcdef");
    std::fs::write(d.config(), text).expect("write");
    assert_serve_refuses(&d, "sp[0].flex_connection");

    // The key file is missing.
    let d = Deploy::new();
    d.write("https://example.us.auth0.com/", "", "", "");
    std::fs::remove_file(d.path("idp-key.pem")).expect("rm");
    assert_serve_refuses(&d, "idp.key");

    // The key file is readable by others.
    let d = Deploy::new();
    d.write("https://example.us.auth0.com/", "", "", "");
    std::fs::set_permissions(
        d.path("idp-key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    assert_serve_refuses(&d, "idp.key");

    // The certificate belongs to another key.
    let d = Deploy::new();
    d.write("https://example.us.auth0.com/", "", "", "");
    std::fs::copy(
        repo().join("certs/test-other-cert.pem"),
        d.path("idp-cert.pem"),
    )
    .expect("cp");
    assert_serve_refuses(&d, "idp.cert");
}

// -------------------------------------------------------------------------------------- check

/// One OpenID provider for every `check` test (it exits when this process does: its stdin closes).
fn op() -> &'static Op {
    static OP: OnceLock<Op> = OnceLock::new();
    OP.get_or_init(|| {
        Op::start(
            &format!("{PUBLIC}/oidc/callback"),
            "flexgate",
            "cli-secret",
            serde_json::json!({}),
        )
    })
}

fn check_json(d: &Deploy) -> (Output, Value) {
    let o = d.cmd(&["check", "--config", p(&d.config()), "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("check --json is not JSON ({e}): {}", both(&o)));
    (o, v)
}

#[test]
fn check_prints_what_to_paste_into_flex_console_and_auth0() {
    let d = Deploy::new();
    d.write(&op().issuer, "", "", "");
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    let pem = d.cert_pem("idp-cert.pem");
    for want in [
        format!("{PUBLIC}/saml/sso"),
        format!("{PUBLIC}/saml/metadata"),
        format!("{PUBLIC}/saml/init/flex"),
        format!("{PUBLIC}/oidc/callback"),
        pem.trim().to_string(),
        format!("setCustomClaim(\"{ROLES_CLAIM}\""),
        "Single Sign-On URL".into(),
        "Identity Provider Issuer".into(),
        "Default Redirect URL".into(),
        "Allowed Callback URL".into(),
        "onExecutePostLogin".into(),
    ] {
        assert!(text.contains(&want), "{want:?} missing:\n{text}");
    }
    assert!(
        !text.contains("/saml/sso?connection="),
        "no connection configured, no hint: {text}"
    );

    let (o, v) = check_json(&d);
    assert_exit(&o, 0);
    let fc = &v["flex_console"][0];
    assert_eq!(fc["sp"], "flex");
    assert_eq!(fc["single_sign_on_url"], format!("{PUBLIC}/saml/sso"));
    assert_eq!(
        fc["identity_provider_issuer"],
        format!("{PUBLIC}/saml/metadata")
    );
    assert_eq!(
        fc["default_redirect_url"],
        format!("{PUBLIC}/saml/init/flex")
    );
    assert_eq!(
        fc["acs_url"],
        format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}")
    );
    assert_eq!(fc["audience"], format!("urn:flex:{JQ}"));
    assert_eq!(
        v["certificate_pem"].as_str().map(str::trim),
        Some(pem.trim())
    );
    assert_eq!(
        v["auth0"]["allowed_callback_url"],
        format!("{PUBLIC}/oidc/callback")
    );
    let action = v["auth0"]["post_login_action"].as_str().expect("action");
    assert!(
        action.contains(&format!("setCustomClaim(\"{ROLES_CLAIM}\"")),
        "{action}"
    );
    let findings = v["findings"].as_array().expect("findings");
    assert!(
        findings.iter().all(|f| f["level"] == "ok"),
        "all ok: {findings:?}"
    );
    assert_eq!(v["certificates"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["certificates"][0]["role"], "live");
}

#[test]
fn check_offers_the_action_only_for_a_namespaced_roles_claim() {
    let d = Deploy::new();
    d.write(&op().issuer, "", "", "");
    let text = std::fs::read_to_string(d.config())
        .expect("config")
        .replace(ROLES_CLAIM, "app_metadata.flex.roles");
    std::fs::write(d.config(), text).expect("write");
    let (o, v) = check_json(&d);
    assert_exit(&o, 0);
    assert!(v["auth0"]["post_login_action"].is_null(), "{v}");
    assert_eq!(
        v["flex_console"][0]["roles_claim"],
        "app_metadata.flex.roles"
    );
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert!(!stdout(&o).contains("setCustomClaim"), "{}", stdout(&o));
}

#[test]
fn check_sso_url_carries_the_connection_hint() {
    let d = Deploy::new();
    d.write(
        &op().issuer,
        "",
        "connection = \"Username-Password-Authentication\"",
        "",
    );
    let want = format!("{PUBLIC}/saml/sso?connection=Username-Password-Authentication");
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains(&want), "{}", stdout(&o));
    let (_, v) = check_json(&d);
    assert_eq!(v["flex_console"][0]["single_sign_on_url"], want);
}

#[test]
fn check_lists_the_live_and_the_next_cert() {
    let d = Deploy::new();
    assert_exit(&run(&["keygen", "--out", p(d.dir.path()), "--next"]), 0);
    d.write(&op().issuer, "next_cert = \"idp-cert-next.pem\"", "", "");
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("live certificate"), "{text}");
    assert!(text.contains("next certificate"), "{text}");
    let (_, v) = check_json(&d);
    let certs = v["certificates"].as_array().expect("certificates");
    let roles: Vec<&str> = certs
        .iter()
        .map(|c| c["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["live", "next"]);
    let fp = |pem: &str| {
        let c = X509::from_pem(pem.as_bytes()).expect("cert");
        c.digest(MessageDigest::sha256())
            .expect("digest")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    assert_eq!(
        certs[0]["sha256_fingerprint"],
        fp(&d.cert_pem("idp-cert.pem"))
    );
    assert_eq!(
        certs[1]["sha256_fingerprint"],
        fp(&d.cert_pem("idp-cert-next.pem"))
    );
    // What Flex Console gets is still the live certificate.
    assert_eq!(
        v["certificate_pem"].as_str().map(str::trim),
        Some(d.cert_pem("idp-cert.pem").trim())
    );
}

#[test]
fn check_fails_when_the_upstream_is_unreachable() {
    let port = common::free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let d = Deploy::new();
    d.write(&issuer, "", "", "");
    let started = Instant::now();
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert_exit(&o, 1);
    assert!(started.elapsed() < Duration::from_secs(20), "check hung");
    let url = format!("{issuer}/.well-known/openid-configuration");
    assert!(both(&o).contains(&url), "names {url}: {}", both(&o));
    // It still prints what it can (the Flex Console values do not depend on the upstream).
    assert!(stdout(&o).contains(&format!("{PUBLIC}/saml/sso")));
    let (o, v) = check_json(&d);
    assert_exit(&o, 1);
    assert!(v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["level"] == "fail" && f["detail"].as_str().unwrap_or("").contains(&url)));
}

#[test]
fn check_fails_on_an_issuer_with_a_trailing_slash_the_upstream_does_not_have() {
    let issuer = op().issuer.trim_end_matches('/').to_string();
    let d = Deploy::new();
    d.write(&format!("{issuer}/"), "", "", "");
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert_exit(&o, 1);
    assert!(both(&o).contains("trailing slash"), "{}", both(&o));
}

/// Writes `idp-cert.pem` for the deployment's own key, valid from `from` to `to` (seconds
/// relative to now).
fn reissue_cert(d: &Deploy, from: i64, to: i64) {
    let key = PKey::private_key_from_pem(&std::fs::read(d.path("idp-key.pem")).expect("key"))
        .expect("key");
    let now = chrono::Utc::now().timestamp();
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "expiry test").expect("CN");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("version");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::from_unix(now + from).expect("time"))
        .expect("nb");
    b.set_not_after(&Asn1Time::from_unix(now + to).expect("time"))
        .expect("na");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    std::fs::write(d.path("idp-cert.pem"), b.build().to_pem().expect("pem")).expect("write");
    assert_eq!(mode(&d.path("idp-key.pem")), 0o600, "the key stays 0600");
}

const DAY: i64 = 86_400;

#[test]
fn check_fails_on_an_expired_certificate() {
    let d = Deploy::new();
    reissue_cert(&d, -400 * DAY, -10 * DAY);
    d.write(&op().issuer, "", "", "");
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("FAIL"), "{}", stdout(&o));
    assert!(both(&o).contains("expired"), "{}", both(&o));
    let (_, v) = check_json(&d);
    assert!(v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["level"] == "fail" && f["what"].as_str().unwrap_or("").contains("certificate")));
}

/// Expired an hour ago: `days_left` is 0 by whole days, but the certificate has expired.
#[test]
fn check_fails_on_a_certificate_expired_an_hour_ago() {
    let d = Deploy::new();
    reissue_cert(&d, -400 * DAY, -3600);
    d.write(&op().issuer, "", "", "");
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert_exit(&o, 1);
}

#[test]
fn check_warns_when_the_certificate_expires_within_30_days() {
    let d = Deploy::new();
    reissue_cert(&d, -DAY, 10 * DAY);
    d.write(&op().issuer, "", "", "");
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("WARN"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("FAIL"), "{}", stdout(&o));
    let (o, v) = check_json(&d);
    assert_exit(&o, 0);
    assert!(v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["level"] == "warn" && f["what"].as_str().unwrap_or("").contains("certificate")));
    let days = v["certificates"][0]["days_left"]
        .as_i64()
        .expect("days_left");
    assert!((9..=10).contains(&days), "days_left {days}");
}

#[test]
fn check_bad_config_is_exit_2() {
    let d = Deploy::new();
    d.write(&op().issuer, "", "", "");
    std::fs::set_permissions(
        d.path("idp-key.pem"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert_config_error(&o, "idp.key");
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
}

// ------------------------------------------------------------------------------------- verify

struct Fixture {
    xml: PathBuf,
    expect: PathBuf,
    cert: PathBuf,
}

fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for folder in ["fixtures/responses", "fixtures/qa"] {
        let dir = repo().join(folder);
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("fixtures")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .collect();
        names.sort();
        for xml in names {
            let stem = xml
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("stem")
                .to_string();
            let own = dir.join(format!("{stem}.cert.pem"));
            out.push(Fixture {
                expect: dir.join(format!("{stem}.expect.toml")),
                cert: if own.exists() {
                    own
                } else {
                    repo().join("certs/test-idp-cert.pem")
                },
                xml,
            });
        }
    }
    assert!(out.len() >= 6, "fixtures found: {}", out.len());
    out
}

fn enhanced_agent() -> Fixture {
    let dir = repo().join("fixtures/responses");
    Fixture {
        xml: dir.join("enhanced-agent.xml"),
        expect: dir.join("enhanced-agent.expect.toml"),
        cert: repo().join("certs/test-idp-cert.pem"),
    }
}

const EA_AUDIENCE: &str = "urn:flex:JQ0123456789abcdef0123456789abcdef";
const EA_ACS: &str =
    "https://login.flex.us1.twilio.com/login/callback?connection=JQ0123456789abcdef0123456789abcdef";
const EA_IRT: &str = "_b3f0c2a9e1d84f6a7c5e";
const EA_NOW: &str = "2026-01-15T10:00:00Z";

#[test]
fn verify_accepts_every_fixture_with_its_expect_file() {
    for f in fixtures() {
        let o = run(&[
            "verify",
            "--cert",
            p(&f.cert),
            "--expect",
            p(&f.expect),
            p(&f.xml),
        ]);
        assert_exit(&o, 0);
        assert!(stdout(&o).contains("VALID"), "{}", stdout(&o));
        let o = run(&[
            "verify",
            "--json",
            "--cert",
            p(&f.cert),
            "--expect",
            p(&f.expect),
            p(&f.xml),
        ]);
        assert_exit(&o, 0);
        let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
        assert_eq!(v["valid"], true, "{}: {v}", f.xml.display());
        assert_eq!(v["differences"].as_array().map(Vec::len), Some(0));
    }
}

#[test]
fn verify_refuses_every_fixture_with_another_cert() {
    let other = repo().join("certs/test-other-cert.pem");
    let idp = repo().join("certs/test-idp-cert.pem");
    for f in fixtures() {
        // The certificate that did NOT sign it.
        let wrong = if f.cert == idp { &other } else { &idp };
        let o = run(&[
            "verify",
            "--json",
            "--cert",
            p(wrong),
            "--expect",
            p(&f.expect),
            p(&f.xml),
        ]);
        assert_exit(&o, 1);
        let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
        assert_eq!(v["valid"], false, "{}", f.xml.display());
    }
}

#[test]
fn verify_reads_xml_base64_form_bodies_and_saved_pages_from_a_file_or_stdin() {
    let f = enhanced_agent();
    let xml = std::fs::read_to_string(&f.xml).expect("xml");
    let b64 = common::b64(&xml);
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("SAMLResponse", &b64)
        .append_pair("RelayState", "https://flex.twilio.com/x?a=1&b=2")
        .finish();
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signing you in…</title></head>\n\
         <body><main><form id=\"f\" method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"SAMLResponse\" value=\"{b64}\">\
         <input type=\"hidden\" name=\"RelayState\" value=\"a&amp;b &quot;c&quot;\">\n\
         <noscript><button type=\"submit\">Continue</button></noscript></form>\n\
         <script>document.getElementById(\"f\").submit();</script></main></body></html>\n",
        EA_ACS.replace('&', "&amp;")
    );
    let wrapped_b64: String = b64
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, input) in [
        ("xml", xml.clone()),
        ("base64", b64.clone()),
        ("base64-wrapped", wrapped_b64),
        ("form", form),
        ("page", page),
    ] {
        let base = [
            "verify",
            "--json",
            "--cert",
            p(&f.cert),
            "--expect",
            p(&f.expect),
        ];
        let mut args = base.to_vec();
        args.push("-");
        let o = run_stdin(&args, input.as_bytes());
        assert_exit(&o, 0);
        let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
        assert_eq!(v["valid"], true, "{name} from stdin: {v}");
        assert_eq!(v["response"]["name_id"], "agent1@example.com");

        let file = dir.path().join(format!("capture-{name}"));
        std::fs::write(&file, &input).expect("write");
        let mut args = base.to_vec();
        args.push(p(&file));
        let o = run(&args);
        assert_exit(&o, 0);
    }
    // Without an input argument, stdin is read.
    let o = run_stdin(
        &["verify", "--cert", p(&f.cert), "--expect", p(&f.expect)],
        xml.as_bytes(),
    );
    assert_exit(&o, 0);
}

#[test]
fn verify_checks_time_audience_in_response_to() {
    let f = enhanced_agent();
    let cert = p(&f.cert);
    let xml = p(&f.xml);
    let ok = |extra: &[&str]| {
        let mut a = vec![
            "verify",
            "--json",
            "--cert",
            cert,
            "--audience",
            EA_AUDIENCE,
            "--recipient",
            EA_ACS,
        ];
        a.extend_from_slice(extra);
        a.push(xml);
        let o = run(&a);
        let v: Value = serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("no JSON ({e}): {}", both(&o)));
        (o, v)
    };
    // The baseline passes.
    let (o, v) = ok(&["--now", EA_NOW, "--in-response-to", EA_IRT]);
    assert_exit(&o, 0);
    assert_eq!(v["valid"], true);

    let cases: &[(&str, &[&str])] = &[
        ("expired", &["--now", "2026-01-15T10:05:00Z"]),
        ("long expired", &["--now", "2026-02-01T00:00:00Z"]),
        ("before NotBefore", &["--now", "2026-01-15T09:58:59Z"]),
        ("real clock", &[]),
        (
            "wrong InResponseTo",
            &["--now", EA_NOW, "--in-response-to", "_someone-else"],
        ),
        (
            "IdP-initiated expected",
            &["--now", EA_NOW, "--idp-initiated"],
        ),
    ];
    for (what, extra) in cases {
        let (o, v) = ok(extra);
        assert_exit(&o, 1);
        assert_eq!(v["valid"], false, "{what}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
    }
    // A skew of 90 s rescues the instant just past NotOnOrAfter (10:05:00), not an hour.
    let (o, _) = ok(&["--now", "2026-01-15T10:05:30Z", "--skew", "90"]);
    assert_exit(&o, 0);
    let (o, _) = ok(&["--now", "2026-01-15T11:05:00Z", "--skew", "90"]);
    assert_exit(&o, 1);

    // Wrong audience; a recipient that differs only in its query.
    for (flag, value) in [
        ("--audience", "urn:flex:JQ99999999999999999999999999999999"),
        (
            "--recipient",
            "https://login.flex.us1.twilio.com/login/callback?connection=JQ99999999999999999999999999999999",
        ),
        ("--recipient", "https://login.flex.us1.twilio.com/login/callback"),
    ] {
        let mut a = vec!["verify", "--json", "--cert", cert, "--now", EA_NOW];
        if flag != "--audience" {
            a.extend_from_slice(&["--audience", EA_AUDIENCE]);
        }
        if flag != "--recipient" {
            a.extend_from_slice(&["--recipient", EA_ACS]);
        }
        a.extend_from_slice(&[flag, value, xml]);
        let o = run(&a);
        assert_exit(&o, 1);
        let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
        assert_eq!(v["valid"], false, "{flag} {value}");
    }

    // --now outside the window overrides the expect file's `now`.
    let o = run(&[
        "verify",
        "--cert",
        cert,
        "--expect",
        p(&f.expect),
        "--now",
        "2026-01-16T10:00:00Z",
        xml,
    ]);
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("INVALID"), "{}", stdout(&o));
}

#[test]
fn verify_with_an_expect_file_that_differs_lists_the_difference() {
    let f = enhanced_agent();
    let text = std::fs::read_to_string(&f.expect).expect("expect");
    assert!(text.contains("full_name = [\"Ada Agent\"]"));
    let dir = tempfile::tempdir().expect("tempdir");
    let changed = dir.path().join("changed.expect.toml");
    std::fs::write(
        &changed,
        text.replace(
            "full_name = [\"Ada Agent\"]",
            "full_name = [\"Ada Agentx\"]",
        ),
    )
    .expect("write");
    let o = run(&[
        "verify",
        "--cert",
        p(&f.cert),
        "--expect",
        p(&changed),
        p(&f.xml),
    ]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(out.contains("full_name"), "names the attribute: {out}");
    assert!(
        out.contains("Ada Agentx") && out.contains("Ada Agent"),
        "{out}"
    );
    assert!(
        !out.contains("email:"),
        "only the difference is listed: {out}"
    );
    let o = run(&[
        "verify",
        "--json",
        "--cert",
        p(&f.cert),
        "--expect",
        p(&changed),
        p(&f.xml),
    ]);
    assert_exit(&o, 1);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["valid"], false);
    let diffs = v["differences"].as_array().expect("differences");
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(diffs[0].as_str().unwrap_or("").contains("full_name"));

    // An attribute the Response has but the file does not list is a difference too.
    std::fs::write(
        &changed,
        text.replace(
            "image_url = [\"https://example.com/avatars/ada.png\"]\n",
            "",
        ),
    )
    .expect("write");
    let o = run(&[
        "verify",
        "--cert",
        p(&f.cert),
        "--expect",
        p(&changed),
        p(&f.xml),
    ]);
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("image_url"), "{}", stdout(&o));
}

#[test]
fn verify_usage_errors_are_exit_2() {
    let f = enhanced_agent();
    let cert = p(&f.cert);
    let xml = p(&f.xml);
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let unreadable = dir.path().join("missing.pem");
    let bad_expect = dir.path().join("bad.expect.toml");
    std::fs::write(&bad_expect, "issuer = 1\n").expect("write");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "no --audience, no --expect",
            vec!["verify", "--cert", cert, "--recipient", EA_ACS, xml],
            "--audience",
        ),
        (
            "no --recipient, no --expect",
            vec!["verify", "--cert", cert, "--audience", EA_AUDIENCE, xml],
            "--recipient",
        ),
        (
            "unreadable cert",
            vec![
                "verify",
                "--cert",
                p(&unreadable),
                "--audience",
                EA_AUDIENCE,
                "--recipient",
                EA_ACS,
                xml,
            ],
            "missing.pem",
        ),
        (
            "cert is not PEM",
            vec![
                "verify",
                "--cert",
                p(&not_pem),
                "--audience",
                EA_AUDIENCE,
                "--recipient",
                EA_ACS,
                xml,
            ],
            "not.pem",
        ),
        (
            "missing input file",
            vec![
                "verify",
                "--cert",
                cert,
                "--audience",
                EA_AUDIENCE,
                "--recipient",
                EA_ACS,
                "/nonexistent/response.xml",
            ],
            "/nonexistent/response.xml",
        ),
        (
            "bad --now",
            vec![
                "verify",
                "--cert",
                cert,
                "--expect",
                p(&f.expect),
                "--now",
                "yesterday",
                xml,
            ],
            "--now",
        ),
        (
            "bad expect file",
            vec!["verify", "--cert", cert, "--expect", p(&bad_expect), xml],
            "bad.expect.toml",
        ),
        (
            "--audience disagrees with the expect file",
            vec![
                "verify",
                "--cert",
                cert,
                "--expect",
                p(&f.expect),
                "--audience",
                "urn:flex:other",
                xml,
            ],
            "--audience",
        ),
        (
            "--require nonsense",
            vec![
                "verify",
                "--cert",
                cert,
                "--expect",
                p(&f.expect),
                "--require",
                "nonsense",
                xml,
            ],
            "--require",
        ),
        (
            "no --cert",
            vec!["verify", "--expect", p(&f.expect), xml],
            "--cert",
        ),
    ];
    for (what, args, named) in cases {
        let o = run(&args);
        assert_eq!(code(&o), Some(2), "{what}: {}", both(&o));
        assert!(
            stderr(&o).contains(named),
            "{what}: {named:?} not named: {}",
            stderr(&o)
        );
    }
    // Not a SAMLResponse at all.
    let o = run_stdin(
        &[
            "verify",
            "--cert",
            cert,
            "--audience",
            EA_AUDIENCE,
            "--recipient",
            EA_ACS,
            "-",
        ],
        b"this is not base64 !",
    );
    assert_eq!(code(&o), Some(2), "{}", both(&o));
}

#[test]
fn unknown_commands_and_flags_are_exit_2() {
    assert_exit(&run(&["frobnicate"]), 2);
    assert_exit(&run(&["keygen", "--bitz", "2048"]), 2);
    assert_exit(&run(&[]), 2);
    let o = run(&["--version"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("flexgate"));
}

#[test]
fn absurd_numbers_on_the_command_line_are_exit_2_naming_flag_and_range() {
    let f = enhanced_agent();
    let (cert, expect, xml) = (p(&f.cert), p(&f.expect), p(&f.xml));
    let verify = |extra: &[&str]| {
        let mut a = vec!["verify", "--cert", cert, "--expect", expect];
        a.extend_from_slice(extra);
        a.push(xml);
        run(&a)
    };
    let cases: Vec<(&str, Output, &[&str])> = vec![
        (
            "skew beyond i64 seconds",
            verify(&["--skew", "99999999999999999"]),
            &["--skew", "0 to 86400", "--now"],
        ),
        (
            "skew above a day",
            verify(&["--skew", "86401"]),
            &["--skew", "0 to 86400"],
        ),
        (
            "negative skew",
            verify(&["--skew=-5"]),
            &["--skew", "0 to 86400"],
        ),
        (
            "now in the year 9999",
            verify(&["--now", "9999-12-31T23:59:59Z", "--skew", "86400"]),
            &["--now", "2000..=2099", "e.g. 2026-01-15T10:00:00Z"],
        ),
        (
            "now in the year 0",
            verify(&["--now", "0000-01-01T00:00:00Z"]),
            &["--now", "2000..=2099"],
        ),
        (
            "days beyond u32",
            run(&[
                "keygen",
                "--out",
                "/nonexistent/never",
                "--days",
                "99999999999",
            ]),
            &["--days", "1 to 3650", "e.g. --days 1095"],
        ),
        (
            "port beyond u16",
            run(&["demo", "--port", "70000"]),
            &["--port", "65535"],
        ),
    ];
    for (what, o, named) in cases {
        assert_eq!(code(&o), Some(2), "{what}: {}", both(&o));
        for n in named {
            assert!(
                stderr(&o).contains(n),
                "{what}: {n:?} not said: {}",
                stderr(&o)
            );
        }
        assert!(!stderr(&o).contains("panicked"), "{what}: {}", stderr(&o));
    }
    // The largest allowed skew with the latest allowed instant still gives an answer.
    let o = verify(&["--now", "2099-12-31T23:59:59Z", "--skew", "86400"]);
    assert_eq!(code(&o), Some(1), "expired, not a crash: {}", both(&o));
}

#[test]
fn an_expect_file_now_outside_the_allowed_years_is_exit_2() {
    let f = enhanced_agent();
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(&f.expect).expect("expect file");
    let far = dir.path().join("far.expect.toml");
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("now") {
                "now = \"9999-01-01T00:00:00Z\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("9999"), "the fixture has a `now` line");
    std::fs::write(&far, text).expect("write");
    let o = run(&[
        "verify",
        "--cert",
        p(&f.cert),
        "--expect",
        p(&far),
        p(&f.xml),
    ]);
    assert_eq!(code(&o), Some(2), "{}", both(&o));
    assert!(
        stderr(&o).contains("now") && stderr(&o).contains("2000..=2099"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_and_serve_report_every_config_mistake_in_one_run() {
    let d = Deploy::new();
    // Three mistakes in three sections: [idp], [upstream], [[sp]].
    d.write(
        "https://op.invalid/",
        "clock_skew_secs = 99999999999999999",
        "scopes = [\"profile\"]",
        "sign = \"everything\"",
    );
    for cmd in ["check", "serve"] {
        let o = d.cmd(&[cmd, "--config", p(&d.config())]);
        assert_exit(&o, 2);
        let msg = stderr(&o);
        for (key, range) in [
            ("idp.clock_skew_secs", "between 0 and 600"),
            ("upstream.scopes", "add \"openid\""),
            ("sp[0].sign", "\"response\""),
        ] {
            assert!(
                msg.contains(key) && msg.contains(range),
                "{cmd}: {key} not reported: {msg}"
            );
        }
        assert_eq!(
            msg.matches("fix:").count(),
            3,
            "{cmd}: one fix per mistake: {msg}"
        );
    }
}

#[test]
fn check_reaches_the_management_api_and_names_a_missing_scope() {
    let run_with = |scope: &str, secret: &str| {
        let m = common::Mgmt::start(serde_json::json!({
            "client_id": "mgmt", "client_secret": "mgmt-secret", "scope": scope,
            "users": {"auth0|1": {"app_metadata": {"flex": {"roles": ["agent"]}}}, "auth0|2": {}},
        }));
        let d = Deploy::new();
        let management = format!(
            "[upstream.management]\nurl = \"{}\"\nclient_id = \"mgmt\"\nclient_secret = \"{secret}\"\n",
            m.url
        );
        d.write(&op().issuer, "", &management, "");
        d.cmd(&["check", "--config", p(&d.config())])
    };
    let o = run_with("read:users update:users", "mgmt-secret");
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains(
            "1 user(s) have a Flex role; every user with a Flex role is read in bulk every 300 s"
        ),
        "{}",
        both(&o)
    );
    let o = run_with("update:users", "mgmt-secret");
    assert_exit(&o, 1);
    assert!(
        both(&o).contains("Insufficient scope, expected any of: read:users"),
        "{}",
        both(&o)
    );
    let o = run_with("read:users", "wrong");
    assert_exit(&o, 1);
    assert!(
        both(&o).contains("refused flexgate's client credentials"),
        "{}",
        both(&o)
    );
}

/// `flexgate verify` on the browser captures in fixtures/captures (made in HAR 1.2 and
/// SAML-tracer's export format by fixtures/captures/make.py).
fn verify_capture(file: &str, cert: &str, extra: &[&str]) -> Output {
    let f = repo().join("fixtures/captures").join(file);
    let c = repo().join("certs").join(cert);
    let mut args = vec!["verify", "--cert", p(&c)];
    args.extend_from_slice(extra);
    args.push(p(&f));
    run(&args)
}

#[test]
fn verify_reads_every_saml_response_of_a_har_file_with_the_request_each_answers() {
    let flex = [
        "--audience",
        "urn:flex:JQ0123456789abcdef0123456789abcdef",
        "--recipient",
        "https://login.flex.us1.twilio.com/login/callback?connection=JQ0123456789abcdef0123456789abcdef",
        "--now",
        "2026-01-15T10:00:00Z",
    ];
    let o = verify_capture("login.har", "test-idp-cert.pem", &flex);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("SAMLResponse 1 of 2 (entry 2,"), "{out}");
    assert!(out.contains("SAMLResponse 2 of 2 (entry 3,"), "{out}");
    assert!(
        out.contains("answers AuthnRequest _b3f0c2a9e1d84f6a7c5e"),
        "{out}"
    );
    assert!(
        out.contains("the AuthnRequest it answers is not in the capture"),
        "{out}"
    );
    assert_eq!(
        out.matches("VALID: the Response verifies").count(),
        2,
        "{out}"
    );
    // JSON: both, the first with its AuthnRequest.
    let mut json_args = flex.to_vec();
    json_args.push("--json");
    let o = verify_capture("login.har", "test-idp-cert.pem", &json_args);
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["format"], "har");
    assert_eq!(v["responses"][0]["answers"]["id"], "_b3f0c2a9e1d84f6a7c5e");
    assert!(v["responses"][1]["answers"].is_null());
    // Another certificate: every Response is refused (exit 1).
    let o = verify_capture("login.har", "test-other-cert.pem", &flex);
    assert_exit(&o, 1);
    assert_eq!(stdout(&o).matches("INVALID").count(), 2, "{}", stdout(&o));
}

#[test]
fn verify_reads_a_saml_tracer_export_against_an_expect_file() {
    let expect = repo().join("fixtures/responses/enhanced-agent.expect.toml");
    let o = verify_capture(
        "login.saml-tracer.json",
        "test-idp-cert.pem",
        &["--expect", p(&expect)],
    );
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("answers AuthnRequest _b3f0c2a9e1d84f6a7c5e from urn:flex:JQ0123456789abcdef0123456789abcdef"), "{out}");
    assert!(
        out.contains("<samlp:AuthnRequest"),
        "the request is shown: {out}"
    );
    assert!(out.contains("expect: matches"), "{out}");
    // The idp-initiated expect file does not match this Response: exit 1, differences shown.
    let other = repo().join("fixtures/responses/idp-initiated.expect.toml");
    let o = verify_capture(
        "login.saml-tracer.json",
        "test-idp-cert.pem",
        &["--expect", p(&other)],
    );
    assert_exit(&o, 1);
    // A capture without any SAMLResponse is bad usage (exit 2).
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.har");
    std::fs::write(
        &empty,
        r#"{"log":{"version":"1.2","creator":{"name":"x","version":"1"},"entries":[]}}"#,
    )
    .unwrap();
    let c = repo().join("certs/test-idp-cert.pem");
    let o = run(&["verify", "--cert", p(&c), "--expect", p(&expect), p(&empty)]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("holds no POST with a SAMLResponse"),
        "{}",
        stderr(&o)
    );
}

// ---- `flexgate probe URL`: the container HEALTHCHECK (the image has no curl) ----------------------

/// A loopback HTTP server that answers every connection with `status` (e.g. "503 Service
/// Unavailable"), or reads the request and never answers when `status` is empty. Its URL.
fn fixed_answer_server(status: &'static str) -> String {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            if status.is_empty() {
                std::thread::sleep(Duration::from_secs(30));
                continue;
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    format!("http://127.0.0.1:{port}/healthz")
}

#[test]
fn probe_exits_0_on_2xx_and_1_on_any_other_answer() {
    let o = run(&["probe", &fixed_answer_server("200 OK")]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("200 OK"), "{}", both(&o));
    for status in ["503 Service Unavailable", "404 Not Found", "302 Found"] {
        let url = fixed_answer_server(status);
        let o = run(&["probe", &url]);
        assert_exit(&o, 1);
        assert!(
            stderr(&o).contains(&url) && stderr(&o).contains(&status[..3]),
            "{}",
            both(&o)
        );
    }
}

#[test]
fn probe_exits_1_when_nothing_answers() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let o = run(&["probe", &url]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains(&url) && stderr(&o).contains("is flexgate listening there?"),
        "{}",
        both(&o)
    );
    let silent = fixed_answer_server("");
    let o = run(&["probe", "--timeout", "1", &silent]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("within 1 s"), "{}", both(&o));
}

#[test]
fn probe_bad_usage_is_exit_2_with_the_fix() {
    for (args, says) in [
        (vec!["probe"], "<URL>"),
        (
            vec!["probe", "127.0.0.1:8080/healthz"],
            "http://127.0.0.1:8080/healthz",
        ),
        (
            vec!["probe", "ftp://127.0.0.1/healthz"],
            "not http or https",
        ),
        (
            vec!["probe", "--timeout", "0", "http://127.0.0.1:1/"],
            "from 1 to 60",
        ),
    ] {
        let o = run(&args);
        assert_exit(&o, 2);
        assert!(both(&o).contains(says), "{args:?}: {}", both(&o));
    }
}

#[test]
fn check_names_the_provider_preset_and_its_steps() {
    // The test OP is on loopback: generic, because no preset matches, and says so.
    let d = Deploy::new();
    d.write(&op().issuer, "", "", "");
    let (o, v) = check_json(&d);
    assert_exit(&o, 0);
    let ip = &v["identity_provider"];
    assert_eq!(ip["provider"], "generic", "{v}");
    assert!(
        ip["reason"].as_str().unwrap_or("").contains("no preset"),
        "{ip}"
    );
    // Set explicitly: Keycloak's steps name the callback and the client.
    let d = Deploy::new();
    d.write(&op().issuer, "", "provider = \"keycloak\"", "");
    let o = d.cmd(&["check", "--config", p(&d.config())]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    for want in [
        "provider: keycloak (set by [upstream] provider)".to_string(),
        "== Keycloak (provider preset keycloak".into(),
        format!("Valid redirect URIs: {PUBLIC}/oidc/callback"),
        "roles of client flexgate".into(),
    ] {
        assert!(text.contains(&want), "{want:?} missing:\n{text}");
    }
    assert!(
        !text.contains("== Auth0"),
        "no Auth0 section for Keycloak:\n{text}"
    );
    let (_, v) = check_json(&d);
    assert_eq!(v["identity_provider"]["provider"], "keycloak");
    assert!(
        v["identity_provider"]["steps"]
            .as_array()
            .is_some_and(|s| s.len() == 3),
        "{v}"
    );
}

#[test]
fn check_gets_a_graph_token_for_entra_and_names_a_refusal() {
    for (secret, ok) in [("cli-secret", true), ("another-secret", false)] {
        let graph = common::graph::GraphPeer::start(serde_json::json!({
            "tenant": "contoso", "client_id": "flexgate", "client_secret": secret, "users": {}
        }));
        let d = Deploy::new();
        d.write(
            &op().issuer,
            "",
            &format!(
                "provider = \"entra\"\ngraph_url = \"{}\"\ngraph_token_url = \"{}\"",
                graph.url, graph.token_url
            ),
            "[sp.role_map]\n\"Flex.Agent\" = [\"agent\"]",
        );
        let (o, v) = check_json(&d);
        let graph_finding = v["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|x| x["what"] == "Microsoft Graph").cloned())
            .unwrap_or_else(|| panic!("no Microsoft Graph finding: {v}"));
        if ok {
            assert_exit(&o, 0);
            assert_eq!(graph_finding["level"], "ok", "{graph_finding}");
            assert!(
                graph_finding["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("GroupMember.Read.All"),
                "{graph_finding}"
            );
        } else {
            assert_exit(&o, 1);
            assert_eq!(graph_finding["level"], "fail", "{graph_finding}");
            let detail = graph_finding["detail"].as_str().unwrap_or("");
            assert!(detail.contains("invalid_client"), "{detail}");
            assert!(!detail.contains("cli-secret"), "{detail}");
        }
    }
}

#[test]
fn check_gets_a_cloud_identity_token_for_google_and_names_a_refusal() {
    use common::google::{trusted_and_other_keys, GoogleCi, CLIENT_EMAIL};
    for matching_key in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (key, other) = trusted_and_other_keys(dir.path());
        let ci = GoogleCi::start(serde_json::json!({
            "client_email": CLIENT_EMAIL,
            "public_key": if matching_key { &key.public_pem } else { &other.public_pem },
            "memberships": {},
        }));
        let d = Deploy::new();
        d.write(
            &op().issuer,
            "",
            &format!(
                "provider = \"google\"\nhosted_domain = \"example.com\"\ngoogle_service_account_key = \"{}\"\ngoogle_token_url = \"{}\"\ncloud_identity_url = \"{}\"",
                key.path.display(),
                ci.token_url(),
                ci.url
            ),
            "",
        );
        let (o, v) = check_json(&d);
        let found = v["findings"]
            .as_array()
            .and_then(|f| {
                f.iter()
                    .find(|x| x["what"] == "Google Cloud Identity")
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no Google Cloud Identity finding: {v}"));
        if matching_key {
            assert_exit(&o, 0);
            assert_eq!(found["level"], "ok", "{found}");
            assert!(
                found["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains(CLIENT_EMAIL),
                "{found}"
            );
        } else {
            assert_exit(&o, 1);
            assert_eq!(found["level"], "fail", "{found}");
            assert!(
                found["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("invalid_grant"),
                "{found}"
            );
        }
        assert!(!stdout(&o).contains("PRIVATE KEY"), "the key never shows");
    }
}
