//! Step-up MFA against npm `oidc-provider` issuing `amr`/`acr`: the three modes, ForceAuthn,
//! IsPassive, and an ID token that lies about nothing but lacks `mfa`.

mod common;
use common::*;
use serde_json::json;

const PAPE: &str = "http://schemas.openid.net/pape/policies/2007/06/multi-factor";
const PPT: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
const JQ_ALWAYS: &str = "JQ11111111111111111111111111111111";
const JQ_ONREQ: &str = "JQ22222222222222222222222222222222";

fn user(email: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut u = json!({"email": email, "name": email, ROLES_CLAIM: ["agent"]});
    for (k, v) in extra.as_object().unwrap() {
        u[k] = v.clone();
    }
    u
}

fn start() -> Env {
    let sps = format!(
        r#"
[[sp]]
name = "never"
flex_connection = "{JQ}"
[sp.attributes]
email = "email"
full_name = "name"
roles = "{ROLES_CLAIM}"

[[sp]]
name = "always"
flex_connection = "{JQ_ALWAYS}"
mfa = "always"
[sp.attributes]
email = "email"
full_name = "name"
roles = "{ROLES_CLAIM}"

[[sp]]
name = "onreq"
flex_connection = "{JQ_ONREQ}"
mfa = "on-request"
[sp.attributes]
email = "email"
full_name = "name"
roles = "{ROLES_CLAIM}"
"#
    );
    let users = json!({
        "mfauser": user("mfa@example.com", json!({"amr": ["pwd", "mfa"]})),
        "pwduser": user("pwd@example.com", json!({"amr": ["pwd"]})),
        "acruser": user("acr@example.com", json!({"amr": ["pwd"], "acr": PAPE})),
        "olduser": user("old@example.com", json!({"amr": ["pwd", "mfa"], "auth_time_offset_secs": -600})),
        "recentuser": user("recent@example.com", json!({"amr": ["pwd"], "auth_time_offset_secs": -50})),
    });
    Env::start_with(&sps, "", json!({"users": users}))
}

/// The same users and SPs, with an OP that ignores `prompt=none` (it shows its login page).
fn start_ignoring_prompt_none() -> Env {
    let users = json!({"pwduser": user("pwd@example.com", json!({"amr": ["pwd"]}))});
    Env::start_with(
        &format!(
            "[[sp]]\nname = \"never\"\nflex_connection = \"{JQ}\"\n[sp.attributes]\nemail = \"email\"\nfull_name = \"name\"\nroles = \"{ROLES_CLAIM}\"\n"
        ),
        "",
        json!({"users": users, "ignore_prompt_none": true}),
    )
}

fn request(env: &Env, jq: &str, id: &str, attrs: &str, context: &str) -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" AssertionConsumerServiceURL="https://login.flex.us1.twilio.com/login/callback?connection={jq}" Destination="{}" ID="{id}" IssueInstant="{}" Version="2.0" {attrs}><saml:Issuer>urn:flex:{jq}</saml:Issuer>{context}</samlp:AuthnRequest>"#,
        env.fg.sso_url(),
        now_instant()
    )
}

fn requested(comparison: &str, class: &str) -> String {
    format!(
        r#"<samlp:RequestedAuthnContext Comparison="{comparison}"><saml:AuthnContextClassRef>{class}</saml:AuthnContextClassRef></samlp:RequestedAuthnContext>"#
    )
}

fn url(env: &Env, xml: &str) -> String {
    format!(
        "{}?SAMLRequest={}",
        env.fg.sso_url(),
        url::form_urlencoded::byte_serialize(deflate_b64(xml).as_bytes()).collect::<String>()
    )
}

fn expect(env: &Env, jq: &str, id: &str) -> SpExpect {
    SpExpect {
        cert_pem: env.fg.cert_pem.clone(),
        idp_entity_id: env.fg.entity_id.clone(),
        sp_entity_id: format!("urn:flex:{jq}"),
        acs_url: format!("https://login.flex.us1.twilio.com/login/callback?connection={jq}"),
        request_id: Some(id.to_string()),
        response_signed: true,
        assertion_signed: false,
    }
}

fn class_of(xml: &str) -> String {
    xml.split("<saml:AuthnContextClassRef>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string()
}

/// Logs in; returns the first redirect to the upstream and the outcome.
async fn login(
    env: &Env,
    jq: &str,
    user: &str,
    attrs: &str,
    context: &str,
) -> (String, String, Outcome) {
    let id = unique_id("_");
    let b = Browser::new();
    let first = b
        .client
        .get(url(env, &request(env, jq, &id, attrs, context)))
        .send()
        .await
        .unwrap();
    let loc = first
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    let out = if loc.is_empty() {
        let status = first.status().as_u16();
        let body = first.text().await.unwrap();
        let form = parse_post_form(&body);
        Outcome {
            status,
            body,
            form,
            headers: Default::default(),
        }
    } else {
        b.login(b.client.get(&loc), user).await
    };
    (id, loc, out)
}

fn status_of(xml: &str) -> Vec<String> {
    xml.split("<samlp:StatusCode Value=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_always() {
    let env = start();
    // MFA shown by amr: accepted, stated in the assertion; acr_values was asked for.
    let (id, loc, out) = login(&env, JQ_ALWAYS, "mfauser", "", "").await;
    assert!(loc.contains("acr_values=http%3A%2F%2Fschemas.openid.net%2Fpape%2Fpolicies%2F2007%2F06%2Fmulti-factor"), "{loc}");
    assert_eq!(out.status, 200, "{}", out.body);
    let form = out.form.unwrap();
    validate_everywhere(&form, &expect(&env, JQ_ALWAYS, &id));
    assert_eq!(class_of(&form.xml()), PAPE);
    // MFA shown by acr.
    let (_, _, out) = login(&env, JQ_ALWAYS, "acruser", "", "").await;
    assert_eq!(out.status, 200, "{}", out.body);
    // An honest ID token without mfa: a page, no assertion.
    let (_, _, out) = login(&env, JQ_ALWAYS, "pwduser", "", "").await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert!(out.body.contains("second factor"));
    assert!(!out.body.contains("SAMLResponse"));
    assert!(env.fg.wait_log("mfa_missing").contains("mfa_missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_on_request() {
    let env = start();
    // Not asked: no MFA needed, PasswordProtectedTransport stated, no acr_values sent.
    let (id, loc, out) = login(&env, JQ_ONREQ, "pwduser", "", "").await;
    assert!(!loc.contains("acr_values"), "{loc}");
    let form = out.form.expect("a response");
    validate_everywhere(&form, &expect(&env, JQ_ONREQ, &id));
    assert_eq!(class_of(&form.xml()), PPT);

    // Asked (exact multi-factor) and shown: the assertion states the requested class.
    let (id, loc, out) = login(&env, JQ_ONREQ, "mfauser", "", &requested("exact", PAPE)).await;
    assert!(loc.contains("acr_values="), "{loc}");
    let form = out.form.expect("a response");
    validate_everywhere(&form, &expect(&env, JQ_ONREQ, &id));
    assert_eq!(class_of(&form.xml()), PAPE);

    // Asked (minimum REFEDS MFA) but not shown: a signed Responder/NoAuthnContext Response.
    let (id, _, out) = login(
        &env,
        JQ_ONREQ,
        "pwduser",
        "",
        &requested("minimum", "https://refeds.org/profile/mfa"),
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let form = out.form.expect("a status response posted to the ACS");
    let xml = form.xml();
    assert_eq!(
        status_of(&xml),
        vec![
            "urn:oasis:names:tc:SAML:2.0:status:Responder",
            "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext"
        ]
    );
    assert!(xml.contains(&format!("InResponseTo=\"{id}\"")));
    assert!(!xml.contains("<saml:Assertion"));
    xmlsec1_verify(&xml, &env.fg.cert_pem, "Response").expect("the status Response is signed");

    // A context flexgate cannot produce (X509): NoAuthnContext at once, the upstream is not asked.
    let (_, loc, out) = login(
        &env,
        JQ_ONREQ,
        "pwduser",
        "",
        &requested("exact", "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"),
    )
    .await;
    assert!(loc.is_empty(), "no redirect to the upstream");
    let xml = out.form.expect("a status response").xml();
    assert!(
        status_of(&xml).contains(&"urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext".to_string())
    );
    xmlsec1_verify(&xml, &env.fg.cert_pem, "Response").expect("signed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_never_ignores_requested_context() {
    let env = start();
    let (id, loc, out) = login(&env, JQ, "pwduser", "", &requested("exact", PAPE)).await;
    assert!(!loc.contains("acr_values"));
    let form = out.form.expect("a response");
    validate_everywhere(&form, &enhanced_like(&env, &id));
    assert_eq!(class_of(&form.xml()), PPT, "states what happened");
}

fn enhanced_like(env: &Env, id: &str) -> SpExpect {
    expect(env, JQ, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_authn_and_is_passive() {
    let env = start();
    // ForceAuthn: prompt=login and max_age=0 go upstream; a fresh auth_time is accepted and is
    // the AuthnInstant.
    let before = chrono::Utc::now().timestamp() - 2;
    let (id, loc, out) = login(&env, JQ, "pwduser", "ForceAuthn=\"true\"", "").await;
    assert!(
        loc.contains("prompt=login") && loc.contains("max_age=0"),
        "{loc}"
    );
    let form = out.form.expect("a response");
    validate_everywhere(&form, &enhanced_like(&env, &id));
    let xml = form.xml();
    let instant = xml
        .split("AuthnInstant=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let instant = chrono::DateTime::parse_from_rfc3339(instant)
        .unwrap()
        .timestamp();
    assert!(instant >= before, "AuthnInstant is the fresh auth_time");

    // An upstream that reports an old authentication despite ForceAuthn: refused.
    let (_, _, out) = login(&env, JQ, "olduser", "ForceAuthn=\"true\"", "").await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert!(out.body.contains("sign in again"), "{}", out.body);
    // Without ForceAuthn the same user is fine, and AuthnInstant is the upstream's auth_time.
    let (_, _, out) = login(&env, JQ, "olduser", "", "").await;
    let xml = out.form.expect("a response").xml();
    let instant = xml
        .split("AuthnInstant=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let age = chrono::Utc::now().timestamp()
        - chrono::DateTime::parse_from_rfc3339(instant)
            .unwrap()
            .timestamp();
    assert!(
        (590..=700).contains(&age),
        "AuthnInstant is auth_time (≈10 min ago), got {age} s"
    );

    // IsPassive with no session at the upstream: prompt=none → login_required → NoPassive.
    let (id, loc, out) = login(&env, JQ, "pwduser", "IsPassive=\"true\"", "").await;
    assert!(loc.contains("prompt=none"), "{loc}");
    assert_eq!(out.status, 200, "{}", out.body);
    let xml = out.form.expect("a status response").xml();
    assert_eq!(
        status_of(&xml),
        vec![
            "urn:oasis:names:tc:SAML:2.0:status:Responder",
            "urn:oasis:names:tc:SAML:2.0:status:NoPassive"
        ]
    );
    assert!(xml.contains(&format!("InResponseTo=\"{id}\"")));
    xmlsec1_verify(&xml, &env.fg.cert_pem, "Response").expect("signed");
}

/// A NoAuthnContext status Response is counted the same whether it is decided at `/saml/sso`
/// (a context flexgate cannot produce) or at the callback (MFA asked for and not shown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_authn_context_is_counted_alike_on_both_paths() {
    let env = start();
    let x509 = requested("exact", "urn:oasis:names:tc:SAML:2.0:ac:classes:X509");
    let (_, loc, out) = login(&env, JQ_ONREQ, "pwduser", "", &x509).await;
    assert!(loc.is_empty(), "answered at /saml/sso");
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(status_of(&out.form.expect("a status response").xml())
        .contains(&"urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext".to_string()));
    let metrics = || async {
        reqwest::get(format!("{}/metrics", env.fg.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let counted = |n: u32| {
        format!("flexgate_logins_failed_total{{reason=\"NoAuthnContext\",sp=\"onreq\"}} {n}")
    };
    let m = metrics().await;
    assert!(m.contains(&counted(1)), "{m}");

    let refeds = requested("minimum", "https://refeds.org/profile/mfa");
    let (_, loc, out) = login(&env, JQ_ONREQ, "pwduser", "", &refeds).await;
    assert!(!loc.is_empty(), "answered at the callback");
    assert!(status_of(&out.form.expect("a status response").xml())
        .contains(&"urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext".to_string()));
    let m = metrics().await;
    assert!(m.contains(&counted(2)), "{m}");
    assert!(
        !m.contains("flexgate_logins_completed_total{sp=\"onreq\"}"),
        "{m}"
    );
}

/// An OP that ignores `prompt=login` / `max_age=0` and reports a sign-in 50 s old: within the
/// 60 s clock skew, but not within `[mfa] reauth_window_secs` (5 s) — no assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_authn_refuses_a_sign_in_older_than_the_reauth_window() {
    let env = start();
    let (_, loc, out) = login(&env, JQ, "recentuser", "ForceAuthn=\"true\"", "").await;
    assert!(loc.contains("prompt=login"), "{loc}");
    assert_eq!(out.status, 403, "{}", out.body);
    assert!(out.body.contains("sign in again"), "{}", out.body);
    assert!(!out.body.contains("SAMLResponse"));
    assert!(env
        .fg
        .wait_log("not_reauthenticated")
        .contains("not_reauthenticated"));
    // Without ForceAuthn the same sign-in is fine.
    let (id, _, out) = login(&env, JQ, "recentuser", "", "").await;
    validate_everywhere(&out.form.expect("a response"), &expect(&env, JQ, &id));
}

/// IsPassive at an OP that ignores `prompt=none`: the person had to sign in (auth_time is not
/// before the request), so the SP gets a signed NoPassive, not an assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_passive_answered_with_a_fresh_sign_in_is_no_passive() {
    let env = start_ignoring_prompt_none();
    let (id, loc, out) = login(&env, JQ, "pwduser", "IsPassive=\"true\"", "").await;
    assert!(loc.contains("prompt=none"), "{loc}");
    assert!(
        env.op.log_text().contains("ignoring prompt=none"),
        "the OP misbehaved"
    );
    assert_eq!(out.status, 200, "{}", out.body);
    let xml = out.form.expect("a status response").xml();
    assert_eq!(
        status_of(&xml),
        vec![
            "urn:oasis:names:tc:SAML:2.0:status:Responder",
            "urn:oasis:names:tc:SAML:2.0:status:NoPassive"
        ]
    );
    assert!(xml.contains(&format!("InResponseTo=\"{id}\"")));
    assert!(!xml.contains("<saml:Assertion"));
    xmlsec1_verify(&xml, &env.fg.cert_pem, "Response").expect("signed");
}
