//! Verifying SAML Responses made by any IdP: enveloped XML-DSig signatures checked against
//! trusted keys only (a certificate carried in the document is never trusted), then the SAML
//! rules an SP applies (status, destination, recipient, audience, time window, InResponseTo).
//!
//! Used by `flexgate verify` (QA), the demo's Flex stand-in, and for signed AuthnRequests.
//! Signature wrapping is defeated by construction: the values returned are read from the very
//! element whose signature was checked, IDs must be unique in the document, and exactly one
//! assertion is accepted.

use super::c14n::{self, Options};
use super::ns;
use super::xml_input::{self, child, children, Exceeded, XmlError};
use super::{attr, text_content};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use roxmltree::{Document, Node};
use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("the document has a DOCTYPE; SAML messages must not")]
    Doctype,
    #[error("the document {0}; flexgate refuses it unread")]
    Bounds(Exceeded),
    #[error("the root element is {0}, expected {1}")]
    WrongRoot(String, String),
    #[error("no signature found on the {0}")]
    Unsigned(&'static str),
    #[error("the signature is malformed: {0}")]
    Malformed(String),
    #[error("the signature uses {0}, which is not allowed")]
    Algorithm(String),
    #[error("the digest does not match: the signed content was changed")]
    Digest,
    #[error("the signature value does not verify with the trusted certificate")]
    BadSignature,
    #[error("the ID {0} appears more than once in the document")]
    DuplicateId(String),
    #[error("expected exactly one Assertion, found {0}")]
    AssertionCount(usize),
    #[error("the Response carries an EncryptedAssertion, which flexgate does not accept")]
    Encrypted,
    #[error("status is {0}, not Success")]
    Status(String),
    #[error("{what} is {found:?}, expected {expected:?}")]
    Mismatch {
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0}")]
    Time(String),
}

/// Which signature algorithms are accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlgPolicy {
    /// RSA-SHA1 / SHA-1 digests are refused unless this is set.
    pub allow_sha1: bool,
}

impl From<XmlError> for VerifyError {
    fn from(e: XmlError) -> Self {
        match e {
            XmlError::Doctype => VerifyError::Doctype,
            XmlError::Syntax(m) => VerifyError::Xml(m),
            XmlError::Exceeded(b) => VerifyError::Bounds(b),
        }
    }
}

fn inclusive_prefixes(method: Node) -> Vec<String> {
    method
        .children()
        .find(|c| c.is_element() && c.tag_name().name() == "InclusiveNamespaces")
        .and_then(|n| attr(n, "PrefixList"))
        .map(|l| {
            l.split_whitespace()
                .map(|p| {
                    if p == "#default" {
                        String::new()
                    } else {
                        p.to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_c14n(alg: &str) -> Option<bool> {
    match alg {
        ns::EXC_C14N => Some(false),
        ns::EXC_C14N_WITH_COMMENTS => Some(true),
        _ => None,
    }
}

/// Parses a SAML message within `xml_input::RESPONSE`'s bounds; no DOCTYPE.
pub fn parse(xml: &str) -> Result<Document<'_>, VerifyError> {
    Ok(xml_input::parse_bounded(xml, &xml_input::RESPONSE)?)
}

/// Refuses documents in which an `ID` attribute value appears twice.
pub fn check_unique_ids(doc: &Document) -> Result<(), VerifyError> {
    let mut seen = std::collections::HashSet::new();
    for n in doc.descendants().filter(|n| n.is_element()) {
        if let Some(id) = attr(n, "ID") {
            if !seen.insert(id) {
                return Err(VerifyError::DuplicateId(id.to_string()));
            }
        }
    }
    Ok(())
}

/// Verifies the enveloped signature that is a direct child of `element` and covers it by ID.
///
/// Stages, in the order their failures are reported: the one Signature → its SignedInfo's
/// algorithms → the one Reference, pointing at `element` → its transforms → the digest of
/// `element` → the signature over SignedInfo by one of `keys`.
pub fn verify_enveloped(
    element: Node,
    keys: &[PKey<Public>],
    policy: AlgPolicy,
    what: &'static str,
) -> Result<(), VerifyError> {
    let (sig, signed_info, method) = signed_digest(element, policy, what)?;
    check_signature_value(sig, signed_info, &method, keys)
}

/// Every stage of [`verify_enveloped`] but the last: the signature's structure and algorithms,
/// and the digest of `element`. For a Response whose SignatureValue was kept out on purpose
/// (a login trace), this still shows its content is what was signed.
pub fn verify_enveloped_digest(
    element: Node,
    policy: AlgPolicy,
    what: &'static str,
) -> Result<(), VerifyError> {
    signed_digest(element, policy, what).map(|_| ())
}

fn signed_digest<'a, 'i>(
    element: Node<'a, 'i>,
    policy: AlgPolicy,
    what: &'static str,
) -> Result<(Node<'a, 'i>, Node<'a, 'i>, SignatureMethod<'a, 'i>), VerifyError> {
    let sig = the_signature(element, what)?;
    let signed_info = child(sig, ns::DS, "SignedInfo").ok_or_else(|| malformed("no SignedInfo"))?;
    let method = signature_method(signed_info, policy)?;
    let reference = the_reference(signed_info, element)?;
    let transforms = reference_transforms(reference)?;
    check_digest(element, sig, reference, &transforms, policy)?;
    Ok((sig, signed_info, method))
}

fn malformed(m: &str) -> VerifyError {
    VerifyError::Malformed(m.to_string())
}

/// The single `ds:Signature` child of `element`.
fn the_signature<'a, 'i>(
    element: Node<'a, 'i>,
    what: &'static str,
) -> Result<Node<'a, 'i>, VerifyError> {
    let mut sigs = children(element, ns::DS, "Signature");
    let sig = sigs.next().ok_or(VerifyError::Unsigned(what))?;
    if sigs.next().is_some() {
        return Err(VerifyError::Malformed(format!(
            "the {what} has two signatures"
        )));
    }
    Ok(sig)
}

/// SignedInfo's canonicalisation and signature algorithms.
struct SignatureMethod<'a, 'i> {
    c14n_method: Node<'a, 'i>,
    with_comments: bool,
    digest: MessageDigest,
}

fn signature_method<'a, 'i>(
    signed_info: Node<'a, 'i>,
    policy: AlgPolicy,
) -> Result<SignatureMethod<'a, 'i>, VerifyError> {
    let c14n_method = child(signed_info, ns::DS, "CanonicalizationMethod")
        .ok_or_else(|| malformed("no CanonicalizationMethod"))?;
    let c14n_alg = attr(c14n_method, "Algorithm").unwrap_or("");
    let with_comments =
        is_c14n(c14n_alg).ok_or_else(|| VerifyError::Algorithm(c14n_alg.to_string()))?;
    let sig_alg = child(signed_info, ns::DS, "SignatureMethod")
        .and_then(|n| attr(n, "Algorithm"))
        .ok_or_else(|| malformed("no SignatureMethod"))?;
    let digest = match sig_alg {
        ns::RSA_SHA256 => MessageDigest::sha256(),
        ns::RSA_SHA384 => MessageDigest::sha384(),
        ns::RSA_SHA512 => MessageDigest::sha512(),
        ns::RSA_SHA1 if policy.allow_sha1 => MessageDigest::sha1(),
        other => return Err(VerifyError::Algorithm(other.to_string())),
    };
    Ok(SignatureMethod {
        c14n_method,
        with_comments,
        digest,
    })
}

/// The single Reference of SignedInfo; it must point at `element` by its ID.
fn the_reference<'a, 'i>(
    signed_info: Node<'a, 'i>,
    element: Node,
) -> Result<Node<'a, 'i>, VerifyError> {
    let mut refs = children(signed_info, ns::DS, "Reference");
    let reference = refs.next().ok_or_else(|| malformed("no Reference"))?;
    if refs.next().is_some() {
        return Err(malformed("more than one Reference"));
    }
    let id = attr(element, "ID").ok_or(VerifyError::Missing("the signed element's ID"))?;
    let uri = attr(reference, "URI").unwrap_or("");
    if uri.strip_prefix('#') != Some(id) {
        return Err(VerifyError::Mismatch {
            what: "the signature's Reference URI",
            found: uri.to_string(),
            expected: format!("#{id}"),
        });
    }
    Ok(reference)
}

/// The Reference's canonicalisation: comments or not, and the inclusive prefixes.
struct Transforms {
    with_comments: bool,
    inclusive_prefixes: Vec<String>,
}

/// Only the enveloped-signature transform (required) and exclusive c14n are accepted.
fn reference_transforms(reference: Node) -> Result<Transforms, VerifyError> {
    let mut out = Transforms {
        with_comments: false,
        inclusive_prefixes: Vec::new(),
    };
    let mut enveloped = false;
    if let Some(transforms) = child(reference, ns::DS, "Transforms") {
        for t in children(transforms, ns::DS, "Transform") {
            let alg = attr(t, "Algorithm").unwrap_or("");
            if alg == ns::ENVELOPED {
                enveloped = true;
            } else if let Some(c) = is_c14n(alg) {
                out.with_comments = c;
                out.inclusive_prefixes = inclusive_prefixes(t);
            } else {
                return Err(VerifyError::Algorithm(alg.to_string()));
            }
        }
    }
    if !enveloped {
        return Err(malformed(
            "the Reference lacks the enveloped-signature transform",
        ));
    }
    Ok(out)
}

/// The digest of `element`, canonicalised without its signature, must equal DigestValue.
fn check_digest(
    element: Node,
    sig: Node,
    reference: Node,
    transforms: &Transforms,
    policy: AlgPolicy,
) -> Result<(), VerifyError> {
    let digest_alg = child(reference, ns::DS, "DigestMethod")
        .and_then(|n| attr(n, "Algorithm"))
        .ok_or_else(|| malformed("no DigestMethod"))?;
    let dmd = match digest_alg {
        ns::SHA256 => MessageDigest::sha256(),
        ns::SHA384 => MessageDigest::sha384(),
        ns::SHA512 => MessageDigest::sha512(),
        ns::SHA1 if policy.allow_sha1 => MessageDigest::sha1(),
        other => return Err(VerifyError::Algorithm(other.to_string())),
    };
    let digest_value = child(reference, ns::DS, "DigestValue")
        .and_then(|n| n.text())
        .ok_or_else(|| malformed("no DigestValue"))?;
    let digest_value =
        decode_b64(digest_value).ok_or_else(|| malformed("DigestValue is not base64"))?;
    let canonical = c14n::canonicalize(
        element,
        &Options {
            with_comments: transforms.with_comments,
            inclusive_prefixes: &transforms.inclusive_prefixes,
            exclude: Some(sig.id()),
        },
    );
    let digest =
        openssl::hash::hash(dmd, canonical.as_bytes()).map_err(|e| malformed(&e.to_string()))?;
    if digest.as_ref() != digest_value.as_slice() {
        return Err(VerifyError::Digest);
    }
    Ok(())
}

/// SignatureValue must verify over the canonical SignedInfo with one of the trusted keys.
fn check_signature_value(
    sig: Node,
    signed_info: Node,
    method: &SignatureMethod,
    keys: &[PKey<Public>],
) -> Result<(), VerifyError> {
    let si_prefixes = inclusive_prefixes(method.c14n_method);
    let signed_info_c14n = c14n::canonicalize(
        signed_info,
        &Options {
            with_comments: method.with_comments,
            inclusive_prefixes: &si_prefixes,
            exclude: None,
        },
    );
    let value = child(sig, ns::DS, "SignatureValue")
        .and_then(|n| n.text())
        .ok_or_else(|| malformed("no SignatureValue"))?;
    let value = decode_b64(value).ok_or_else(|| malformed("SignatureValue is not base64"))?;
    let verifies = |key: &PKey<Public>| {
        openssl::sign::Verifier::new(method.digest, key)
            .and_then(|mut v| {
                v.update(signed_info_c14n.as_bytes())?;
                v.verify(&value)
            })
            .unwrap_or(false)
    };
    if keys.iter().any(verifies) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// Base64 as XML carries it: whitespace anywhere is ignored.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    B64.decode(clean).ok()
}

/// What an SP expects of a Response.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    pub audience: &'a str,
    /// The ACS URL, compared whole (query string included) with Destination and Recipient.
    pub recipient: &'a str,
    /// `Some(id)`: InResponseTo must equal it. `None`: IdP-initiated, InResponseTo must be absent.
    pub in_response_to: Option<&'a str>,
    /// The IdP's entity id, when known.
    pub issuer: Option<&'a str>,
    pub now: DateTime<Utc>,
    pub skew: Duration,
    pub require_response_signature: bool,
    pub require_assertion_signature: bool,
    pub policy: AlgPolicy,
}

/// The content of a verified Response.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifiedResponse {
    pub issuer: String,
    pub destination: String,
    pub in_response_to: Option<String>,
    pub response_signed: bool,
    pub assertion_signed: bool,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
    pub authn_instant: Option<String>,
    pub authn_context_class: Option<String>,
    pub not_before: Option<String>,
    pub not_on_or_after: Option<String>,
    pub audiences: Vec<String>,
    pub attributes: Vec<(String, Vec<String>)>,
}

fn text_of(n: Option<Node>) -> Option<String> {
    n.map(text_content)
}

fn parse_time(what: &'static str, s: &str) -> Result<DateTime<Utc>, VerifyError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| VerifyError::Time(format!("{what} {s:?} is not an xs:dateTime")))
}

fn expect_eq(what: &'static str, found: Option<&str>, expected: &str) -> Result<(), VerifyError> {
    match found {
        Some(f) if f == expected => Ok(()),
        Some(f) => Err(VerifyError::Mismatch {
            what,
            found: f.to_string(),
            expected: expected.to_string(),
        }),
        None => Err(VerifyError::Missing(what)),
    }
}

/// Verifies a SAML Response (XML text) as a careful SP would.
///
/// Stages, in the order their failures are reported: parse (bounded) with unique IDs → the one
/// Assertion → signatures → Response status, Destination, InResponseTo → Issuer → a bearer
/// SubjectConfirmation → Conditions → read the values, only from the verified Assertion.
pub fn verify_response(
    xml: &str,
    keys: &[PKey<Public>],
    exp: &Expectations<'_>,
) -> Result<VerifiedResponse, VerifyError> {
    let doc = parse(xml)?;
    check_unique_ids(&doc)?;
    let (root, assertion) = the_one_assertion(&doc)?;
    let (response_signed, assertion_signed) = check_signatures(root, assertion, keys, exp)?;
    check_status(root)?;
    let destination = attr(root, "Destination");
    expect_eq("the Response Destination", destination, exp.recipient)?;
    let in_response_to = attr(root, "InResponseTo");
    expect_in_response_to(
        "the Response InResponseTo",
        "the Response InResponseTo (IdP-initiated login expected)",
        exp.in_response_to,
        in_response_to,
    )?;
    let issuer = check_issuer(root, assertion, exp)?;
    let name_id = confirmed_name_id(assertion, exp)?;
    let conditions = check_conditions(assertion, exp)?;
    let authn = child(assertion, ns::SAML, "AuthnStatement");
    Ok(VerifiedResponse {
        issuer,
        destination: destination.unwrap_or("").to_string(),
        in_response_to: in_response_to.map(str::to_string),
        response_signed,
        assertion_signed,
        name_id: text_content(name_id),
        name_id_format: attr(name_id, "Format").map(str::to_string),
        session_index: authn
            .and_then(|a| attr(a, "SessionIndex"))
            .map(str::to_string),
        authn_instant: authn
            .and_then(|a| attr(a, "AuthnInstant"))
            .map(str::to_string),
        authn_context_class: authn
            .and_then(|a| child(a, ns::SAML, "AuthnContext"))
            .and_then(|c| child(c, ns::SAML, "AuthnContextClassRef"))
            .map(|c| text_content(c).trim().to_string()),
        not_before: conditions.not_before.map(str::to_string),
        not_on_or_after: conditions.not_on_or_after.map(str::to_string),
        audiences: conditions.audiences,
        attributes: attributes(assertion),
    })
}

/// The root must be a SAML 2.0 `samlp:Response` with exactly one, unencrypted, Assertion as a
/// direct child and no other Assertion anywhere in the document.
fn the_one_assertion<'a, 'i>(
    doc: &'a Document<'i>,
) -> Result<(Node<'a, 'i>, Node<'a, 'i>), VerifyError> {
    let root = doc.root_element();
    if root.tag_name().namespace() != Some(ns::SAMLP) || root.tag_name().name() != "Response" {
        return Err(VerifyError::WrongRoot(
            root.tag_name().name().to_string(),
            "samlp:Response".into(),
        ));
    }
    expect_eq("the Response Version", attr(root, "Version"), "2.0")?;
    if child(root, ns::SAML, "EncryptedAssertion").is_some() {
        return Err(VerifyError::Encrypted);
    }
    let assertions: Vec<Node> = children(root, ns::SAML, "Assertion").collect();
    let nested = doc
        .descendants()
        .filter(|n| {
            n.tag_name().namespace() == Some(ns::SAML) && n.tag_name().name() == "Assertion"
        })
        .count();
    if assertions.len() != 1 || nested != 1 {
        return Err(VerifyError::AssertionCount(nested.max(assertions.len())));
    }
    Ok((root, assertions[0]))
}

/// Checks whichever of the Response and the Assertion is signed, and that what `exp` requires is:
/// returns (Response signed, Assertion signed).
fn check_signatures(
    root: Node,
    assertion: Node,
    keys: &[PKey<Public>],
    exp: &Expectations<'_>,
) -> Result<(bool, bool), VerifyError> {
    let signed = |element, what| match verify_enveloped(element, keys, exp.policy, what) {
        Ok(()) => Ok(true),
        Err(VerifyError::Unsigned(_)) => Ok(false),
        Err(e) => Err(e),
    };
    let response_signed = signed(root, "Response")?;
    let assertion_signed = signed(assertion, "Assertion")?;
    if exp.require_response_signature && !response_signed {
        return Err(VerifyError::Unsigned("Response"));
    }
    if exp.require_assertion_signature && !assertion_signed {
        return Err(VerifyError::Unsigned("Assertion"));
    }
    if !response_signed && !assertion_signed {
        return Err(VerifyError::Unsigned("Response or its Assertion"));
    }
    Ok((response_signed, assertion_signed))
}

fn check_status(root: Node) -> Result<(), VerifyError> {
    let status = child(root, ns::SAMLP, "Status")
        .and_then(|s| child(s, ns::SAMLP, "StatusCode"))
        .and_then(|c| attr(c, "Value"))
        .ok_or(VerifyError::Missing("the StatusCode"))?;
    if status != ns::STATUS_SUCCESS {
        return Err(VerifyError::Status(status.to_string()));
    }
    Ok(())
}

/// `Some(id)` expected: InResponseTo must equal it. `None` (IdP-initiated): it must be absent.
fn expect_in_response_to(
    what: &'static str,
    what_if_unexpected: &'static str,
    expected: Option<&str>,
    found: Option<&str>,
) -> Result<(), VerifyError> {
    match (expected, found) {
        (Some(e), f) => expect_eq(what, f, e),
        (None, Some(f)) => Err(VerifyError::Mismatch {
            what: what_if_unexpected,
            found: f.to_string(),
            expected: String::new(),
        }),
        (None, None) => Ok(()),
    }
}

/// The Assertion's Issuer (required); when the IdP is known, it and the Response's Issuer (if
/// any) must name it.
fn check_issuer(
    root: Node,
    assertion: Node,
    exp: &Expectations<'_>,
) -> Result<String, VerifyError> {
    let issuer = text_of(child(assertion, ns::SAML, "Issuer"))
        .ok_or(VerifyError::Missing("the Assertion Issuer"))?;
    if let Some(expected) = exp.issuer {
        expect_eq("the Assertion Issuer", Some(&issuer), expected)?;
        if let Some(ri) = text_of(child(root, ns::SAML, "Issuer")) {
            expect_eq("the Response Issuer", Some(&ri), expected)?;
        }
    }
    Ok(issuer)
}

/// The Subject's NameID, once one bearer SubjectConfirmation passes every check; otherwise the
/// last confirmation's failure.
fn confirmed_name_id<'a, 'i>(
    assertion: Node<'a, 'i>,
    exp: &Expectations<'_>,
) -> Result<Node<'a, 'i>, VerifyError> {
    let subject =
        child(assertion, ns::SAML, "Subject").ok_or(VerifyError::Missing("the Subject"))?;
    let name_id = child(subject, ns::SAML, "NameID").ok_or(VerifyError::Missing("the NameID"))?;
    let mut last_err = VerifyError::Missing("a bearer SubjectConfirmation");
    for sc in children(subject, ns::SAML, "SubjectConfirmation") {
        if attr(sc, "Method") != Some(ns::CM_BEARER) {
            continue;
        }
        let checked = child(sc, ns::SAML, "SubjectConfirmationData")
            .ok_or(VerifyError::Missing("the SubjectConfirmationData"))
            .and_then(|data| check_bearer_data(data, exp));
        match checked {
            Ok(()) => return Ok(name_id),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// A bearer SubjectConfirmationData: Recipient, NotOnOrAfter, NotBefore, InResponseTo.
fn check_bearer_data(data: Node, exp: &Expectations<'_>) -> Result<(), VerifyError> {
    expect_eq(
        "the SubjectConfirmationData Recipient",
        attr(data, "Recipient"),
        exp.recipient,
    )?;
    let noa = attr(data, "NotOnOrAfter").ok_or(VerifyError::Missing(
        "the SubjectConfirmationData NotOnOrAfter",
    ))?;
    if parse_time("SubjectConfirmationData NotOnOrAfter", noa)? + exp.skew <= exp.now {
        return Err(VerifyError::Time(format!(
            "the subject confirmation expired at {noa}"
        )));
    }
    // SAML profiles 4.1.4.2 lets a bearer confirmation carry NotBefore; when it does, the
    // subject cannot be confirmed before it (python3-saml and node-saml refuse it too).
    if let Some(nb) = attr(data, "NotBefore") {
        if parse_time("SubjectConfirmationData NotBefore", nb)? - exp.skew > exp.now {
            return Err(VerifyError::Time(format!(
                "the subject cannot be confirmed before {nb}"
            )));
        }
    }
    let what = "the SubjectConfirmationData InResponseTo";
    expect_in_response_to(what, what, exp.in_response_to, attr(data, "InResponseTo"))
}

/// The Conditions' time window and audiences, as checked.
struct Conditions<'a> {
    not_before: Option<&'a str>,
    not_on_or_after: Option<&'a str>,
    audiences: Vec<String>,
}

/// Conditions are required: the window (± skew) must hold now, and every AudienceRestriction
/// must name our audience (at least one restriction).
fn check_conditions<'a>(
    assertion: Node<'a, '_>,
    exp: &Expectations<'_>,
) -> Result<Conditions<'a>, VerifyError> {
    let conditions =
        child(assertion, ns::SAML, "Conditions").ok_or(VerifyError::Missing("the Conditions"))?;
    let not_before = attr(conditions, "NotBefore");
    if let Some(nb) = not_before {
        if parse_time("Conditions NotBefore", nb)? - exp.skew > exp.now {
            return Err(VerifyError::Time(format!(
                "the assertion is not valid before {nb}"
            )));
        }
    }
    let not_on_or_after = attr(conditions, "NotOnOrAfter");
    if let Some(noa) = not_on_or_after {
        if parse_time("Conditions NotOnOrAfter", noa)? + exp.skew <= exp.now {
            return Err(VerifyError::Time(format!("the assertion expired at {noa}")));
        }
    }
    let mut audiences = Vec::new();
    for ar in children(conditions, ns::SAML, "AudienceRestriction") {
        let these: Vec<String> = children(ar, ns::SAML, "Audience")
            .map(|a| text_content(a).trim().to_string())
            .collect();
        if !these.iter().any(|a| a == exp.audience) {
            return Err(VerifyError::Mismatch {
                what: "the Audience",
                found: these.join(" "),
                expected: exp.audience.to_string(),
            });
        }
        audiences.extend(these);
    }
    if audiences.is_empty() {
        return Err(VerifyError::Missing("the AudienceRestriction"));
    }
    Ok(Conditions {
        not_before,
        not_on_or_after,
        audiences,
    })
}

/// Every Attribute of every AttributeStatement: (Name, values in order).
fn attributes(assertion: Node) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for stmt in children(assertion, ns::SAML, "AttributeStatement") {
        for attribute in children(stmt, ns::SAML, "Attribute") {
            let name = attr(attribute, "Name").unwrap_or("").to_string();
            let values = children(attribute, ns::SAML, "AttributeValue")
                .map(text_content)
                .collect();
            out.push((name, values));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_response_to_is_required_when_expected_and_refused_when_not() {
        let check = |e, f| expect_in_response_to("irt", "irt (unexpected)", e, f);
        assert_eq!(check(Some("id1"), Some("id1")), Ok(()));
        assert_eq!(check(None, None), Ok(()));
        assert_eq!(check(Some("id1"), None), Err(VerifyError::Missing("irt")));
        assert!(matches!(
            check(Some("id1"), Some("id2")),
            Err(VerifyError::Mismatch { what: "irt", .. })
        ));
        assert!(matches!(
            check(None, Some("id2")),
            Err(VerifyError::Mismatch {
                what: "irt (unexpected)",
                ..
            })
        ));
    }

    fn reference(transforms: &str) -> String {
        format!(
            r##"<ds:Reference xmlns:ds="{}" URI="#x"><ds:Transforms>{transforms}</ds:Transforms></ds:Reference>"##,
            ns::DS
        )
    }

    #[test]
    fn a_reference_needs_the_enveloped_transform_and_only_exclusive_c14n() {
        let enveloped = format!(r#"<ds:Transform Algorithm="{}"/>"#, ns::ENVELOPED);
        let exc = format!(
            r#"<ds:Transform Algorithm="{}"><ec:InclusiveNamespaces xmlns:ec="{}" PrefixList="xs #default"/></ds:Transform>"#,
            ns::EXC_C14N,
            ns::EXC_C14N
        );
        let xml = reference(&format!("{enveloped}{exc}"));
        let doc = parse(&xml).unwrap();
        let t = reference_transforms(doc.root_element()).unwrap();
        assert!(!t.with_comments);
        assert_eq!(t.inclusive_prefixes, vec!["xs".to_string(), String::new()]);

        let xml = reference(&exc);
        let doc = parse(&xml).unwrap();
        assert!(matches!(
            reference_transforms(doc.root_element()),
            Err(VerifyError::Malformed(_))
        ));

        let inclusive =
            r#"<ds:Transform Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>"#;
        let xml = reference(&format!("{enveloped}{inclusive}"));
        let doc = parse(&xml).unwrap();
        assert!(matches!(
            reference_transforms(doc.root_element()),
            Err(VerifyError::Algorithm(_))
        ));
    }
}
