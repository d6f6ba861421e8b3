//! `/admin/logins` (recent attempts, filtered by email, SP and outcome) and
//! `/admin/logins/{ref}` (one trace: stages, claims, attributes, the contract checks of the
//! Response with expected next to found, and the XML pretty-printed). Served on the admin
//! listener only (`web::admin`). Everything shown is escaped; no script; the public pages' CSP.

use super::pages::{self, escape};
use super::AppState;
use crate::login::Idp;
use crate::trace::{text, Check, StageOutcome, Trace, View};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use openssl::pkey::{PKey, Public};
use serde::Deserialize;

/// Attempts listed when the query does not say.
const DEFAULT_LIMIT: usize = 50;
/// The most attempts one list shows.
const MAX_LIMIT: usize = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/logins", get(list))
        .route("/admin/logins/{reference}", get(one))
}

/// `/admin/logins?email=&sp=&outcome=&limit=`
#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub sp: Option<String>,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Filter {
    fn keeps(&self, t: &Trace, now_ms: i64) -> bool {
        let sp_ok = nonempty(&self.sp).is_none_or(|sp| t.sp.as_deref() == Some(sp));
        let outcome_ok = nonempty(&self.outcome).is_none_or(|o| t.outcome_label(now_ms) == o);
        sp_ok && outcome_ok
    }
}

/// The IdP certificates' keys (current and next) the Response checks trust.
fn cert_keys(idp: &Idp) -> Vec<PKey<Public>> {
    std::iter::once(&idp.keys.cert)
        .chain(idp.keys.next_cert.as_ref())
        .filter_map(|c| crate::config::keys::public_key_from_cert_pem(c.pem.as_bytes()).ok())
        .collect()
}

fn now_ms(idp: &Idp) -> i64 {
    idp.clock.now().timestamp_millis()
}

async fn list(State(st): State<AppState>, Query(f): Query<Filter>) -> Response {
    let idp = st.idp();
    let limit = f.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let found = match nonempty(&f.email) {
        Some(email) => idp.traces.find(email, limit).await,
        None => idp.traces.recent(limit).await,
    };
    let now = now_ms(&idp);
    match found {
        Ok(traces) => {
            let kept: Vec<Trace> = traces.into_iter().filter(|t| f.keeps(t, now)).collect();
            let body = list_html(&kept, &f, idp.config.trace.enabled, now);
            pages::admin_page(StatusCode::OK, "Logins", &body)
        }
        Err(e) => store_unavailable(&e),
    }
}

async fn one(State(st): State<AppState>, Path(reference): Path<String>) -> Response {
    let idp = st.idp();
    match idp.traces.get(&reference).await {
        Ok(Some(t)) => {
            let view = View::new(t, &cert_keys(&idp), now_ms(&idp));
            let title = format!("Login {}", view.trace.reference);
            pages::admin_page(StatusCode::OK, &title, &trace_page_html(&view))
        }
        Ok(None) => {
            let body = format!(
                "<h1>No such login</h1>\n<p>No trace is kept under the reference <code>{}</code>: it is older than trace.keep_secs, was a sampled-out success, or never existed.</p>\n<p><a href=\"/admin/logins\">Recent logins</a></p>",
                escape(&reference)
            );
            pages::admin_page(StatusCode::NOT_FOUND, "No such login", &body)
        }
        Err(e) => store_unavailable(&e),
    }
}

fn store_unavailable(e: &crate::store::StoreError) -> Response {
    let body = format!(
        "<h1>Traces cannot be read</h1>\n<p>{}</p>",
        escape(&e.to_string())
    );
    pages::admin_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Traces cannot be read",
        &body,
    )
}

fn link(reference: &str) -> String {
    let path: String = url::form_urlencoded::byte_serialize(reference.as_bytes()).collect();
    format!(
        "<a href=\"/admin/logins/{}\"><code>{}</code></a>",
        escape(&path),
        escape(reference)
    )
}

fn outcome_cell(label: &str) -> String {
    let class = if matches!(label, "completed" | "upstream") {
        "ok"
    } else {
        "bad"
    };
    format!("<span class=\"{class}\">{}</span>", escape(label))
}

/// The list page's body.
pub fn list_html(traces: &[Trace], f: &Filter, enabled: bool, now_ms: i64) -> String {
    let opt = |v: &Option<String>| escape(v.as_deref().unwrap_or(""));
    let outcome_options: String = ["", "completed", "failed", "status", "upstream", "abandoned"]
        .iter()
        .map(|o| {
            let sel = if f.outcome.as_deref().unwrap_or("") == *o {
                " selected"
            } else {
                ""
            };
            let shown = if o.is_empty() { "any outcome" } else { o };
            format!("<option value=\"{o}\"{sel}>{shown}</option>")
        })
        .collect();
    let mut o = format!(
        "<h1>Logins</h1>\n<form method=\"get\" action=\"/admin/logins\"><input name=\"email\" placeholder=\"email\" value=\"{}\"><input name=\"sp\" placeholder=\"SP name\" value=\"{}\"><select name=\"outcome\">{outcome_options}</select><button type=\"submit\">Filter</button></form>\n",
        opt(&f.email),
        opt(&f.sp)
    );
    if !enabled {
        o.push_str("<p class=\"bad\">Traces are off ([trace] enabled = false): new logins are not recorded.</p>\n");
    }
    if traces.is_empty() {
        o.push_str("<p>No login matches.</p>\n");
        return o;
    }
    o.push_str("<table><tr><th>Started</th><th>Reference</th><th>Outcome</th><th>SP</th><th>Email</th><th>Reason</th></tr>\n");
    for t in traces {
        o.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&text::time(t.started_at_ms)),
            link(&t.reference),
            outcome_cell(t.outcome_label(now_ms)),
            escape(t.sp.as_deref().unwrap_or("-")),
            escape(t.email.as_deref().unwrap_or("-")),
            escape(t.reason.as_deref().unwrap_or(""))
        ));
    }
    o.push_str("</table>\n");
    o
}

fn row(k: &str, v: &str) -> String {
    format!("<tr><th>{}</th><td>{}</td></tr>\n", escape(k), escape(v))
}

fn tick_cell(ok: bool) -> String {
    format!(
        "<span class=\"{}\">{}</span>",
        if ok { "ok" } else { "bad" },
        text::tick(ok)
    )
}

fn checks_html(checks: &[Check]) -> String {
    let mut o = String::from(
        "<h2>Response checks</h2>\n<table><tr><th></th><th>Check</th><th>Expected</th><th>Found</th></tr>\n",
    );
    for c in checks {
        o.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            tick_cell(c.ok),
            escape(&c.name),
            escape(&c.expected),
            escape(&c.found)
        ));
    }
    o.push_str("</table>\n");
    o
}

fn xml_block(title: &str, xml: &str) -> String {
    format!(
        "<h2>{}</h2>\n<pre>{}</pre>\n",
        escape(title),
        escape(&text::pretty_xml(xml))
    )
}

/// One trace's page body.
pub fn trace_page_html(v: &View) -> String {
    let t = &v.trace;
    let mut o = format!(
        "<p><a href=\"/admin/logins\">← Recent logins</a></p>\n<h1>Login <code>{}</code></h1>\n<table>\n",
        escape(&t.reference)
    );
    o.push_str(&format!(
        "<tr><th>Outcome</th><td>{}</td></tr>\n",
        outcome_cell(&v.status)
    ));
    o.push_str(&row("Started", &text::time(t.started_at_ms)));
    for (k, val) in [
        ("Reason", &t.reason),
        ("SP", &t.sp),
        ("Binding", &t.binding),
        ("AuthnRequest ID", &t.request_id),
        ("Response ID", &t.response_id),
        ("Subject", &t.subject),
        ("Email", &t.email),
    ] {
        if let Some(val) = val {
            o.push_str(&row(k, val));
        }
    }
    o.push_str("</table>\n<h2>Stages</h2>\n<table><tr><th></th><th>Stage</th><th>At</th><th>Took</th><th>What happened</th></tr>\n");
    for s in &t.stages {
        let mut what = escape(&s.detail);
        if let Some(fix) = &s.fix {
            what.push_str(&format!("<br><strong>Fix:</strong> {}", escape(fix)));
        }
        o.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1} ms</td><td>{what}</td></tr>\n",
            tick_cell(s.outcome == StageOutcome::Ok),
            escape(s.name.label()),
            escape(&text::time(s.at_ms)),
            s.took_us as f64 / 1000.0
        ));
    }
    if v.status == "abandoned" {
        o.push_str(&format!(
            "<tr><td>{}</td><td>callback</td><td></td><td></td><td>never came back: the person did not finish at the upstream before the login timed out</td></tr>\n",
            tick_cell(false)
        ));
    }
    o.push_str("</table>\n");
    if !t.claims.is_empty() {
        o.push_str(
            "<h2>Claims read</h2>\n<table><tr><th>Claim</th><th>Read for</th><th>Value</th></tr>\n",
        );
        for c in &t.claims {
            o.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>\n",
                escape(&c.claim),
                escape(&c.used_for),
                escape(&c.value.to_string())
            ));
        }
        o.push_str("</table>\n");
    }
    if !t.attributes.is_empty() {
        o.push_str("<h2>Attributes sent</h2>\n<table><tr><th>Attribute</th><th>Values</th></tr>\n");
        for (n, vals) in &t.attributes {
            o.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>\n",
                escape(n),
                escape(&vals.join(" · "))
            ));
        }
        o.push_str("</table>\n");
    }
    if !v.checks.is_empty() {
        o.push_str(&checks_html(&v.checks));
    }
    if let Some(x) = &t.authn_request_xml {
        o.push_str(&xml_block("AuthnRequest", x));
    }
    if let Some(r) = &t.response {
        o.push_str(&xml_block("Response as sent", &r.xml));
    }
    for note in &t.truncated {
        o.push_str(&format!("<p>Cut to fit: {}</p>\n", escape(note)));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Claim, Kind, Outcome, Recorder, StageName};
    use std::sync::Arc;

    const PAYLOAD: &str = "<x:name xmlns:x=\"urn:x\">Zoë</x:name><script>alert(1)</script>";

    async fn app_with_one_failure() -> (Router, String) {
        let idp = Arc::new(crate::login::tests::test_idp());
        let mut rec: Recorder = idp.recorder(Kind::SpInitiated);
        rec.with(|t| {
            t.sp = Some("flex".into());
            t.email = Some("zoe@example.com".into());
            t.authn_request_xml = Some(format!(
                "<samlp:AuthnRequest ID=\"_q\"><saml:Issuer>{}</saml:Issuer></samlp:AuthnRequest>",
                pages::escape(PAYLOAD)
            ));
            t.claims = vec![Claim {
                claim: "name".into(),
                used_for: "attribute full_name".into(),
                value: serde_json::json!(PAYLOAD),
            }];
        });
        rec.ok(StageName::RequestReceived, || "HTTP-Redirect".into());
        let e = crate::login::LoginError::Mapping {
            subject: "u1".into(),
            email: Some("zoe@example.com".into()),
            source: crate::flex::MapError::NoRole {
                claim: "roles".into(),
                found: "missing".into(),
                groups: None,
            },
        };
        rec.failed(StageName::Mapping, &e);
        let reference = rec.reference().to_string();
        idp.traces.save(rec).await;
        let state = AppState::new(idp);
        (crate::web::admin::router(state), reference)
    }

    async fn get(app: Router, uri: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let resp = reqwest::get(format!("http://{addr}{uri}")).await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn one_trace_shows_the_failed_stage_its_fix_and_escapes_what_it_shows() {
        let (app, r) = app_with_one_failure().await;
        let (status, headers, body) = get(app.clone(), &format!("/admin/logins/{r}")).await;
        assert_eq!(status, StatusCode::OK);
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'") && !csp.contains("script-src"),
            "{csp}"
        );
        for h in [
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
        ] {
            assert!(headers.contains_key(h), "{h}");
        }
        assert!(body.contains("✗") && body.contains("mapping"), "{body}");
        assert!(
            body.contains("Fix:</strong> give the user a Flex role"),
            "{body}"
        );
        assert!(
            !body.contains("<script>") && !body.contains("<x:name"),
            "{body}"
        );
        assert!(
            body.contains("&lt;x:name xmlns:x=") || body.contains("\\&quot;"),
            "{body}"
        );
        let (status, _, body) = get(app.clone(), "/admin/logins/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("No such login"));
    }

    #[tokio::test]
    async fn the_list_filters_by_email_sp_and_outcome() {
        let (app, r) = app_with_one_failure().await;
        for (q, found) in [
            ("", true),
            ("?email=zoe%40example.com", true),
            ("?email=other%40example.com", false),
            ("?sp=flex&outcome=failed", true),
            ("?sp=other", false),
            ("?outcome=completed", false),
        ] {
            let (status, _, body) = get(app.clone(), &format!("/admin/logins{q}")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body.contains(&r), found, "{q}: {body}");
        }
    }

    #[test]
    fn the_filter_keeps_abandoned_logins_apart() {
        let t = Trace {
            outcome: Outcome::Upstream,
            expires_at_ms: 10,
            ..Trace::default()
        };
        let f = |o: &str| Filter {
            outcome: Some(o.into()),
            ..Filter::default()
        };
        assert!(f("abandoned").keeps(&t, 11) && !f("upstream").keeps(&t, 11));
        assert!(f("upstream").keeps(&t, 9));
    }
}
