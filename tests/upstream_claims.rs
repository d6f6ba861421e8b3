//! Claims as upstreams other than Auth0 send them, against npm `oidc-provider`: signed userinfo
//! (`application/jwt`), and groups (Okta's `groups` claim) mapped to Flex roles by `[sp.role_map]`.
//! Every Response is checked by python3-saml, node-saml and xmlsec1.

mod common;
use common::*;
use serde_json::json;

/// One Enhanced SP whose `[sp.attributes]` (and anything after) is `attributes`.
fn sp(attributes: &str) -> String {
    format!("[[sp]]\nname = \"flex\"\nflex_connection = \"{JQ}\"\n[sp.attributes]\n{attributes}")
}

// ------------------------------------------------------------------ signed userinfo

/// A user whose roles only userinfo carries (the ID token leaves `ui_roles` out), at an OP that
/// signs userinfo (`userinfo_signed_response_alg: RS256`).
fn signed_userinfo_env(tamper: bool) -> Env {
    let users = json!({"uiuser": {"email": "ui@example.com", "name": "Uma Info", "ui_roles": ["supervisor"]}});
    Env::start_with(
        &sp("email = \"email\"\nfull_name = \"name\"\nroles = \"ui_roles\"\n"),
        "",
        json!({
            "users": users,
            "client_extra": {"userinfo_signed_response_alg": "RS256"},
            "userinfo_only_claims": ["ui_roles"],
            "tamper_userinfo_signature": tamper,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_userinfo_is_verified_and_used() {
    let env = signed_userinfo_env(false);
    let (id, out) = enhanced_login(&env, "uiuser").await;
    assert_eq!(out.status, 200, "{}", out.body);
    let form = out.form.expect("a response");
    let (name_id, got) = validate_everywhere(&form, &enhanced_expect(&env, &id));
    assert_eq!(name_id, "ui@example.com");
    assert_eq!(
        got["roles"],
        vec!["supervisor".to_string()],
        "from userinfo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_userinfo_with_a_bad_signature_stops_the_login() {
    let env = signed_userinfo_env(true);
    let (_, out) = enhanced_login(&env, "uiuser").await;
    assert!(
        env.op
            .log_text()
            .contains("tampering with the signed userinfo"),
        "the OP misbehaved"
    );
    assert_eq!(out.status, 502, "{}", out.body);
    assert!(!out.body.contains("SAMLResponse"));
    let log = env.fg.wait_log("signed userinfo");
    assert!(
        log.contains("the signed userinfo answer (application/jwt) was refused: its signature does not verify"),
        "{log}"
    );
}

// ------------------------------------------------------------------ groups → Flex roles

/// Okta's shape: a `groups` claim of group names, no roles claim at all; `[sp.role_map]` gives
/// the roles.
fn okta_env() -> Env {
    let users = json!({
        "okta_sup": {"email": "sup@example.com", "name": "Sue Pervisor",
                     "groups": ["Everyone", "Flex Supervisors"]},
        "okta_none": {"email": "none@example.com", "name": "No Group",
                      "groups": ["Everyone", "<b>Sales & Co</b>"]},
    });
    Env::start_with(
        &sp("email = \"email\"\nfull_name = \"name\"\ngroups = \"groups\"\n[sp.role_map]\n\"Flex Agents\" = [\"agent\"]\n\"Flex Supervisors\" = [\"supervisor\", \"wfo.team_leader\"]\n"),
        "",
        json!({"users": users}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_groups_map_to_flex_roles() {
    let env = okta_env();
    let (id, out) = enhanced_login(&env, "okta_sup").await;
    assert_eq!(out.status, 200, "{}", out.body);
    let (name_id, got) =
        validate_everywhere(&out.form.expect("a response"), &enhanced_expect(&env, &id));
    assert_eq!(name_id, "sup@example.com");
    assert_eq!(
        got,
        attrs(&[
            ("email", &["sup@example.com"]),
            ("full_name", &["Sue Pervisor"]),
            ("roles", &["supervisor", "wfo.team_leader"]),
        ]),
        "roles only through the map; groups are not sent to Flex"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mapped_group_gets_the_no_role_page_naming_the_groups() {
    let env = okta_env();
    let (_, out) = enhanced_login(&env, "okta_none").await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert!(out.body.contains("no Flex role"), "{}", out.body);
    assert!(out.body.contains("none@example.com"), "{}", out.body);
    assert!(out.body.contains("Everyone"), "{}", out.body);
    assert!(
        out.body.contains("&lt;b&gt;Sales &amp; Co&lt;/b&gt;"),
        "escaped: {}",
        out.body
    );
    assert!(!out.body.contains("<b>Sales"));
    assert!(!out.body.contains("SAMLResponse"));
    let log = env.fg.wait_log("no_role");
    assert!(log.contains("none of its groups maps"), "{log}");
}
