//! ID token validation (OpenID Connect Core 1.0 §3.1.3.7) against the provider's JWKS.
//!
//! - `alg` must be on an allow-list of asymmetric algorithms: never `none`, never HMAC (an HMAC
//!   "signed" with the provider's public key is the classic confusion attack); it must match the
//!   key's type, and the key's own `alg` when the JWKS gives one;
//! - the key is found by `kid` in a cached JWKS whose keys are parsed once into OpenSSL keys; an
//!   unknown `kid` refetches the JWKS, at most once per [`JwksCache::min_refetch`], so a flood of
//!   bogus tokens cannot turn into a flood of fetches;
//! - `iss`, `aud`, `azp`, `exp`, `nbf`, `iat`, `nonce`, `sub` are checked; the times against
//!   [`Expected::now`] (the login's injected clock) within [`Expected::leeway`] (`idp.clock_skew_secs`).
//!
//! RS* and PS* signatures with a modulus of 2,048 to 8,192 bits (every provider's default) are
//! checked with `ring` (already linked: it is rustls's crypto): in a login, where the caches are
//! cold, OpenSSL 3's `EVP_DigestVerifyInit` (an algorithm fetch per call) cost more than the RSA
//! arithmetic itself (≈ 0.1 ms against ≈ 0.03 ms; BENCHMARKS.md, issue 21). Smaller RSA keys, EC
//! and Ed25519 keys are checked with OpenSSL (flexgate's crypto library). The pure-Rust `rsa` crate
//! behind `jsonwebtoken` cost ≈ 0.2 ms per RS256 token. Tokens signed by `jsonwebtoken` and by
//! oidc-provider (node's jose) are the oracles in the tests.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Algorithms accepted for ID token signatures.
pub const ALLOWED_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
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

/// One signing key of the provider, parsed once.
#[derive(Clone)]
pub struct JwkKey {
    pub kid: Option<String>,
    /// The key's own `alg`, when the JWKS pins one.
    pub alg: Option<String>,
    key: PKey<Public>,
    /// The big-endian modulus and exponent of an RSA key `ring` checks (2,048–8,192 bits).
    ring_rsa: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for JwkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwkKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

fn b64url(v: &Value, field: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(v.get(field)?.as_str()?.trim_end_matches('='))
        .ok()
}

impl JwkKey {
    /// Parses one JWK (RSA, EC P-256/P-384, OKP Ed25519). `None` for keys flexgate cannot use
    /// (other types, encryption keys, malformed members): they are skipped, not fatal.
    pub fn from_jwk(v: &Value) -> Option<JwkKey> {
        if v.get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            return None;
        }
        let mut ring_rsa = None;
        let key = match v.get("kty")?.as_str()? {
            "RSA" => {
                let n = BigNum::from_slice(&b64url(v, "n")?).ok()?;
                let e = BigNum::from_slice(&b64url(v, "e")?).ok()?;
                if (2048..=8192).contains(&n.num_bits()) && e.num_bits() <= 33 {
                    ring_rsa = Some((n.to_vec(), e.to_vec()));
                }
                PKey::from_rsa(Rsa::from_public_components(n, e).ok()?).ok()?
            }
            "EC" => {
                let nid = match v.get("crv")?.as_str()? {
                    "P-256" => Nid::X9_62_PRIME256V1,
                    "P-384" => Nid::SECP384R1,
                    _ => return None,
                };
                let group = EcGroup::from_curve_name(nid).ok()?;
                let x = BigNum::from_slice(&b64url(v, "x")?).ok()?;
                let y = BigNum::from_slice(&b64url(v, "y")?).ok()?;
                PKey::from_ec_key(EcKey::from_public_key_affine_coordinates(&group, &x, &y).ok()?)
                    .ok()?
            }
            "OKP" if v.get("crv")?.as_str()? == "Ed25519" => {
                PKey::public_key_from_raw_bytes(&b64url(v, "x")?, Id::ED25519).ok()?
            }
            _ => return None,
        };
        Some(JwkKey {
            kid: v.get("kid").and_then(Value::as_str).map(str::to_string),
            alg: v.get("alg").and_then(Value::as_str).map(str::to_string),
            key,
            ring_rsa,
        })
    }

    /// Checks a JWS signature made with `alg` over `input`.
    pub fn verify(&self, alg: &str, input: &[u8], sig: &[u8]) -> Result<(), IdTokenError> {
        if let Some(key_alg) = &self.alg {
            if key_alg != alg {
                return Err(IdTokenError::Algorithm(format!(
                    "{alg} (the key is for {key_alg})"
                )));
            }
        }
        let ok = match (alg, self.key.id()) {
            ("RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512", Id::RSA) => {
                match &self.ring_rsa {
                    Some((n, e)) => ring_rsa(alg, n, e, input, sig),
                    None => self.openssl_rsa(alg, input, sig)?,
                }
            }
            ("ES256" | "ES384", Id::EC) => self.ecdsa(alg, input, sig)?,
            ("EdDSA", Id::ED25519) => Verifier::new_without_digest(&self.key)
                .and_then(|mut v| v.verify_oneshot(sig, input))
                .unwrap_or(false),
            _ => return Err(self.wrong_family(alg)),
        };
        if ok {
            Ok(())
        } else {
            Err(IdTokenError::Signature)
        }
    }

    fn wrong_family(&self, alg: &str) -> IdTokenError {
        IdTokenError::Algorithm(format!(
            "{alg} (the key {:?} is of another type)",
            self.kid.as_deref().unwrap_or("")
        ))
    }

    /// RS* or PS* with OpenSSL: RSA keys outside what `ring` takes (under 2,048 bits).
    fn openssl_rsa(&self, alg: &str, input: &[u8], sig: &[u8]) -> Result<bool, IdTokenError> {
        let d = sha_of_bits(&alg[2..]);
        let mut v = Verifier::new(d, &self.key).map_err(|_| IdTokenError::Signature)?;
        if alg.starts_with("PS") {
            v.set_rsa_padding(Padding::PKCS1_PSS)
                .and_then(|_| v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH))
                .and_then(|_| v.set_rsa_mgf1_md(d))
                .map_err(|_| IdTokenError::Signature)?;
        }
        Ok(v.update(input).and_then(|_| v.verify(sig)).unwrap_or(false))
    }

    /// ES256 / ES384 with OpenSSL; the key's curve must be the algorithm's.
    fn ecdsa(&self, alg: &str, input: &[u8], sig: &[u8]) -> Result<bool, IdTokenError> {
        let (d, len, nid) = if alg == "ES256" {
            (MessageDigest::sha256(), 32, Nid::X9_62_PRIME256V1)
        } else {
            (MessageDigest::sha384(), 48, Nid::SECP384R1)
        };
        let curve = self.key.ec_key().ok().and_then(|k| k.group().curve_name());
        if curve != Some(nid) {
            return Err(self.wrong_family(alg));
        }
        // JWS carries r || s; OpenSSL wants DER.
        if sig.len() != 2 * len {
            return Err(IdTokenError::Signature);
        }
        let der = BigNum::from_slice(&sig[..len])
            .and_then(|r| BigNum::from_slice(&sig[len..]).map(|s| (r, s)))
            .and_then(|(r, s)| EcdsaSig::from_private_components(r, s))
            .and_then(|e| e.to_der())
            .map_err(|_| IdTokenError::Signature)?;
        let mut v = Verifier::new(d, &self.key).map_err(|_| IdTokenError::Signature)?;
        Ok(v.update(input)
            .and_then(|_| v.verify(&der))
            .unwrap_or(false))
    }
}

/// SHA-256, -384 or -512 by the digits of a JWS algorithm name.
fn sha_of_bits(bits: &str) -> MessageDigest {
    match bits {
        "256" => MessageDigest::sha256(),
        "384" => MessageDigest::sha384(),
        _ => MessageDigest::sha512(),
    }
}

/// RS* or PS* with `ring`, for a key of 2,048–8,192 bits given as its big-endian modulus `n` and
/// exponent `e` (PSS with the salt as long as the hash, as RFC 7518 §3.5 requires).
fn ring_rsa(alg: &str, n: &[u8], e: &[u8], input: &[u8], sig: &[u8]) -> bool {
    use ring::signature as rs;
    let params: &rs::RsaParameters = match alg {
        "RS256" => &rs::RSA_PKCS1_2048_8192_SHA256,
        "RS384" => &rs::RSA_PKCS1_2048_8192_SHA384,
        "RS512" => &rs::RSA_PKCS1_2048_8192_SHA512,
        "PS256" => &rs::RSA_PSS_2048_8192_SHA256,
        "PS384" => &rs::RSA_PSS_2048_8192_SHA384,
        _ => &rs::RSA_PSS_2048_8192_SHA512,
    };
    rs::RsaPublicKeyComponents { n, e }
        .verify(params, input, sig)
        .is_ok()
}

/// Parses a JWKS document into usable keys (unusable ones are skipped).
pub fn parse_jwks(doc: &Value) -> Result<Vec<JwkKey>, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    Ok(keys.iter().filter_map(JwkKey::from_jwk).collect())
}

/// The provider's signing keys, cached.
#[derive(Debug)]
pub struct JwksCache {
    by_kid: HashMap<String, JwkKey>,
    all: Vec<JwkKey>,
    fetched_at: Option<Instant>,
    /// The least time between two fetches triggered by unknown key ids.
    pub min_refetch: Duration,
}

impl JwksCache {
    pub fn new(min_refetch: Duration) -> Self {
        JwksCache {
            by_kid: HashMap::new(),
            all: Vec::new(),
            fetched_at: None,
            min_refetch,
        }
    }

    pub fn replace(&mut self, keys: Vec<JwkKey>, now: Instant) {
        self.by_kid = keys
            .iter()
            .filter_map(|k| k.kid.clone().map(|kid| (kid, k.clone())))
            .collect();
        self.all = keys;
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
        self.all.is_empty()
    }

    /// The key for `kid` (or the only key when the token names none).
    pub fn find(&self, kid: Option<&str>) -> Option<&JwkKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None if self.all.len() == 1 => self.all.first(),
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
    /// Seconds `exp`, `nbf` and `iat` may be off.
    pub leeway: u64,
}

/// A JWS in compact form, split and decoded.
pub struct Jws<'t> {
    pub alg: String,
    pub kid: Option<String>,
    /// `header.payload`, the signed bytes.
    pub signing_input: &'t str,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Splits a compact JWS and reads its header, refusing algorithms not on the allow-list and
/// headers with `crit` (no extension is understood).
pub fn parse(token: &str) -> Result<Jws<'_>, IdTokenError> {
    let malformed = |m: &str| IdTokenError::Malformed(m.to_string());
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // A header alone can still say `alg: none`.
        if let Some(alg) = token
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("alg").and_then(Value::as_str).map(str::to_string))
        {
            if !ALLOWED_ALGS.contains(&alg.as_str()) {
                return Err(IdTokenError::Algorithm(alg));
            }
        }
        return Err(malformed("not three dot-separated parts"));
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("the header is not base64url JSON"))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("the header has no alg"))?
        .to_string();
    if !ALLOWED_ALGS.contains(&alg.as_str()) {
        return Err(IdTokenError::Algorithm(alg));
    }
    if header.get("crit").is_some() {
        return Err(malformed("the header has crit extensions"));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| malformed("the payload is not base64url"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| malformed("the signature is not base64url"))?;
    Ok(Jws {
        alg,
        kid: header
            .get("kid")
            .and_then(Value::as_str)
            .map(str::to_string),
        signing_input: &token[..h.len() + 1 + p.len()],
        payload,
        signature,
    })
}

/// The signature of `jws` checked with `key`, then its payload as a JSON object.
fn signed_claims(jws: &Jws<'_>, key: &JwkKey) -> Result<Map<String, Value>, IdTokenError> {
    key.verify(&jws.alg, jws.signing_input.as_bytes(), &jws.signature)?;
    serde_json::from_slice(&jws.payload)
        .map_err(|_| IdTokenError::Malformed("the payload is not a JSON object".into()))
}

/// Verifies `jws` with `key` and checks its claims. Returns all claims.
pub fn verify(
    jws: &Jws<'_>,
    key: &JwkKey,
    exp: &Expected<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    let claims = signed_claims(jws, key)?;
    check_claims(&claims, exp)?;
    Ok(claims)
}

/// Verifies a signed userinfo answer (`application/jwt`, OIDC Core §5.3.2) with `key`: the same
/// algorithm allow-list and signature check as an ID token, then `iss` must be the issuer and
/// `aud` must contain this client (a signed answer without them is refused: it could be meant
/// for anyone), and `exp`, when present, must not have passed. No nonce: userinfo has none.
/// Returns all claims.
pub fn verify_userinfo(
    jws: &Jws<'_>,
    key: &JwkKey,
    exp: &Expected<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    let claims = signed_claims(jws, key)?;
    check_issuer_and_audience(&claims, exp)?;
    if let Some(exp_at) = claims.get("exp").and_then(Value::as_i64) {
        if exp_at + (exp.leeway as i64) <= exp.now {
            return Err(IdTokenError::Expired);
        }
    }
    Ok(claims)
}

/// `iss` equals the issuer; `aud` contains this client; `azp`, when present or needed, is it.
fn check_issuer_and_audience(
    claims: &Map<String, Value>,
    exp: &Expected<'_>,
) -> Result<(), IdTokenError> {
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
        Some(azp) if azp != exp.client_id => Err(IdTokenError::AuthorizedParty(azp.to_string())),
        None if auds.len() > 1 => Err(IdTokenError::MissingClaim("azp".into())),
        _ => Ok(()),
    }
}

/// The claim checks of OIDC Core §3.1.3.7 beyond the signature.
pub fn check_claims(claims: &Map<String, Value>, exp: &Expected<'_>) -> Result<(), IdTokenError> {
    check_issuer_and_audience(claims, exp)?;
    let exp_at = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(IdTokenError::MissingClaim("exp".into()))?;
    if exp_at + (exp.leeway as i64) <= exp.now {
        return Err(IdTokenError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64) {
        if nbf > exp.now + exp.leeway as i64 {
            return Err(IdTokenError::IssuedInFuture(nbf));
        }
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(IdTokenError::MissingClaim("iat".into()))?;
    if iat > exp.now + exp.leeway as i64 {
        return Err(IdTokenError::IssuedInFuture(iat));
    }
    match claims.get("nonce").and_then(Value::as_str) {
        Some(n) if crate::constant_time::eq(n.as_bytes(), exp.nonce.as_bytes()) => {}
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

#[cfg(test)]
mod tests {
    //! The oracle: tokens signed by `jsonwebtoken` (an independent JWS implementation), verified
    //! here with OpenSSL.
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use openssl::pkey::Private;
    use serde_json::json;

    fn jwk_of(key: &PKey<Private>, kid: &str) -> Value {
        let b = |v: Vec<u8>| URL_SAFE_NO_PAD.encode(v);
        match key.id() {
            Id::RSA => {
                let r = key.rsa().unwrap();
                json!({"kty": "RSA", "kid": kid, "n": b(r.n().to_vec()), "e": b(r.e().to_vec())})
            }
            Id::EC => {
                let ec = key.ec_key().unwrap();
                let mut ctx = openssl::bn::BigNumContext::new().unwrap();
                let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
                ec.public_key()
                    .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                    .unwrap();
                let len = if ec.group().curve_name() == Some(Nid::X9_62_PRIME256V1) {
                    32
                } else {
                    48
                };
                let crv = if len == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "kid": kid, "crv": crv, "x": b(x.to_vec_padded(len).unwrap()), "y": b(y.to_vec_padded(len).unwrap())})
            }
            _ => {
                json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b(key.raw_public_key().unwrap())})
            }
        }
    }

    fn claims(now: i64) -> Value {
        json!({"iss": "https://op", "aud": "c", "sub": "u", "nonce": "n", "exp": now + 300, "iat": now})
    }

    fn expected(now: i64) -> Expected<'static> {
        Expected {
            issuer: "https://op",
            client_id: "c",
            nonce: "n",
            now,
            leeway: 60,
        }
    }

    #[test]
    fn verifies_what_jsonwebtoken_signs() {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let now = chrono::Utc::now().timestamp();
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let p256 = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        let p384 = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap(),
        )
        .unwrap();
        let ed = PKey::generate_ed25519().unwrap();
        let cases: Vec<(Algorithm, &str, &PKey<Private>, EncodingKey)> = vec![
            (
                Algorithm::RS256,
                "RS256",
                &rsa,
                EncodingKey::from_rsa_der(&rsa.rsa().unwrap().private_key_to_der().unwrap()),
            ),
            (
                Algorithm::RS512,
                "RS512",
                &rsa,
                EncodingKey::from_rsa_der(&rsa.rsa().unwrap().private_key_to_der().unwrap()),
            ),
            (
                Algorithm::PS256,
                "PS256",
                &rsa,
                EncodingKey::from_rsa_der(&rsa.rsa().unwrap().private_key_to_der().unwrap()),
            ),
            (
                Algorithm::ES256,
                "ES256",
                &p256,
                EncodingKey::from_ec_der(&p256.private_key_to_pkcs8().unwrap()),
            ),
            (
                Algorithm::ES384,
                "ES384",
                &p384,
                EncodingKey::from_ec_der(&p384.private_key_to_pkcs8().unwrap()),
            ),
            (
                Algorithm::EdDSA,
                "EdDSA",
                &ed,
                EncodingKey::from_ed_der(&ed.private_key_to_pkcs8().unwrap()),
            ),
        ];
        for (alg, name, key, enc) in cases {
            let mut h = Header::new(alg);
            h.kid = Some("k".into());
            let token = jsonwebtoken::encode(&h, &claims(now), &enc).unwrap();
            let jwk = JwkKey::from_jwk(&jwk_of(key, "k")).unwrap();
            let jws = parse(&token).unwrap();
            assert_eq!(jws.alg, name);
            let got = verify(&jws, &jwk, &expected(now)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got["sub"], "u");
            // One flipped bit in the payload: refused.
            let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
            let mut payload = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
            payload[3] ^= 1;
            parts[1] = URL_SAFE_NO_PAD.encode(payload);
            let tampered = parts.join(".");
            assert_eq!(
                verify(&parse(&tampered).unwrap(), &jwk, &expected(now)).err(),
                Some(IdTokenError::Signature),
                "{name}"
            );
        }
        // An RSA key cannot verify an ES256 header (and vice versa).
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k".into());
        let token = jsonwebtoken::encode(
            &h,
            &claims(now),
            &EncodingKey::from_ec_der(&p256.private_key_to_pkcs8().unwrap()),
        )
        .unwrap();
        let rsa_jwk = JwkKey::from_jwk(&jwk_of(&rsa, "k")).unwrap();
        assert!(matches!(
            verify(&parse(&token).unwrap(), &rsa_jwk, &expected(now)),
            Err(IdTokenError::Algorithm(_))
        ));
    }

    #[test]
    fn rsa_tokens_verify_through_ring_and_through_openssl_for_small_keys() {
        // 2,048 and 3,072 bits go through ring, 1,024 through OpenSSL's EVP path; both must
        // accept what jsonwebtoken signs and refuse a flipped bit, a short signature, another key.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let now = chrono::Utc::now().timestamp();
        let other = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let other_jwk = JwkKey::from_jwk(&jwk_of(&other, "k")).unwrap();
        for bits in [1024u32, 2048, 3072] {
            let rsa = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
            let enc = EncodingKey::from_rsa_der(&rsa.rsa().unwrap().private_key_to_der().unwrap());
            let jwk = JwkKey::from_jwk(&jwk_of(&rsa, "k")).unwrap();
            assert_eq!(jwk.ring_rsa.is_some(), bits >= 2048, "{bits} bits");
            for alg in [
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ] {
                if bits == 1024 && alg == Algorithm::PS512 {
                    continue; // a 64-byte salt and hash do not fit in a 1,024-bit PSS block
                }
                let token = jsonwebtoken::encode(&Header::new(alg), &claims(now), &enc).unwrap();
                let jws = parse(&token).unwrap();
                let got = verify(&jws, &jwk, &expected(now))
                    .unwrap_or_else(|e| panic!("{alg:?}, {bits} bits: {e}"));
                assert_eq!(got["sub"], "u");
                let mut flipped = jws.signature.clone();
                flipped[7] ^= 0x10;
                let short = jws.signature[1..].to_vec();
                for sig in [flipped, short] {
                    let bad = Jws {
                        signature: sig,
                        ..parse(&token).unwrap()
                    };
                    assert_eq!(
                        verify(&bad, &jwk, &expected(now)).err(),
                        Some(IdTokenError::Signature),
                        "{alg:?}, {bits} bits"
                    );
                }
                assert_eq!(
                    verify(&jws, &other_jwk, &expected(now)).err(),
                    Some(IdTokenError::Signature),
                    "{alg:?}, {bits} bits, another key"
                );
            }
        }
    }

    #[test]
    fn refuses_none_hmac_and_crit() {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let body = enc(&claims(0));
        for alg in ["none", "HS256", "HS512", "RSA-OAEP"] {
            let t = format!("{}.{body}.", enc(&json!({"alg": alg})));
            assert_eq!(parse(&t).err(), Some(IdTokenError::Algorithm(alg.into())));
        }
        let t = format!(
            "{}.{body}.c2ln",
            enc(&json!({"alg": "RS256", "crit": ["exp"]}))
        );
        assert!(matches!(parse(&t), Err(IdTokenError::Malformed(_))));
        assert!(matches!(parse("a.b"), Err(IdTokenError::Malformed(_))));
    }

    #[test]
    fn jwks_skips_unusable_keys() {
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            jwk_of(&rsa, "good"),
        ]});
        let keys = parse_jwks(&doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("good"));
    }

    #[test]
    fn signed_userinfo_needs_issuer_and_audience_but_no_nonce() {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let now = chrono::Utc::now().timestamp();
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let enc = EncodingKey::from_rsa_der(&rsa.rsa().unwrap().private_key_to_der().unwrap());
        let jwk = JwkKey::from_jwk(&jwk_of(&rsa, "k")).unwrap();
        let check = |c: Value| {
            let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &c, &enc).unwrap();
            verify_userinfo(&parse(&token).unwrap(), &jwk, &expected(now))
        };
        let ok = json!({"iss": "https://op", "aud": "c", "sub": "u", "dept": "sales"});
        assert_eq!(check(ok.clone()).unwrap()["dept"], "sales");
        let with = |k: &str, v: Value| {
            let mut c = ok.clone();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = ok.clone();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        assert!(matches!(
            check(with("iss", json!("https://other"))),
            Err(IdTokenError::Issuer { .. })
        ));
        assert!(matches!(
            check(without("iss")),
            Err(IdTokenError::Issuer { .. })
        ));
        assert_eq!(
            check(with("aud", json!("other"))).err(),
            Some(IdTokenError::Audience)
        );
        assert_eq!(check(without("aud")).err(), Some(IdTokenError::Audience));
        assert_eq!(
            check(with("exp", json!(now - 3600))).err(),
            Some(IdTokenError::Expired)
        );
        assert!(check(with("exp", json!(now + 60))).is_ok());
    }
}
