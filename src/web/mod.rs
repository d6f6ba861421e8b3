//! HTTP: the axum router and one module per endpoint. HTTP types stay here; the login itself
//! is `login`'s.

pub mod admin;
pub mod admin_logins;
pub mod app;
mod callback;
mod errors;
mod health;
mod init;
mod metadata;
pub mod pages;
pub mod server;
mod sso;

pub use app::{router, AppState};

/// The cookie that binds a login to the browser that started it, when `public_url` is http
/// (loopback development only).
pub const BROWSER_COOKIE: &str = "flexgate_browser";

/// Its name when `public_url` is https. Browsers store a `__Host-` cookie only when it is set
/// `Secure`, with `Path=/` and no `Domain`, by the host itself: a sibling subdomain cannot plant
/// one to tie a victim's login to the attacker's (login CSRF).
pub const BROWSER_COOKIE_HOST: &str = "__Host-flexgate_browser";

/// The binding cookie's name: the `__Host-` one whenever cookies are `Secure` (https).
pub fn browser_cookie_name(secure: bool) -> &'static str {
    if secure {
        BROWSER_COOKIE_HOST
    } else {
        BROWSER_COOKIE
    }
}

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Reads the browser-binding cookie under the name it is set with (`secure`: https); a cookie
/// under the other name is ignored.
pub(crate) fn browser_cookie(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = browser_cookie_name(secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// 302 to the upstream, setting the browser-binding cookie. `SameSite=Lax`: the cookie is set on
/// the answer to Flex's cross-site request and must come back on the upstream's top-level
/// redirect to `/oidc/callback`, which Lax allows and Strict would not. On https the name has the
/// `__Host-` prefix, so it also carries `Secure`, `Path=/` and never a `Domain`.
pub(crate) fn redirect_with_cookie(
    location: &str,
    cookie: &str,
    secure: bool,
    max_age_secs: u64,
) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    let c = format!(
        "{}={cookie}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{}",
        browser_cookie_name(secure),
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        h.insert(header::SET_COOKIE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Form or query parameters, decoded; a parameter given twice is kept as given (the caller
/// refuses duplicates of the parameters it reads).
pub(crate) fn params(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The single value of `name`; `Err` when it appears more than once.
pub(crate) fn single<'a>(
    params: &'a [(String, String)],
    name: &str,
) -> Result<Option<&'a str>, String> {
    let mut it = params.iter().filter(|(k, _)| k == name);
    let first = it.next().map(|(_, v)| v.as_str());
    if it.next().is_some() {
        return Err(format!("the parameter {name} appears more than once"));
    }
    Ok(first)
}

/// Text from outside (the upstream, the browser) made safe for one log line: control characters
/// are escaped, so a newline cannot start a forged line in the text log format.
pub(crate) fn log_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        std::borrow::Cow::Owned(s.chars().flat_map(char::escape_default).collect())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_cookie_flags() {
        let r = redirect_with_cookie("https://op/authorize", "abc", true, 600);
        let c = r.headers()[header::SET_COOKIE].to_str().unwrap();
        assert_eq!(
            c,
            "__Host-flexgate_browser=abc; Path=/; Max-Age=600; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let r = redirect_with_cookie("http://127.0.0.1/authorize", "abc", false, 600);
        assert_eq!(
            r.headers()[header::SET_COOKIE].to_str().unwrap(),
            "flexgate_browser=abc; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn log_safe_escapes_control_characters() {
        assert_eq!(log_safe("agent1"), "agent1");
        assert_eq!(log_safe("a\nINFO forged"), "a\\nINFO forged");
    }

    #[test]
    fn reads_the_binding_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; flexgate_browser=xyz; b=2"),
        );
        assert_eq!(browser_cookie(&h, false).as_deref(), Some("xyz"));
        // On https only the __Host- name counts: the unprefixed one could be planted.
        assert_eq!(browser_cookie(&h, true), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("flexgate_browser=planted; __Host-flexgate_browser=mine"),
        );
        assert_eq!(browser_cookie(&h, true).as_deref(), Some("mine"));
        assert_eq!(browser_cookie(&h, false).as_deref(), Some("planted"));
    }
}
