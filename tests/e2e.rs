//! End-to-end logins: npm `oidc-provider` upstream, `flexgate serve`, a browser-like client, and
//! every Response checked by python3-saml (strict), node-saml and xmlsec1.

mod common;
use common::*;

fn enhanced_expect(env: &Env, jq: &str, region: &str, request_id: Option<&str>) -> SpExpect {
    SpExpect {
        cert_pem: env.fg.cert_pem.clone(),
        idp_entity_id: env.fg.entity_id.clone(),
        sp_entity_id: format!("urn:flex:{jq}"),
        acs_url: format!("https://login.flex.{region}.twilio.com/login/callback?connection={jq}"),
        request_id: request_id.map(str::to_string),
        response_signed: true,
        assertion_signed: false,
    }
}

fn agent_attrs() -> Attrs {
    attrs(&[
        ("email", &["agent1@example.com"]),
        ("full_name", &["Ada Agent"]),
        ("image_url", &["https://img.example.com/a.png"]),
        ("roles", &["agent"]),
    ])
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn redirect_url(env: &Env, xml: &str, extra: &str) -> String {
    format!(
        "{}?SAMLRequest={}{extra}",
        env.fg.sso_url(),
        urlencode(&deflate_b64(xml))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_redirect_binding_agent() {
    let env = Env::start();
    let id = unique_id("_");
    let xml = enhanced_request(&id, JQ, "us1", &env.fg.sso_url());
    // Flex adds parameters of its own (atobState); they are ignored.
    let url = redirect_url(&env, &xml, "&RelayState=flex-relay&atobState=xyz");
    let b = Browser::new();
    let first = b.client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 302);
    let loc = first.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&format!("{}/auth?", env.op.issuer)),
        "{loc}"
    );
    for p in [
        "code_challenge_method=S256",
        "code_challenge=",
        "nonce=",
        "state=",
        "response_type=code",
    ] {
        assert!(loc.contains(p), "{p} missing in {loc}");
    }
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && !cookie.contains("Secure"),
        "{cookie}"
    );

    let out = b.login(b.client.get(&loc), "agent1").await;
    assert_eq!(out.status, 200, "{}", out.body);
    let form = out.form.clone().expect("a POST form");
    assert_eq!(form.relay_state.as_deref(), Some("flex-relay"));
    let (name_id, got) = validate_everywhere(&form, &enhanced_expect(&env, JQ, "us1", Some(&id)));
    assert_eq!(name_id, "agent1@example.com");
    assert_eq!(got, agent_attrs());
    assert_eq!(out.headers["cache-control"], "no-store");
    assert_eq!(out.headers["x-content-type-options"], "nosniff");
    let csp = out.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("form-action https://login.flex.us1.twilio.com"),
        "{csp}"
    );
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    let xml = form.xml();
    assert!(!xml.contains("SessionNotOnOrAfter"));
    assert!(xml.contains("Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_single_use() {
    let env = Env::start();
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &env.fg.sso_url());
    let url = redirect_url(&env, &xml, "");
    let first = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(first.get(&url).send().await.unwrap().status(), 302);
    let again = first.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 400);
    assert!(again.headers().get("location").is_none());
    assert!(again.text().await.unwrap().contains("already used"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_post_binding_supervisor_with_connection_hint() {
    let env = Env::start();
    let id = unique_id("_");
    let xml = enhanced_request(
        &id,
        JQ,
        "us1",
        &format!(
            "{}?connection=Username-Password-Authentication",
            env.fg.sso_url()
        ),
    );
    let b = Browser::new();
    let post = b
        .client
        .post(format!(
            "{}?connection=Username-Password-Authentication",
            env.fg.sso_url()
        ))
        .form(&[("SAMLRequest", b64(&xml)), ("RelayState", "r".into())]);
    let first = post.try_clone().unwrap().send().await.unwrap();
    assert_eq!(first.status(), 302);
    let loc = first.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.contains("connection=Username-Password-Authentication"),
        "{loc}"
    );
    let out = b.login(b.client.get(&loc), "sup1").await;
    assert_eq!(out.status, 200, "{}", out.body);
    let (_, got) = validate_everywhere(
        &out.form.unwrap(),
        &enhanced_expect(&env, JQ, "us1", Some(&id)),
    );
    // A comma-separated claim, with a value Flex does not know ("owner") dropped.
    assert_eq!(
        got["roles"],
        vec!["supervisor".to_string(), "wfo.team_leader".to_string()]
    );
    assert!(
        env.fg.wait_log("owner").contains("owner"),
        "the dropped role is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_onelogin_request_with_app_metadata_roles() {
    let env = Env::start();
    let id = unique_id("ONELOGIN_");
    let xml = legacy_request(&id, &env.fg.sso_url());
    let b = Browser::new();
    let out = b
        .login(
            b.client
                .get(redirect_url(&env, &xml, "&RelayState=legacy&atobState=abc")),
            "agent1",
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let e = SpExpect {
        cert_pem: env.fg.cert_pem.clone(),
        idp_entity_id: env.fg.entity_id.clone(),
        sp_entity_id: format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2/metadata"),
        acs_url: format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2"),
        request_id: Some(id),
        response_signed: true,
        assertion_signed: false,
    };
    let (name_id, got) = validate_everywhere(&out.form.unwrap(), &e);
    assert_eq!(name_id, "agent1@example.com");
    assert_eq!(got, agent_attrs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_assertion_and_sign_both() {
    let env = Env::start();
    for (jq, region, response, assertion) in [
        ("JQ11111111111111111111111111111111", "ie1", false, true),
        ("JQ22222222222222222222222222222222", "us1", true, true),
    ] {
        let id = unique_id("_");
        let xml = enhanced_request(&id, jq, region, &env.fg.sso_url());
        let b = Browser::new();
        let out = b
            .login(b.client.get(redirect_url(&env, &xml, "")), "agent1")
            .await;
        assert_eq!(out.status, 200, "{}", out.body);
        let mut e = enhanced_expect(&env, jq, region, Some(&id));
        e.response_signed = response;
        e.assertion_signed = assertion;
        let form = out.form.unwrap();
        let (_, got) = validate_everywhere(&form, &e);
        assert_eq!(got, agent_attrs());
        if !response {
            assert!(
                xmlsec1_verify(&form.xml(), &env.fg.cert_pem, "Response").is_err(),
                "no Response signature expected"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_initiated_with_markup_relay_state() {
    let env = Env::start();
    let relay = "<script>alert(\"x\")</script>&amp;'é";
    let b = Browser::new();
    let out = b
        .login(
            b.client.get(format!(
                "{}/saml/init/flex?RelayState={}",
                env.fg.base,
                urlencode(relay)
            )),
            "agent1",
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(
        !out.body.contains("<script>alert"),
        "RelayState must be escaped"
    );
    let form = out.form.unwrap();
    assert_eq!(
        form.relay_state.as_deref(),
        Some(relay),
        "RelayState comes back byte for byte"
    );
    let (_, got) = validate_everywhere(&form, &enhanced_expect(&env, JQ, "us1", None));
    assert_eq!(got, agent_attrs());
    assert!(!form.xml().contains("InResponseTo"));

    // Without RelayState the SP's default_relay_state is used.
    let b = Browser::new();
    let out = b
        .login(
            b.client.get(format!("{}/saml/init/flex", env.fg.base)),
            "agent1",
        )
        .await;
    assert_eq!(
        out.form.unwrap().relay_state.as_deref(),
        Some("https://flex.twilio.com/default")
    );

    let r = reqwest::get(format!("{}/saml/init/nope", env.fg.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_without_roles_gets_an_explanation_and_no_assertion() {
    let env = Env::start();
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &env.fg.sso_url());
    let b = Browser::new();
    let out = b
        .login(b.client.get(redirect_url(&env, &xml, "")), "norole")
        .await;
    assert_eq!(out.status, 403);
    assert!(out.body.contains("no Flex role"), "{}", out.body);
    assert!(out.body.contains("norole@example.com"));
    assert!(
        out.body.contains(ROLES_CLAIM),
        "the page names the claim to set"
    );
    assert!(!out.body.contains("SAMLResponse"));
    let log = env.fg.wait_log("no_role");
    assert!(
        log.contains("reason=\"no_role\"") || log.contains("reason=no_role"),
        "{log}"
    );
    assert!(log.contains("norole"), "the log says which user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_claims_round_trips_exactly() {
    let env = Env::start();
    let id = unique_id("_");
    let xml = enhanced_request(&id, JQ, "us1", &env.fg.sso_url());
    let b = Browser::new();
    let out = b
        .login(b.client.get(redirect_url(&env, &xml, "")), "markup")
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let (_, got) = validate_everywhere(
        &out.form.unwrap(),
        &enhanced_expect(&env, JQ, "us1", Some(&id)),
    );
    assert_eq!(
        got["full_name"],
        vec!["Zoë \"Zed\" <O'Brien> & Co -->".to_string()]
    );
    assert_eq!(
        got["image_url"],
        vec!["https://img.example.com/z.png?a=1&b=<2>".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_state_is_single_use_and_bound_to_the_browser() {
    let env = Env::start();
    let cb_prefix = format!("{}/oidc/callback", env.fg.base);

    // Finished in another browser: refused (login CSRF).
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &env.fg.sso_url());
    let a = Browser::new();
    let cb = a
        .login_until(
            a.client.get(redirect_url(&env, &xml, "")),
            "agent1",
            &cb_prefix,
        )
        .await;
    let other = Browser::new();
    let r = other.client.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("another browser"));
    // ... and the state is spent: the right browser cannot use it afterwards either.
    let r = a.client.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Replayed callback in the same browser: refused the second time.
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &env.fg.sso_url());
    let cb = a
        .login_until(
            a.client.get(redirect_url(&env, &xml, "")),
            "agent1",
            &cb_prefix,
        )
        .await;
    let r = a.client.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = a.client.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("expired or was already completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_never_reach_the_upstream() {
    let env = Env::start();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sso = env.fg.sso_url();
    let cases: Vec<(&str, String)> = vec![
        (
            "unknown issuer",
            enhanced_request(
                &unique_id("_"),
                "JQ99999999999999999999999999999999",
                "us1",
                &sso,
            ),
        ),
        (
            "other ACS",
            enhanced_request(&unique_id("_"), JQ, "ie1", &sso),
        ),
        (
            "wrong destination",
            enhanced_request(
                &unique_id("_"),
                JQ,
                "us1",
                "https://evil.example.com/saml/sso",
            ),
        ),
        (
            "doctype",
            format!(
                "<!DOCTYPE x [<!ENTITY a \"b\">]>{}",
                enhanced_request(&unique_id("_"), JQ, "us1", &sso)
            ),
        ),
    ];
    for (what, xml) in cases {
        let r = c.get(redirect_url(&env, &xml, "")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{what}");
        assert!(
            r.headers().get("location").is_none(),
            "{what}: no redirect to the upstream"
        );
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{what}"
        );
    }
    let r = c
        .get(format!("{sso}?SAMLRequest=%%%not-base64"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(&sso).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_cert_and_health() {
    let env = Env::start();
    let md = reqwest::get(format!("{}/saml/metadata", env.fg.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(md.contains(&format!("entityID=\"{}\"", env.fg.entity_id)));
    assert!(md.contains(&format!("Location=\"{}\"", env.fg.sso_url())));
    let der_b64: String = env
        .fg
        .cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        md.contains(&der_b64),
        "metadata carries the signing certificate"
    );
    let pem = reqwest::get(format!("{}/saml/cert.pem", env.fg.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, env.fg.cert_pem);
    let r = reqwest::get(format!("{}/readyz", env.fg.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["ready"], true);
    let r = reqwest::get(format!("{}/healthz", env.fg.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_post_at_the_token_endpoint() {
    let port = free_port();
    let secret = "post-secret";
    let op = Op::start(
        &format!("http://127.0.0.1:{port}/oidc/callback"),
        "flexgate",
        secret,
        serde_json::json!({"clients": [{"client_id": "flexgate", "client_secret": secret,
            "redirect_uris": [format!("http://127.0.0.1:{port}/oidc/callback")],
            "token_endpoint_auth_method": "client_secret_post"}]}),
    );
    let fg = Flexgate::start(
        port,
        &op.issuer,
        secret,
        &default_sps(),
        "token_auth_method = \"client_secret_post\"",
    );
    let env = Env { op, fg };
    let id = unique_id("_");
    let xml = enhanced_request(&id, JQ, "us1", &env.fg.sso_url());
    let b = Browser::new();
    let out = b
        .login(b.client.get(redirect_url(&env, &xml, "")), "agent1")
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let (_, got) = validate_everywhere(
        &out.form.unwrap(),
        &enhanced_expect(&env, JQ, "us1", Some(&id)),
    );
    assert_eq!(got, agent_attrs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_ends_on_a_504_page_not_a_hung_request() {
    let env = Env::start_with(
        &default_sps(),
        "timeout_secs = 1",
        serde_json::json!({"token_delay_ms": 3000}),
    );
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &env.fg.sso_url());
    let b = Browser::new();
    let started = std::time::Instant::now();
    let out = b
        .login(b.client.get(redirect_url(&env, &xml, "")), "agent1")
        .await;
    assert_eq!(out.status, 504, "{}", out.body);
    assert!(out.body.contains("did not answer in time"));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gives_502_and_readyz_says_why() {
    let env = Env::start();
    let Env { op, fg } = env;
    drop(op); // the upstream goes away after discovery
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Discovery is cached, so the login starts; the browser would then fail at the upstream.
    // A fresh flexgate against a dead upstream cannot even start a login:
    let port = free_port();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let fg2 = Flexgate::start(port, &dead, "s", &default_sps(), "timeout_secs = 2");
    let xml = enhanced_request(&unique_id("_"), JQ, "us1", &fg2.sso_url());
    let r = c
        .get(format!(
            "{}?SAMLRequest={}",
            fg2.sso_url(),
            urlencode(&deflate_b64(&xml))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("sign-in service is unavailable"));
    // The admin listener says why …
    let r = c.get(format!("{}/readyz", fg2.admin)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["ready"], false);
    assert!(
        v["checks"]["upstream"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{v}"
    );
    // … the public one only which check fails.
    let r = c.get(format!("{}/readyz", fg2.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({"ready": false, "checks": {"keys": "ok", "upstream": "failing", "store": "ok"}})
    );
    drop(fg);
}

fn mgmt_env(mgmt_cfg: serde_json::Value, mgmt_extra: &str) -> (Env, Mgmt) {
    let mgmt = Mgmt::start(mgmt_cfg);
    let upstream_extra = format!(
        "timeout_secs = 3\n[upstream.management]\nurl = \"{}\"\nclient_id = \"mgmt\"\nclient_secret = \"mgmt-secret\"\n{mgmt_extra}",
        mgmt.url
    );
    let env = Env::start_with(&default_sps(), &upstream_extra, serde_json::json!({}));
    (env, mgmt)
}

/// Roles read at each login only (the tests that count per-login Management API calls).
const PER_LOGIN: &str = "prefetch_secs = 0\n";

fn mgmt_users() -> serde_json::Value {
    serde_json::json!({"norole": {"email": "norole@example.com", "app_metadata": {"flex": {"roles": ["supervisor"]}}}})
}

async fn legacy_login(env: &Env, user: &str) -> (Outcome, String) {
    let id = unique_id("ONELOGIN_");
    let xml = legacy_request(&id, &env.fg.sso_url());
    let b = Browser::new();
    (
        b.login(b.client.get(redirect_url(env, &xml, "")), user)
            .await,
        id,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_from_the_auth0_management_api_cached() {
    let (env, mgmt) = mgmt_env(
        serde_json::json!({"client_id": "mgmt", "client_secret": "mgmt-secret", "users": mgmt_users(), "rate_limit_first": 1, "retry_after": 1}),
        PER_LOGIN,
    );
    // The upstream's ID token has no roles for "norole"; the Management API has ["supervisor"].
    // Its first answer is a 429 with Retry-After: 1, which flexgate waits out once.
    for _ in 0..2 {
        let (out, id) = legacy_login(&env, "norole").await;
        assert_eq!(out.status, 200, "{}", env.fg.log_text());
        let e = SpExpect {
            cert_pem: env.fg.cert_pem.clone(),
            idp_entity_id: env.fg.entity_id.clone(),
            sp_entity_id: format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2/metadata"),
            acs_url: format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2"),
            request_id: Some(id),
            response_signed: true,
            assertion_signed: false,
        };
        let (_, got) = validate_everywhere(&out.form.unwrap(), &e);
        assert_eq!(got["roles"], vec!["supervisor".to_string()]);
    }
    let stats = mgmt.stats().await;
    assert_eq!(stats["token_requests"], 1, "the token is cached: {stats}");
    assert_eq!(
        stats["user_requests"], 2,
        "one 429, one answer, then the per-user cache: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_api_failures_stop_the_login() {
    // A long Retry-After is not waited out.
    let (env, _m) = mgmt_env(
        serde_json::json!({"client_id": "mgmt", "client_secret": "mgmt-secret", "users": mgmt_users(), "rate_limit_first": 100, "retry_after": 30}),
        PER_LOGIN,
    );
    let (out, _) = legacy_login(&env, "norole").await;
    assert_eq!(out.status, 502, "{}", out.body);
    assert!(out.body.contains("roles could not be read"));
    assert!(!out.body.contains("SAMLResponse"));
    assert!(env.fg.wait_log("rate limit").contains("rate limit"));

    // Wrong credentials, and a user the directory does not know.
    let (env, _m) = mgmt_env(
        serde_json::json!({"client_id": "mgmt", "client_secret": "other", "users": mgmt_users()}),
        PER_LOGIN,
    );
    let (out, _) = legacy_login(&env, "norole").await;
    assert_eq!(out.status, 502, "{}", out.body);
    assert!(env
        .fg
        .wait_log("refused flexgate's client credentials")
        .contains("refused flexgate's client credentials"));
    let (env, _m) = mgmt_env(
        serde_json::json!({"client_id": "mgmt", "client_secret": "mgmt-secret", "users": {}}),
        PER_LOGIN,
    );
    let (out, _) = legacy_login(&env, "agent1").await;
    assert_eq!(out.status, 502, "{}", out.body);

    // A slow directory: 504 after the upstream timeout.
    let (env, _m) = mgmt_env(
        serde_json::json!({"client_id": "mgmt", "client_secret": "mgmt-secret", "users": mgmt_users(), "user_delay_ms": 5000}),
        PER_LOGIN,
    );
    let (out, _) = legacy_login(&env, "norole").await;
    assert_eq!(out.status, 504, "{}", out.body);
}

/// The stand-in's count of one route (e.g. `search_users`, `get_user`).
fn route_count(stats: &serde_json::Value, route: &str) -> u64 {
    stats["by_route"][route].as_u64().unwrap_or(0)
}

/// Logs `user` in through the Legacy SP and returns the roles Flex would receive.
async fn legacy_roles(env: &Env, user: &str) -> Vec<String> {
    let (out, id) = legacy_login(env, user).await;
    assert_eq!(out.status, 200, "{}\n{}", out.body, env.fg.log_text());
    let e = SpExpect {
        cert_pem: env.fg.cert_pem.clone(),
        idp_entity_id: env.fg.entity_id.clone(),
        sp_entity_id: format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2/metadata"),
        acs_url: format!("https://iam.twilio.com/v1/Accounts/{AC}/saml2"),
        request_id: Some(id),
        response_signed: true,
        assertion_signed: false,
    };
    let (_, got) = validate_everywhere(&out.form.unwrap(), &e);
    got["roles"].clone()
}

/// `PATCH /api/v2/users/{id}` on the stand-in, as an admin (or `flexgate roles set`) would.
async fn set_app_metadata(mgmt: &Mgmt, user_id: &str, app_metadata: serde_json::Value) {
    let r = reqwest::Client::new()
        .patch(format!("{}/api/v2/users/{user_id}", mgmt.url))
        .bearer_auth("admin-token")
        .json(&serde_json::json!({ "app_metadata": app_metadata }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_at_shift_start_come_from_the_shared_snapshot() {
    let users = serde_json::json!({
        "norole": {"email": "norole@example.com", "app_metadata": {"flex": {"roles": ["supervisor"]}, "plan": "gold"}},
        "sup1": {"email": "sup1@example.com", "app_metadata": {"plan": "gold"}},
    });
    let (env, mgmt) = mgmt_env(
        serde_json::json!({"client_id": "mgmt", "client_secret": "mgmt-secret", "static_token": "admin-token", "users": users, "rate": {"per_sec": 2, "burst": 10}}),
        "prefetch_secs = 5\n",
    );
    env.fg.wait_log("roles snapshot read");
    let base = env.fg.admin.clone();
    assert_eq!(
        metric(&base, "flexgate_roles_snapshot_users").await,
        1.0,
        "only users with a Flex role are kept"
    );
    let ready: serde_json::Value = reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["roles"]
            .as_str()
            .unwrap_or("")
            .starts_with("snapshot of 1 user(s) with a Flex role"),
        "{ready}"
    );
    // The public /readyz counts no agents.
    let public = reqwest::get(format!("{}/readyz", env.fg.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !public.contains("roles") && !public.contains("user(s)"),
        "{public}"
    );

    // Logins find their roles in the snapshot: no per-login call.
    for _ in 0..3 {
        assert_eq!(legacy_roles(&env, "norole").await, vec!["supervisor"]);
    }
    let stats = mgmt.stats().await;
    assert!(route_count(&stats, "search_users") >= 1, "{stats}");
    assert_eq!(stats["user_requests"], 0, "{stats}");
    assert_eq!(
        metric(&base, "flexgate_roles_reads_total{source=\"snapshot\"}").await,
        3.0
    );

    // A role given after the snapshot was read: the login misses and reads the user once.
    set_app_metadata(
        &mgmt,
        "sup1",
        serde_json::json!({"flex": {"roles": ["agent"]}}),
    )
    .await;
    assert_eq!(legacy_roles(&env, "sup1").await, vec!["agent"]);
    assert_eq!(mgmt.stats().await["user_requests"], 1);
    assert_eq!(
        metric(&base, "flexgate_roles_reads_total{source=\"api\"}").await,
        1.0
    );

    // A role changed in Auth0 reaches logins with the next snapshot (one interval).
    set_app_metadata(
        &mgmt,
        "norole",
        serde_json::json!({"flex": {"roles": ["agent"]}}),
    )
    .await;
    // Wait for a bulk read that began after the change, and for its snapshot to be in use
    // (one search page per read: nothing here reaches the rate limit).
    let after_change = route_count(&mgmt.stats().await, "search_users");
    let refreshed = "flexgate_roles_snapshot_refreshes_total{result=\"ok\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let searches = route_count(&mgmt.stats().await, "search_users");
        if searches > after_change && metric(&base, refreshed).await >= searches as f64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no bulk read after the change: {}",
            env.fg.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(legacy_roles(&env, "norole").await, vec!["agent"]);
    let stats = mgmt.stats().await;
    assert_eq!(
        stats["user_requests"], 1,
        "still no per-login call: {stats}"
    );
    assert_eq!(metric(&base, "flexgate_roles_snapshot_users").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_read_roles_one_by_one_while_the_bulk_read_fails() {
    // Users search is down: no snapshot, and logins read their roles one by one.
    let (env, mgmt) = mgmt_env(
        serde_json::json!({"client_id": "mgmt", "client_secret": "mgmt-secret", "users": mgmt_users(), "search_unavailable": 1000}),
        "prefetch_secs = 5\n",
    );
    env.fg.wait_log("roles snapshot could not be refreshed");
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", env.fg.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "no snapshot is not unready: {ready}");
    assert_eq!(
        ready["roles"], "no snapshot yet: roles are read at each login",
        "{ready}"
    );
    assert_eq!(legacy_roles(&env, "norole").await, vec!["supervisor"]);
    let stats = mgmt.stats().await;
    assert_eq!(stats["user_requests"], 1, "{stats}");
    let log = env.fg.log_text();
    assert!(
        log.contains("/api/v2/users") && log.contains("503"),
        "the warning names the failed call: {log}"
    );
    // Retried after the pause, not at every tick.
    assert_eq!(route_count(&stats, "search_users"), 1, "{stats}");
}
