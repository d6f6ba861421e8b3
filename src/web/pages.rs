//! Every HTML page flexgate shows a person: the auto-submitting POST form that carries the
//! SAML Response to the ACS, and the error pages. Everything echoed is HTML-escaped; every page
//! carries a strict Content-Security-Policy (inline style and script allowed by hash only).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::sync::LazyLock;

/// Escapes text for HTML element content and double- or single-quoted attribute values.
///
/// The five characters it replaces are ASCII, so it scans bytes and copies the runs between
/// them whole (a signed Response's ~8 KB of base64 has none: one copy).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    escape_into(&mut out, s);
    out
}

/// [`escape`], appending to `out`.
fn escape_into(out: &mut String, s: &str) {
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        // `i` is the index of an ASCII byte: a char boundary.
        out.push_str(&s[from..i]);
        out.push_str(entity);
        from = i + 1;
    }
    out.push_str(&s[from..]);
}

pub const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f4f5f7;color:#1f2328;margin:0}\
main{max-width:36rem;margin:4rem auto;background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.15);padding:2rem 2.5rem}\
h1{font-size:1.35rem;margin:0 0 1rem}p{line-height:1.5}.hint{background:#f6f8fa;border-left:4px solid #0969da;padding:.75rem 1rem}\
.ref{color:#59636e;font-size:.85rem;margin-top:2rem}code{background:#eff1f3;padding:.1rem .3rem;border-radius:4px}\
button{background:#0969da;color:#fff;border:0;border-radius:6px;padding:.6rem 1.2rem;font-size:1rem;cursor:pointer}";

pub const SUBMIT_JS: &str = "document.getElementById(\"f\").submit();";

fn csp_hash(s: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(crate::digest::sha256(s.as_bytes()))
    )
}

/// The admin pages' own style (wide tables, XML blocks), allowed by its hash like [`CSS`].
pub const ADMIN_CSS: &str = "main{max-width:84rem;margin:2rem auto}table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.5rem 0 1.5rem}\
th,td{border-bottom:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}\
pre{background:#f6f8fa;padding:.75rem;overflow:auto;font-size:.8rem;white-space:pre-wrap;word-break:break-all}\
.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:600}form input,form select{margin-right:.5rem}h2{font-size:1.1rem;margin-top:1.5rem}";

static CSS_HASH: LazyLock<String> = LazyLock::new(|| csp_hash(CSS));
static ADMIN_CSS_HASH: LazyLock<String> = LazyLock::new(|| csp_hash(ADMIN_CSS));
static JS_HASH: LazyLock<String> = LazyLock::new(|| csp_hash(SUBMIT_JS));

fn html_response(status: StatusCode, csp: String, html: String) -> Response {
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

fn layout(title: &str, body: &str, extra_head: &str) -> String {
    let mut out = String::with_capacity(body.len() + extra_head.len() + CSS.len() + 400);
    layout_head(&mut out, title, extra_head);
    out.push_str(body);
    out.push_str(LAYOUT_TAIL);
    out
}

/// Every page's start, up to and including `<main>`.
fn layout_head(out: &mut String, title: &str, extra_head: &str) {
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta name=\"referrer\" content=\"no-referrer\"><title>");
    escape_into(out, title);
    out.push_str("</title><style>");
    out.push_str(CSS);
    out.push_str("</style>");
    out.push_str(extra_head);
    out.push_str("</head>\n<body><main>\n");
}

/// Every page's end, after its body.
const LAYOUT_TAIL: &str = "\n</main></body></html>\n";

fn origin_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "'none'".into(),
    }
}

/// The HTTP-POST binding page: a form that submits itself to the ACS, with a button for
/// browsers without JavaScript. `relay_state` is echoed exactly (escaped, never interpreted).
pub fn post_form_html(acs_url: &str, saml_response: &str, relay_state: Option<&str>) -> String {
    // Written into one buffer sized up front: the ~8 KB of base64 is copied once (two nested
    // `format!`s copied it three times and grew the string as they went; issue 21). The
    // snapshot tests hold the page byte for byte.
    let relay_len = relay_state.map_or(0, |r| r.len() + 64);
    let mut out = String::with_capacity(
        saml_response.len() + acs_url.len() + relay_len + CSS.len() + SUBMIT_JS.len() + 800,
    );
    layout_head(&mut out, "Signing you in…", "");
    out.push_str("<h1>Signing you in…</h1>\n<form id=\"f\" method=\"post\" action=\"");
    escape_into(&mut out, acs_url);
    out.push_str("\"><input type=\"hidden\" name=\"SAMLResponse\" value=\"");
    escape_into(&mut out, saml_response);
    out.push_str("\">");
    if let Some(r) = relay_state {
        out.push_str("<input type=\"hidden\" name=\"RelayState\" value=\"");
        escape_into(&mut out, r);
        out.push_str("\">");
    }
    out.push_str("\n<noscript><p>JavaScript is turned off. Press Continue to finish signing in.</p><button type=\"submit\">Continue</button></noscript></form>\n<script>");
    out.push_str(SUBMIT_JS);
    out.push_str("</script>");
    out.push_str(LAYOUT_TAIL);
    out
}

pub fn post_form(acs_url: &str, saml_response: &str, relay_state: Option<&str>) -> Response {
    let csp = format!(
        "default-src 'none'; style-src {}; script-src {}; form-action {}; base-uri 'none'; frame-ancestors 'none'",
        *CSS_HASH,
        *JS_HASH,
        origin_of(acs_url)
    );
    html_response(
        StatusCode::OK,
        csp,
        post_form_html(acs_url, saml_response, relay_state),
    )
}

/// What an error page says.
#[derive(Debug, Clone)]
pub struct ErrorPage<'a> {
    pub status: StatusCode,
    pub title: &'a str,
    /// What happened, in words a person understands.
    pub message: String,
    /// What to do about it.
    pub hint: String,
    /// The reference that ties the page to the log line.
    pub reference: &'a str,
}

pub fn error_page_html(p: &ErrorPage<'_>) -> String {
    let body = format!(
        "<h1>{}</h1>\n<p>{}</p>\n<p class=\"hint\">{}</p>\n<p class=\"ref\">Reference: <code>{}</code> · HTTP {}</p>",
        escape(p.title),
        escape(&p.message),
        escape(&p.hint),
        escape(p.reference),
        p.status.as_u16()
    );
    layout(p.title, &body, "")
}

pub fn error_page(p: &ErrorPage<'_>) -> Response {
    let csp = format!(
        "default-src 'none'; style-src {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        *CSS_HASH
    );
    html_response(p.status, csp, error_page_html(p))
}

/// A page of the product itself (demo pages): `body` is trusted markup built by the caller with
/// [`escape`]; `script` (if any) is allowed by its hash.
pub fn app_page(status: StatusCode, title: &str, body: &str, form_action: &str) -> Response {
    let csp = format!(
        "default-src 'none'; style-src {}; img-src https: data:; base-uri 'none'; form-action {form_action}; frame-ancestors 'none'",
        *CSS_HASH
    );
    html_response(status, csp, layout(title, body, ""))
}

/// An admin page (admin listener only): `body` is trusted markup built by the caller with
/// [`escape`]; no script at all; forms may only go back to the same origin.
pub fn admin_page(status: StatusCode, title: &str, body: &str) -> Response {
    let csp = format!(
        "default-src 'none'; style-src {} {}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        *CSS_HASH, *ADMIN_CSS_HASH
    );
    let head = format!("<style>{ADMIN_CSS}</style>");
    html_response(status, csp, layout(title, body, &head))
}

#[cfg(test)]
mod tests {
    use super::{escape, post_form_html, CSS, SUBMIT_JS};

    /// The character-by-character definition the byte scan must match exactly.
    fn reference(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                '&' => "&amp;".to_string(),
                '<' => "&lt;".to_string(),
                '>' => "&gt;".to_string(),
                '"' => "&quot;".to_string(),
                '\'' => "&#39;".to_string(),
                c => c.to_string(),
            })
            .collect()
    }

    #[test]
    fn escape_replaces_the_five_and_copies_everything_else() {
        for s in [
            "",
            "plain",
            "&",
            "<script>alert('x')</script>",
            "a\"b'c&d<e>f",
            "&&<<>>\"\"''",
            "PHNhbWxwOlJlc3BvbnNlIHhtbG5zOnNhbWxwPSJ1cm46b2FzaXM=+/",
            "Zoë <ä@example.com> — «quoted» 'ok' & 日本語",
            "trailing &",
            "<leading",
        ] {
            assert_eq!(escape(s), reference(s), "{s:?}");
        }
        assert_eq!(escape("a<b"), "a&lt;b");
        assert_eq!(escape("é'"), "é&#39;");
    }

    /// The page as the two nested `format!`s wrote it before it was written into one buffer.
    fn post_form_reference(
        acs_url: &str,
        saml_response: &str,
        relay_state: Option<&str>,
    ) -> String {
        let relay = relay_state
            .map(|r| {
                format!(
                    "<input type=\"hidden\" name=\"RelayState\" value=\"{}\">",
                    escape(r)
                )
            })
            .unwrap_or_default();
        let body = format!(
            "<h1>Signing you in…</h1>\n<form id=\"f\" method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"SAMLResponse\" value=\"{}\">{relay}\n<noscript><p>JavaScript is turned off. Press Continue to finish signing in.</p><button type=\"submit\">Continue</button></noscript></form>\n<script>{SUBMIT_JS}</script>",
            escape(acs_url),
            escape(saml_response),
        );
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta name=\"referrer\" content=\"no-referrer\"><title>{}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n",
            escape("Signing you in…")
        )
    }

    #[test]
    fn the_post_form_is_byte_identical_to_its_format_definition() {
        let b64 = "PHNhbWxwOlJlc3BvbnNlIHhtbG5zOnNhbWxwPSJ1cm46b2FzaXM=+/".repeat(200);
        for (acs, resp, relay) in [
            (
                "https://login.flex.us1.twilio.com/login/callback?connection=JQ1",
                b64.as_str(),
                None,
            ),
            (
                "https://iam.twilio.com/v1/Accounts/AC1/saml2",
                "x",
                Some(""),
            ),
            (
                "https://a/?x=1&y=\"2\"",
                "<not&base64>",
                Some("\"><script>alert(1)</script>"),
            ),
            ("", "", Some("Zoë 'ä' & 日本語")),
        ] {
            assert_eq!(
                post_form_html(acs, resp, relay),
                post_form_reference(acs, resp, relay),
                "{acs:?} {relay:?}"
            );
        }
    }
}
