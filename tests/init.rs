//! `flexgate init` against the Management API stand-in (`tests/peers/auth0_mgmt.mjs` +
//! `auth0_tenant.mjs`): what a first run creates, that a second run writes nothing, that drift
//! is repaired and said, that the Login flow keeps the Actions already there in their order,
//! that `--dry-run` changes nothing anywhere, and the exit codes of missing credentials/scopes.

mod common;

use common::{Mgmt, JQ};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const TOKEN: &str = "test-mgmt-token";
const DOMAIN: &str = "example.us.auth0.com";
const PUBLIC: &str = "https://sso.example.com";
const CALLBACK: &str = "https://sso.example.com/oidc/callback";
const CLAIM: &str = "https://sso.example.com/flex_roles";
const ACTION: &str = "flexgate-flex-roles";

fn stand_in(extra: Value) -> Mgmt {
    let mut cfg = json!({"port": 0, "client_id": "m2m", "client_secret": "m2m-secret",
                         "static_token": TOKEN, "build_ms": 300,
                         "audience": format!("https://{DOMAIN}/api/v2/")});
    for (k, v) in extra.as_object().expect("object") {
        cfg[k] = v.clone();
    }
    Mgmt::start(cfg)
}

/// `flexgate init` against the stand-in, with no Management API credentials in its environment.
fn command(m: &Mgmt, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(common::flexgate_bin());
    c.args(["init", "--auth0-domain", DOMAIN, "--public-url", PUBLIC])
        .args(["--flex-connection", JQ, "--management-url", &m.url])
        .arg("--out")
        .arg(out)
        .args(extra)
        .env_remove("AUTH0_MGMT_CLIENT_ID")
        .env_remove("AUTH0_MGMT_CLIENT_SECRET")
        .env_remove("AUTH0_MGMT_TOKEN")
        .env_remove("FLEXGATE_LOG");
    c
}

/// `flexgate init` with a Management API token.
fn init(m: &Mgmt, out: &Path, extra: &[&str]) -> Output {
    command(m, out, extra)
        .env("AUTH0_MGMT_TOKEN", TOKEN)
        .output()
        .expect("run flexgate init")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn assert_says(o: &Output, wants: &[&str]) {
    let t = text(o);
    for want in wants {
        assert!(t.contains(want), "{want:?} in:\n{t}");
    }
}

#[track_caller]
fn assert_exit(o: &Output, want: i32) {
    assert_eq!(
        o.status.code(),
        Some(want),
        "exit code; output:\n{}",
        text(o)
    );
}

/// A call to the stand-in as a dashboard user would make it (to create drift, or to look).
async fn api(m: &Mgmt, method: &str, path: &str, body: Option<Value>) -> Value {
    let c = reqwest::Client::new();
    let mut r = c
        .request(method.parse().expect("method"), format!("{}{path}", m.url))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("stand-in call");
    assert!(
        resp.status().is_success(),
        "{method} {path}: {}",
        resp.status()
    );
    resp.json().await.expect("json")
}

/// Every request the stand-in received, as "METHOD /path".
async fn requests(m: &Mgmt) -> Vec<String> {
    let v: Value = reqwest::get(format!("{}/__requests", m.url))
        .await
        .expect("requests")
        .json()
        .await
        .expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap_or(""),
                r["path"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn writes(reqs: &[String]) -> Vec<&String> {
    reqs.iter()
        .filter(|r| !r.starts_with("GET ") && !r.ends_with(" /oauth/token"))
        .collect()
}

async fn app(m: &Mgmt) -> Value {
    let v = api(m, "GET", "/api/v2/clients", None).await;
    let named: Vec<&Value> = v
        .as_array()
        .expect("clients")
        .iter()
        .filter(|c| c["name"] == "flexgate")
        .collect();
    assert_eq!(named.len(), 1, "one application named flexgate: {v}");
    named[0].clone()
}

async fn action(m: &Mgmt) -> Value {
    let v = api(
        m,
        "GET",
        &format!("/api/v2/actions/actions?actionName={ACTION}"),
        None,
    )
    .await;
    v["actions"][0].clone()
}

async fn bound(m: &Mgmt) -> Vec<String> {
    let mut names = Vec::new();
    for page in 0.. {
        let path = format!("/api/v2/actions/triggers/post-login/bindings?page={page}");
        let v = api(m, "GET", &path, None).await;
        let list = v["bindings"].as_array().expect("bindings").clone();
        names.extend(
            list.iter()
                .map(|b| b["action"]["name"].as_str().unwrap_or("").to_string()),
        );
        if list.is_empty() || names.len() as u64 >= v["total"].as_u64().unwrap_or(0) {
            return names;
        }
    }
    names
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

/// Loads the written config as `flexgate serve` would, with the secret from flexgate.env.
fn load_written(out: &Path) -> flexgate::config::Config {
    let secret = sourced_secret(&out.join("flexgate.env"));
    let path = out.join("flexgate.toml");
    let text = std::fs::read_to_string(&path).expect("flexgate.toml");
    let cfg = flexgate::config::Config::from_toml(&text, &path, |k| {
        (k == "FLEXGATE_CLIENT_SECRET").then(|| secret.clone())
    })
    .expect("the written config validates");
    flexgate::config::keys::load(&cfg).expect("the written keys load");
    cfg
}

#[tokio::test]
async fn first_run_sets_up_everything_and_a_second_run_writes_nothing() {
    let m = stand_in(json!({"bindings": ["existing-a", "existing-b"]}));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("deploy");

    let o = init(&m, &out, &[]);
    assert_exit(&o, 0);
    assert_says(
        &o,
        &[
            "create     application",
            "create     post-login Action",
            "update     Login flow binding",
            "deployed Action",
            "Identity Provider Issuer",
            "BEGIN CERTIFICATE",
        ],
    );

    let a = app(&m).await;
    assert_eq!(a["app_type"], "regular_web");
    assert_eq!(a["callbacks"], json!([CALLBACK]));
    assert_eq!(a["grant_types"], json!(["authorization_code"]));
    assert!(["client_secret_basic", "client_secret_post"]
        .contains(&a["token_endpoint_auth_method"].as_str().unwrap_or("")));
    let act = action(&m).await;
    assert_eq!(act["all_changes_deployed"], true);
    assert_eq!(act["deployed_version"]["code"], act["code"]);
    let client_id = a["client_id"].as_str().unwrap_or("?");
    assert_eq!(
        act["code"].as_str(),
        Some(flexgate::auth0::init::action::code(CLAIM, client_id).as_str())
    );
    assert_eq!(bound(&m).await, ["existing-a", "existing-b", ACTION]);

    let cfg = load_written(&out);
    assert_eq!(cfg.upstream.issuer, format!("https://{DOMAIN}/"));
    assert_eq!(
        cfg.upstream.client_id,
        a["client_id"].as_str().unwrap_or("?")
    );
    assert_eq!(
        cfg.upstream.client_secret.expose(),
        a["client_secret"].as_str().unwrap_or("?")
    );
    assert_eq!(cfg.callback_url(), CALLBACK);
    let roles = cfg.sps[0]
        .attributes
        .iter()
        .find(|x| x.saml_name == "roles")
        .map(|x| x.claim.clone());
    assert_eq!(roles.as_deref(), Some(CLAIM));
    assert_eq!(cfg.sps[0].entity_id, format!("urn:flex:{JQ}"));
    assert_eq!(mode(&out.join("flexgate.env")), 0o600);
    assert_eq!(mode(&out.join("certs/idp-key.pem")), 0o600);
    let files_before: Vec<_> = ["flexgate.toml", "flexgate.env", "certs/idp-key.pem"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).expect("file"))
        .collect();

    let before = requests(&m).await.len();
    let o = init(&m, &out, &[]);
    assert_exit(&o, 0);
    let t = text(&o);
    assert!(t.contains("nothing to change"), "{t}");
    assert!(!t.contains("create ") && !t.contains("update "), "{t}");
    let reqs = requests(&m).await;
    assert!(
        writes(&reqs[before..]).is_empty(),
        "second run wrote: {:?}",
        &reqs[before..]
    );
    let files_after: Vec<_> = ["flexgate.toml", "flexgate.env", "certs/idp-key.pem"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).expect("file"))
        .collect();
    assert_eq!(files_before, files_after, "files untouched");
}

#[tokio::test]
async fn client_credentials_work_as_well_as_a_token() {
    let m = stand_in(json!({}));
    let dir = tempfile::tempdir().expect("tempdir");
    let o = command(&m, dir.path(), &["--dry-run"])
        .env("AUTH0_MGMT_CLIENT_ID", "m2m")
        .env("AUTH0_MGMT_CLIENT_SECRET", "m2m-secret")
        .output()
        .expect("run");
    assert_exit(&o, 0);
    let reqs = requests(&m).await;
    assert_eq!(
        reqs.first().map(String::as_str),
        Some("POST /oauth/token"),
        "{reqs:?}"
    );
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let m = stand_in(json!({"bindings": ["existing-a"]}));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("deploy");
    let o = init(&m, &out, &["--dry-run"]);
    assert_exit(&o, 0);
    assert_says(
        &o,
        &[
            "create     application \"flexgate\"",
            "create     post-login Action",
            "after the 1 Action(s) already there, kept in order: existing-a",
            "flexgate.toml",
            "dry run: nothing was changed",
        ],
    );
    let reqs = requests(&m).await;
    assert!(!reqs.is_empty());
    assert!(writes(&reqs).is_empty(), "dry run wrote: {reqs:?}");
    assert!(!out.exists(), "dry run created {}", out.display());
    assert_eq!(bound(&m).await, ["existing-a"]);
}

#[tokio::test]
async fn drift_is_repaired_and_said() {
    let m = stand_in(json!({"bindings": ["existing-a"]}));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_path_buf();
    assert_exit(&init(&m, &out, &[]), 0);
    let client_id = app(&m).await["client_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let action_id = action(&m).await["id"].as_str().unwrap_or("").to_string();
    let ours = flexgate::auth0::init::action::code(CLAIM, &client_id);

    // 1. A callback removed in the dashboard (another one added): ours comes back, theirs stays.
    api(
        &m,
        "PATCH",
        &format!("/api/v2/clients/{client_id}"),
        Some(json!({"callbacks": ["https://other.example.com/cb"]})),
    )
    .await;
    let before = requests(&m).await.len();
    let o = init(&m, &out, &[]);
    assert_exit(&o, 0);
    assert!(
        text(&o).contains(&format!("callbacks: add {CALLBACK} (keeping 1 other(s))")),
        "{}",
        text(&o)
    );
    assert_eq!(
        app(&m).await["callbacks"],
        json!(["https://other.example.com/cb", CALLBACK])
    );
    let reqs = requests(&m).await;
    assert_eq!(
        writes(&reqs[before..]),
        [&format!("PATCH /api/v2/clients/{client_id}")]
    );

    // 1b. The application switched to Auth0's legacy (not OIDC-conformant) flows.
    api(
        &m,
        "PATCH",
        &format!("/api/v2/clients/{client_id}"),
        Some(json!({"oidc_conformant": false})),
    )
    .await;
    let o = init(&m, &out, &[]);
    assert_exit(&o, 0);
    assert!(
        text(&o).contains("oidc_conformant: false -> true"),
        "{}",
        text(&o)
    );
    assert_eq!(app(&m).await["oidc_conformant"], json!(true));

    // 2. The Action's code edited (saved, not deployed): replaced and deployed again.
    api(
        &m,
        "PATCH",
        &format!("/api/v2/actions/actions/{action_id}"),
        Some(json!({"code": "exports.onExecutePostLogin = async () => {};"})),
    )
    .await;
    let before = requests(&m).await.len();
    let o = init(&m, &out, &[]);
    assert_exit(&o, 0);
    assert!(
        text(&o).contains("code: differs from flexgate's"),
        "{}",
        text(&o)
    );
    let act = action(&m).await;
    assert_eq!(act["code"].as_str(), Some(ours.as_str()));
    assert_eq!(
        act["deployed_version"]["code"].as_str(),
        Some(ours.as_str())
    );
    let reqs = requests(&m).await;
    let w: Vec<String> = writes(&reqs[before..]).into_iter().cloned().collect();
    assert_eq!(
        w,
        [
            format!("PATCH /api/v2/actions/actions/{action_id}"),
            format!("POST /api/v2/actions/actions/{action_id}/deploy")
        ]
    );

    // 3. Unbound from the Login flow: bound again after the others.
    let a_id = api(
        &m,
        "GET",
        "/api/v2/actions/actions?actionName=existing-a",
        None,
    )
    .await["actions"][0]["id"]
        .clone();
    api(&m, "PATCH", "/api/v2/actions/triggers/post-login/bindings", Some(json!({"bindings": [{"ref": {"type": "action_id", "value": a_id}, "display_name": "existing-a"}]}))).await;
    assert_eq!(bound(&m).await, ["existing-a"]);
    let o = init(&m, &out, &[]);
    assert_exit(&o, 0);
    assert!(
        text(&o).contains(
            "bound Action \"flexgate-flex-roles\" into the Login flow after 1 existing binding(s)"
        ),
        "{}",
        text(&o)
    );
    assert_eq!(bound(&m).await, ["existing-a", ACTION]);
}

#[tokio::test]
async fn existing_bindings_are_kept_in_order_across_pages() {
    let names = ["one", "two", "three", "four", "five"];
    let m = stand_in(json!({"bindings": names, "bindings_per_page_max": 2}));
    let dir = tempfile::tempdir().expect("tempdir");
    assert_exit(&init(&m, dir.path(), &[]), 0);
    let mut want: Vec<&str> = names.to_vec();
    want.push(ACTION);
    assert_eq!(bound(&m).await, want);
}

#[tokio::test]
async fn existing_files_are_not_replaced_without_force() {
    let m = stand_in(json!({}));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("flexgate.toml");
    std::fs::write(&config, "# mine\n").expect("write");
    std::fs::write(
        dir.path().join("flexgate.env"),
        "FLEXGATE_CLIENT_SECRET=old\n",
    )
    .expect("write");
    let o = init(&m, dir.path(), &[]);
    assert_exit(&o, 2);
    assert_says(
        &o,
        &[
            "replace    ",
            "flexgate.env (mode 0600; exists with other contents: pass --force to replace it)",
            "flexgate.toml (exists with other contents: pass --force to replace it)",
            "nothing was changed. Pass --force",
        ],
    );
    assert_eq!(std::fs::read_to_string(&config).expect("read"), "# mine\n");
    assert!(
        writes(&requests(&m).await).is_empty(),
        "refused, yet the tenant was changed"
    );

    assert_exit(&init(&m, dir.path(), &["--force"]), 0);
    load_written(dir.path());
}

#[tokio::test]
async fn missing_credentials_or_scopes_exit_2_naming_them() {
    let m = stand_in(json!({}));
    let dir = tempfile::tempdir().expect("tempdir");
    let o = command(&m, dir.path(), &[]).output().expect("run");
    assert_exit(&o, 2);
    let t = text(&o);
    for var in [
        "AUTH0_MGMT_CLIENT_ID",
        "AUTH0_MGMT_CLIENT_SECRET",
        "AUTH0_MGMT_TOKEN",
    ] {
        assert!(t.contains(var), "{var} in {t}");
    }
    assert!(requests(&m).await.is_empty());

    let m = stand_in(json!({"scope": "read:clients read:actions"}));
    let o = init(&m, dir.path(), &[]);
    assert_exit(&o, 2);
    assert!(
        text(&o).contains("lack the scope(s) create:clients"),
        "{}",
        text(&o)
    );
}

#[tokio::test]
async fn a_failed_build_is_reported_and_nothing_is_bound() {
    let m = stand_in(json!({"build_fails": true, "bindings": ["existing-a"]}));
    let dir = tempfile::tempdir().expect("tempdir");
    let o = init(&m, dir.path(), &[]);
    assert_exit(&o, 1);
    assert!(text(&o).contains("did not build"), "{}", text(&o));
    assert_eq!(bound(&m).await, ["existing-a"]);
}

#[tokio::test]
async fn without_read_client_keys_an_existing_app_needs_the_env_file_or_stops_before_any_change() {
    let app = json!({"name": "flexgate", "app_type": "regular_web", "callbacks": [CALLBACK],
                     "grant_types": ["authorization_code"], "token_endpoint_auth_method": "client_secret_post"});
    let scope =
        "read:clients create:clients update:clients read:actions create:actions update:actions";
    let m = stand_in(json!({"scope": scope, "clients": [app]}));
    let dir = tempfile::tempdir().expect("tempdir");
    let o = init(&m, dir.path(), &[]);
    assert_exit(&o, 2);
    assert!(text(&o).contains("read:client_keys"), "{}", text(&o));
    assert!(
        writes(&requests(&m).await).is_empty(),
        "stopped, yet the tenant was changed"
    );
    assert!(!dir.path().join("flexgate.toml").exists());

    // With flexgate.env already there it is kept (not compared), and the rest is set up.
    std::fs::write(
        dir.path().join("flexgate.env"),
        "FLEXGATE_CLIENT_SECRET=kept\n",
    )
    .expect("write");
    let o = init(&m, dir.path(), &[]);
    assert_exit(&o, 0);
    assert!(
        text(&o).contains("not compared: the token lacks read:client_keys"),
        "{}",
        text(&o)
    );
    let cfg = load_written(dir.path());
    assert_eq!(cfg.upstream.client_secret.expose(), "kept");
    assert_eq!(
        cfg.upstream.token_auth_method,
        Some(flexgate::config::TokenAuthMethod::ClientSecretPost)
    );
    assert_eq!(bound(&m).await, [ACTION]);
}

#[tokio::test]
async fn bad_options_exit_2_before_any_call() {
    let m = stand_in(json!({}));
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |domain: &str, jq: &str| {
        Command::new(common::flexgate_bin())
            .args(["init", "--auth0-domain", domain, "--public-url", PUBLIC])
            .args(["--flex-connection", jq, "--management-url", &m.url, "--out"])
            .arg(dir.path())
            .env("AUTH0_MGMT_TOKEN", TOKEN)
            .output()
            .expect("run")
    };
    let o = run(DOMAIN, "JQ123");
    assert_exit(&o, 2);
    assert_says(&o, &["sp[0].flex_connection", "JQ123"]);
    let o = run("https://example.us.auth0.com/x y", JQ);
    assert_exit(&o, 2);
    assert_says(&o, &["is not a tenant domain"]);
    assert!(requests(&m).await.is_empty());
}

/// A token shaped as Auth0's Management API tokens are: a JWT whose `scope` claim lists them.
fn jwt(scope: &str) -> String {
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = b64(json!({"alg": "RS256", "typ": "JWT"}));
    let payload = b64(json!({"iss": format!("https://{DOMAIN}/"), "scope": scope}));
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

#[tokio::test]
async fn scopes_the_token_visibly_lacks_stop_init_before_any_change() {
    let scope = "read:clients read:client_keys create:clients read:actions";
    let token = jwt(scope);
    let m = stand_in(json!({"scope": scope, "static_token": token, "bindings": ["existing-a"]}));
    let dir = tempfile::tempdir().expect("tempdir");
    let o = command(&m, dir.path(), &[])
        .env("AUTH0_MGMT_TOKEN", &token)
        .output()
        .expect("run");
    assert_exit(&o, 2);
    assert_says(
        &o,
        &[
            "lack the scope(s) create:actions, update:actions",
            "nothing was changed",
        ],
    );
    assert!(
        writes(&requests(&m).await).is_empty(),
        "stopped, yet the tenant was changed"
    );
    assert!(!dir.path().join("flexgate.toml").exists());
}

// ---- The Action gives Flex roles to flexgate's application only (issue 18, item 9) ----

/// The claims the Action's `code` sets for a login to the application `client_id` of a user
/// whose Flex roles are ["agent"], run under Node with Auth0's post-login `event` / `api` shapes.
fn run_action(code: &str, client_id: &str) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("action.js");
    std::fs::write(&file, code).expect("write");
    let harness = r#"
        const action = require(process.argv[1]);
        const claims = {};
        const api = { idToken: { setCustomClaim: (k, v) => { claims[k] = v; } } };
        const event = { client: { client_id: process.argv[2], name: 'some app' },
                        user: { user_id: 'auth0|ada', app_metadata: { flex: { roles: ['agent'] } } } };
        action.onExecutePostLogin(event, api).then(() => process.stdout.write(JSON.stringify(claims)));
    "#;
    let o = Command::new("node")
        .arg("-e")
        .arg(harness)
        .arg(&file)
        .arg(client_id)
        .output()
        .expect("node");
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).expect("claims JSON")
}

#[tokio::test]
async fn the_action_gives_flex_roles_to_flexgates_application_only() {
    let m = stand_in(json!({}));
    let dir = tempfile::tempdir().expect("tempdir");
    assert_exit(&init(&m, dir.path(), &[]), 0);
    let client_id = app(&m).await["client_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let deployed = action(&m).await["deployed_version"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(
        run_action(&deployed, &client_id),
        json!({ CLAIM: ["agent"] }),
        "flexgate's application gets the roles"
    );
    assert_eq!(
        run_action(&deployed, "another-application"),
        json!({}),
        "another application of the tenant gets no roles claim"
    );
}

/// The Action as flexgate wrote it before it checked the application.
const OLD_ACTION: &str = "exports.onExecutePostLogin = async (event, api) => {\n  const flex = (event.user.app_metadata || {}).flex || {};\n  api.idToken.setCustomClaim(\"https://sso.example.com/flex_roles\", flex.roles || []);\n};";

#[tokio::test]
async fn a_rerun_repairs_an_action_that_gives_roles_to_every_application() {
    let app_json = json!({"name": "flexgate", "app_type": "regular_web", "callbacks": [CALLBACK],
                          "grant_types": ["authorization_code"], "token_endpoint_auth_method": "client_secret_post"});
    let m = stand_in(
        json!({"clients": [app_json], "actions": [{"name": ACTION, "code": OLD_ACTION}],
                            "bindings": ["existing-a", ACTION]}),
    );
    assert_eq!(
        run_action(OLD_ACTION, "another-application"),
        json!({ CLAIM: ["agent"] }),
        "the old Action leaks the roles to any application"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let o = init(&m, dir.path(), &[]);
    assert_exit(&o, 0);
    assert_says(
        &o,
        &[
            "update     post-login Action",
            "code: differs from flexgate's",
            "unchanged  Login flow binding",
        ],
    );
    let client_id = app(&m).await["client_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let act = action(&m).await;
    let want = flexgate::auth0::init::action::code(CLAIM, &client_id);
    assert_eq!(act["code"].as_str(), Some(want.as_str()));
    assert_eq!(
        act["deployed_version"]["code"].as_str(),
        Some(want.as_str())
    );
    assert_eq!(run_action(&want, "another-application"), json!({}));
    assert_eq!(bound(&m).await, ["existing-a", ACTION]);
}

// ---- `init` writes files safely (issue 18, item 8) ----

/// FLEXGATE_CLIENT_SECRET as bash reads `file` (`set -a; . file`, as the README says).
fn sourced_secret(file: &Path) -> String {
    let o = Command::new("bash")
        .arg("-c")
        .arg(r#"set -a; . "$1"; printf %s "$FLEXGATE_CLIENT_SECRET""#)
        .arg("bash")
        .arg(file)
        .env_remove("FLEXGATE_CLIENT_SECRET")
        .output()
        .expect("bash");
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).expect("utf-8")
}

/// The variables of an environment file as systemd's `EnvironmentFile=` reads them: a port of
/// systemd's parser (src/basic/env-file.c `parse_env_file_internal`, as systemd.exec(5)
/// describes it): `#`/`;` comment lines, `KEY=VALUE` with leading whitespace skipped and trailing
/// whitespace of bare values dropped; a backslash escapes the next character outside quotes;
/// single quotes are literal; inside double quotes a backslash unescapes `"`, `\`, `` ` `` and
/// `$` and is kept before any other character; a closing quote returns to "before value", where
/// whitespace is skipped and another quote may follow.
fn systemd_env(text: &str) -> Vec<(String, String)> {
    #[derive(PartialEq)]
    enum S {
        PreKey,
        Key,
        PreValue,
        Value,
        ValueEscape,
        Single,
        Double,
        DoubleEscape,
        Comment,
    }
    let mut out = Vec::new();
    let (mut key, mut value, mut state) = (String::new(), String::new(), S::PreKey);
    let mut trailing_ws: Option<usize> = None;
    for c in text.chars() {
        match state {
            S::PreKey if c == '#' || c == ';' => state = S::Comment,
            S::PreKey if !c.is_whitespace() => {
                key = c.to_string();
                state = S::Key;
            }
            S::PreKey => {}
            S::Key if c == '\n' => state = S::PreKey,
            S::Key if c == '=' => {
                value.clear();
                trailing_ws = None;
                state = S::PreValue;
            }
            S::Key => key.push(c),
            S::PreValue | S::Value if c == '\n' => {
                if state == S::Value {
                    if let Some(n) = trailing_ws {
                        value.truncate(n);
                    }
                }
                out.push((key.trim_end().to_string(), std::mem::take(&mut value)));
                state = S::PreKey;
            }
            S::PreValue if c == '\'' => state = S::Single,
            S::PreValue if c == '"' => state = S::Double,
            S::PreValue | S::Value if c == '\\' => {
                trailing_ws = None;
                state = S::ValueEscape;
            }
            S::PreValue if c == ' ' || c == '\t' => {}
            S::PreValue | S::Value => {
                if c == ' ' || c == '\t' {
                    trailing_ws.get_or_insert(value.len());
                } else {
                    trailing_ws = None;
                }
                value.push(c);
                state = S::Value;
            }
            S::ValueEscape => {
                if c != '\n' {
                    value.push(c);
                }
                state = S::Value;
            }
            S::Single if c == '\'' => state = S::PreValue,
            S::Single => value.push(c),
            S::Double if c == '"' => state = S::PreValue,
            S::Double if c == '\\' => state = S::DoubleEscape,
            S::Double => value.push(c),
            S::DoubleEscape => {
                if "\"\\`$".contains(c) {
                    value.push(c);
                } else if c != '\n' {
                    value.push('\\');
                    value.push(c);
                }
                state = S::Double;
            }
            S::Comment if c == '\n' => state = S::PreKey,
            S::Comment => {}
        }
    }
    if matches!(state, S::PreValue | S::Value | S::Single | S::Double) {
        out.push((key.trim_end().to_string(), value));
    }
    out
}

#[test]
fn the_systemd_reading_follows_its_rules() {
    let t = "# c\nA=plain  \nB='x y'\"z\"\nC=\"a\\$b\\q\"\n  D = v\\ w\n";
    assert_eq!(
        systemd_env(t),
        [("A", "plain"), ("B", "x yz"), ("C", "a$b\\q"), ("D", "v w")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

#[tokio::test]
async fn the_env_file_reads_the_same_in_bash_and_systemd_whatever_the_secret() {
    let secret = "s3cr3t $HOME \"dq\" 'sq' back\\slash #hash `tick` ;semi !bang";
    let app_json = json!({"name": "flexgate", "app_type": "regular_web", "callbacks": [CALLBACK],
                          "grant_types": ["authorization_code"], "token_endpoint_auth_method": "client_secret_post",
                          "client_secret": secret});
    let m = stand_in(json!({"clients": [app_json]}));
    let dir = tempfile::tempdir().expect("tempdir");
    assert_exit(&init(&m, dir.path(), &[]), 0);
    let env = dir.path().join("flexgate.env");
    assert_eq!(sourced_secret(&env), secret, "bash: set -a; . flexgate.env");
    let text = std::fs::read_to_string(&env).expect("read");
    assert_eq!(
        systemd_env(&text),
        [("FLEXGATE_CLIENT_SECRET".to_string(), secret.to_string())],
        "systemd EnvironmentFile=: {text}"
    );
    assert_eq!(
        load_written(dir.path()).upstream.client_secret.expose(),
        secret
    );
    // A second run reads it back as the same secret: nothing to change.
    let o = init(&m, dir.path(), &[]);
    assert_exit(&o, 0);
    assert_says(&o, &["nothing to change"]);
}

#[tokio::test]
async fn symlinks_planted_at_the_files_are_replaced_never_written_through() {
    let m = stand_in(json!({}));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("deploy");
    std::fs::create_dir(&out).expect("mkdir");
    let victims = dir.path().join("elsewhere");
    std::fs::create_dir(&victims).expect("mkdir");
    for name in ["flexgate.toml", "flexgate.env"] {
        let target = victims.join(name);
        std::fs::write(&target, "precious\n").expect("write");
        std::os::unix::fs::symlink(&target, out.join(name)).expect("symlink");
    }
    // Without --force: "exists with other contents", nothing written anywhere.
    let o = init(&m, &out, &[]);
    assert_exit(&o, 2);
    for name in ["flexgate.toml", "flexgate.env"] {
        assert_eq!(
            std::fs::read_to_string(victims.join(name)).expect("read"),
            "precious\n"
        );
    }
    // With --force: the links are replaced by files; their targets are untouched.
    assert_exit(&init(&m, &out, &["--force"]), 0);
    for name in ["flexgate.toml", "flexgate.env"] {
        assert_eq!(
            std::fs::read_to_string(victims.join(name)).expect("read"),
            "precious\n",
            "{name} was written through its symlink"
        );
        let meta = std::fs::symlink_metadata(out.join(name)).expect("stat");
        assert!(meta.file_type().is_file(), "{name} is a file now");
    }
    assert_eq!(mode(&out.join("flexgate.env")), 0o600);
    load_written(&out);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn an_env_file_readable_by_others_is_made_0600_and_said() {
    let m = stand_in(json!({}));
    let dir = tempfile::tempdir().expect("tempdir");
    assert_exit(&init(&m, dir.path(), &[]), 0);
    let env = dir.path().join("flexgate.env");
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = init(&m, dir.path(), &["--dry-run"]);
    assert_exit(&o, 0);
    assert_says(&o, &["chmod", "mode 0644 -> 0600"]);
    assert_eq!(mode(&env), 0o644, "a dry run changes nothing");
    let o = init(&m, dir.path(), &[]);
    assert_exit(&o, 0);
    assert_says(&o, &["fixed the mode of", "0644 -> 0600"]);
    assert_eq!(mode(&env), 0o600);
    let o = init(&m, dir.path(), &[]);
    assert_says(&o, &["nothing to change"]);
}

#[tokio::test]
async fn a_login_flow_edited_by_someone_else_during_the_run_stops_it_saying_so() {
    // Right after init's first read of the bindings (while it builds its Action), a colleague
    // binds another Action in the dashboard.
    let m = stand_in(json!({"bindings": ["existing-a"],
                            "edit_bindings_after_get": {"after": 1, "add": "colleague"}}));
    let dir = tempfile::tempdir().expect("tempdir");
    let o = init(&m, dir.path(), &[]);
    assert_exit(&o, 1);
    assert_says(
        &o,
        &[
            "the Login flow changed since `flexgate init` read it",
            "[existing-a]",
            "[existing-a, colleague]",
            "nothing was bound",
        ],
    );
    assert_eq!(
        bound(&m).await,
        ["existing-a", "colleague"],
        "their edit stands"
    );
    // The next run binds after both.
    assert_exit(&init(&m, dir.path(), &[]), 0);
    assert_eq!(bound(&m).await, ["existing-a", "colleague", ACTION]);
}
