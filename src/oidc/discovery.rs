//! OpenID Connect Discovery 1.0: the provider's metadata document.

use super::OidcError;
use serde::Deserialize;

/// The parts of the discovery document flexgate uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// RP-initiated logout; read only to tell an Auth0 tenant behind a custom domain.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// `token_endpoint` parsed once per document: every login's token call used to parse it.
    #[serde(skip)]
    token_url: std::sync::OnceLock<Option<url::Url>>,
}

impl ProviderMetadata {
    /// `token_endpoint` as a URL, parsed on first use; `None` if it does not parse.
    pub fn token_url(&self) -> Option<&url::Url> {
        self.token_url
            .get_or_init(|| url::Url::parse(&self.token_endpoint).ok())
            .as_ref()
    }
}

/// `{issuer}/.well-known/openid-configuration`, with the issuer's trailing slash handled.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Checks a fetched document against the configured issuer and the transport rules.
pub fn check(meta: &ProviderMetadata, configured_issuer: &str) -> Result<(), OidcError> {
    if meta.issuer != configured_issuer {
        return Err(OidcError::IssuerMismatch {
            configured: configured_issuer.to_string(),
            found: meta.issuer.clone(),
        });
    }
    let mut endpoints = vec![
        ("authorization_endpoint", &meta.authorization_endpoint),
        ("token_endpoint", &meta.token_endpoint),
        ("jwks_uri", &meta.jwks_uri),
    ];
    if let Some(u) = &meta.userinfo_endpoint {
        endpoints.push(("userinfo_endpoint", u));
    }
    for (field, url) in endpoints {
        if crate::config::https_or_loopback(url).is_err() {
            return Err(OidcError::InsecureEndpoint {
                field,
                url: url.clone(),
            });
        }
    }
    if let Some(methods) = &meta.code_challenge_methods_supported {
        if !methods.iter().any(|m| m == "S256") {
            return Err(OidcError::NoPkce(methods.join(", ")));
        }
    }
    Ok(())
}

/// Fetches and checks the discovery document.
pub async fn fetch(
    http: &reqwest::Client,
    issuer: &str,
    timeout: std::time::Duration,
) -> Result<ProviderMetadata, OidcError> {
    let url = discovery_url(issuer);
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| OidcError::from_reqwest(&url, e, timeout))?;
    if !resp.status().is_success() {
        return Err(OidcError::Status {
            url,
            status: resp.status().as_u16(),
        });
    }
    let body = super::read_capped(resp, &url, timeout).await?;
    let meta: ProviderMetadata = serde_json::from_slice(&body).map_err(|e| OidcError::Garbage {
        url: url.clone(),
        reason: format!("not a discovery document: {e}"),
    })?;
    check(&meta, issuer)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::ProviderMetadata;

    fn doc(token_endpoint: &str) -> ProviderMetadata {
        serde_json::from_value(serde_json::json!({
            "issuer": "https://op.example.com/",
            "authorization_endpoint": "https://op.example.com/authorize",
            "token_endpoint": token_endpoint,
            "jwks_uri": "https://op.example.com/jwks",
        }))
        .unwrap()
    }

    #[test]
    fn the_token_endpoint_is_parsed_once_and_kept() {
        let m = doc("https://op.example.com:8443/oauth/token?x=1");
        let u = m.token_url().unwrap();
        assert_eq!(u.as_str(), "https://op.example.com:8443/oauth/token?x=1");
        assert!(std::ptr::eq(u, m.token_url().unwrap()), "parsed again");
        // A clone carries the parsed URL with it.
        assert_eq!(m.clone().token_url(), Some(u));
        assert_eq!(doc("not a url").token_url(), None);
    }
}
