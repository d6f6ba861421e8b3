//! Groups from a directory, end to end: oidc-provider sends Entra ID's *groups overage* (or a
//! Google Workspace ID token), flexgate reads the person's groups from the Microsoft Graph or
//! Google Cloud Identity stand-in (written from their documented shapes), maps them with
//! `[sp.role_map]`, and the Response is checked by python3-saml, node-saml and xmlsec1. A
//! directory that refuses ends the login on a page, with no Response.

mod common;
use common::google::{service_account_key, GoogleCi, CLIENT_EMAIL};
use common::graph::GraphPeer;
use common::*;
use serde_json::json;

const SECRET: &str = "test-secret-5f1d2c"; // Env's client secret: Graph is called with the same client
const OID: &str = "11111111-2222-3333-4444-555555555555";
const OID_NAMES: &str = "21111111-2222-3333-4444-555555555555";
const SUPERVISORS: &str = "6c3e2a5b-1f4d-4f8e-9a57-0d2f7f3b9c11";
const AGENTS: &str = "7d4f3b6c-2a5e-4f9a-8b68-1e3a8a4cad22";

// ----------------------------------------------------------------------- Entra ID overage

fn graph_peer(extra: serde_json::Value) -> GraphPeer {
    let mut cfg = json!({
        "tenant": "contoso",
        "client_id": "flexgate",
        "client_secret": SECRET,
        "page_size": 2,
        "users": {
            OID: {"groups": [
                {"id": "00000000-0000-0000-0000-00000000000a", "displayName": "All staff"},
                {"id": "00000000-0000-0000-0000-00000000000b", "displayName": "Building 7"},
                {"id": SUPERVISORS, "displayName": "Flex Supervisors"},
                {"id": "00000000-0000-0000-0000-00000000000c", "displayName": "Parking"},
            ]},
            OID_NAMES: {"groups": [{"id": AGENTS, "displayName": "Flex Agents"}]},
        },
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    GraphPeer::start(cfg)
}

fn entra_env(graph: &GraphPeer) -> Env {
    // Entra's two overage shapes: `hasgroups` (implicit flow) and `_claim_names` (code flow).
    let users = json!({
        "many": {"email": "many@contoso.example", "name": "Manny Groups", "oid": OID,
                 "tid": "9188040d-6c67-4c5b-b112-36a304b66dad", "roles": [], "hasgroups": true},
        "names": {"email": "names@contoso.example", "name": "Clay Names", "oid": OID_NAMES,
                  "_claim_names": {"groups": "src1"},
                  "_claim_sources": {"src1": {"endpoint": format!("https://graph.windows.net/contoso/users/{OID_NAMES}/getMemberObjects")}}},
        "listed": {"email": "listed@contoso.example", "name": "Lis Ted", "oid": "31111111-2222-3333-4444-555555555555",
                   "groups": [SUPERVISORS]},
    });
    Env::start_with(
        &format!("[[sp]]\nname = \"flex\"\nflex_connection = \"{JQ}\"\n[sp.role_map]\n\"{SUPERVISORS}\" = [\"supervisor\"]\n\"{AGENTS}\" = [\"agent\"]\n"),
        &format!(
            "provider = \"entra\"\ngraph_url = \"{}\"\ngraph_token_url = \"{}\"",
            graph.url, graph.token_url
        ),
        json!({"users": users}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_groups_overage_reads_graph_and_maps_the_groups() {
    let graph = graph_peer(json!({}));
    let env = entra_env(&graph);
    let (id, out) = enhanced_login(&env, "many").await;
    assert_eq!(out.status, 200, "{}", out.body);
    let (name_id, got) =
        validate_everywhere(&out.form.expect("a response"), &enhanced_expect(&env, &id));
    assert_eq!(name_id, "many@contoso.example");
    assert_eq!(got["roles"], ["supervisor".to_string()], "{got:?}");
    let stats = graph.stats().await;
    assert_eq!(stats["graph_requests"], 2, "two pages of two: {stats}");
    assert_eq!(stats["token_requests"], 1, "{stats}");

    // `_claim_names` is the same overage; the token is reused.
    let (id, out) = enhanced_login(&env, "names").await;
    assert_eq!(out.status, 200, "{}", out.body);
    let (_, got) = validate_everywhere(&out.form.expect("a response"), &enhanced_expect(&env, &id));
    assert_eq!(got["roles"], ["agent".to_string()]);
    let stats = graph.stats().await;
    assert_eq!(stats["graph_requests"], 3, "{stats}");
    assert_eq!(
        stats["token_requests"], 1,
        "one client-credentials token for both: {stats}"
    );

    // A person whose groups fit in the ID token costs no Graph call.
    let (_, out) = enhanced_login(&env, "listed").await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(graph.stats().await["graph_requests"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_that_refuses_ends_the_login_on_a_page_naming_nothing_secret() {
    let graph = graph_peer(json!({"forbidden": true}));
    let env = entra_env(&graph);
    let (_, out) = enhanced_login(&env, "many").await;
    assert_eq!(out.status, 502, "{}", out.body);
    assert!(
        out.body.contains("Your Flex roles could not be read"),
        "{}",
        out.body
    );
    assert!(!out.body.contains("SAMLResponse"));
    assert!(!out.body.contains(SECRET));
    let log = env.fg.wait_log("directory_error");
    assert!(
        log.contains("GroupMember.Read.All"),
        "the fix is named: {log}"
    );
    assert!(!log.contains(SECRET), "{log}");
}

// ----------------------------------------------------------------------- Google Workspace

fn google_env(dir: &std::path::Path, mode: Option<&str>) -> (GoogleCi, Env) {
    // The key's token_uri is unknown until the stand-in runs: google_token_url overrides it.
    let key = service_account_key(
        dir,
        "sa.json",
        CLIENT_EMAIL,
        "https://oauth2.googleapis.com/token",
    );
    let ci = GoogleCi::start(json!({
        "client_email": CLIENT_EMAIL,
        "public_key": key.public_pem,
        "page_size": 1,
        "mode": mode,
        "memberships": {
            "staff@example.com": [
                {"id": "everyone@example.com", "name": "Everyone"},
                {"id": "flex-agents@example.com", "name": "Flex agents"},
            ],
            "nobody@example.com": [{"id": "everyone@example.com", "name": "Everyone"}],
        },
    }));
    let users = json!({
        "g_staff": {"email": "staff@example.com", "email_verified": true, "name": "Stef Staff", "hd": "example.com"},
        "g_nobody": {"email": "nobody@example.com", "email_verified": true, "name": "No Body", "hd": "example.com"},
    });
    let env = Env::start_with(
        &format!("[[sp]]\nname = \"flex\"\nflex_connection = \"{JQ}\"\n[sp.role_map]\n\"flex-agents@example.com\" = [\"agent\"]\n"),
        &format!(
            "provider = \"google\"\nhosted_domain = \"example.com\"\ngoogle_service_account_key = \"{}\"\ngoogle_token_url = \"{}/token\"\ncloud_identity_url = \"{}\"",
            key.path.display(),
            ci.url,
            ci.url
        ),
        json!({"users": users}),
    );
    (ci, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_groups_from_cloud_identity_map_to_flex_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (ci, env) = google_env(dir.path(), None);
    let (id, out) = enhanced_login(&env, "g_staff").await;
    assert_eq!(out.status, 200, "{}", out.body);
    let (name_id, got) =
        validate_everywhere(&out.form.expect("a response"), &enhanced_expect(&env, &id));
    assert_eq!(name_id, "staff@example.com");
    assert_eq!(got["roles"], ["agent".to_string()]);
    let stats = ci.stats().await;
    assert_eq!(stats["search_requests"], 2, "two pages of one: {stats}");
    // None of the person's groups maps: the no-role page names them.
    let (_, out) = enhanced_login(&env, "g_nobody").await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert!(out.body.contains("everyone@example.com"), "{}", out.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_identity_that_refuses_ends_the_login_on_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let (_ci, env) = google_env(dir.path(), Some("forbidden"));
    let (_, out) = enhanced_login(&env, "g_staff").await;
    assert_eq!(out.status, 502, "{}", out.body);
    assert!(
        out.body.contains("Your Flex roles could not be read"),
        "{}",
        out.body
    );
    assert!(!out.body.contains("SAMLResponse"));
    let log = env.fg.wait_log("directory_error");
    assert!(log.contains("Groups Reader"), "the fix is named: {log}");
}
