//! A Flex stand-in for the demo: a page with "Log in with SSO" that sends a Flex-shaped
//! AuthnRequest (HTTP-Redirect, like Flex's Auth0-based Enhanced SSO), and an ACS that verifies
//! the signed Response with `saml::verify` (signature against the certificate only, audience,
//! destination, recipient, InResponseTo) and shows what Flex would receive.

use crate::clock::{saml_time, IdGen, RandomIds};
use crate::saml::ns;
use crate::saml::verify::{self, AlgPolicy, Expectations};
use crate::saml::xml::CanonWriter;
use crate::web::pages::{app_page, escape};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use openssl::pkey::{PKey, Public};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stand-in's settings and the request IDs it has issued.
pub struct StandIn {
    key: PKey<Public>,
    entity_id: String,
    acs_url: String,
    sso_url: String,
    idp_entity_id: String,
    init_url: String,
    issued: Mutex<HashMap<String, Instant>>,
}

impl StandIn {
    pub fn new(
        cert_pem: &str,
        entity_id: &str,
        acs_url: &str,
        sso_url: &str,
        idp_entity_id: &str,
        init_url: &str,
    ) -> Result<Arc<Self>, openssl::error::ErrorStack> {
        Ok(Arc::new(StandIn {
            key: crate::config::keys::public_key_from_cert_pem(cert_pem.as_bytes())?,
            entity_id: entity_id.into(),
            acs_url: acs_url.into(),
            sso_url: sso_url.into(),
            idp_entity_id: idp_entity_id.into(),
            init_url: init_url.into(),
            issued: Mutex::new(HashMap::new()),
        }))
    }
}

pub fn router(s: Arc<StandIn>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/acs", post(acs))
        .with_state(s)
}

const HOME: &str = "<h1>Flex (stand-in)</h1>\n<p>This page plays Twilio Flex. Pressing the button sends a SAML AuthnRequest to flexgate, which sends you to the development OpenID issuer; after you pick a user, flexgate posts a signed SAML Response back here.</p>";

async fn home(State(s): State<Arc<StandIn>>) -> Response {
    let body = format!(
        "{HOME}\n<p><a href=\"/flex/login\"><button type=\"button\">Log in with SSO</button></a></p>\n<p>Or start from the identity provider (IdP-initiated): <a href=\"{}\">{}</a></p>",
        escape(&s.init_url),
        escape(&s.init_url)
    );
    app_page(StatusCode::OK, "Flex (stand-in)", &body, "'self'")
}

/// Builds a Flex-Enhanced-shaped AuthnRequest and redirects to the SSO URL.
async fn login(State(s): State<Arc<StandIn>>) -> Response {
    let id = RandomIds.saml_id();
    {
        let mut issued = s.issued.lock();
        let now = Instant::now();
        issued.retain(|_, t| now.duration_since(*t) < Duration::from_secs(900));
        issued.insert(id.clone(), now);
    }
    let mut w = CanonWriter::default();
    w.start(
        "samlp:AuthnRequest",
        &[("samlp", ns::SAMLP), ("saml", ns::SAML)],
        &[
            ("AssertionConsumerServiceURL", &s.acs_url),
            ("Destination", &s.sso_url),
            ("ID", &id),
            ("IssueInstant", &saml_time(chrono::Utc::now())),
            ("ProtocolBinding", ns::BINDING_POST),
            ("Version", "2.0"),
        ],
    );
    w.leaf("saml:Issuer", &[], &[], &s.entity_id);
    w.end("samlp:AuthnRequest");
    let xml = w.finish();
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    let deflated = enc
        .write_all(xml.as_bytes())
        .and_then(|_| enc.finish())
        .unwrap_or_default();
    let b64 = base64::engine::general_purpose::STANDARD.encode(deflated);
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("SAMLRequest", &b64)
        .append_pair("RelayState", "demo relay <state> & \"quotes\"")
        .finish();
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}?{q}", s.sso_url)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

async fn acs(State(s): State<Arc<StandIn>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let Some(b64) = form.get("SAMLResponse") else {
        return app_page(
            StatusCode::BAD_REQUEST,
            "No SAMLResponse",
            "<h1>No SAMLResponse</h1><p>This ACS expects an HTTP-POST with SAMLResponse.</p>",
            "'self'",
        );
    };
    let xml = match verify::decode_b64(b64).and_then(|b| String::from_utf8(b).ok()) {
        Some(x) => x,
        None => {
            return app_page(
                StatusCode::BAD_REQUEST,
                "Bad SAMLResponse",
                "<h1>SAMLResponse is not base64 XML</h1>",
                "'self'",
            )
        }
    };
    // The Response says which request it answers; the stand-in accepts it only if it issued it.
    let irt = verify::parse(&xml).ok().and_then(|d| {
        d.root_element()
            .attribute("InResponseTo")
            .map(str::to_string)
    });
    let expected_irt = match irt {
        Some(id) => match s.issued.lock().remove(&id) {
            Some(_) => Some(id),
            None => {
                return app_page(StatusCode::BAD_REQUEST, "Unknown InResponseTo", "<h1>Rejected</h1><p>The Response answers a request this stand-in did not send (or already received).</p>", "'self'")
            }
        },
        None => None,
    };
    // Signature checks and c14n of a posted Response run off the reactor.
    let (job_s, job_xml) = (s.clone(), xml.clone());
    let verified = crate::blocking::run(move || {
        let exp = Expectations {
            audience: &job_s.entity_id,
            recipient: &job_s.acs_url,
            in_response_to: expected_irt.as_deref(),
            issuer: Some(&job_s.idp_entity_id),
            now: chrono::Utc::now(),
            skew: chrono::Duration::seconds(60),
            require_response_signature: true,
            require_assertion_signature: false,
            policy: AlgPolicy::default(),
        };
        verify::verify_response(&job_xml, std::slice::from_ref(&job_s.key), &exp)
    })
    .await
    .unwrap_or_else(|e| Err(verify::VerifyError::Malformed(e.to_string())));
    let relay = form.get("RelayState").map(String::as_str).unwrap_or("");
    match verified {
        Ok(v) => {
            let mut rows = String::new();
            for (name, values) in &v.attributes {
                let vals = values
                    .iter()
                    .map(|x| format!("<code>{}</code>", escape(x)))
                    .collect::<Vec<_>>()
                    .join(" ");
                rows.push_str(&format!(
                    "<tr><th>{}</th><td>{vals}</td></tr>",
                    escape(name)
                ));
            }
            let body = format!(
                "<h1>Flex accepted the login ✔</h1>\n<p>The SAML Response verified: signature against flexgate's certificate ({}), audience <code>{}</code>, destination and recipient <code>{}</code>, {}.</p>\n<table><tr><th>NameID</th><td><code>{}</code></td></tr>{rows}<tr><th>RelayState</th><td><code>{}</code></td></tr><tr><th>AuthnInstant</th><td>{}</td></tr></table>\n<details><summary>The SAML Response XML</summary><pre>{}</pre></details>\n<p><a href=\"/flex\">Back</a></p>",
                if v.response_signed { "Response signed" } else { "Assertion signed" },
                escape(&s.entity_id),
                escape(&s.acs_url),
                match &v.in_response_to {
                    Some(i) => format!("in response to <code>{}</code>", escape(i)),
                    None => "IdP-initiated".to_string(),
                },
                escape(&v.name_id),
                escape(relay),
                escape(v.authn_instant.as_deref().unwrap_or("")),
                escape(&xml)
            );
            app_page(StatusCode::OK, "Flex: signed in", &body, "'self'")
        }
        Err(e) => {
            let body = format!(
                "<h1>Flex rejected the Response</h1><p>{}</p><p><a href=\"/flex\">Back</a></p>",
                escape(&e.to_string())
            );
            app_page(StatusCode::BAD_REQUEST, "Flex: rejected", &body, "'self'")
        }
    }
}
