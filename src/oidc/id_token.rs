//! ID token validation (OpenID Connect Core 1.0 §3.1.3.7) against the provider's JWKS.
//!
//! - `alg` must be on an allow-list of asymmetric algorithms: never `none`, never HMAC (an HMAC
//!   "signed" with the provider's public key is the classic confusion attack);
//! - the key is found by `kid` in a cached JWKS; an unknown `kid` refetches the JWKS, at most once
//!   per [`JwksCache::min_refetch`], so a flood of bogus tokens cannot turn into a flood of fetches;
//! - `iss`, `aud`, `azp`, `exp`, `iat`, `nonce` are checked.

use super::OidcError;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// Algorithms accepted for ID token signatures.
pub const ALLOWED_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("it is not a signed JWT ({0})")]
    Malformed(String),
    #[error("it is signed with {0}, which is not allowed (allowed: RS*, PS*, ES256/384, EdDSA)")]
    Algorithm(String),
    #[error("its key id {0:?} is not in the provider's JWKS, even after a refresh")]
    UnknownKey(String),
    #[error("its signature does not verify with the provider's key")]
    Signature,
    #[error("it has expired")]
    Expired,
    #[error("it was issued in the future (iat {0}); check the clocks")]
    IssuedInFuture(i64),
    #[error("its issuer is {found:?}, expected {expected:?}")]
    Issuer { expected: String, found: String },
    #[error("its audience does not contain this client")]
    Audience,
    #[error("its azp is {0:?}, not this client")]
    AuthorizedParty(String),
    #[error("its nonce does not match the one sent with this login")]
    Nonce,
    #[error("it lacks the claim {0}")]
    MissingClaim(String),
}

/// The provider's signing keys, cached.
#[derive(Debug)]
pub struct JwksCache {
    keys: JwkSet,
    fetched_at: Option<Instant>,
    /// The least time between two fetches triggered by unknown key ids.
    pub min_refetch: Duration,
}

impl JwksCache {
    pub fn new(min_refetch: Duration) -> Self {
        JwksCache {
            keys: JwkSet { keys: Vec::new() },
            fetched_at: None,
            min_refetch,
        }
    }

    pub fn replace(&mut self, keys: JwkSet, now: Instant) {
        self.keys = keys;
        self.fetched_at = Some(now);
    }

    /// May the cache be refreshed now (first fetch, or `min_refetch` since the last)?
    pub fn may_refetch(&self, now: Instant) -> bool {
        match self.fetched_at {
            None => true,
            Some(t) => now.duration_since(t) >= self.min_refetch,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.keys.is_empty()
    }

    /// The key for `kid` (or the only key when the token names none).
    pub fn find(&self, kid: Option<&str>) -> Option<&jsonwebtoken::jwk::Jwk> {
        match kid {
            Some(kid) => self.keys.find(kid),
            None if self.keys.keys.len() == 1 => self.keys.keys.first(),
            None => None,
        }
    }
}

/// What the token must say.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Seconds since the epoch.
    pub now: i64,
    pub leeway: u64,
}

/// Reads the header: `(alg, kid)`, refusing algorithms not on the allow-list.
pub fn header(token: &str) -> Result<(Algorithm, Option<String>), IdTokenError> {
    let h = jsonwebtoken::decode_header(token).map_err(|e| {
        // `alg: none` and HMAC variants the crate does not parse land here too.
        let s = e.to_string();
        if token
            .split('.')
            .next()
            .and_then(|h| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("alg").and_then(|a| a.as_str()).map(str::to_string))
            .is_some_and(|alg| !alg.is_empty())
        {
            IdTokenError::Algorithm(token_alg(token).unwrap_or(s))
        } else {
            IdTokenError::Malformed(s)
        }
    })?;
    if !ALLOWED_ALGS.contains(&h.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", h.alg)));
    }
    Ok((h.alg, h.kid))
}

fn token_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let h = token.split('.').next()?;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .ok()?;
    let v: Value = serde_json::from_slice(&b).ok()?;
    v.get("alg")?.as_str().map(str::to_string)
}

/// Verifies `token` with `jwk` and checks its claims. Returns all claims.
pub fn verify(
    token: &str,
    alg: Algorithm,
    jwk: &jsonwebtoken::jwk::Jwk,
    exp: &Expected<'_>,
) -> Result<Map<String, Value>, OidcError> {
    if let Some(key_alg) = jwk.common.key_algorithm {
        if format!("{key_alg:?}") != format!("{alg:?}") {
            return Err(
                IdTokenError::Algorithm(format!("{alg:?} (the key is for {key_alg:?})")).into(),
            );
        }
    }
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| IdTokenError::Malformed(format!("unusable JWK: {e}")))?;
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.leeway = exp.leeway;
    v.validate_aud = false; // checked below, with azp
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => IdTokenError::Signature,
            K::ExpiredSignature => IdTokenError::Expired,
            K::InvalidAlgorithm => IdTokenError::Algorithm(format!("{alg:?}")),
            K::MissingRequiredClaim(c) => IdTokenError::MissingClaim(c.clone()),
            _ => IdTokenError::Malformed(e.to_string()),
        }
    })?;
    let claims = data.claims;
    check_claims(&claims, exp)?;
    Ok(claims)
}

/// The claim checks of OIDC Core §3.1.3.7 beyond the signature.
pub fn check_claims(claims: &Map<String, Value>, exp: &Expected<'_>) -> Result<(), IdTokenError> {
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if iss != exp.issuer {
        return Err(IdTokenError::Issuer {
            expected: exp.issuer.to_string(),
            found: iss.to_string(),
        });
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !auds.contains(&exp.client_id) {
        return Err(IdTokenError::Audience);
    }
    match claims.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != exp.client_id => {
            return Err(IdTokenError::AuthorizedParty(azp.to_string()))
        }
        None if auds.len() > 1 => return Err(IdTokenError::MissingClaim("azp".into())),
        _ => {}
    }
    let exp_at = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(IdTokenError::MissingClaim("exp".into()))?;
    if exp_at + (exp.leeway as i64) <= exp.now {
        return Err(IdTokenError::Expired);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(IdTokenError::MissingClaim("iat".into()))?;
    if iat > exp.now + exp.leeway as i64 {
        return Err(IdTokenError::IssuedInFuture(iat));
    }
    match claims.get("nonce").and_then(Value::as_str) {
        Some(n) if constant_time_eq(n.as_bytes(), exp.nonce.as_bytes()) => {}
        Some(_) => return Err(IdTokenError::Nonce),
        None => return Err(IdTokenError::MissingClaim("nonce".into())),
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(IdTokenError::MissingClaim("sub".into()));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}
