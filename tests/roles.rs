//! `flexgate roles` against the Management API stand-in (tests/peers/auth0_mgmt.mjs), which
//! enforces the rate limit, merges app_metadata at its top level only and counts every call.

mod common;

use common::{flexgate_bin, Mgmt};
use serde_json::{json, Value};
use std::process::{Command, Output};

const TOKEN: &str = "test-token";

/// `text` in a CSV file of its own folder (kept while the folder lives).
fn csv_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("agents.csv");
    std::fs::write(&csv, text).unwrap();
    (dir, csv)
}

fn start(users: Value, extra: Value) -> Mgmt {
    let mut cfg = json!({"client_id": "mgmt", "client_secret": "mgmt-secret", "static_tokens": [TOKEN], "users": users});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    Mgmt::start(cfg)
}

/// `flexgate roles ARGS --management-url URL` with client credentials in the environment.
fn roles(m: &Mgmt, args: &[&str]) -> Output {
    Command::new(flexgate_bin())
        .arg("roles")
        .args(args)
        .args(["--management-url", &m.url])
        .env("AUTH0_MGMT_CLIENT_ID", "mgmt")
        .env("AUTH0_MGMT_CLIENT_SECRET", "mgmt-secret")
        .env_remove("AUTH0_MGMT_TOKEN")
        .output()
        .expect("run flexgate roles")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The user as the Management API has it now (read with the stand-in's fixed token).
async fn user(m: &Mgmt, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/api/v2/users/{}", m.url, id.replace('|', "%7C")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get user")
        .json()
        .await
        .expect("json")
}

fn ada() -> Value {
    json!({"auth0|ada": {"email": "ada@example.com",
        "app_metadata": {"flex": {"roles": ["agent"], "team": "blue"}, "plan": "gold"}}})
}

#[tokio::test]
async fn set_keeps_every_other_app_metadata_key_and_get_shows_the_roles() {
    let m = start(ada(), json!({}));
    let out = roles(
        &m,
        &["set", "Ada@Example.com", "supervisor", "wfo.team_leader"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("supervisor, wfo.team_leader (was agent)"),
        "{stdout}"
    );
    let u = user(&m, "auth0|ada").await;
    assert_eq!(
        u["app_metadata"],
        json!({"flex": {"roles": ["supervisor", "wfo.team_leader"], "team": "blue"}, "plan": "gold"})
    );
    // get, here with a ready token instead of client credentials.
    let out = Command::new(flexgate_bin())
        .args([
            "roles",
            "get",
            "ada@example.com",
            "--management-url",
            &m.url,
        ])
        .env("AUTH0_MGMT_TOKEN", TOKEN)
        .env_remove("AUTH0_MGMT_CLIENT_ID")
        .env_remove("AUTH0_MGMT_CLIENT_SECRET")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "ada@example.com (auth0|ada): supervisor, wfo.team_leader"
    );
    // The same roles again: nothing written.
    let writes = m.stats().await["writes"].clone();
    let out = roles(
        &m,
        &["set", "ada@example.com", "supervisor", "wfo.team_leader"],
    );
    assert!(text(&out).0.contains("(unchanged)"));
    assert_eq!(m.stats().await["writes"], writes);
    // An unknown user: exit 1, named.
    let out = roles(&m, &["get", "nobody@example.com"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out)
        .1
        .contains("no user with the email nobody@example.com"));
}

#[tokio::test]
async fn unknown_role_values_exit_2_before_any_call() {
    let m = start(ada(), json!({}));
    let out = roles(&m, &["set", "ada@example.com", "agent", "owner", "boss"]);
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("owner, boss"), "{stderr}");
    let (_dir, csv) =
        csv_file("email,roles\nada@example.com,agent\nbob@example.com,agent;superuser\n");
    let out = roles(&m, &["import", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("superuser"));
    let s = m.stats().await;
    assert_eq!(
        (s["requests"].as_u64(), s["token_requests"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    // No credentials: bad usage too.
    let out = Command::new(flexgate_bin())
        .args([
            "roles",
            "get",
            "ada@example.com",
            "--management-url",
            &m.url,
        ])
        .env_remove("AUTH0_MGMT_TOKEN")
        .env_remove("AUTH0_MGMT_CLIENT_ID")
        .env_remove("AUTH0_MGMT_CLIENT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("AUTH0_MGMT_CLIENT_ID"));
}

#[tokio::test]
async fn set_none_and_an_empty_cell_remove_every_flex_role() {
    let m = start(three_users(), json!({}));
    // No role and no --none, or both: bad usage, no call.
    for args in [
        &["set", "ada@example.com"][..],
        &["set", "ada@example.com", "agent", "--none"][..],
    ] {
        let out = roles(&m, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out).1);
    }
    assert_eq!(m.stats().await["requests"], 0);
    let out = roles(&m, &["set", "Ada@Example.com", "--none"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("no Flex role (was agent)"), "{stdout}");
    // The roles key is gone, every other key kept.
    assert_eq!(
        user(&m, "auth0|ada").await["app_metadata"],
        json!({"flex": {}, "plan": "gold"})
    );
    // An empty roles cell does the same.
    let (_dir, csv) = csv_file("email,roles\nbob@example.com,\ndan@example.com,\n");
    let out = roles(&m, &["import", csv.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("set 1, unchanged 1"), "{stdout}");
    assert_eq!(
        user(&m, "auth0|bob").await["app_metadata"],
        json!({"flex": {}})
    );
    // Nobody is left with a role: the export is the header alone.
    let out = roles(&m, &["export"]);
    assert_eq!(text(&out).0, "email,roles\n");
}

fn three_users() -> Value {
    json!({
        "auth0|ada": {"email": "ada@example.com", "app_metadata": {"flex": {"roles": ["agent"]}, "plan": "gold"}},
        "auth0|bob": {"email": "bob@example.com", "app_metadata": {"flex": {"roles": ["agent"]}}},
        "auth0|cy": {"email": "cy@example.com"},
        "auth0|dan": {"email": "dan@example.com", "app_metadata": {"other": true}}
    })
}

#[tokio::test]
async fn import_reports_each_outcome_and_a_dry_run_writes_nothing() {
    let m = start(three_users(), json!({}));
    let (_dir, csv) = csv_file("email,roles\nada@example.com,supervisor;wfo.team_leader\nbob@example.com,agent\nghost@example.com,agent\ncy@example.com,agent\n");
    let file = csv.to_str().unwrap();
    let out = roles(&m, &["import", file, "--dry-run"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("would set 2, unchanged 1, unknown user 1, failed 0 (dry run"),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 4: ghost@example.com: no such user"),
        "{stderr}"
    );
    let s = m.stats().await;
    assert_eq!(s["writes"], 0, "a dry run writes nothing: {s}");
    assert!(s["by_route"]["users_by_email"].as_u64() == Some(4), "{s}");

    let out = roles(&m, &["import", file]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("set 2, unchanged 1, unknown user 1, failed 0"),
        "{stdout}"
    );
    assert_eq!(m.stats().await["writes"], 2);
    assert_eq!(
        user(&m, "auth0|ada").await["app_metadata"],
        json!({"flex": {"roles": ["supervisor", "wfo.team_leader"]}, "plan": "gold"})
    );
    assert_eq!(
        user(&m, "auth0|cy").await["app_metadata"],
        json!({"flex": {"roles": ["agent"]}})
    );
}

#[tokio::test]
async fn an_import_that_cannot_write_fails_every_row_it_did_not_apply_and_exits_1() {
    // The application may read users but not update them.
    let m = start(three_users(), json!({"scope": "read:users"}));
    let (_dir, csv) = csv_file(
        "email,roles\nada@example.com,admin\nbob@example.com,admin\ncy@example.com,admin\n",
    );
    let out = roles(&m, &["import", csv.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("set 0, unchanged 0, unknown user 0, failed 3"),
        "{stdout}"
    );
    assert!(
        stderr.contains("update:users"),
        "the missing scope is named: {stderr}"
    );
    for id in ["auth0|ada", "auth0|bob"] {
        assert_eq!(
            user(&m, id).await["app_metadata"]["flex"]["roles"],
            json!(["agent"])
        );
    }
}

#[tokio::test]
async fn export_writes_every_user_with_a_role_as_the_import_format() {
    let m = start(three_users(), json!({}));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    let out = roles(&m, &["export", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "email,roles\nada@example.com,agent\nbob@example.com,agent\n"
    );
    // Round trip: importing the export changes nothing.
    let out = roles(&m, &["import", path.to_str().unwrap()]);
    assert!(
        text(&out).0.contains("set 0, unchanged 2"),
        "{}",
        text(&out).0
    );
}

#[tokio::test]
async fn export_beyond_the_search_limit_uses_a_users_export_job() {
    let users: serde_json::Map<String, Value> = (0..1100)
        .map(|i| {
            (
                format!("auth0|{i:05}"),
                json!({"email": format!("agent{i:05}@example.com"), "app_metadata": {"flex": {"roles": ["agent"]}}}),
            )
        })
        .collect();
    let m = start(Value::Object(users), json!({"export_delay_ms": 300}));
    let out = roles(&m, &["export"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 1101);
    assert!(stdout.contains("\nagent01099@example.com,agent\n"));
    let s = m.stats().await;
    assert_eq!(s["by_route"]["create_users_export"], 1, "{s}");
}

#[tokio::test]
async fn import_of_500_agents_on_a_16_per_second_tenant_finishes_without_failure() {
    let users: serde_json::Map<String, Value> = (0..500)
        .map(|i| {
            (
                format!("auth0|{i:03}"),
                json!({"email": format!("agent{i:03}@example.com")}),
            )
        })
        .collect();
    let m = start(
        Value::Object(users),
        json!({"rate": {"per_sec": 16, "burst": 50}}),
    );
    let mut body = String::from("email,roles\n");
    for i in 0..500 {
        body.push_str(&format!("agent{i:03}@example.com,agent\n"));
    }
    let (_dir, csv) = csv_file(&body);
    let out = roles(&m, &["import", csv.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("set 500, unchanged 0, unknown user 0, failed 0"),
        "{stdout}"
    );
    let s = m.stats().await;
    assert_eq!(s["writes"], 500, "{s}");
    eprintln!("stand-in: {s}");
    assert_eq!(
        user(&m, "auth0|499").await["app_metadata"]["flex"]["roles"],
        json!(["agent"])
    );
}

// ---- The Management API client against a hostile tenant or proxy (issue 18, items 5 and 6) ----

/// `roles get` of Ada against a stand-in started with `extra`: the exit status and all output.
fn get_ada(extra: Value) -> (Output, String) {
    let m = start(ada(), extra);
    let out = roles(&m, &["get", "ada@example.com"]);
    let (stdout, stderr) = text(&out);
    (out, format!("{stdout}{stderr}"))
}

#[test]
fn hostile_rate_limit_headers_and_token_lifetimes_neither_panic_nor_fail_the_call() {
    let cases = [
        json!({"rate_headers": {"x-ratelimit-limit": "4294967296", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "-5"}}),
        json!({"rate_headers": {"x-ratelimit-limit": "12884901888", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "99999999999999"}}),
        json!({"rate_headers": {"x-ratelimit-limit": "0", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "18446744073709551615"}}),
        json!({"rate_headers": {"x-ratelimit-limit": "18446744073709551615", "x-ratelimit-remaining": "18446744073709551615", "x-ratelimit-reset": "soon"}}),
        json!({"rate_headers": {"x-ratelimit-limit": null, "x-ratelimit-remaining": "-1"}}),
        json!({"token_expires_in": u64::MAX}),
        json!({"token_expires_in": 1e308}),
        json!({"token_expires_in": -5}),
        json!({"token_expires_in": "soon"}),
    ];
    for extra in cases {
        let (out, all) = get_ada(extra.clone());
        assert!(!all.contains("panicked"), "{extra}: {all}");
        assert!(out.status.success(), "{extra}: {all}");
        assert!(
            all.contains("ada@example.com (auth0|ada): agent"),
            "{extra}: {all}"
        );
    }
}

#[test]
fn a_429_with_a_reset_an_hour_ahead_is_probed_again_after_the_cap() {
    let (out, all) =
        get_ada(json!({"throttle": {"route": "users_by_email", "first": 1, "reset_in": 3600}}));
    assert!(!all.contains("panicked"), "{all}");
    assert!(
        out.status.success(),
        "waited for the cap and probed again: {all}"
    );
    assert!(all.contains("ada@example.com (auth0|ada): agent"), "{all}");
}

/// 1,100 users with a role: more than users search pages through, so `roles export` runs a
/// users-export job.
fn beyond_search() -> Value {
    let users: serde_json::Map<String, Value> = (0..1100)
        .map(|i| {
            (
                format!("auth0|{i:05}"),
                json!({"email": format!("agent{i:05}@example.com"), "app_metadata": {"flex": {"roles": ["agent"]}}}),
            )
        })
        .collect();
    Value::Object(users)
}

const SIGNATURE: &str = "PRESIGNEDsignature4711deadbeef";

/// `roles export` at trace level; the exit status and everything it wrote.
fn traced_export(extra: Value) -> (Output, String) {
    let mut cfg = json!({"export_delay_ms": 100, "export_signature": SIGNATURE});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let m = start(beyond_search(), cfg);
    let out = Command::new(flexgate_bin())
        .args(["roles", "export", "--management-url", &m.url])
        .env("AUTH0_MGMT_CLIENT_ID", "mgmt")
        .env("AUTH0_MGMT_CLIENT_SECRET", "mgmt-secret")
        .env_remove("AUTH0_MGMT_TOKEN")
        .env("FLEXGATE_LOG", "trace")
        .output()
        .expect("run flexgate roles export");
    let (stdout, stderr) = text(&out);
    (out, format!("{stdout}{stderr}"))
}

#[track_caller]
fn assert_no_presigned_url(all: &str) {
    for secret in [SIGNATURE, "X-Amz-", "__exports", ".json.gz"] {
        assert!(
            !all.contains(secret),
            "the pre-signed URL leaked ({secret}):\n{all}"
        );
    }
}

#[test]
fn the_presigned_export_url_reaches_no_output_at_trace_level() {
    let (out, all) = traced_export(json!({}));
    assert!(out.status.success(), "{all}");
    assert!(all.contains("agent01099@example.com,agent"), "{all}");
    assert!(all.contains("users-export job"), "traced: {all}");
    assert_no_presigned_url(&all);

    // A download refused (an expired signature) or failing: said, without the URL.
    for status in [403, 500] {
        let (out, all) = traced_export(json!({"export_status": status}));
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(
            all.contains(&format!("answered HTTP {status}"))
                && all.contains("could not be downloaded"),
            "{all}"
        );
        assert_no_presigned_url(&all);
    }
}

#[test]
fn an_export_download_over_the_cap_is_refused_naming_it() {
    let (out, all) = traced_export(json!({"export_claims_bytes": 300u64 * 1024 * 1024}));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("over 268435456 bytes, flexgate's cap on an export download"),
        "{all}"
    );
    assert_no_presigned_url(&all);
}
