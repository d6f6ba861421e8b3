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
pub fn verify_enveloped(
    element: Node,
    keys: &[PKey<Public>],
    policy: AlgPolicy,
    what: &'static str,
) -> Result<(), VerifyError> {
    let mut sigs = children(element, ns::DS, "Signature");
    let sig = sigs.next().ok_or(VerifyError::Unsigned(what))?;
    if sigs.next().is_some() {
        return Err(VerifyError::Malformed(format!(
            "the {what} has two signatures"
        )));
    }
    let malformed = |m: &str| VerifyError::Malformed(m.to_string());
    let signed_info = child(sig, ns::DS, "SignedInfo").ok_or_else(|| malformed("no SignedInfo"))?;
    let c14n_method = child(signed_info, ns::DS, "CanonicalizationMethod")
        .ok_or_else(|| malformed("no CanonicalizationMethod"))?;
    let c14n_alg = attr(c14n_method, "Algorithm").unwrap_or("");
    let si_comments =
        is_c14n(c14n_alg).ok_or_else(|| VerifyError::Algorithm(c14n_alg.to_string()))?;
    let sig_alg = child(signed_info, ns::DS, "SignatureMethod")
        .and_then(|n| attr(n, "Algorithm"))
        .ok_or_else(|| malformed("no SignatureMethod"))?;
    let md = match sig_alg {
        ns::RSA_SHA256 => MessageDigest::sha256(),
        ns::RSA_SHA384 => MessageDigest::sha384(),
        ns::RSA_SHA512 => MessageDigest::sha512(),
        ns::RSA_SHA1 if policy.allow_sha1 => MessageDigest::sha1(),
        other => return Err(VerifyError::Algorithm(other.to_string())),
    };
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
    let mut ref_comments = false;
    let mut ref_prefixes = Vec::new();
    let mut enveloped = false;
    if let Some(transforms) = child(reference, ns::DS, "Transforms") {
        for t in children(transforms, ns::DS, "Transform") {
            let alg = attr(t, "Algorithm").unwrap_or("");
            if alg == ns::ENVELOPED {
                enveloped = true;
            } else if let Some(c) = is_c14n(alg) {
                ref_comments = c;
                ref_prefixes = inclusive_prefixes(t);
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
            with_comments: ref_comments,
            inclusive_prefixes: &ref_prefixes,
            exclude: Some(sig.id()),
        },
    );
    let digest =
        openssl::hash::hash(dmd, canonical.as_bytes()).map_err(|e| malformed(&e.to_string()))?;
    if digest.as_ref() != digest_value.as_slice() {
        return Err(VerifyError::Digest);
    }

    let si_prefixes = inclusive_prefixes(c14n_method);
    let signed_info_c14n = c14n::canonicalize(
        signed_info,
        &Options {
            with_comments: si_comments,
            inclusive_prefixes: &si_prefixes,
            exclude: None,
        },
    );
    let value = child(sig, ns::DS, "SignatureValue")
        .and_then(|n| n.text())
        .ok_or_else(|| malformed("no SignatureValue"))?;
    let value = decode_b64(value).ok_or_else(|| malformed("SignatureValue is not base64"))?;
    for key in keys {
        let ok = openssl::sign::Verifier::new(md, key)
            .and_then(|mut v| {
                v.update(signed_info_c14n.as_bytes())?;
                v.verify(&value)
            })
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
    }
    Err(VerifyError::BadSignature)
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
pub fn verify_response(
    xml: &str,
    keys: &[PKey<Public>],
    exp: &Expectations<'_>,
) -> Result<VerifiedResponse, VerifyError> {
    let doc = parse(xml)?;
    check_unique_ids(&doc)?;
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
    let assertion = assertions[0];

    let response_signed = match verify_enveloped(root, keys, exp.policy, "Response") {
        Ok(()) => true,
        Err(VerifyError::Unsigned(_)) => false,
        Err(e) => return Err(e),
    };
    let assertion_signed = match verify_enveloped(assertion, keys, exp.policy, "Assertion") {
        Ok(()) => true,
        Err(VerifyError::Unsigned(_)) => false,
        Err(e) => return Err(e),
    };
    if exp.require_response_signature && !response_signed {
        return Err(VerifyError::Unsigned("Response"));
    }
    if exp.require_assertion_signature && !assertion_signed {
        return Err(VerifyError::Unsigned("Assertion"));
    }
    if !response_signed && !assertion_signed {
        return Err(VerifyError::Unsigned("Response or its Assertion"));
    }

    let status = child(root, ns::SAMLP, "Status")
        .and_then(|s| child(s, ns::SAMLP, "StatusCode"))
        .and_then(|c| attr(c, "Value"))
        .ok_or(VerifyError::Missing("the StatusCode"))?;
    if status != ns::STATUS_SUCCESS {
        return Err(VerifyError::Status(status.to_string()));
    }
    let destination = attr(root, "Destination");
    expect_eq("the Response Destination", destination, exp.recipient)?;
    let in_response_to = attr(root, "InResponseTo");
    match (exp.in_response_to, in_response_to) {
        (Some(e), f) => expect_eq("the Response InResponseTo", f, e)?,
        (None, Some(f)) => {
            return Err(VerifyError::Mismatch {
                what: "the Response InResponseTo (IdP-initiated login expected)",
                found: f.to_string(),
                expected: String::new(),
            })
        }
        (None, None) => {}
    }
    let issuer = text_of(child(assertion, ns::SAML, "Issuer"))
        .ok_or(VerifyError::Missing("the Assertion Issuer"))?;
    if let Some(expected) = exp.issuer {
        expect_eq("the Assertion Issuer", Some(&issuer), expected)?;
        if let Some(ri) = text_of(child(root, ns::SAML, "Issuer")) {
            expect_eq("the Response Issuer", Some(&ri), expected)?;
        }
    }

    let subject =
        child(assertion, ns::SAML, "Subject").ok_or(VerifyError::Missing("the Subject"))?;
    let name_id_node =
        child(subject, ns::SAML, "NameID").ok_or(VerifyError::Missing("the NameID"))?;
    let mut bearer_ok = false;
    let mut last_err = VerifyError::Missing("a bearer SubjectConfirmation");
    for sc in children(subject, ns::SAML, "SubjectConfirmation") {
        if attr(sc, "Method") != Some(ns::CM_BEARER) {
            continue;
        }
        let Some(data) = child(sc, ns::SAML, "SubjectConfirmationData") else {
            last_err = VerifyError::Missing("the SubjectConfirmationData");
            continue;
        };
        let check = (|| {
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
            match (exp.in_response_to, attr(data, "InResponseTo")) {
                (Some(e), f) => expect_eq("the SubjectConfirmationData InResponseTo", f, e)?,
                (None, Some(f)) => {
                    return Err(VerifyError::Mismatch {
                        what: "the SubjectConfirmationData InResponseTo",
                        found: f.to_string(),
                        expected: String::new(),
                    })
                }
                (None, None) => {}
            }
            Ok(())
        })();
        match check {
            Ok(()) => {
                bearer_ok = true;
                break;
            }
            Err(e) => last_err = e,
        }
    }
    if !bearer_ok {
        return Err(last_err);
    }

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

    let authn = child(assertion, ns::SAML, "AuthnStatement");
    let mut attributes = Vec::new();
    for stmt in children(assertion, ns::SAML, "AttributeStatement") {
        for attribute in children(stmt, ns::SAML, "Attribute") {
            let name = attr(attribute, "Name").unwrap_or("").to_string();
            let values = children(attribute, ns::SAML, "AttributeValue")
                .map(text_content)
                .collect();
            attributes.push((name, values));
        }
    }
    Ok(VerifiedResponse {
        issuer,
        destination: destination.unwrap_or("").to_string(),
        in_response_to: in_response_to.map(str::to_string),
        response_signed,
        assertion_signed,
        name_id: text_content(name_id_node),
        name_id_format: attr(name_id_node, "Format").map(str::to_string),
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
        not_before: not_before.map(str::to_string),
        not_on_or_after: not_on_or_after.map(str::to_string),
        audiences,
        attributes,
    })
}
