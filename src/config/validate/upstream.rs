//! `[upstream]` and `[upstream.management]`: the OpenID Connect provider.

use super::Problems;
use crate::config::raw::{RawManagement, RawUpstream};
use crate::config::{https_or_loopback, ManagementConfig, Secret, TokenAuthMethod, UpstreamConfig};
use url::Url;

pub(super) fn upstream(u: RawUpstream, p: &mut Problems) -> Option<UpstreamConfig> {
    let issuer = match https_or_loopback(&u.issuer) {
        Ok(url) => Some(url),
        Err(problem) => {
            p.add("upstream.issuer", problem, "write the issuer exactly as the provider's discovery document says, e.g. \"https://example.us.auth0.com/\" (Auth0 keeps the trailing slash)");
            None
        }
    };
    let mut ok = true;
    if u.client_id.trim().is_empty() {
        p.add(
            "upstream.client_id",
            "is empty",
            "copy the Client ID of the upstream application",
        );
        ok = false;
    }
    if u.client_secret.is_empty() {
        p.add(
            "upstream.client_secret",
            "is empty",
            "set it, e.g. client_secret = \"${FLEXGATE_CLIENT_SECRET}\" and export that variable",
        );
        ok = false;
    }
    let scopes = scopes(u.scopes, p);
    let token_auth_method = match u.token_auth_method.as_deref() {
        None => Some(None),
        Some(v) => p
            .variant::<TokenAuthMethod>(
                "upstream.token_auth_method",
                v,
                "use \"client_secret_basic\" or \"client_secret_post\", or leave it out to follow discovery",
            )
            .map(Some),
    };
    let timeout = p.secs("upstream.timeout_secs", u.timeout_secs, 10, 1..=120);
    let management = match (u.management, &issuer) {
        (None, _) => Some(None),
        (Some(m), Some(issuer)) => management(m, issuer, p).map(Some),
        (Some(_), None) => None,
    };
    ok.then_some(())?;
    issuer?;
    Some(UpstreamConfig {
        management: management?,
        issuer: u.issuer,
        client_id: u.client_id,
        client_secret: Secret::new(u.client_secret),
        connection: u.connection.filter(|c| !c.is_empty()),
        scopes: scopes?,
        token_auth_method: token_auth_method?,
        timeout: timeout?,
        userinfo: u.userinfo.unwrap_or(true),
    })
}

fn scopes(raw: Option<Vec<String>>, p: &mut Problems) -> Option<Vec<String>> {
    let scopes = raw.unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    let mut ok = true;
    if !scopes.iter().any(|s| s == "openid") {
        p.add(
            "upstream.scopes",
            "does not include \"openid\"",
            "add \"openid\" (OpenID Connect needs it)",
        );
        ok = false;
    }
    if scopes
        .iter()
        .any(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        p.add(
            "upstream.scopes",
            "has an empty scope or one with spaces",
            "list one scope per string",
        );
        ok = false;
    }
    ok.then_some(scopes)
}

/// `[upstream.management]`; its URL defaults to the issuer's scheme and host.
fn management(m: RawManagement, issuer: &Url, p: &mut Problems) -> Option<ManagementConfig> {
    let key = "upstream.management.url";
    let url = m
        .url
        .unwrap_or_else(|| format!("{}://{}", issuer.scheme(), issuer.host_str().unwrap_or("")));
    let url_ok = match https_or_loopback(&url) {
        Err(problem) => {
            p.add(key, problem, "write your tenant's canonical domain, e.g. \"https://example.us.auth0.com\" (not a custom domain)");
            false
        }
        Ok(parsed) if parsed.path() != "/" || parsed.query().is_some() => {
            p.add(
                key,
                "has a path or query",
                "write only scheme and host, e.g. \"https://example.us.auth0.com\"",
            );
            false
        }
        Ok(_) => true,
    };
    let credentials_ok = !m.client_id.is_empty() && !m.client_secret.is_empty();
    if !credentials_ok {
        p.add("upstream.management", "has an empty client_id or client_secret", "create a Machine-to-Machine application authorized for the Auth0 Management API with the read:users scope, and copy its credentials");
    }
    let cache_ttl = p.secs("upstream.management.cache_secs", m.cache_secs, 60, 0..=3600);
    let prefetch = prefetch(m.prefetch_secs, p);
    (url_ok && credentials_ok).then_some(())?;
    Some(ManagementConfig {
        url: url.trim_end_matches('/').to_string(),
        client_id: m.client_id,
        client_secret: Secret::new(m.client_secret),
        cache_ttl: cache_ttl?,
        prefetch: prefetch?,
    })
}

/// `upstream.management.prefetch_secs`: 0 turns the bulk read of roles off.
fn prefetch(v: Option<u64>, p: &mut Problems) -> Option<Option<std::time::Duration>> {
    const KEY: &str = "upstream.management.prefetch_secs";
    match v {
        Some(0) => Some(None),
        Some(v) if !PREFETCH_RANGE.contains(&v) => {
            let (lo, hi) = (PREFETCH_RANGE.start(), PREFETCH_RANGE.end());
            p.add(
                KEY,
                format!("is {v}, outside {lo}..={hi}"),
                format!("pick a value between {lo} and {hi} seconds, or 0 to read roles at each login only"),
            );
            None
        }
        v => Some(Some(std::time::Duration::from_secs(v.unwrap_or(300)))),
    }
}

/// How often every user's roles may be read in bulk: not more than every 5 s, at least daily.
const PREFETCH_RANGE: std::ops::RangeInclusive<u64> = 5..=86_400;
