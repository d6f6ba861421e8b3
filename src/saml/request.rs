//! AuthnRequests: decode (HTTP-Redirect: base64 + raw DEFLATE; HTTP-POST: base64), parse
//! (namespace-aware, no DTD), and validate against the security floor. Pure: no I/O, no store;
//! the single-use check of the request ID is `login`'s job.

use super::ns;
use super::verify::decode_b64;
use super::xml_input::{self, child, children, Exceeded, XmlError};
use super::{attr, text_content};
use chrono::{DateTime, Duration, Utc};
use roxmltree::{Document, Node};

/// Size limits applied before and after inflating.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest `SAMLRequest` accepted, as received (base64).
    pub max_encoded: usize,
    /// Longest AuthnRequest XML accepted after base64 and inflate. The default, 16 KiB, is eight
    /// times the largest request Flex sends and twice a signed HTTP-POST request carrying a
    /// 4096-bit certificate; the shape bounds are `xml_input::AUTHN_REQUEST`.
    pub max_xml: usize,
    /// Longest `RelayState` accepted (SAMLBind says 80 bytes; Flex sends more, so the default is larger).
    pub max_relay_state: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_encoded: 32 * 1024,
            max_xml: 16 * 1024,
            max_relay_state: 2048,
        }
    }
}

/// Why an AuthnRequest was refused. Every message names the cause; none contains a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the request has no SAMLRequest parameter")]
    MissingRequest,
    #[error("SAMLRequest is {0} bytes long, over the limit of {1}")]
    TooLarge(usize, usize),
    #[error("SAMLRequest is not valid base64")]
    Base64,
    #[error("SAMLRequest is not valid raw DEFLATE data (HTTP-Redirect binding)")]
    Deflate,
    #[error("the inflated AuthnRequest is over the limit of {0} bytes")]
    InflatedTooLarge(usize),
    #[error("the AuthnRequest is not UTF-8 text")]
    Utf8,
    #[error("the AuthnRequest contains a DOCTYPE, which SAML forbids")]
    Doctype,
    #[error("the AuthnRequest is not well-formed XML: {0}")]
    Xml(String),
    #[error("the AuthnRequest {0}; flexgate refuses it unread")]
    Bounds(Exceeded),
    #[error("{0}")]
    Parameter(String),
    #[error("the AuthnRequest has two Issuer elements")]
    TwoIssuers,
    #[error("the message is a {0}, not an AuthnRequest")]
    NotAuthnRequest(String),
    #[error("the AuthnRequest has Version {0:?}; only SAML 2.0 is supported")]
    Version(String),
    #[error("the AuthnRequest has no usable ID (an xs:ID: a letter or _ first, then letters, digits, ., -, _)")]
    BadId,
    #[error("the AuthnRequest has no Issuer, so the service provider is unknown")]
    MissingIssuer,
    #[error("the AuthnRequest IssueInstant {0:?} is not a valid time")]
    BadIssueInstant(String),
    #[error(
        "the AuthnRequest was issued at {0}, too long ago (limit {1} s); start the login again"
    )]
    Stale(String, i64),
    #[error("the AuthnRequest was issued at {0}, in the future; check the clocks of the service provider and of flexgate")]
    Future(String),
    #[error("the service provider {0:?} is not configured in flexgate; add an [[sp]] with this entity id")]
    UnknownIssuer(String),
    #[error("the AuthnRequest asks for the response at {found:?}, but the service provider's configured ACS URL is {expected:?}")]
    AcsMismatch { found: String, expected: String },
    #[error("the AuthnRequest asks for AssertionConsumerServiceIndex {0}; flexgate knows one ACS per service provider (index 0 or 1)")]
    AcsIndex(u32),
    #[error("the AuthnRequest's AssertionConsumerServiceIndex {0:?} is not an unsigned number")]
    BadAcsIndex(String),
    #[error("the AuthnRequest is addressed to {found:?}, not to this identity provider's SSO URL {expected:?}")]
    Destination { found: String, expected: String },
    #[error("the AuthnRequest asks for the {0} binding; flexgate answers with HTTP-POST only")]
    ProtocolBinding(String),
    #[error("the AuthnRequest ID {0:?} was already used; start the login again")]
    Replay(String),
    #[error("RelayState is {0} bytes long, over the limit of {1}")]
    RelayStateTooLong(usize, usize),
    #[error("the AuthnRequest asks for NameID format {0:?}; flexgate issues emailAddress")]
    NameIdPolicy(String),
    #[error("the service provider {0:?} must sign its AuthnRequests (want_signed_requests), and this one is unsigned")]
    Unsigned(String),
    #[error("the AuthnRequest signature is not valid: {0}")]
    BadSignature(String),
    #[error("the AuthnRequest is signed with {0:?}, which is not allowed (rsa-sha256/384/512; rsa-sha1 only with allow_sha1_requests)")]
    SigAlg(String),
}

impl From<XmlError> for RequestError {
    fn from(e: XmlError) -> Self {
        match e {
            XmlError::Doctype => RequestError::Doctype,
            XmlError::Syntax(m) => RequestError::Xml(m),
            XmlError::Exceeded(b) => RequestError::Bounds(b),
        }
    }
}

/// `Comparison` of a `RequestedAuthnContext`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    Exact,
    Minimum,
    Maximum,
    Better,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestedAuthnContext {
    pub comparison: Comparison,
    pub class_refs: Vec<String>,
}

/// The parts of an AuthnRequest flexgate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnRequest {
    pub id: String,
    pub issue_instant: DateTime<Utc>,
    pub issuer: String,
    pub destination: Option<String>,
    pub acs_url: Option<String>,
    pub acs_index: Option<u32>,
    pub protocol_binding: Option<String>,
    pub force_authn: bool,
    pub is_passive: bool,
    pub name_id_format: Option<String>,
    pub requested_authn_context: Option<RequestedAuthnContext>,
    /// The request carries an enveloped `ds:Signature` (checked by the caller when required).
    pub has_signature: bool,
}

/// HTTP-Redirect: base64, then raw DEFLATE, both bounded.
pub fn decode_redirect(saml_request: &str, limits: &Limits) -> Result<String, RequestError> {
    let raw = decode_base64(saml_request, limits)?;
    inflate(&raw, limits)
}

/// HTTP-POST: base64 (SAMLBind 3.5.4). Some SP libraries (node-saml) DEFLATE it anyway; a
/// body that is not XML after base64 is inflated, with the same bounds as HTTP-Redirect.
pub fn decode_post(saml_request: &str, limits: &Limits) -> Result<String, RequestError> {
    let raw = decode_base64(saml_request, limits)?;
    let looks_like_xml = raw
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'<')
        || raw.starts_with(&[0xEF, 0xBB, 0xBF]);
    if !looks_like_xml {
        return inflate(&raw, limits);
    }
    if raw.len() > limits.max_xml {
        return Err(RequestError::InflatedTooLarge(limits.max_xml));
    }
    String::from_utf8(raw).map_err(|_| RequestError::Utf8)
}

/// Raw DEFLATE (RFC 1951, the HTTP-Redirect binding) into at most `limits.max_xml` bytes.
/// `miniz_oxide`'s one-shot decoder writes straight into the output, which doubles as its
/// window: no 32 KB read buffer and window to allocate and zero per request, as `flate2`'s
/// streaming reader had (issue 21).
fn inflate(raw: &[u8], limits: &Limits) -> Result<String, RequestError> {
    use miniz_oxide::inflate::{decompress_to_vec_with_limit, TINFLStatus};
    let out = decompress_to_vec_with_limit(raw, limits.max_xml).map_err(|e| match e.status {
        TINFLStatus::HasMoreOutput => RequestError::InflatedTooLarge(limits.max_xml),
        _ => RequestError::Deflate,
    })?;
    String::from_utf8(out).map_err(|_| RequestError::Utf8)
}

fn decode_base64(s: &str, limits: &Limits) -> Result<Vec<u8>, RequestError> {
    if s.is_empty() {
        return Err(RequestError::MissingRequest);
    }
    if s.len() > limits.max_encoded {
        return Err(RequestError::TooLarge(s.len(), limits.max_encoded));
    }
    decode_b64(s).ok_or(RequestError::Base64)
}

fn xs_bool(v: Option<&str>) -> bool {
    matches!(v.map(str::trim), Some("true") | Some("1"))
}

/// Parses an AuthnRequest within `xml_input::AUTHN_REQUEST`'s bounds. DOCTYPEs (and so entity
/// declarations) are refused outright.
pub fn parse_document(xml: &str) -> Result<Document<'_>, RequestError> {
    Ok(xml_input::parse_bounded(xml, &xml_input::AUTHN_REQUEST)?)
}

/// Parses and reads an AuthnRequest.
pub fn parse(xml: &str) -> Result<AuthnRequest, RequestError> {
    read(&parse_document(xml)?)
}

/// The root must be `samlp:AuthnRequest`, version 2.0.
fn check_root(root: Node) -> Result<(), RequestError> {
    if !xml_input::is(root, ns::SAMLP, "AuthnRequest") {
        let n = root.tag_name();
        return Err(RequestError::NotAuthnRequest(match n.namespace() {
            Some(u) => format!("{{{u}}}{}", n.name()),
            None => n.name().to_string(),
        }));
    }
    let version = attr(root, "Version").unwrap_or("");
    if version != "2.0" {
        return Err(RequestError::Version(version.to_string()));
    }
    Ok(())
}

/// The one non-empty `saml:Issuer`.
fn issuer(root: Node) -> Result<String, RequestError> {
    let mut issuers = children(root, ns::SAML, "Issuer");
    let issuer = issuers
        .next()
        .map(|n| text_content(n).trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or(RequestError::MissingIssuer)?;
    if issuers.next().is_some() {
        return Err(RequestError::TwoIssuers);
    }
    Ok(issuer)
}

fn acs_index(root: Node) -> Result<Option<u32>, RequestError> {
    attr(root, "AssertionConsumerServiceIndex")
        .map(|v| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| RequestError::BadAcsIndex(v.to_string()))
        })
        .transpose()
}

fn requested_authn_context(root: Node) -> Option<RequestedAuthnContext> {
    child(root, ns::SAMLP, "RequestedAuthnContext").map(|n| {
        let comparison = match attr(n, "Comparison").unwrap_or("exact") {
            "minimum" => Comparison::Minimum,
            "maximum" => Comparison::Maximum,
            "better" => Comparison::Better,
            _ => Comparison::Exact,
        };
        let class_refs = children(n, ns::SAML, "AuthnContextClassRef")
            .map(|c| text_content(c).trim().to_string())
            .collect();
        RequestedAuthnContext {
            comparison,
            class_refs,
        }
    })
}

/// Reads the parts of a parsed AuthnRequest flexgate uses.
pub fn read(doc: &Document) -> Result<AuthnRequest, RequestError> {
    let root = doc.root_element();
    check_root(root)?;
    let id = attr(root, "ID").unwrap_or("");
    if !is_ncname(id) || id.len() > 256 {
        return Err(RequestError::BadId);
    }
    let instant = attr(root, "IssueInstant").unwrap_or("");
    let issue_instant = DateTime::parse_from_rfc3339(instant)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| RequestError::BadIssueInstant(instant.to_string()))?;
    let issuer = issuer(root)?;
    let acs_index = acs_index(root)?;
    Ok(AuthnRequest {
        id: id.to_string(),
        issue_instant,
        issuer,
        destination: attr(root, "Destination").map(str::to_string),
        acs_url: root
            .attribute("AssertionConsumerServiceURL")
            .map(str::to_string),
        acs_index,
        protocol_binding: attr(root, "ProtocolBinding").map(str::to_string),
        force_authn: xs_bool(attr(root, "ForceAuthn")),
        is_passive: xs_bool(attr(root, "IsPassive")),
        name_id_format: child(root, ns::SAMLP, "NameIDPolicy")
            .and_then(|n| attr(n, "Format"))
            .map(str::to_string),
        requested_authn_context: requested_authn_context(root),
        has_signature: child(root, ns::DS, "Signature").is_some(),
    })
}

/// What a request is checked against.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// This IdP's SSO URL (`{public_url}/saml/sso`).
    pub sso_url: &'a str,
    pub now: DateTime<Utc>,
    /// How old an IssueInstant may be.
    pub max_age: Duration,
    /// Allowed clock difference in either direction.
    pub skew: Duration,
}

fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// Checks a parsed request against the service provider's configured ACS URL and the policy.
/// The caller has found the SP by `req.issuer` (unknown issuers are refused there).
pub fn validate(req: &AuthnRequest, sp_acs: &str, policy: &Policy<'_>) -> Result<(), RequestError> {
    if let Some(acs) = &req.acs_url {
        if acs != sp_acs {
            return Err(RequestError::AcsMismatch {
                found: acs.clone(),
                expected: sp_acs.to_string(),
            });
        }
    } else if let Some(i) = req.acs_index {
        if i > 1 {
            return Err(RequestError::AcsIndex(i));
        }
    }
    if let Some(dest) = &req.destination {
        // Flex Console's "Single Sign-On URL" may carry `?connection=…`, which the SP copies into
        // Destination; the query does not change where the request is delivered.
        if without_query(dest) != policy.sso_url {
            return Err(RequestError::Destination {
                found: dest.clone(),
                expected: policy.sso_url.to_string(),
            });
        }
    }
    if let Some(b) = &req.protocol_binding {
        if b != ns::BINDING_POST {
            return Err(RequestError::ProtocolBinding(b.clone()));
        }
    }
    if let Some(f) = &req.name_id_format {
        let ok = [
            ns::NAMEID_EMAIL,
            ns::NAMEID_UNSPECIFIED,
            "urn:oasis:names:tc:SAML:2.0:nameid-format:unspecified",
        ];
        if !ok.contains(&f.as_str()) {
            return Err(RequestError::NameIdPolicy(f.clone()));
        }
    }
    let instant = crate::clock::saml_time(req.issue_instant);
    if req.issue_instant > policy.now + policy.skew {
        return Err(RequestError::Future(instant));
    }
    if req.issue_instant < policy.now - policy.max_age - policy.skew {
        return Err(RequestError::Stale(instant, policy.max_age.num_seconds()));
    }
    Ok(())
}

/// Checks a RelayState's length.
pub fn check_relay_state(relay_state: Option<&str>, limits: &Limits) -> Result<(), RequestError> {
    match relay_state {
        Some(r) if r.len() > limits.max_relay_state => Err(RequestError::RelayStateTooLong(
            r.len(),
            limits.max_relay_state,
        )),
        _ => Ok(()),
    }
}

/// The raw (still URL-encoded) value of `name` in a query string; `Err` if it appears twice.
fn raw_param<'q>(query: &'q str, name: &str) -> Result<Option<&'q str>, RequestError> {
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            if found.is_some() {
                return Err(RequestError::BadSignature(format!(
                    "the parameter {name} appears twice"
                )));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn sig_digest(alg: &str, allow_sha1: bool) -> Result<openssl::hash::MessageDigest, RequestError> {
    use openssl::hash::MessageDigest;
    match alg {
        ns::RSA_SHA256 => Ok(MessageDigest::sha256()),
        ns::RSA_SHA384 => Ok(MessageDigest::sha384()),
        ns::RSA_SHA512 => Ok(MessageDigest::sha512()),
        ns::RSA_SHA1 if allow_sha1 => Ok(MessageDigest::sha1()),
        other => Err(RequestError::SigAlg(other.to_string())),
    }
}

/// Does an HTTP-Redirect query carry a signature?
pub fn redirect_is_signed(raw_query: &str) -> bool {
    raw_query.split('&').any(|p| p.starts_with("Signature="))
}

/// Verifies an HTTP-Redirect signature (SAMLBind 3.4.4.1) over the query bytes exactly as
/// received: `SAMLRequest=…[&RelayState=…]&SigAlg=…`, still URL-encoded, in that order.
pub fn verify_redirect_signature(
    raw_query: &str,
    keys: &[openssl::pkey::PKey<openssl::pkey::Public>],
    allow_sha1: bool,
) -> Result<(), RequestError> {
    let req = raw_param(raw_query, "SAMLRequest")?.ok_or(RequestError::MissingRequest)?;
    let relay = raw_param(raw_query, "RelayState")?;
    let sig_alg = raw_param(raw_query, "SigAlg")?
        .ok_or_else(|| RequestError::BadSignature("Signature without SigAlg".into()))?;
    let signature = raw_param(raw_query, "Signature")?
        .ok_or_else(|| RequestError::BadSignature("no Signature parameter".into()))?;
    let md = sig_digest(&url_decode(sig_alg), allow_sha1)?;
    let mut signed = format!("SAMLRequest={req}");
    if let Some(r) = relay {
        signed.push_str("&RelayState=");
        signed.push_str(r);
    }
    signed.push_str("&SigAlg=");
    signed.push_str(sig_alg);
    let sig = decode_b64(&url_decode(signature))
        .ok_or_else(|| RequestError::BadSignature("Signature is not base64".into()))?;
    for key in keys {
        let ok = openssl::sign::Verifier::new(md, key)
            .and_then(|mut v| {
                v.update(signed.as_bytes())?;
                v.verify(&sig)
            })
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
    }
    Err(RequestError::BadSignature(
        "it does not verify with the service provider's request_cert".into(),
    ))
}

/// Verifies the enveloped XML signature of an HTTP-POST AuthnRequest: it must be a direct child
/// of the root AuthnRequest and cover the root by its ID; IDs must be unique in the document, so
/// a signed element cannot be smuggled in beside an unsigned root.
pub fn verify_post_signature(
    doc: &Document,
    keys: &[openssl::pkey::PKey<openssl::pkey::Public>],
    allow_sha1: bool,
) -> Result<(), RequestError> {
    use super::verify::{check_unique_ids, verify_enveloped, AlgPolicy, VerifyError};
    check_unique_ids(doc).map_err(|e| RequestError::BadSignature(e.to_string()))?;
    match verify_enveloped(
        doc.root_element(),
        keys,
        AlgPolicy { allow_sha1 },
        "AuthnRequest",
    ) {
        Ok(()) => Ok(()),
        Err(VerifyError::Algorithm(a)) => Err(RequestError::SigAlg(a)),
        Err(e) => Err(RequestError::BadSignature(e.to_string())),
    }
}

/// `xs:NCName`, as SAML IDs must be: it is echoed as `InResponseTo`, which SPs check against the
/// schema (a letter or `_` first, then letters, digits, `.`, `-`, `_`; no `:`).
pub fn is_ncname(id: &str) -> bool {
    let mut chars = id.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '\u{b7}'))
}
