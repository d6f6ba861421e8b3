//! Microsoft Graph groups lookup (Entra ID's groups overage) against the Graph / Microsoft identity
//! platform stand-in `tests/peers/graph.mjs`.

mod common;

use common::graph::GraphPeer;
use flexgate::directory::graph::{Graph, GraphConfig, GraphError, Group, MAX_GROUPS, MAX_PAGES};
use flexgate::secret::Secret;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

const OID: &str = "6b1a5c3e-0d4f-4a3b-9c2d-1e0f2a3b4c5d";
const SECRET: &str = "s3cr3t-Value~of.the_app";

fn peer(extra: Value) -> GraphPeer {
    let mut cfg = json!({"tenant": "contoso", "client_id": "app-1", "client_secret": SECRET});
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    GraphPeer::start(cfg)
}

fn client_with(p: &GraphPeer, secret: &str) -> Graph {
    Graph::new(GraphConfig {
        graph_url: p.url.clone(),
        token_url: p.token_url.clone(),
        client_id: "app-1".into(),
        client_secret: Secret::new(secret),
        timeout: Duration::from_secs(10),
    })
    .expect("graph client")
}

fn client(p: &GraphPeer) -> Graph {
    client_with(p, SECRET)
}

fn soon(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

fn groups(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("9a0c2b1e-0000-4000-8000-{i:012x}"), "displayName": format!("Team {i}")}))
        .collect()
}

fn as_groups(v: &[Value]) -> Vec<Group> {
    v.iter()
        .map(|g| Group {
            id: g["id"].as_str().unwrap_or_default().to_string(),
            name: g["displayName"].as_str().map(str::to_string),
        })
        .collect()
}

#[tokio::test]
async fn all_pages_are_collected_in_order() {
    let gs = groups(7);
    let p = peer(json!({"users": {OID: {"groups": gs, "page_size": 3}}}));
    let got = client(&p)
        .transitive_groups(OID, soon(20))
        .await
        .expect("groups");
    assert_eq!(got, as_groups(&gs));
    let s = p.stats().await;
    assert_eq!(s["graph_requests"], 3, "three pages of 3, 3, 1: {s}");
    assert_eq!(s["last_top"], 999, "{s}");
    assert_eq!(s["last_select"], "id,displayName", "{s}");
    assert_eq!(
        s["unsupported_query"], 0,
        "ConsistencyLevel/$count missing: {s}"
    );
}

#[tokio::test]
async fn a_deadline_already_past_sends_nothing() {
    let p = peer(json!({"users": {OID: {"generate": 1}}}));
    let err = client(&p)
        .transitive_groups(OID, Instant::now())
        .await
        .expect_err("timeout");
    assert!(err.is_timeout(), "{err:?}");
    let s = p.stats().await;
    assert_eq!(
        (s["token_requests"].as_u64(), s["graph_requests"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn a_group_without_a_name_keeps_its_id() {
    let p = peer(
        json!({"users": {OID: {"groups": [{"id": "g-1"}, {"id": "g-2", "displayName": "Agents"}]}}}),
    );
    let got = client(&p)
        .transitive_groups(OID, soon(20))
        .await
        .expect("groups");
    assert_eq!(
        got,
        vec![
            Group {
                id: "g-1".into(),
                name: None
            },
            Group {
                id: "g-2".into(),
                name: Some("Agents".into())
            }
        ]
    );
}

#[tokio::test]
async fn the_token_is_fetched_once_and_reused() {
    let p = peer(json!({"users": {OID: {"generate": 2}}}));
    let g = client(&p);
    for _ in 0..3 {
        assert_eq!(
            g.transitive_groups(OID, soon(20))
                .await
                .expect("groups")
                .len(),
            2
        );
    }
    let s = p.stats().await;
    assert_eq!(s["token_requests"], 1, "{s}");
    assert_eq!(s["graph_requests"], 3, "{s}");
}

#[tokio::test]
async fn a_token_with_expires_in_zero_or_less_is_not_cached() {
    let p = peer(json!({"users": {OID: {"generate": 1}}, "token_expires_in": -5}));
    let g = client(&p);
    for _ in 0..2 {
        assert_eq!(
            g.transitive_groups(OID, soon(20))
                .await
                .expect("groups")
                .len(),
            1
        );
    }
    assert_eq!(p.stats().await["token_requests"], 2);
}

#[tokio::test]
async fn a_huge_or_unreadable_expires_in_neither_panics_nor_refetches() {
    for expires_in in [json!(1e300), json!(u64::MAX), json!("soon"), json!(null)] {
        let p = peer(json!({"users": {OID: {"generate": 1}}, "token_expires_in": expires_in}));
        let g = client(&p);
        for _ in 0..2 {
            assert_eq!(
                g.transitive_groups(OID, soon(20))
                    .await
                    .expect("groups")
                    .len(),
                1
            );
        }
        assert_eq!(
            p.stats().await["token_requests"],
            1,
            "expires_in {expires_in}"
        );
    }
}

#[tokio::test]
async fn a_token_graph_no_longer_accepts_is_replaced_once() {
    // The stand-in accepts tokens for 1 s but says they live an hour (a revoked or rotated token).
    let p =
        peer(json!({"users": {OID: {"generate": 1}}, "token_ttl": 1, "token_expires_in": 3600}));
    let g = client(&p);
    g.transitive_groups(OID, soon(20)).await.expect("first");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    g.transitive_groups(OID, soon(20))
        .await
        .expect("second, with a new token");
    let s = p.stats().await;
    assert_eq!(s["token_requests"], 2, "{s}");
    assert_eq!(s["graph_requests"], 3, "one 401 and its retry: {s}");
}

#[tokio::test]
async fn forbidden_names_the_missing_application_permission() {
    let p = peer(json!({"users": {OID: {"generate": 1}}, "forbidden": true}));
    let err = client(&p)
        .transitive_groups(OID, soon(20))
        .await
        .expect_err("403");
    assert!(
        matches!(&err, GraphError::Forbidden { code, .. } if code == "Authorization_RequestDenied"),
        "{err:?}"
    );
    let text = err.to_string();
    for want in [
        "GroupMember.Read.All",
        "admin consent",
        "application permission",
        OID,
    ] {
        assert!(text.contains(want), "{want:?} missing from: {text}");
    }
}

#[tokio::test]
async fn an_unknown_user_is_not_found() {
    let p = peer(json!({"users": {}}));
    let err = client(&p)
        .transitive_groups(OID, soon(20))
        .await
        .expect_err("404");
    assert!(
        matches!(&err, GraphError::UserNotFound { oid, code } if oid == OID && code == "Request_ResourceNotFound"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_object_id_that_is_not_a_guid_is_refused_before_any_request() {
    let p = peer(json!({"users": {}}));
    let err = client(&p)
        .transitive_groups("../../groups?$top=1", soon(20))
        .await
        .expect_err("bad oid");
    assert!(matches!(err, GraphError::BadUserId(_)), "{err:?}");
    let s = p.stats().await;
    assert_eq!(
        (s["token_requests"].as_u64(), s["graph_requests"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn the_deadline_cuts_a_slow_graph_short() {
    let p = peer(json!({"users": {OID: {"generate": 1}}, "graph_delay_ms": 8000}));
    let t0 = std::time::Instant::now();
    let err = client(&p)
        .transitive_groups(OID, Instant::now() + Duration::from_millis(700))
        .await
        .expect_err("timeout");
    let took = t0.elapsed();
    assert!(
        matches!(err, GraphError::Timeout { stage } if stage == "Microsoft Graph"),
        "{err:?}"
    );
    assert!(err.is_timeout());
    assert!(
        took >= Duration::from_millis(600),
        "gave up early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "waited for the stand-in: {took:?}"
    );
}

#[tokio::test]
async fn the_deadline_cuts_a_slow_token_endpoint_short() {
    let p = peer(json!({"users": {OID: {"generate": 1}}, "token_delay_ms": 8000}));
    let t0 = std::time::Instant::now();
    let err = client(&p)
        .transitive_groups(OID, Instant::now() + Duration::from_millis(700))
        .await
        .expect_err("timeout");
    assert!(
        matches!(err, GraphError::Timeout { stage } if stage.contains("token endpoint")),
        "{err:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(p.stats().await["graph_requests"], 0);
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_deadline() {
    for status in [429, 503] {
        let p = peer(json!({"users": {OID: {"generate": 2}}, "throttle_first": 1,
                            "throttle_status": status, "retry_after": 1}));
        let t0 = std::time::Instant::now();
        let got = client(&p)
            .transitive_groups(OID, soon(10))
            .await
            .expect("groups after the retry");
        assert_eq!(got.len(), 2);
        assert!(
            t0.elapsed() >= Duration::from_millis(950),
            "did not wait: {:?}",
            t0.elapsed()
        );
        let s = p.stats().await;
        assert_eq!(s["throttled"], 1, "{s}");
        assert_eq!(s["graph_requests"], 2, "{s}");
    }
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_fails_at_once() {
    let p = peer(json!({"users": {OID: {"generate": 1}}, "throttle_first": 5, "retry_after": 30}));
    let t0 = std::time::Instant::now();
    let err = client(&p)
        .transitive_groups(OID, soon(5))
        .await
        .expect_err("throttled");
    assert!(
        matches!(err, GraphError::Throttled { status: 429, retry_after } if retry_after == Duration::from_secs(30)),
        "{err:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(p.stats().await["graph_requests"], 1);
}

#[tokio::test]
async fn pages_beyond_the_cap_are_an_error() {
    // Exactly MAX_PAGES pages are read…
    let p = peer(json!({"users": {OID: {"generate": MAX_PAGES, "page_size": 1}}}));
    let got = client(&p)
        .transitive_groups(OID, soon(30))
        .await
        .expect("at the cap");
    assert_eq!(got.len(), MAX_PAGES);
    // …one more is refused, without fetching it.
    let p = peer(json!({"users": {OID: {"generate": MAX_PAGES + 1, "page_size": 1}}}));
    let err = client(&p)
        .transitive_groups(OID, soon(30))
        .await
        .expect_err("over the cap");
    assert!(
        matches!(&err, GraphError::TooManyGroups { limit, .. } if limit.contains("pages")),
        "{err:?}"
    );
    assert_eq!(p.stats().await["graph_requests"], MAX_PAGES as u64);
}

#[tokio::test]
async fn groups_beyond_the_cap_are_an_error() {
    let p = peer(json!({"users": {OID: {"generate": MAX_GROUPS}}}));
    let got = client(&p)
        .transitive_groups(OID, soon(30))
        .await
        .expect("at the cap");
    assert_eq!(got.len(), MAX_GROUPS);
    let p = peer(json!({"users": {OID: {"generate": MAX_GROUPS + 1}}}));
    let err = client(&p)
        .transitive_groups(OID, soon(30))
        .await
        .expect_err("over the cap");
    assert!(
        matches!(&err, GraphError::TooManyGroups { limit, .. } if limit.contains("groups")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_not_followed() {
    // Same host, another port: another origin. A listener there counts what it receives.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("trap");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_url = format!(
        "http://127.0.0.1:{}",
        trap.local_addr().expect("addr").port()
    );
    let p =
        peer(json!({"users": {OID: {"generate": 4, "page_size": 2}}, "next_link_base": trap_url}));
    let err = client(&p)
        .transitive_groups(OID, soon(10))
        .await
        .expect_err("foreign nextLink");
    assert!(
        matches!(&err, GraphError::ForeignNextLink { link_origin, .. } if *link_origin == trap_url),
        "{err:?}"
    );
    assert!(
        trap.accept().is_err(),
        "flexgate connected to the foreign origin"
    );
    assert_eq!(p.stats().await["graph_requests"], 1);
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_malformed() {
    let p = peer(json!({"users": {OID: {"generate": 1}}, "garbage": true}));
    let err = client(&p)
        .transitive_groups(OID, soon(10))
        .await
        .expect_err("garbage");
    assert!(matches!(err, GraphError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_token_error_that_never_shows_a_secret() {
    let p = peer(json!({"users": {OID: {"generate": 1}}}));
    let wrong = "Wr0ng~secret.value_123";
    let err = client_with(&p, wrong)
        .transitive_groups(OID, soon(10))
        .await
        .expect_err("token refused");
    assert!(
        matches!(&err, GraphError::TokenRefused { status: 401, error, description, .. }
            if error == "invalid_client" && description.starts_with("AADSTS7000215")),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(text.contains("client secret"), "{text}");
    assert!(
        !text.contains("Trace ID"),
        "Entra's trace lines are cut: {text}"
    );
    for secret in [wrong, SECRET] {
        assert!(!text.contains(secret), "the secret leaked: {text}");
    }
    assert_eq!(p.stats().await["graph_requests"], 0);
}

#[tokio::test]
async fn an_unknown_application_is_a_token_error() {
    let p = peer(json!({"users": {OID: {"generate": 1}}, "client_id": "another-app"}));
    let err = client(&p)
        .transitive_groups(OID, soon(10))
        .await
        .expect_err("token refused");
    assert!(
        matches!(&err, GraphError::TokenRefused { status: 400, error, .. } if error == "unauthorized_client"),
        "{err:?}"
    );
}

#[test]
fn unusable_urls_are_refused_up_front() {
    for (graph_url, token_url) in [
        (
            "graph.microsoft.com",
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        ),
        ("https://graph.microsoft.com", "ftp://login.example/t"),
    ] {
        let err = Graph::new(GraphConfig {
            graph_url: graph_url.into(),
            token_url: token_url.into(),
            client_id: "a".into(),
            client_secret: Secret::new("s"),
            timeout: Duration::from_secs(1),
        })
        .expect_err("bad url");
        assert!(matches!(err, GraphError::BadUrl { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn a_token_graph_never_accepts_is_an_error_after_one_new_token() {
    let p = peer(json!({"users": {OID: {"generate": 1}}, "reject_tokens": true}));
    let err = client(&p)
        .transitive_groups(OID, soon(10))
        .await
        .expect_err("401");
    assert!(
        matches!(&err, GraphError::Unauthorized { code, .. } if code == "InvalidAuthenticationToken"),
        "{err:?}"
    );
    let s = p.stats().await;
    assert_eq!(s["token_requests"], 2, "{s}");
    assert_eq!(s["graph_requests"], 2, "{s}");
}

#[tokio::test]
async fn a_graph_that_stays_busy_is_given_up_after_a_few_retries() {
    let p = peer(
        json!({"users": {OID: {"generate": 1}}, "throttle_first": 100, "retry_after": 0,
                        "throttle_status": 503}),
    );
    let err = client(&p)
        .transitive_groups(OID, soon(10))
        .await
        .expect_err("still busy");
    assert!(
        matches!(err, GraphError::StillThrottled { status: 503 }),
        "{err:?}"
    );
    assert_eq!(
        p.stats().await["graph_requests"],
        4,
        "one try and three retries"
    );
}
