//! The upstream OpenID Connect provider: discovery (`discovery`), the authorization-code flow
//! with PKCE (`client`), and ID token validation against the provider's JWKS (`id_token`).
//! Every call has a timeout; every error says which URL failed and how, never a token.

pub mod client;
pub mod discovery;
pub mod id_token;

pub use client::Upstream;

/// Why a call to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the upstream at {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("the upstream at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the upstream at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the upstream at {url} sent a response flexgate cannot read: {reason}")]
    Garbage { url: String, reason: String },
    #[error("the discovery document says issuer {found:?}, but upstream.issuer is {configured:?}; they must be equal (watch the trailing slash)")]
    IssuerMismatch { configured: String, found: String },
    #[error("the discovery document's {field} is {url:?}, which is not https (http is allowed only on loopback)")]
    InsecureEndpoint { field: &'static str, url: String },
    #[error(
        "the upstream does not support PKCE with S256 (code_challenge_methods_supported: {0})"
    )]
    NoPkce(String),
    #[error("the token endpoint refused the code: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Token {
        error: String,
        description: Option<String>,
    },
    #[error("the ID token was refused: {0}")]
    IdToken(#[from] id_token::IdTokenError),
    #[error("the signed userinfo answer (application/jwt) was refused: {0}")]
    SignedUserinfo(id_token::IdTokenError),
    #[error("userinfo returned sub {found:?} for ID token sub {expected:?}")]
    UserinfoSubject { expected: String, found: String },
}

impl OidcError {
    /// A slow upstream (504) rather than a broken one (502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, OidcError::Timeout { .. })
    }

    pub(crate) fn from_reqwest(url: &str, e: reqwest::Error, timeout: std::time::Duration) -> Self {
        // reqwest's Display includes the URL, never a body; tokens travel in bodies and headers.
        if e.is_timeout() {
            OidcError::Timeout {
                url: url.to_string(),
                secs: timeout.as_secs(),
            }
        } else if e.is_decode() {
            OidcError::Garbage {
                url: url.to_string(),
                reason: e.to_string(),
            }
        } else {
            let reason = crate::http_client::error_chain(&e);
            OidcError::Unreachable {
                url: url.to_string(),
                reason,
            }
        }
    }
}

/// The most flexgate reads of any upstream response body: discovery documents, JWKS, token and
/// userinfo responses are a few KiB; a hostile or broken upstream cannot make flexgate buffer more.
pub const MAX_BODY: usize = 1024 * 1024;

/// Reads a response body, refusing more than [`MAX_BODY`] bytes.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    url: &str,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, OidcError> {
    if resp.content_length().is_some_and(|n| n as usize > MAX_BODY) {
        return Err(OidcError::Garbage {
            url: url.to_string(),
            reason: format!("the response is over {MAX_BODY} bytes"),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| OidcError::from_reqwest(url, e, timeout))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(OidcError::Garbage {
                url: url.to_string(),
                reason: format!("the response is over {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
