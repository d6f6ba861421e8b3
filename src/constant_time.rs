//! Comparing secrets (nonces, browser bindings, client secrets) without leaking, through timing,
//! how much of a guess was right.

/// `a == b`, in time that depends only on the lengths. Unequal lengths are unequal (checked
/// first: `openssl::memcmp::eq` panics on them).
pub fn eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::eq;

    #[test]
    fn equal_unequal_and_different_lengths() {
        assert!(eq(b"", b""));
        assert!(eq(b"abc", b"abc"));
        assert!(!eq(b"abc", b"abd"));
        assert!(!eq(b"abc", b"abcd"));
        assert!(!eq(b"abcd", b"abc"));
        assert!(!eq(b"", b"a"));
    }
}
