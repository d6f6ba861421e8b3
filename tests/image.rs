//! The container image, run by podman: `flexgate --version`; `flexgate demo` with a read-only root, reached
//! from the host; a full login through a containerised `flexgate serve` (the image's own defaults: user 65532,
//! FLEXGATE_CONFIG, config mounted read-only at /etc/flexgate) against the test OP, its Response checked by
//! every validator; and `flexgate check` with a `pkcs11:` key whose module (SoftHSM2) and token are mounted
//! in, which proves `dlopen` works in the image.
//!
//! Ignored by `cargo test`: `scripts/test-packaging` builds the image with `scripts/image` and runs these with
//! `FLEXGATE_TEST_IMAGE=flexgate:TAG cargo test --test image -- --ignored`. Needs root and podman + runc.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const UID: u32 = 65532;
const SECRET: &str = "test-secret-image";
const PIN: &str = "4711-image";

fn image() -> String {
    std::env::var("FLEXGATE_TEST_IMAGE")
        .expect("FLEXGATE_TEST_IMAGE names the image to test (scripts/test-packaging sets it)")
}

/// `podman run` as it works on these machines: runc (crun refuses the hybrid cgroup layout), the host
/// network (a service in the container is reached on 127.0.0.1), rlimits the host can set.
fn podman_run(args: &[&str]) -> Command {
    let mut c = Command::new("podman");
    // --no-healthcheck: podman schedules health checks with systemd timers, and CI has no systemd running;
    // the check's command (`flexgate probe`) is run in the container by the demo test instead.
    c.args(["run", "--network=host", "--pull=never", "--no-healthcheck"]);
    c.args([
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]);
    if Path::new("/usr/sbin/runc").exists() {
        c.args(["--runtime", "/usr/sbin/runc"]);
    }
    c.args(args);
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A detached container, removed when dropped (its log printed if the test failed).
struct Container(String);

impl Container {
    fn start(args: &[&str]) -> Container {
        let name = unique_id("flexgate-test-");
        let mut all = vec!["-d", "--name", &name];
        all.extend_from_slice(args);
        let o = podman_run(&all)
            .output()
            .expect("podman (apt-get install podman runc)");
        assert!(o.status.success(), "podman run: {}", text(&o));
        Container(name)
    }

    fn logs(&self) -> String {
        Command::new("podman")
            .args(["logs", &self.0])
            .output()
            .map(|o| text(&o))
            .unwrap_or_default()
    }

    /// Waits until `url` answers 200, or fails with the container's log.
    fn wait_ok(&self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if tinyhttp::blocking_get(url).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{url} never answered 200; container log:\n{}", self.logs());
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- container log ---\n{}", self.logs());
        }
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.0])
            .output();
    }
}

/// Makes `path` (and everything under it) owned by the image's user, as a mounted volume would be.
fn give_to_image_user(path: &Path) {
    let o = Command::new("chown")
        .args(["-R", &format!("{UID}:{UID}")])
        .arg(path)
        .output()
        .expect("chown");
    assert!(o.status.success(), "chown: {}", text(&o));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o750)).expect("chmod");
}

/// A config folder for /etc/flexgate: flexgate.toml listening on `port` on the host network.
fn write_config(dir: &Path, port: u16, issuer: &str, idp: &str) {
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[idp]
{idp}

[upstream]
issuer = "{issuer}"
client_id = "flexgate"
client_secret = "${{TEST_CLIENT_SECRET}}"
{}"#,
        default_sps()
    );
    std::fs::write(dir.join("flexgate.toml"), config).expect("write config");
}

#[test]
#[ignore = "needs the image: scripts/test-packaging"]
fn image_prints_its_version() {
    let o = podman_run(&["--rm", &image(), "--version"])
        .output()
        .expect("podman");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("flexgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
#[ignore = "needs the image: scripts/test-packaging"]
fn image_runs_the_demo_with_a_read_only_root_reached_from_the_host() {
    let port = free_port().to_string();
    let c = Container::start(&["--read-only", &image(), "demo", "--port", &port]);
    c.wait_ok(&format!("http://127.0.0.1:{port}/healthz"));
    let page = Command::new(flexgate_bin())
        .args(["probe", &format!("http://127.0.0.1:{port}/flex")])
        .output()
        .expect("probe");
    assert!(page.status.success(), "the Flex stand-in: {}", text(&page));
    // The image's HEALTHCHECK command, run inside the container.
    let o = Command::new("podman")
        .args(["exec", &c.0, "/usr/bin/flexgate", "probe"])
        .arg(format!("http://127.0.0.1:{port}/healthz"))
        .output()
        .expect("podman exec");
    assert!(o.status.success(), "probe in the image: {}", text(&o));
    let user = Command::new("podman")
        .args(["inspect", "--format", "{{.Config.User}}", &c.0])
        .output()
        .expect("inspect");
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the image: scripts/test-packaging"]
async fn a_login_through_a_containerised_serve_verifies_everywhere() {
    let port = free_port();
    let op = Op::start(
        &format!("http://127.0.0.1:{port}/oidc/callback"),
        "flexgate",
        SECRET,
        serde_json::json!({}),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path());
    write_config(
        dir.path(),
        port,
        &op.issuer,
        "key = \"idp-key.pem\"\ncert = \"idp-cert.pem\"",
    );
    give_to_image_user(dir.path());
    let cert_pem = std::fs::read_to_string(dir.path().join("idp-cert.pem")).expect("cert");
    let mount = format!("{}:/etc/flexgate:ro", dir.path().display());
    let env = format!("TEST_CLIENT_SECRET={SECRET}");
    // No command and no --config: the image's CMD (serve) and FLEXGATE_CONFIG (/etc/flexgate/flexgate.toml).
    let c = Container::start(&["--read-only", "-v", &mount, "-e", &env, &image()]);
    let base = format!("http://127.0.0.1:{port}");
    c.wait_ok(&format!("{base}/healthz"));

    let id = unique_id("_");
    let sso = format!("{base}/saml/sso");
    let xml = enhanced_request(&id, JQ, "us1", &sso);
    let b = Browser::new();
    let first = b.client.get(&sso).query(&[
        ("SAMLRequest", deflate_b64(&xml).as_str()),
        ("RelayState", "in-a-container"),
    ]);
    let out = b.login(first, "agent1").await;
    assert_eq!(out.status, 200, "{}\n{}", out.body, c.logs());
    let form = out.form.clone().expect("a POST form");
    assert_eq!(form.relay_state.as_deref(), Some("in-a-container"));
    let expect = SpExpect {
        cert_pem,
        idp_entity_id: format!("{base}/saml/metadata"),
        sp_entity_id: format!("urn:flex:{JQ}"),
        acs_url: format!("https://login.flex.us1.twilio.com/login/callback?connection={JQ}"),
        request_id: Some(id),
        response_signed: true,
        assertion_signed: false,
    };
    let (name_id, got) = validate_everywhere(&form, &expect);
    assert_eq!(name_id, "agent1@example.com");
    assert_eq!(got["roles"], vec!["agent".to_string()]);
}

#[test]
#[ignore = "needs the image: scripts/test-packaging"]
fn check_loads_a_pkcs11_module_mounted_into_the_image() {
    // A SoftHSM2 token on the host, its key made by the host's flexgate; the container sees the token in its
    // volume (/var/lib/flexgate) and the module at the same path as on the host.
    let state = tempfile::tempdir().expect("tempdir");
    let host_conf = softhsm_conf(state.path());
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "image",
            "--so-pin",
            "so-1234",
            "--pin",
            PIN,
        ])
        .env("SOFTHSM2_CONF", &host_conf)
        .output()
        .expect("softhsm2-util (run scripts/install-test-deps)");
    assert!(init.status.success(), "{}", text(&init));
    let uri = |pin: &str| {
        format!("pkcs11:token=image;object=idp?module-path={SOFTHSM_MODULE}&pin-value={pin}")
    };
    let etc = tempfile::tempdir().expect("tempdir");
    let kg = Command::new(flexgate_bin())
        .args(["keygen", "--pkcs11", &uri(PIN), "--out"])
        .arg(etc.path())
        .env("SOFTHSM2_CONF", &host_conf)
        .output()
        .expect("keygen");
    assert!(kg.status.success(), "keygen --pkcs11: {}", text(&kg));
    std::fs::write(
        state.path().join("softhsm2-image.conf"),
        "directories.tokendir = /var/lib/flexgate/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
    )
    .expect("container softhsm2.conf");

    let port = free_port();
    let op = Op::start(
        &format!("http://127.0.0.1:{port}/oidc/callback"),
        "flexgate",
        SECRET,
        serde_json::json!({}),
    );
    let idp = format!(
        "key = \"{}\"\ncert = \"idp-cert.pem\"",
        uri("${FLEXGATE_HSM_PIN}")
    );
    write_config(etc.path(), port, &op.issuer, &idp);
    give_to_image_user(etc.path());
    give_to_image_user(state.path());

    let o = podman_run(&[
        "--rm",
        "--read-only",
        "-v",
        &format!("{}:/etc/flexgate:ro", etc.path().display()),
        "-v",
        &format!("{}:/var/lib/flexgate", state.path().display()),
        "-v",
        &format!("{SOFTHSM_MODULE}:{SOFTHSM_MODULE}:ro"),
        "-e",
        "SOFTHSM2_CONF=/var/lib/flexgate/softhsm2-image.conf",
        "-e",
        &format!("FLEXGATE_HSM_PIN={PIN}"),
        "-e",
        &format!("TEST_CLIENT_SECRET={SECRET}"),
        &image(),
        "check",
        "--json",
    ])
    .output()
    .expect("podman");
    assert!(o.status.success(), "check in the image: {}", text(&o));
    assert!(!text(&o).contains(PIN), "the PIN is printed: {}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("check printed no JSON: {}", text(&o)));
    let key = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["what"] == "signing key" && f["level"] == "ok")
        .unwrap_or_else(|| panic!("no ok signing key finding: {report}"));
    let detail = key["detail"].as_str().expect("detail");
    assert!(
        detail.contains("in a PKCS#11 token: pkcs11:token=image;object=idp")
            && detail.contains("CKA_SENSITIVE true"),
        "{detail}"
    );
}
