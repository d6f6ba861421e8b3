//! Browser captures QA and support receive, read for the SAML messages they carry (pure):
//! - a HAR 1.2 file (devtools "Save all as HAR"): `log.entries[].request` with `method`, `url`,
//!   `queryString[] {name, value}` and `postData {mimeType, params[] {name, value}, text}`;
//! - a SAML-tracer JSON export: `{"requests": [{method, url, get: [[name, value]],
//!   post: [[name, value]], postData: {name: [values]}, saml}], "timestamp"}`.
//!
//! Every SAMLResponse posted is found, in capture order, with the AuthnRequest it answers when
//! the capture holds it (matched by `InResponseTo`).

use crate::saml::request::{decode_post, decode_redirect, Limits};
use serde_json::Value;

/// Which tool made the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Har,
    SamlTracer,
}

/// One HTTP request of the capture, reduced to what SAML needs.
#[derive(Debug, Clone, Default)]
struct Exchange {
    method: String,
    url: String,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
}

/// An AuthnRequest found in the capture.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundRequest {
    /// Its position in the capture (0-based).
    pub entry: usize,
    pub id: String,
    pub issuer: String,
    pub acs: String,
    pub xml: String,
}

/// A SAMLResponse posted in the capture.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundResponse {
    pub entry: usize,
    /// Where it was posted (the ACS).
    pub url: String,
    /// The `SAMLResponse` value as posted (base64).
    pub saml_response: String,
    /// The AuthnRequest it answers, when the capture holds it.
    pub answers: Option<FoundRequest>,
}

/// What a capture holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Capture {
    pub format: Format,
    pub responses: Vec<FoundResponse>,
    pub requests: Vec<FoundRequest>,
}

/// A capture that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct CaptureError(pub String);

/// `Ok(None)`: the input is not a capture (the caller reads it as a Response).
pub fn read(input: &str) -> Result<Option<Capture>, CaptureError> {
    let t = input.trim_start_matches('\u{feff}').trim_start();
    if !t.starts_with('{') {
        return Ok(None);
    }
    let Ok(v) = serde_json::from_str::<Value>(t) else {
        return Ok(None);
    };
    let (format, exchanges) = if let Some(entries) = v.pointer("/log/entries") {
        (Format::Har, har(entries)?)
    } else if let Some(reqs) = v.get("requests") {
        (Format::SamlTracer, saml_tracer(reqs)?)
    } else {
        return Ok(None);
    };
    Ok(Some(collect(format, &exchanges)))
}

fn array<'a>(v: &'a Value, what: &str) -> Result<&'a Vec<Value>, CaptureError> {
    v.as_array()
        .ok_or_else(|| CaptureError(format!("{what} is not a JSON array")))
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// A parameter value as a capture tool wrote it: tools differ in whether values stay
/// percent-encoded; SAML values are base64 (never `%`), so a `%` means still encoded.
fn param_value(raw: &str) -> String {
    if raw.contains('%') {
        url::form_urlencoded::parse(format!("v={raw}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    } else {
        raw.to_string()
    }
}

fn name_values(list: Option<&Value>) -> Vec<(String, String)> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| (str_of(p, "name"), param_value(&str_of(p, "value"))))
                .collect()
        })
        .unwrap_or_default()
}

fn url_query(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// HAR 1.2: `log.entries[].request`.
fn har(entries: &Value) -> Result<Vec<Exchange>, CaptureError> {
    let mut out = Vec::new();
    for e in array(entries, "log.entries")? {
        let r = e.get("request").unwrap_or(&Value::Null);
        let url = str_of(r, "url");
        let mut query = name_values(r.get("queryString"));
        if query.is_empty() {
            query = url_query(&url);
        }
        let post = r.get("postData").unwrap_or(&Value::Null);
        let mut form = name_values(post.get("params"));
        if form.is_empty() {
            form = url::form_urlencoded::parse(str_of(post, "text").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        }
        out.push(Exchange {
            method: str_of(r, "method"),
            url,
            query,
            form,
        });
    }
    Ok(out)
}

fn pairs(list: Option<&Value>) -> Vec<(String, String)> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let p = p.as_array()?;
                    let name = p.first()?.as_str()?.to_string();
                    let value = p.get(1).and_then(Value::as_str).unwrap_or("");
                    Some((name, value.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// SAML-tracer: `requests[]` with `get` / `post` as `[name, value]` pairs (decoded), or
/// `postData` as `{name: [values]}`.
fn saml_tracer(requests: &Value) -> Result<Vec<Exchange>, CaptureError> {
    let mut out = Vec::new();
    for r in array(requests, "requests")? {
        let url = str_of(r, "url");
        let mut query = pairs(r.get("get"));
        if query.is_empty() {
            query = url_query(&url);
        }
        let mut form = pairs(r.get("post"));
        if form.is_empty() {
            if let Some(obj) = r.get("postData").and_then(Value::as_object) {
                for (k, vals) in obj {
                    for v in vals.as_array().into_iter().flatten() {
                        form.push((k.clone(), v.as_str().unwrap_or("").to_string()));
                    }
                }
            }
        }
        out.push(Exchange {
            method: str_of(r, "method"),
            url,
            query,
            form,
        });
    }
    Ok(out)
}

fn find<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The AuthnRequest an exchange carries (Redirect: in the query, deflated; POST: in the form).
fn authn_request(entry: usize, x: &Exchange) -> Option<FoundRequest> {
    let limits = Limits::default();
    let xml = match (find(&x.query, "SAMLRequest"), find(&x.form, "SAMLRequest")) {
        (Some(q), _) => decode_redirect(q, &limits).ok()?,
        (None, Some(f)) => decode_post(f, &limits).ok()?,
        _ => return None,
    };
    let doc = roxmltree::Document::parse(&xml).ok()?;
    let root = doc.root_element();
    let issuer = root
        .children()
        .find(|c| c.tag_name().name() == "Issuer")
        .and_then(|i| i.text())
        .unwrap_or("")
        .trim()
        .to_string();
    Some(FoundRequest {
        entry,
        id: root.attribute("ID").unwrap_or("").to_string(),
        acs: root
            .attribute("AssertionConsumerServiceURL")
            .unwrap_or("")
            .to_string(),
        issuer,
        xml: xml.clone(),
    })
}

/// `InResponseTo` of a base64 Response (its root element), if readable.
fn in_response_to(b64: &str) -> Option<String> {
    let raw = crate::saml::verify::decode_b64(b64)?;
    let xml = String::from_utf8(raw).ok()?;
    let doc = crate::saml::verify::parse(&xml).ok()?;
    doc.root_element()
        .attribute("InResponseTo")
        .map(str::to_string)
}

fn collect(format: Format, exchanges: &[Exchange]) -> Capture {
    let requests: Vec<FoundRequest> = exchanges
        .iter()
        .enumerate()
        .filter_map(|(i, x)| authn_request(i, x))
        .collect();
    let responses = exchanges
        .iter()
        .enumerate()
        .filter(|(_, x)| x.method.eq_ignore_ascii_case("POST"))
        .filter_map(|(i, x)| {
            let b64 = find(&x.form, "SAMLResponse")?.to_string();
            let answers = in_response_to(&b64)
                .and_then(|irt| requests.iter().rev().find(|r| r.id == irt).cloned());
            Some(FoundResponse {
                entry: i,
                url: x.url.clone(),
                saml_response: b64,
                answers,
            })
        })
        .collect();
    Capture {
        format,
        responses,
        requests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_capture_is_left_to_the_response_reader() {
        for input in [
            "<samlp:Response/>",
            "PHNhbWw+",
            "{\"other\": 1}",
            "{not json",
        ] {
            assert!(read(input).unwrap().is_none(), "{input}");
        }
    }

    #[test]
    fn percent_encoded_values_are_decoded_and_base64_is_kept() {
        assert_eq!(param_value("PHNh%2Bbw%3D%3D"), "PHNh+bw==");
        assert_eq!(param_value("PHNh+bw=="), "PHNh+bw==");
    }

    #[test]
    fn a_broken_capture_says_what_is_wrong() {
        let e = read("{\"log\": {\"entries\": 3}}").unwrap_err();
        assert!(e.0.contains("log.entries"), "{e}");
    }
}
