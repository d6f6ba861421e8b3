//! The contract checks `flexgate verify` makes, run on a Response as sent: each with what
//! flexgate meant to say (expected) next to what the XML says (found). They run when a trace is
//! shown, not at login (no cost per login), with the certificates of the config showing it, and
//! check the time window at the instant the Response was signed.

use super::{Check, SentResponse};
use crate::saml::ns;
use crate::saml::verify::{verify_response, AlgPolicy, Expectations};
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
        out.push(signature_check_status(&doc, keys));
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
    out.push(verify_check(sent, keys, sent_at));
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

/// Everything `flexgate verify` checks, signature included, against the IdP certificates.
fn verify_check(sent: &SentResponse, keys: &[PKey<Public>], at: DateTime<Utc>) -> Check {
    let e = &sent.expected;
    let exp = Expectations {
        audience: &e.audience,
        recipient: &e.destination,
        in_response_to: e.in_response_to.as_deref(),
        issuer: Some(&e.issuer),
        now: at,
        skew: chrono::Duration::zero(),
        require_response_signature: false,
        require_assertion_signature: false,
        policy: AlgPolicy::default(),
    };
    let found = if keys.is_empty() {
        "not checked: no IdP certificate at hand".to_string()
    } else {
        match verify_response(&sent.xml, keys, &exp) {
            Ok(_) => "verifies".to_string(),
            Err(err) => err.to_string(),
        }
    };
    check(
        "flexgate verify (signature with the IdP certificate, and all of the above)",
        "verifies",
        found,
    )
}

/// A status Response carries only the Response signature.
fn signature_check_status(doc: &Document, keys: &[PKey<Public>]) -> Check {
    let root = doc.root_element();
    let found = if keys.is_empty() {
        "not checked: no IdP certificate at hand".to_string()
    } else if child(root, ns::DS, "Signature").is_none() {
        "no Response signature".to_string()
    } else {
        match crate::saml::verify::verify_enveloped(root, keys, AlgPolicy::default(), "Response") {
            Ok(()) => "verifies".to_string(),
            Err(e) => e.to_string(),
        }
    };
    check("Response signature", "verifies", found)
}
