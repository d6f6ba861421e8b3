//! QA tooling: the `.expect.toml` format of `fixtures/` (documented in `fixtures/README.md`),
//! reading a captured SAMLResponse in any of the shapes QA meets (XML, base64, a form body, a
//! saved HTML page), and comparing a verified Response with an expect file.

use crate::saml::verify::{decode_b64, AlgPolicy, Expectations, VerifiedResponse};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The years an instant to check at (`--now`, an expect file's `now`) may fall in.
pub const NOW_YEARS: std::ops::RangeInclusive<i32> = 2000..=2099;

/// An RFC 3339 instant within [`NOW_YEARS`]; the error says what is wrong and how to write it.
pub fn parse_now(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::Datelike;
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("is not RFC 3339 ({e}); write e.g. 2026-01-15T10:00:00Z"))?
        .with_timezone(&chrono::Utc);
    if !NOW_YEARS.contains(&t.year()) {
        return Err(format!(
            "is outside the years {}..={}; give the instant the Response was captured, e.g. 2026-01-15T10:00:00Z",
            NOW_YEARS.start(),
            NOW_YEARS.end()
        ));
    }
    Ok(t)
}

/// `<name>.expect.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub issuer: String,
    pub recipient: String,
    pub audience: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_response_to: Option<String>,
    pub signed: Signed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    pub subject: Subject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn: Option<Authn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Conditions>,
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// Which parts carry a signature that verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signed {
    Response,
    Assertion,
    Both,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name_id: String,
    pub name_id_format: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_index: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_on_or_after: Option<String>,
}

impl Expect {
    pub fn parse(text: &str) -> Result<Expect, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// `now`, parsed and within [`NOW_YEARS`].
    pub fn now(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
        self.now
            .as_deref()
            .map(|n| parse_now(n).map_err(|e| format!("now = {n:?} {e}")))
            .transpose()
    }

    /// The SP-side checks this file implies, at `now` (the file's, else the caller's), no skew.
    pub fn expectations(&self, now: chrono::DateTime<chrono::Utc>) -> Expectations<'_> {
        Expectations {
            audience: &self.audience,
            recipient: &self.recipient,
            in_response_to: self.in_response_to.as_deref(),
            issuer: Some(&self.issuer),
            now,
            skew: chrono::Duration::zero(),
            require_response_signature: false,
            require_assertion_signature: false,
            policy: AlgPolicy::default(),
        }
    }

    /// What the verifier found, in the shape of `shape`: optional sections and keys are filled in
    /// only where `shape` has them, so that `actual == shape` compares exactly what the file says.
    pub fn actual(v: &VerifiedResponse, shape: &Expect) -> Result<Expect, String> {
        let mut attributes = BTreeMap::new();
        for (name, values) in &v.attributes {
            if attributes.insert(name.clone(), values.clone()).is_some() {
                return Err(format!("the Response carries the attribute {name:?} twice; the expect format cannot describe that"));
            }
        }
        let pick = |want: &Option<String>, got: &Option<String>| want.as_ref().and(got.clone());
        Ok(Expect {
            issuer: v.issuer.clone(),
            recipient: v.destination.clone(),
            audience: v.audiences.join(" "),
            in_response_to: v.in_response_to.clone(),
            signed: signed_of(v),
            now: shape.now.clone(),
            subject: Subject {
                name_id: v.name_id.clone(),
                name_id_format: v.name_id_format.clone().unwrap_or_default(),
            },
            authn: shape.authn.as_ref().map(|a| Authn {
                instant: pick(&a.instant, &v.authn_instant),
                context_class: pick(&a.context_class, &v.authn_context_class),
                session_index: pick(&a.session_index, &v.session_index),
            }),
            conditions: shape.conditions.as_ref().map(|c| Conditions {
                not_before: pick(&c.not_before, &v.not_before),
                not_on_or_after: pick(&c.not_on_or_after, &v.not_on_or_after),
            }),
            attributes,
        })
    }

    /// Everything a verified Response says, in this format (for `flexgate verify` to print a
    /// starting point for a new QA case).
    pub fn describe(v: &VerifiedResponse) -> Expect {
        Expect {
            issuer: v.issuer.clone(),
            recipient: v.destination.clone(),
            audience: v.audiences.join(" "),
            in_response_to: v.in_response_to.clone(),
            signed: signed_of(v),
            now: None,
            subject: Subject {
                name_id: v.name_id.clone(),
                name_id_format: v.name_id_format.clone().unwrap_or_default(),
            },
            authn: Some(Authn {
                instant: v.authn_instant.clone(),
                context_class: v.authn_context_class.clone(),
                session_index: v.session_index.clone(),
            }),
            conditions: Some(Conditions {
                not_before: v.not_before.clone(),
                not_on_or_after: v.not_on_or_after.clone(),
            }),
            attributes: v.attributes.iter().cloned().collect(),
        }
    }

    /// The differences between this file and what was found, one line each (empty = equal).
    pub fn differences(&self, actual: &Expect) -> Vec<String> {
        let mut d = Vec::new();
        let mut cmp = |what: &str, want: String, got: String| {
            if want != got {
                d.push(format!("{what}: expected {want}, found {got}"));
            }
        };
        let q = |s: &str| format!("{s:?}");
        let qo = |s: &Option<String>| {
            s.as_deref()
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "(absent)".into())
        };
        cmp("issuer", q(&self.issuer), q(&actual.issuer));
        cmp("recipient", q(&self.recipient), q(&actual.recipient));
        cmp("audience", q(&self.audience), q(&actual.audience));
        cmp(
            "in_response_to",
            qo(&self.in_response_to),
            qo(&actual.in_response_to),
        );
        cmp(
            "signed",
            format!("{:?}", self.signed).to_lowercase(),
            format!("{:?}", actual.signed).to_lowercase(),
        );
        cmp(
            "subject.name_id",
            q(&self.subject.name_id),
            q(&actual.subject.name_id),
        );
        cmp(
            "subject.name_id_format",
            q(&self.subject.name_id_format),
            q(&actual.subject.name_id_format),
        );
        if let (Some(a), Some(b)) = (&self.authn, &actual.authn) {
            cmp("authn.instant", qo(&a.instant), qo(&b.instant));
            cmp(
                "authn.context_class",
                qo(&a.context_class),
                qo(&b.context_class),
            );
            cmp(
                "authn.session_index",
                qo(&a.session_index),
                qo(&b.session_index),
            );
        }
        if let (Some(a), Some(b)) = (&self.conditions, &actual.conditions) {
            cmp(
                "conditions.not_before",
                qo(&a.not_before),
                qo(&b.not_before),
            );
            cmp(
                "conditions.not_on_or_after",
                qo(&a.not_on_or_after),
                qo(&b.not_on_or_after),
            );
        }
        for (name, want) in &self.attributes {
            match actual.attributes.get(name) {
                Some(got) if got == want => {}
                Some(got) => d.push(format!(
                    "attributes.{name}: expected {want:?}, found {got:?}"
                )),
                None => d.push(format!(
                    "attributes.{name}: expected {want:?}, found no such attribute"
                )),
            }
        }
        for (name, got) in &actual.attributes {
            if !self.attributes.contains_key(name) {
                d.push(format!("attributes.{name}: not expected, found {got:?}"));
            }
        }
        d
    }
}

fn signed_of(v: &VerifiedResponse) -> Signed {
    match (v.response_signed, v.assertion_signed) {
        (true, true) => Signed::Both,
        (false, true) => Signed::Assertion,
        _ => Signed::Response,
    }
}

/// Extracts the Response XML from what QA captured: the XML itself, its base64 (the
/// `SAMLResponse` value), a form body `SAMLResponse=…&RelayState=…`, or a saved HTML page with
/// the POST form.
pub fn extract_response(input: &str) -> Result<String, String> {
    let t = input.trim_start_matches('\u{feff}').trim();
    if t.starts_with('<')
        && !t.to_ascii_lowercase().starts_with("<!doctype html")
        && !t.to_ascii_lowercase().starts_with("<html")
    {
        return Ok(t.to_string());
    }
    let b64 = if let Some(i) = t.find("name=\"SAMLResponse\"") {
        // An HTML page: the value attribute of the SAMLResponse input.
        let rest = &t[i..];
        let v = rest
            .find("value=\"")
            .ok_or("the HTML has a SAMLResponse input without a value")?
            + 7;
        let end = rest[v..].find('"').ok_or("unterminated value attribute")?;
        html_unescape(&rest[v..v + end])
    } else if t.contains("SAMLResponse=") {
        url::form_urlencoded::parse(t.as_bytes())
            .find(|(k, _)| k == "SAMLResponse")
            .map(|(_, v)| v.into_owned())
            .ok_or("no SAMLResponse parameter")?
    } else {
        t.to_string()
    };
    let raw = decode_b64(&b64).ok_or(
        "the input is neither XML nor base64 of XML (nor a form or page with SAMLResponse)",
    )?;
    String::from_utf8(raw).map_err(|_| "the decoded SAMLResponse is not UTF-8 text".to_string())
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#43;", "+")
        .replace("&#x2B;", "+")
        .replace("&#61;", "=")
        .replace("&#x3D;", "=")
        .replace("&#47;", "/")
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn extracts_every_capture_shape() {
        let xml = "<samlp:Response/>";
        let b = base64::engine::general_purpose::STANDARD.encode(xml);
        assert_eq!(extract_response(xml).unwrap(), xml);
        assert_eq!(extract_response(&format!("{b}\n")).unwrap(), xml);
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("SAMLResponse", &b)
            .append_pair("RelayState", "x")
            .finish();
        assert_eq!(extract_response(&form).unwrap(), xml);
        let page = format!("<!DOCTYPE html><form><input type=\"hidden\" name=\"SAMLResponse\" value=\"{b}\"></form>");
        assert_eq!(extract_response(&page).unwrap(), xml);
        assert!(extract_response("not base64 !").is_err());
    }
}

/// The largest clock skew `verify` allows, in seconds (one day): an older capture is checked
/// with `--now`, not with a wider window.
pub const MAX_SKEW_SECS: u64 = 86_400;

/// What `flexgate verify` was asked to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    pub cert_pem: Vec<u8>,
    pub cert_name: String,
    pub audience: Option<String>,
    pub recipient: Option<String>,
    pub issuer: Option<String>,
    pub in_response_to: Option<String>,
    pub idp_initiated: bool,
    pub expect: Option<(String, Expect)>,
    pub now: Option<chrono::DateTime<chrono::Utc>>,
    /// At most [`MAX_SKEW_SECS`].
    pub skew_secs: u64,
    /// `response`, `assertion` or `both`: which signature(s) must be present.
    pub require: Option<Signed>,
    pub allow_sha1: bool,
}

/// The outcome of `flexgate verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub valid: bool,
    pub error: Option<String>,
    pub checked_at: String,
    pub in_response_to_checked: bool,
    pub response: Option<VerifiedResponse>,
    pub expect_file: Option<String>,
    pub differences: Vec<String>,
}

/// Bad usage (exit 2), as opposed to an invalid Response (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn agree(
    flag: &str,
    cli: &Option<String>,
    file: Option<&str>,
) -> Result<Option<String>, UsageError> {
    match (cli, file) {
        (Some(c), Some(f)) if c != f => Err(UsageError(format!(
            "--{flag} {c:?} disagrees with the expect file ({f:?}); drop one of them"
        ))),
        (Some(c), _) => Ok(Some(c.clone())),
        (None, f) => Ok(f.map(str::to_string)),
    }
}

fn skew(secs: u64) -> Result<chrono::Duration, UsageError> {
    if secs > MAX_SKEW_SECS {
        return Err(UsageError(format!(
            "--skew {secs} is outside 0..={MAX_SKEW_SECS} seconds; to check an old capture give --now, not a wider skew"
        )));
    }
    i64::try_from(secs)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| UsageError(format!("--skew {secs} is out of range")))
}

/// Verifies one captured Response as `req` says.
pub fn verify(input: &str, req: &VerifyRequest) -> Result<VerifyReport, UsageError> {
    let key = crate::config::keys::public_key_from_cert_pem(&req.cert_pem).map_err(|_| {
        UsageError(format!(
            "{} is not a PEM certificate (-----BEGIN CERTIFICATE-----)",
            req.cert_name
        ))
    })?;
    let file = req.expect.as_ref().map(|(_, e)| e);
    let audience = agree("audience", &req.audience, file.map(|e| e.audience.as_str()))?
        .ok_or_else(|| {
            UsageError(
                "give --audience (the SP entity id, e.g. urn:flex:JQ…) or --expect FILE".into(),
            )
        })?;
    let recipient = agree(
        "recipient",
        &req.recipient,
        file.map(|e| e.recipient.as_str()),
    )?
    .ok_or_else(|| {
        UsageError("give --recipient (the ACS URL, with its query string) or --expect FILE".into())
    })?;
    let issuer = agree("issuer", &req.issuer, file.map(|e| e.issuer.as_str()))?;
    let file_now = file
        .map(|e| e.now())
        .transpose()
        .map_err(UsageError)?
        .flatten();
    let now = req.now.or(file_now).unwrap_or_else(chrono::Utc::now);

    let skew = skew(req.skew_secs)?;
    let xml = match extract_response(input) {
        Ok(x) => x,
        Err(e) => return Err(UsageError(format!("cannot read the input: {e}"))),
    };
    // InResponseTo: the flag, else the expect file (absent there = IdP-initiated), else not checked.
    let (irt, irt_checked): (Option<String>, bool) = if let Some(i) = &req.in_response_to {
        if let Some(f) = file {
            if f.in_response_to.as_deref() != Some(i.as_str()) {
                return Err(UsageError(format!(
                    "--in-response-to {i:?} disagrees with the expect file"
                )));
            }
        }
        (Some(i.clone()), true)
    } else if req.idp_initiated || file.is_some() {
        (file.and_then(|f| f.in_response_to.clone()), true)
    } else {
        let found = crate::saml::verify::parse(&xml).ok().and_then(|d| {
            d.root_element()
                .attribute("InResponseTo")
                .map(str::to_string)
        });
        (found, false)
    };
    let exp = Expectations {
        audience: &audience,
        recipient: &recipient,
        in_response_to: irt.as_deref(),
        issuer: issuer.as_deref(),
        now,
        skew,
        require_response_signature: matches!(req.require, Some(Signed::Response | Signed::Both)),
        require_assertion_signature: matches!(req.require, Some(Signed::Assertion | Signed::Both)),
        policy: AlgPolicy {
            allow_sha1: req.allow_sha1,
        },
    };
    let mut report = VerifyReport {
        valid: false,
        error: None,
        checked_at: crate::clock::saml_time(now),
        in_response_to_checked: irt_checked,
        response: None,
        expect_file: req.expect.as_ref().map(|(n, _)| n.clone()),
        differences: Vec::new(),
    };
    match crate::saml::verify::verify_response(&xml, std::slice::from_ref(&key), &exp) {
        Ok(v) => {
            if let Some((_, e)) = &req.expect {
                match Expect::actual(&v, e) {
                    Ok(a) => report.differences = e.differences(&a),
                    Err(msg) => report.differences = vec![msg],
                }
            }
            report.valid = report.differences.is_empty();
            if !report.valid {
                report.error = Some(format!(
                    "the Response differs from {}",
                    report.expect_file.clone().unwrap_or_default()
                ));
            }
            report.response = Some(v);
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    Ok(report)
}

/// The report as people read it.
pub fn render(r: &VerifyReport) -> String {
    let mut o = String::new();
    match (&r.response, r.valid) {
        (Some(_), true) => o.push_str("VALID: the Response verifies"),
        (Some(_), false) => {
            o.push_str("INVALID: the Response verifies, but differs from the expect file")
        }
        (None, _) => o.push_str(&format!("INVALID: {}", r.error.clone().unwrap_or_default())),
    }
    o.push_str(&format!(" (checked at {})\n", r.checked_at));
    if let Some(v) = &r.response {
        let signed = match (v.response_signed, v.assertion_signed) {
            (true, true) => "Response and Assertion",
            (true, false) => "Response",
            _ => "Assertion",
        };
        let row = |o: &mut String, k: &str, val: &str| o.push_str(&format!("  {k:<14} {val}\n"));
        row(&mut o, "Issuer", &v.issuer);
        row(&mut o, "Destination", &v.destination);
        let irt = match (&v.in_response_to, r.in_response_to_checked) {
            (Some(i), true) => format!("{i} (checked)"),
            (Some(i), false) => format!("{i} (not checked: pass --in-response-to)"),
            (None, _) => "absent (IdP-initiated)".to_string(),
        };
        row(&mut o, "InResponseTo", &irt);
        row(
            &mut o,
            "Signed",
            &format!("{signed}, verified with the given certificate only"),
        );
        row(&mut o, "Audience", &v.audiences.join(" "));
        row(
            &mut o,
            "NameID",
            &format!(
                "{} ({})",
                v.name_id,
                v.name_id_format.as_deref().unwrap_or("no format")
            ),
        );
        row(
            &mut o,
            "Valid",
            &format!(
                "{} … {}",
                v.not_before.as_deref().unwrap_or("-"),
                v.not_on_or_after.as_deref().unwrap_or("-")
            ),
        );
        row(
            &mut o,
            "AuthnInstant",
            v.authn_instant.as_deref().unwrap_or("-"),
        );
        row(
            &mut o,
            "AuthnContext",
            v.authn_context_class.as_deref().unwrap_or("-"),
        );
        row(
            &mut o,
            "SessionIndex",
            v.session_index.as_deref().unwrap_or("-"),
        );
        o.push_str("  Attributes\n");
        let width = v
            .attributes
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        for (name, values) in &v.attributes {
            let shown: Vec<String> = values.iter().map(|x| format!("{x:?}")).collect();
            o.push_str(&format!("    {name:<width$}  {}\n", shown.join(", ")));
        }
    }
    if let Some(f) = &r.expect_file {
        if r.differences.is_empty() && r.response.is_some() {
            o.push_str(&format!("  expect: matches {f}\n"));
        } else if !r.differences.is_empty() {
            o.push_str(&format!("  expect: differs from {f}\n"));
            for d in &r.differences {
                o.push_str(&format!("    - {d}\n"));
            }
        }
    }
    o
}
