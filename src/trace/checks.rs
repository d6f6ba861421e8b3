//! The contract checks `flexgate verify` makes, run on a Response as sent: each with what
//! flexgate meant to say (expected) next to what the XML says (found). They run when a trace is
//! shown, not at login (no cost per login), with the certificates of the config showing it, and
//! check the time window at the instant the Response was signed.

use super::{Check, SentResponse};
use crate::saml::ns;
use crate::saml::verify::{verify_enveloped_digest, AlgPolicy};
use chrono::{DateTime, Utc};
use openssl::pkey::{PKey, Public};
use roxmltree::{Document, Node};

const ABSENT: &str = "(absent)";

fn check(name: &str, expected: impl Into<String>, found: impl Into<String>) -> Check {
    let (expected, found) = (expected.into(), found.into());
    Check {
        name: name.to_string(),
        ok: expected == found,
        expected,
        found,
    }
}

fn child<'a, 'i>(n: Node<'a, 'i>, ns_uri: &str, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.tag_name().namespace() == Some(ns_uri) && c.tag_name().name() == name)
}

fn text(n: Option<Node>) -> String {
    n.and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| ABSENT.to_string())
}

fn attr(n: Option<Node>, name: &str) -> String {
    n.and_then(|n| n.attribute(name))
        .unwrap_or(ABSENT)
        .to_string()
}

/// The checks, in the order `verify` reports failures. `keys`: the IdP certificates' keys
/// (current and next) the SP would trust.
pub fn run(sent: &SentResponse, keys: &[PKey<Public>]) -> Vec<Check> {
    let e = &sent.expected;
    let doc = match crate::saml::verify::parse(&sent.xml) {
        Ok(d) => d,
        Err(err) => return vec![check("the Response is XML", "well-formed", err.to_string())],
    };
    let root = doc.root_element();
    let mut out = vec![
        check(
            "Issuer",
            e.issuer.as_str(),
            text(child(root, ns::SAML, "Issuer")),
        ),
        check(
            "Destination",
            e.destination.as_str(),
            attr(Some(root), "Destination"),
        ),
        check(
            "InResponseTo",
            e.in_response_to.as_deref().unwrap_or(ABSENT),
            attr(Some(root), "InResponseTo"),
        ),
        status_check(root, e.status.as_deref()),
    ];
    if e.status.is_some() {
        out.extend(signature_checks(&doc, keys));
        return out;
    }
    let assertion = child(root, ns::SAML, "Assertion");
    let subject = assertion.and_then(|a| child(a, ns::SAML, "Subject"));
    let conditions = assertion.and_then(|a| child(a, ns::SAML, "Conditions"));
    let audience = conditions
        .and_then(|c| child(c, ns::SAML, "AudienceRestriction"))
        .and_then(|r| child(r, ns::SAML, "Audience"));
    let recipient = subject
        .and_then(|s| child(s, ns::SAML, "SubjectConfirmation"))
        .and_then(|c| child(c, ns::SAML, "SubjectConfirmationData"));
    out.push(check(
        "Recipient",
        e.destination.as_str(),
        attr(recipient, "Recipient"),
    ));
    out.push(check("Audience", e.audience.as_str(), text(audience)));
    out.push(check(
        "NameID",
        e.name_id.as_str(),
        text(subject.and_then(|s| child(s, ns::SAML, "NameID"))),
    ));
    let sent_at = DateTime::<Utc>::from_timestamp_millis(sent.sent_at_ms).unwrap_or_default();
    out.push(window_check(conditions, sent_at));
    out.extend(attribute_checks(assertion, &e.required_attributes));
    out.extend(signature_checks(&doc, keys));
    out
}

fn status_check(root: Node, second: Option<&str>) -> Check {
    let top = child(root, ns::SAMLP, "Status").and_then(|s| child(s, ns::SAMLP, "StatusCode"));
    let found = match top {
        Some(t) => {
            let inner = child(t, ns::SAMLP, "StatusCode").and_then(|c| c.attribute("Value"));
            let v = t.attribute("Value").unwrap_or(ABSENT);
            match inner {
                Some(i) => format!("{v} / {i}"),
                None => v.to_string(),
            }
        }
        None => ABSENT.to_string(),
    };
    let expected = match second {
        Some(s) => format!(
            "{} / urn:oasis:names:tc:SAML:2.0:status:{s}",
            ns::STATUS_RESPONDER
        ),
        None => ns::STATUS_SUCCESS.to_string(),
    };
    check("Status", expected, found)
}

fn window_check(conditions: Option<Node>, at: DateTime<Utc>) -> Check {
    let nb = attr(conditions, "NotBefore");
    let noa = attr(conditions, "NotOnOrAfter");
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc());
    let inside = matches!((parse(&nb), parse(&noa)), (Some(a), Some(b)) if a <= at && at < b);
    let expected = format!("NotBefore ≤ {} < NotOnOrAfter", crate::clock::saml_time(at));
    Check {
        name: "time window (at signing)".into(),
        ok: inside,
        expected,
        found: format!("{nb} … {noa}"),
    }
}

fn attribute_checks(assertion: Option<Node>, required: &[String]) -> Vec<Check> {
    let names: Vec<(&str, usize)> = assertion
        .and_then(|a| child(a, ns::SAML, "AttributeStatement"))
        .map(|s| {
            s.children()
                .filter(|c| c.tag_name().name() == "Attribute")
                .map(|a| {
                    let n = a
                        .children()
                        .filter(|v| v.tag_name().name() == "AttributeValue")
                        .count();
                    (a.attribute("Name").unwrap_or(""), n)
                })
                .collect()
        })
        .unwrap_or_default();
    required
        .iter()
        .map(|r| {
            let found = match names.iter().find(|(n, _)| n == r) {
                Some((_, 0)) => "present, no value".to_string(),
                Some((_, n)) => format!("present ({n} value{})", if *n == 1 { "" } else { "s" }),
                None => ABSENT.to_string(),
            };
            let ok = found.starts_with("present (");
            Check {
                name: format!("attribute {r}"),
                expected: "present (at least 1 value)".into(),
                found,
                ok,
            }
        })
        .collect()
}

/// The signatures as far as a trace can show them: each one's algorithms and digest (the
/// signed content is what was sent), the certificate in KeyInfo is the IdP's, and the
/// SignatureValue, which the trace does not keep (see [`super::SIGNATURE_ELIDED`]).
fn signature_checks(doc: &Document, keys: &[PKey<Public>]) -> Vec<Check> {
    let root = doc.root_element();
    let mut signed: Vec<(Node, &'static str)> = vec![(root, "Response")];
    if let Some(a) = child(root, ns::SAML, "Assertion") {
        signed.push((a, "Assertion"));
    }
    let mut out = Vec::new();
    let mut any = false;
    for (element, what) in signed {
        let Some(sig) = child(element, ns::DS, "Signature") else {
            continue;
        };
        any = true;
        let found = match verify_enveloped_digest(element, AlgPolicy::default(), what) {
            Ok(()) => "verifies".to_string(),
            Err(e) => e.to_string(),
        };
        out.push(check(
            &format!("{what} signature: algorithms and digest"),
            "verifies",
            found,
        ));
        out.push(certificate_check(sig, what, keys));
    }
    if !any {
        out.push(check(
            "signature",
            "a Response or Assertion signature",
            ABSENT,
        ));
    }
    out.push(Check {
        name: "SignatureValue".into(),
        ok: true,
        expected: "kept out of the trace".into(),
        found: "elided: a kept one would make the trace a usable login; `flexgate verify` checks a captured Response in full".into(),
    });
    out
}

/// The certificate in the signature's KeyInfo is one of the IdP's (current or next).
fn certificate_check(sig: Node, what: &str, keys: &[PKey<Public>]) -> Check {
    let cert = sig
        .descendants()
        .find(|n| n.has_tag_name((ns::DS, "X509Certificate")))
        .and_then(|n| n.text())
        .and_then(crate::saml::verify::decode_b64)
        .and_then(|der| openssl::x509::X509::from_der(&der).ok())
        .and_then(|x| x.public_key().ok());
    let found = match (cert, keys.is_empty()) {
        (_, true) => "not checked: no IdP certificate at hand".to_string(),
        (None, false) => "no readable certificate".to_string(),
        (Some(k), false) if keys.iter().any(|t| t.public_eq(&k)) => {
            "the IdP certificate".to_string()
        }
        (Some(_), false) => "another certificate".to_string(),
    };
    let ok = found == "the IdP certificate";
    Check {
        name: format!("{what} signature: KeyInfo certificate"),
        ok,
        expected: "the IdP certificate (idp.cert or idp.next_cert)".into(),
        found,
    }
}
