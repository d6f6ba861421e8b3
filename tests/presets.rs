//! Upstream presets (`[upstream] provider`) against npm `oidc-provider` configured to send each
//! provider's documented claim shapes; every Response is checked by python3-saml, node-saml
//! and xmlsec1:
//! - Okta: `groups`;
//! - Keycloak: `realm_access.roles`, `resource_access.{client_id}.roles` and `groups`;
//! - Entra ID: app roles in `roles`, group object ids in `groups`;
//! - Google Workspace: `hd` must be `[upstream] hosted_domain`.
//!
//! The SPs here set no `[sp.attributes]`: the preset's default claims are what is tested.

mod common;
use common::*;
use serde_json::json;

/// One Enhanced SP with the preset's attributes and `rest` (a role map).
fn sp(rest: &str) -> String {
    format!("[[sp]]\nname = \"flex\"\nflex_connection = \"{JQ}\"\n{rest}")
}

/// Logs `user` in and returns the NameID and attributes all three validators agree on.
async fn login_ok(env: &Env, user: &str) -> (String, Attrs) {
    let (id, out) = enhanced_login(env, user).await;
    assert_eq!(out.status, 200, "{}", out.body);
    validate_everywhere(
        &out.form.expect("a SAML response"),
        &enhanced_expect(env, &id),
    )
}

// ------------------------------------------------------------------------------ Okta

/// Okta with its preset's defaults: groups in `groups` (the app's Groups claim), no roles claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_groups_claim_maps_with_the_presets_defaults() {
    let users = json!({
        "okta_agent": {"email": "ann@acme.example", "name": "Ann Agent", "picture": "https://img.example.com/a.png",
                       "groups": ["Everyone", "Flex Agents"]},
    });
    let env = Env::start_with(
        &sp("[sp.role_map]\n\"Flex Agents\" = [\"agent\"]\n"),
        "provider = \"okta\"",
        json!({"users": users}),
    );
    let (name_id, got) = login_ok(&env, "okta_agent").await;
    assert_eq!(name_id, "ann@acme.example");
    assert_eq!(
        got,
        attrs(&[
            ("email", &["ann@acme.example"]),
            ("full_name", &["Ann Agent"]),
            ("image_url", &["https://img.example.com/a.png"]),
            ("roles", &["agent"]),
        ])
    );
}

// ------------------------------------------------------------------------------ Keycloak

fn keycloak_env() -> Env {
    // The test OP's client is "flexgate": client roles sit under resource_access.flexgate.
    let users = json!({
        "kc_all": {"email": "kc@example.com", "name": "Kim Cloak", "picture": "https://img.example.com/k.png",
                   "realm_access": {"roles": ["offline_access", "flex-agent"]},
                   "resource_access": {"flexgate": {"roles": ["flex-supervisor"]}, "account": {"roles": ["manage-account"]}},
                   "groups": ["/Flex/Admins"]},
        "kc_realm": {"email": "realm@example.com", "name": "Rae Realm",
                     "realm_access": {"roles": ["flex-agent"]}},
        "kc_other_client": {"email": "other@example.com", "name": "Otto Other",
                            "resource_access": {"account": {"roles": ["flex-supervisor"]}}},
    });
    Env::start_with(
        &sp("[sp.role_map]\n\"flex-agent\" = [\"agent\"]\n\"flex-supervisor\" = [\"supervisor\"]\n\"/Flex/Admins\" = [\"admin\"]\n"),
        "provider = \"keycloak\"",
        json!({"users": users}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_realm_roles_client_roles_and_groups_all_map() {
    let env = keycloak_env();
    let (name_id, got) = login_ok(&env, "kc_all").await;
    assert_eq!(name_id, "kc@example.com");
    assert_eq!(
        got,
        attrs(&[
            ("email", &["kc@example.com"]),
            ("full_name", &["Kim Cloak"]),
            ("image_url", &["https://img.example.com/k.png"]),
            ("roles", &["agent", "supervisor", "admin"]),
        ])
    );
    let (_, got) = login_ok(&env, "kc_realm").await;
    assert_eq!(got["roles"], ["agent".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_roles_of_another_client_do_not_count() {
    let env = keycloak_env();
    let (_, out) = enhanced_login(&env, "kc_other_client").await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert!(out.body.contains("no Flex role"), "{}", out.body);
    assert!(!out.body.contains("SAMLResponse"));
}

// ------------------------------------------------------------------------------ Entra ID

/// Object ids as Entra ID sends them in `groups`.
const SUPERVISORS_OID: &str = "6c3e2a5b-1f4d-4f8e-9a57-0d2f7f3b9c11";
const SALES_OID: &str = "0f9a8b7c-6d5e-4f3a-8b2c-1d0e9f8a7b6c";

fn entra_env() -> Env {
    let users = json!({
        "entra_sup": {"email": "sup@contoso.example", "name": "Sue Pervisor",
                      "oid": "11111111-2222-3333-4444-555555555555", "tid": "9188040d-6c67-4c5b-b112-36a304b66dad",
                      "roles": ["Flex.Agent"], "groups": [SALES_OID, SUPERVISORS_OID]},
        "entra_sales": {"email": "sales@contoso.example", "name": "Sal Es",
                        "oid": "21111111-2222-3333-4444-555555555555", "groups": [SALES_OID]},
    });
    Env::start_with(
        &sp(&format!("[sp.role_map]\n\"Flex.Agent\" = [\"agent\"]\n\"{SUPERVISORS_OID}\" = [\"supervisor\", \"wfo.team_leader\"]\n")),
        // No overage here: Graph (nothing listens on port 9) is never called.
        "provider = \"entra\"\ngraph_url = \"http://127.0.0.1:9\"\ngraph_token_url = \"http://127.0.0.1:9/token\"",
        json!({"users": users}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_app_roles_and_group_object_ids_map() {
    let env = entra_env();
    let (name_id, got) = login_ok(&env, "entra_sup").await;
    assert_eq!(name_id, "sup@contoso.example");
    assert_eq!(
        got,
        attrs(&[
            ("email", &["sup@contoso.example"]),
            ("full_name", &["Sue Pervisor"]),
            ("roles", &["agent", "supervisor", "wfo.team_leader"]),
        ]),
        "Entra has no picture claim: no image_url"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_unmapped_groups_are_named_on_the_no_role_page() {
    let env = entra_env();
    let (_, out) = enhanced_login(&env, "entra_sales").await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert!(out.body.contains(SALES_OID), "{}", out.body);
    assert!(!out.body.contains("SAMLResponse"));
}

// ------------------------------------------------------------------------------ Google

fn google_env() -> Env {
    let users = json!({
        "g_staff": {"email": "staff@example.com", "email_verified": true, "name": "Stef Staff",
                    "picture": "https://lh3.googleusercontent.com/a/x", "hd": "example.com",
                    "app_metadata": {"flex": {"roles": ["agent"]}}},
        "g_personal": {"email": "someone@gmail.com", "email_verified": true, "name": "Per Sonal",
                       "app_metadata": {"flex": {"roles": ["agent"]}}},
        "g_other": {"email": "x@other.example", "name": "Oth Er", "hd": "other.example",
                    "app_metadata": {"flex": {"roles": ["agent"]}}},
    });
    // Roles from a claim here; groups through Cloud Identity are tested in google_e2e.
    Env::start_with(
        &sp("[sp.attributes]\nemail = \"email\"\nfull_name = \"name\"\nimage_url = \"picture\"\nroles = \"app_metadata.flex.roles\"\n"),
        "provider = \"google\"\nhosted_domain = \"example.com\"",
        json!({"users": users}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_admits_only_the_hosted_domain() {
    let env = google_env();
    let (name_id, got) = login_ok(&env, "g_staff").await;
    assert_eq!(name_id, "staff@example.com");
    assert_eq!(got["roles"], ["agent".to_string()]);
    for user in ["g_personal", "g_other"] {
        let (_, out) = enhanced_login(&env, user).await;
        assert_eq!(out.status, 403, "{user}: {}", out.body);
        assert!(
            out.body.contains("Use your work account"),
            "{user}: {}",
            out.body
        );
        assert!(!out.body.contains("SAMLResponse"), "{user}");
    }
    // Both refusals are logged with the hd found (the second line may still be on its way).
    let log = env.fg.wait_log("hd claim is Some(\"other.example\")");
    assert!(
        log.contains("hd claim is Some(\"other.example\")") && log.contains("hd claim is None"),
        "{log}"
    );
}

/// Auth0's `connection` hint means nothing to Keycloak: its preset never sends it upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_hint_is_not_sent_to_a_provider_without_connections() {
    let env = keycloak_env();
    let sso = format!(
        "{}?connection=Username-Password-Authentication",
        env.fg.sso_url()
    );
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &sso);
    let b = Browser::new();
    let first = b
        .client
        .post(&sso)
        .form(&[("SAMLRequest", b64(&xml))])
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 302);
    let loc = first.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with(&env.op.issuer), "{loc}");
    assert!(!loc.contains("connection="), "{loc}");
    let out = b.login(b.client.get(&loc), "kc_realm").await;
    assert_eq!(out.status, 200, "{}", out.body);
}
