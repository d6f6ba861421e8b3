//! The SAML Response flexgate sends to a service provider, written directly in canonical form.
//!
//! Layout (SAML core 2.0 §3.3.3 and §2.3.3), one Assertion, no encryption:
//! ```text
//! samlp:Response [Destination ID InResponseTo? IssueInstant Version]
//!   saml:Issuer                      ← Response signature goes right after it
//!   samlp:Status/samlp:StatusCode
//!   saml:Assertion [ID IssueInstant Version]
//!     saml:Issuer                    ← Assertion signature goes right after it
//!     saml:Subject: NameID, bearer SubjectConfirmation(Data InResponseTo? NotOnOrAfter Recipient)
//!     saml:Conditions [NotBefore NotOnOrAfter]/AudienceRestriction/Audience
//!     saml:AuthnStatement [AuthnInstant SessionIndex]/AuthnContext/AuthnContextClassRef
//!     saml:AttributeStatement: Attribute [Name NameFormat=basic]/AttributeValue*
//! ```
//! Each element in the `saml` namespace that sits directly in the Response declares `xmlns:saml`
//! itself: that is where exclusive c14n puts the declaration, so the text written here is the
//! text that is digested, for the Response as for the Assertion alone.

use super::ns;
use super::xml::CanonWriter;
use crate::clock::{saml_time, IdGen};
use chrono::{DateTime, Duration, Utc};

/// Everything a Response says, already decided (who, for whom, what).
#[derive(Debug, Clone)]
pub struct ResponseParams<'a> {
    /// The IdP's entity id.
    pub issuer: &'a str,
    /// The SP's ACS URL: the Response's `Destination` and the `Recipient`.
    pub destination: &'a str,
    /// The SP's entity id, the only `Audience`.
    pub audience: &'a str,
    /// The AuthnRequest's ID; `None` for IdP-initiated login.
    pub in_response_to: Option<&'a str>,
    pub name_id: &'a str,
    pub name_id_format: &'a str,
    /// When the person authenticated at the upstream (`auth_time`).
    pub authn_instant: DateTime<Utc>,
    pub authn_context_class: &'a str,
    /// `(name, values)` in the order they are written.
    pub attributes: &'a [(String, Vec<String>)],
    /// How long the assertion may be used (`NotOnOrAfter` = now + lifetime).
    pub lifetime: Duration,
    /// How far `NotBefore` is backdated for SP clocks that run behind.
    pub skew: Duration,
}

/// An unsigned Response and where its signatures go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedResponse {
    pub xml: String,
    pub response_id: String,
    pub assertion_id: String,
    /// Byte offset right after the Response's `</saml:Issuer>`.
    pub response_signature_at: usize,
    /// Byte range of the `<saml:Assertion>` element.
    pub assertion: std::ops::Range<usize>,
    /// Byte offset right after the Assertion's `</saml:Issuer>`.
    pub assertion_signature_at: usize,
}

/// A Response that carries only a status (no assertion), e.g. `Responder/NoPassive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedStatusResponse {
    pub xml: String,
    pub response_id: String,
    pub response_signature_at: usize,
}

fn write_issuer(w: &mut CanonWriter, issuer: &str) {
    w.leaf("saml:Issuer", &[("saml", ns::SAML)], &[], issuer);
}

fn write_status(w: &mut CanonWriter, top: &str, second: Option<&str>, message: Option<&str>) {
    w.start("samlp:Status", &[], &[]);
    w.start("samlp:StatusCode", &[], &[("Value", top)]);
    if let Some(second) = second {
        w.start("samlp:StatusCode", &[], &[("Value", second)]);
        w.end("samlp:StatusCode");
    }
    w.end("samlp:StatusCode");
    if let Some(message) = message {
        w.leaf("samlp:StatusMessage", &[], &[], message);
    }
    w.end("samlp:Status");
}

fn response_start(
    w: &mut CanonWriter,
    id: &str,
    destination: &str,
    in_response_to: Option<&str>,
    issue_instant: &str,
) {
    let mut attrs = vec![
        ("Destination", destination),
        ("ID", id),
        ("IssueInstant", issue_instant),
        ("Version", "2.0"),
    ];
    if let Some(irt) = in_response_to {
        attrs.push(("InResponseTo", irt));
    }
    w.start("samlp:Response", &[("samlp", ns::SAMLP)], &attrs);
}

/// Builds a successful Response with one Assertion. Pure: time and IDs come from the caller.
pub fn build(p: &ResponseParams<'_>, now: DateTime<Utc>, ids: &dyn IdGen) -> UnsignedResponse {
    let response_id = ids.saml_id();
    let assertion_id = ids.saml_id();
    let session_index = ids.saml_id();
    let instant = saml_time(now);
    let not_on_or_after = saml_time(now + p.lifetime);

    let mut w = CanonWriter::with_capacity(4096);
    response_start(
        &mut w,
        &response_id,
        p.destination,
        p.in_response_to,
        &instant,
    );
    write_issuer(&mut w, p.issuer);
    let response_signature_at = w.len();
    write_status(&mut w, ns::STATUS_SUCCESS, None, None);

    let assertion_start = w.len();
    w.start(
        "saml:Assertion",
        &[("saml", ns::SAML)],
        &[
            ("ID", &assertion_id),
            ("IssueInstant", &instant),
            ("Version", "2.0"),
        ],
    );
    w.leaf("saml:Issuer", &[], &[], p.issuer);
    let assertion_signature_at = w.len();
    write_subject(&mut w, p, &not_on_or_after);
    write_conditions(&mut w, p, &saml_time(now - p.skew), &not_on_or_after);
    write_authn_statement(&mut w, p, &session_index);
    write_attributes(&mut w, p.attributes);
    w.end("saml:Assertion");
    let assertion_end = w.len();
    w.end("samlp:Response");

    UnsignedResponse {
        xml: w.finish(),
        response_id,
        assertion_id,
        response_signature_at,
        assertion: assertion_start..assertion_end,
        assertion_signature_at,
    }
}

/// `<saml:Subject>`: the NameID and its bearer confirmation (recipient, expiry, request).
fn write_subject(w: &mut CanonWriter, p: &ResponseParams<'_>, not_on_or_after: &str) {
    w.start("saml:Subject", &[], &[]);
    w.leaf(
        "saml:NameID",
        &[],
        &[("Format", p.name_id_format)],
        p.name_id,
    );
    w.start(
        "saml:SubjectConfirmation",
        &[],
        &[("Method", ns::CM_BEARER)],
    );
    let mut scd = vec![
        ("NotOnOrAfter", not_on_or_after),
        ("Recipient", p.destination),
    ];
    if let Some(irt) = p.in_response_to {
        scd.push(("InResponseTo", irt));
    }
    w.start("saml:SubjectConfirmationData", &[], &scd);
    w.end("saml:SubjectConfirmationData");
    w.end("saml:SubjectConfirmation");
    w.end("saml:Subject");
}

/// `<saml:Conditions>`: the validity window and the one audience.
fn write_conditions(
    w: &mut CanonWriter,
    p: &ResponseParams<'_>,
    not_before: &str,
    not_on_or_after: &str,
) {
    w.start(
        "saml:Conditions",
        &[],
        &[("NotBefore", not_before), ("NotOnOrAfter", not_on_or_after)],
    );
    w.start("saml:AudienceRestriction", &[], &[]);
    w.leaf("saml:Audience", &[], &[], p.audience);
    w.end("saml:AudienceRestriction");
    w.end("saml:Conditions");
}

/// `<saml:AuthnStatement>`: when and how the person signed in.
fn write_authn_statement(w: &mut CanonWriter, p: &ResponseParams<'_>, session_index: &str) {
    w.start(
        "saml:AuthnStatement",
        &[],
        &[
            ("AuthnInstant", &saml_time(p.authn_instant)),
            ("SessionIndex", session_index),
        ],
    );
    w.start("saml:AuthnContext", &[], &[]);
    w.leaf("saml:AuthnContextClassRef", &[], &[], p.authn_context_class);
    w.end("saml:AuthnContext");
    w.end("saml:AuthnStatement");
}

/// `<saml:AttributeStatement>` (none when there are no attributes), basic name format.
fn write_attributes(w: &mut CanonWriter, attributes: &[(String, Vec<String>)]) {
    if attributes.is_empty() {
        return;
    }
    w.start("saml:AttributeStatement", &[], &[]);
    for (name, values) in attributes {
        w.start(
            "saml:Attribute",
            &[],
            &[("Name", name), ("NameFormat", ns::ATTRNAME_BASIC)],
        );
        for v in values {
            w.leaf("saml:AttributeValue", &[], &[], v);
        }
        w.end("saml:Attribute");
    }
    w.end("saml:AttributeStatement");
}

/// Builds a Response that carries only a status, for errors SAML answers with a Response
/// (`NoPassive`, `NoAuthnContext`, ...).
#[allow(clippy::too_many_arguments)]
pub fn build_status(
    issuer: &str,
    destination: &str,
    in_response_to: Option<&str>,
    status: &str,
    second_status: Option<&str>,
    message: Option<&str>,
    now: DateTime<Utc>,
    ids: &dyn IdGen,
) -> UnsignedStatusResponse {
    let response_id = ids.saml_id();
    let mut w = CanonWriter::with_capacity(1024);
    response_start(
        &mut w,
        &response_id,
        destination,
        in_response_to,
        &saml_time(now),
    );
    write_issuer(&mut w, issuer);
    let response_signature_at = w.len();
    write_status(&mut w, status, second_status, message);
    w.end("samlp:Response");
    UnsignedStatusResponse {
        xml: w.finish(),
        response_id,
        response_signature_at,
    }
}
