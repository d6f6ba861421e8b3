//! `flexgate keygen --pkcs11 URI`: an RSA key pair made inside the token (sensitive, never
//! extractable) and a self-signed certificate whose signature the token makes.
//!
//! The certificate is built by openssl's X509 builder around the token's public key and signed
//! once with a throw-away key; its to-be-signed part is then signed by the token and the
//! certificate re-assembled around that signature (the algorithm, sha256WithRSAEncryption, is the
//! same for both).

use super::token;
use super::{Pkcs11Error, Pkcs11Uri, TokenKey};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::Session;
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;

/// What was made.
#[derive(Debug)]
pub struct Made {
    pub cert: X509,
    pub replaced: usize,
}

/// The token's objects carrying the URI's label/id (keys of either kind, certificates).
fn existing(
    session: &Session,
    uri: &Pkcs11Uri,
) -> Result<Vec<cryptoki::object::ObjectHandle>, Pkcs11Error> {
    let mut all = Vec::new();
    for class in [
        ObjectClass::PRIVATE_KEY,
        ObjectClass::PUBLIC_KEY,
        ObjectClass::CERTIFICATE,
    ] {
        all.extend(
            session
                .find_objects(&token::template(uri, class))
                .map_err(|e| super::token_err("C_FindObjects", e))?,
        );
    }
    Ok(all)
}

/// Makes the key pair; returns the public key. Refuses an existing label unless `force`.
fn make_pair(
    session: &Session,
    uri: &Pkcs11Uri,
    bits: u32,
    force: bool,
) -> Result<(PKey<Public>, usize), Pkcs11Error> {
    let old = existing(session, uri)?;
    if !old.is_empty() && !force {
        return Err(Pkcs11Error::LabelTaken {
            key: uri.key_name(),
        });
    }
    for o in &old {
        session
            .destroy_object(*o)
            .map_err(|e| super::token_err("C_DestroyObject", e))?;
    }
    let mut id = uri.id.clone().unwrap_or_default();
    if id.is_empty() {
        id = vec![0; 8];
        openssl::rand::rand_bytes(&mut id)?;
    }
    let mut named = vec![Attribute::Token(true), Attribute::Id(id)];
    if let Some(label) = &uri.object {
        named.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    let mut public = named.clone();
    public.extend([
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::ModulusBits((bits as u64).into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
    ]);
    let mut private = named;
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]);
    let (pub_h, _) = session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .map_err(|e| super::token_err("C_GenerateKeyPair", e))?;
    let key = token::public_key(session, pub_h)
        .ok_or_else(|| Pkcs11Error::Token("the new public key cannot be read back".into()))?;
    Ok((key, old.len()))
}

/// Makes the key pair in the token named by `uri` and its self-signed certificate. The caller
/// (`crate::keygen`) has checked `bits` and `days`.
pub fn generate(
    uri: &Pkcs11Uri,
    bits: u32,
    days: u32,
    common_name: &str,
    force: bool,
) -> Result<Made, Pkcs11Error> {
    let _inside = token::enter();
    let (_ctx, _slot, session) = token::open(uri, true)?;
    let (public, replaced) = make_pair(&session, uri, bits, force)?;
    drop(session);
    let key = TokenKey::open(uri.clone(), 1, false)?;
    let throwaway = PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    let draft = crate::x509::self_signed(&public, &throwaway, days, common_name)?;
    let der = draft.to_der()?;
    let (tbs, alg) = tbs_and_algorithm(&der).ok_or_else(|| {
        Pkcs11Error::Token("openssl wrote a certificate flexgate cannot split".into())
    })?;
    let sig = key.sign_sha256(tbs)?;
    let cert = X509::from_der(&assemble(tbs, alg, &sig))?;
    if !cert.verify(&public)? {
        return Err(Pkcs11Error::Token(
            "the token's signature on the certificate does not verify".into(),
        ));
    }
    Ok(Made { cert, replaced })
}

/// The header length and content length of the DER element at the start of `b`.
fn header(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((2, first as usize));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let len = b
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |a, x| (a << 8) | *x as usize);
    Some((2 + n, len))
}

/// One DER element at the start of `b`: (whole element, rest).
fn element(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (head, len) = header(b)?;
    let end = head.checked_add(len)?;
    Some((b.get(..end)?, b.get(end..)?))
}

/// A certificate's tbsCertificate and signatureAlgorithm elements.
fn tbs_and_algorithm(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let (outer, _) = element(cert)?;
    let inner = &outer[header(outer)?.0..];
    let (tbs, rest) = element(inner)?;
    let (alg, _) = element(rest)?;
    Some((tbs, alg))
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

/// SEQUENCE { tbs, alg, BIT STRING sig }.
fn assemble(tbs: &[u8], alg: &[u8], sig: &[u8]) -> Vec<u8> {
    let mut bits = vec![0x03];
    der_len(&mut bits, sig.len() + 1);
    bits.push(0);
    bits.extend_from_slice(sig);
    let body_len = tbs.len() + alg.len() + bits.len();
    let mut out = vec![0x30];
    der_len(&mut out, body_len);
    out.extend_from_slice(tbs);
    out.extend_from_slice(alg);
    out.extend(bits);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_a_certificate_byte_for_byte() {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let public = PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
        let cert = crate::x509::self_signed(&public, &key, 30, "t").unwrap();
        let der = cert.to_der().unwrap();
        let (tbs, alg) = tbs_and_algorithm(&der).unwrap();
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        signer.update(tbs).unwrap();
        let sig = signer.sign_to_vec().unwrap();
        assert_eq!(assemble(tbs, alg, &sig), der);
    }
}
