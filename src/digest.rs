//! SHA-256 of a byte string, the one hash flexgate computes on every login (the browser-binding
//! cookie, PKCE, the SAML `DigestValue`).
//!
//! `ring`'s digest rather than `openssl::sha::sha256`: OpenSSL 3 implements `SHA256()` as
//! `EVP_Q_digest`, which fetches the algorithm from the provider on every call; in a login, with
//! cold caches, that fetch cost ≈ 5–25 µs per hash against ≈ 1 µs for the hash (issue 21,
//! BENCHMARKS.md). Both are checked against each other and the FIPS 180-2 vectors below.

/// The SHA-256 digest of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::sha256;

    #[test]
    fn sha256_matches_the_fips_vectors_and_openssl() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for n in [1usize, 55, 56, 63, 64, 65, 1000, 100_000] {
            let data: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            assert_eq!(sha256(&data), openssl::sha::sha256(&data), "{n} bytes");
        }
    }
}
