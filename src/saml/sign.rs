//! Enveloped XML signatures (RSA-SHA256, SHA-256 digest, exclusive c14n) over XML that
//! `response.rs` wrote in canonical form, so the digest is taken over the bytes as written.
//!
//! The key is parsed once into a [`Signer`]; signing is one SHA-256 over the element, one over
//! `SignedInfo`, and one RSA private-key operation.

use super::ns;
use super::response::{UnsignedResponse, UnsignedStatusResponse};
use super::xml::push_attr_value;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Which parts of a Response carry a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignMode {
    /// The Response (what Flex's Auth0-based Enhanced SSO expects: `signResponse: true`).
    #[default]
    Response,
    Assertion,
    Both,
}

impl SignMode {
    pub fn signs_response(self) -> bool {
        matches!(self, SignMode::Response | SignMode::Both)
    }
    pub fn signs_assertion(self) -> bool {
        matches!(self, SignMode::Assertion | SignMode::Both)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the signing key is not an RSA key of at least 2048 bits")]
    WeakKey,
    #[error("the signing key does not belong to the certificate")]
    KeyCertMismatch,
    #[error("RSA signing failed: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
    #[error("the signing token is unusable: {0}")]
    Token(#[from] crate::pkcs11::Pkcs11Error),
}

/// The private key behind a [`Signer`]: a PEM key parsed once (kept as the RSA key it was
/// checked to be), or a key in a PKCS#11 token.
pub enum SigningKey {
    Pem(Rsa<Private>),
    Token(Arc<crate::pkcs11::TokenKey>),
}

/// The DER `DigestInfo` prefix of a SHA-256 hash (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

impl SigningKey {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over `data` (blocking: call it off the reactor).
    ///
    /// For a PEM key this is what OpenSSL's own `RSA_sign` does (EMSA-PKCS1-v1_5: the
    /// `DigestInfo` of the hash, padded by `RSA_private_encrypt` with block type 1, blinded,
    /// CRT), called directly: `EVP_DigestSignInit` fetched the algorithm and set up a context per
    /// call, ≈ 0.08 ms of a login with cold caches (issue 21). The signature is byte-identical
    /// to the EVP one (PKCS#1 v1.5 is deterministic): the tests and the golden fixtures check it.
    fn sign_sha256(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            SigningKey::Pem(rsa) => {
                let mut info = [0u8; 51];
                info[..19].copy_from_slice(&SHA256_DIGEST_INFO);
                info[19..].copy_from_slice(&crate::digest::sha256(data));
                let mut sig = vec![0u8; rsa.size() as usize];
                let n = rsa.private_encrypt(&info, &mut sig, Padding::PKCS1)?;
                sig.truncate(n);
                Ok(sig)
            }
            SigningKey::Token(t) => Ok(t.sign_sha256(data)?),
        }
    }
}

/// A signing key parsed once, with its certificate ready for `KeyInfo`.
pub struct Signer {
    key: SigningKey,
    cert_b64: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &"<redacted>")
            .finish()
    }
}

const SIGNED_INFO_OPEN_DETACHED: &str =
    "<ds:SignedInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">";
const SIGNED_INFO_OPEN_IN_SIGNATURE: &str = "<ds:SignedInfo>";

impl Signer {
    /// Checks that `key` is RSA ≥ 2048 bits and matches `cert`.
    pub fn new(key: PKey<Private>, cert: &X509) -> Result<Self, SignError> {
        let rsa = key.rsa().map_err(|_| SignError::WeakKey)?;
        if rsa.size() * 8 < 2048 {
            return Err(SignError::WeakKey);
        }
        let cert_key = cert.public_key()?;
        if !key.public_eq(&cert_key) {
            return Err(SignError::KeyCertMismatch);
        }
        Ok(Signer {
            key: SigningKey::Pem(rsa),
            cert_b64: B64.encode(cert.to_der()?),
        })
    }

    /// A key in a token (already checked for type, size and attributes); checks it matches `cert`.
    pub fn with_token(key: Arc<crate::pkcs11::TokenKey>, cert: &X509) -> Result<Self, SignError> {
        if !key.public_key().public_eq(cert.public_key()?.as_ref()) {
            return Err(SignError::KeyCertMismatch);
        }
        Ok(Signer {
            key: SigningKey::Token(key),
            cert_b64: B64.encode(cert.to_der()?),
        })
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The key's health if known without asking a token: always for a PEM key; for a token key
    /// its last outcome while recent (see `pkcs11::TokenKey::known_health`). `None`: call
    /// [`Signer::health`] off the reactor.
    pub fn known_health(&self) -> Option<Result<(), String>> {
        match &self.key {
            SigningKey::Pem(..) => Some(Ok(())),
            SigningKey::Token(t) => t.known_health(),
        }
    }

    /// `Ok` when a signature can be made (blocking for a token key: run it off the reactor; at
    /// most one token signature per `pkcs11::pool::HEALTH_TTL`, however often it is called).
    pub fn health(&self) -> Result<(), String> {
        match &self.key {
            SigningKey::Pem(..) => Ok(()),
            SigningKey::Token(t) => t.health(),
        }
    }

    /// The `<ds:Signature>` element for the element with `id` whose canonical form (without this
    /// signature) is `element`.
    pub fn signature_element(&self, id: &str, element: &str) -> Result<String, SignError> {
        let digest = crate::digest::sha256(element.as_bytes());
        let mut body = String::with_capacity(700);
        body.push_str("<ds:CanonicalizationMethod Algorithm=\"");
        body.push_str(ns::EXC_C14N);
        body.push_str("\"></ds:CanonicalizationMethod><ds:SignatureMethod Algorithm=\"");
        body.push_str(ns::RSA_SHA256);
        body.push_str("\"></ds:SignatureMethod><ds:Reference URI=\"#");
        push_attr_value(&mut body, id);
        body.push_str("\"><ds:Transforms><ds:Transform Algorithm=\"");
        body.push_str(ns::ENVELOPED);
        body.push_str("\"></ds:Transform><ds:Transform Algorithm=\"");
        body.push_str(ns::EXC_C14N);
        body.push_str("\"></ds:Transform></ds:Transforms><ds:DigestMethod Algorithm=\"");
        body.push_str(ns::SHA256);
        body.push_str("\"></ds:DigestMethod><ds:DigestValue>");
        body.push_str(&B64.encode(digest));
        body.push_str("</ds:DigestValue></ds:Reference></ds:SignedInfo>");

        // SignedInfo canonicalised on its own declares xmlns:ds itself.
        let mut signed_info = String::with_capacity(SIGNED_INFO_OPEN_DETACHED.len() + body.len());
        signed_info.push_str(SIGNED_INFO_OPEN_DETACHED);
        signed_info.push_str(&body);
        let value = B64.encode(self.key.sign_sha256(signed_info.as_bytes())?);

        let mut sig = String::with_capacity(body.len() + value.len() + self.cert_b64.len() + 256);
        sig.push_str("<ds:Signature xmlns:ds=\"");
        sig.push_str(ns::DS);
        sig.push_str("\">");
        sig.push_str(SIGNED_INFO_OPEN_IN_SIGNATURE);
        sig.push_str(&body);
        sig.push_str("<ds:SignatureValue>");
        sig.push_str(&value);
        sig.push_str("</ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>");
        sig.push_str(&self.cert_b64);
        sig.push_str("</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>");
        Ok(sig)
    }

    /// Signs a Response as `mode` says and returns the final XML.
    pub fn sign_response(&self, r: &UnsignedResponse, mode: SignMode) -> Result<String, SignError> {
        let mut xml = r.xml.clone();
        if mode.signs_assertion() {
            let sig = self.signature_element(&r.assertion_id, &r.xml[r.assertion.clone()])?;
            xml.insert_str(r.assertion_signature_at, &sig);
        }
        if mode.signs_response() {
            let sig = self.signature_element(&r.response_id, &xml)?;
            xml.insert_str(r.response_signature_at, &sig);
        }
        Ok(xml)
    }

    /// Signs a status-only Response (always the Response itself: it has no assertion).
    pub fn sign_status_response(&self, r: &UnsignedStatusResponse) -> Result<String, SignError> {
        let sig = self.signature_element(&r.response_id, &r.xml)?;
        let mut xml = r.xml.clone();
        xml.insert_str(r.response_signature_at, &sig);
        Ok(xml)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;

    #[test]
    fn a_pem_signature_is_byte_identical_to_openssls_evp_rsa_sha256() {
        for bits in [2048u32, 3072] {
            let key = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
            let k = SigningKey::Pem(key.rsa().unwrap());
            for len in [0usize, 1, 55, 64, 700, 100_000] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
                let ours = k.sign_sha256(&data).unwrap();
                let mut evp = openssl::sign::Signer::new(MessageDigest::sha256(), &key).unwrap();
                evp.update(&data).unwrap();
                assert_eq!(ours, evp.sign_to_vec().unwrap(), "{bits} bits, {len} bytes");
                let mut v = openssl::sign::Verifier::new(MessageDigest::sha256(), &key).unwrap();
                v.update(&data).unwrap();
                assert!(v.verify(&ours).unwrap());
                assert_eq!(ours.len() as u32 * 8, bits);
            }
        }
    }
}
