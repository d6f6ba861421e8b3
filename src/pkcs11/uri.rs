//! RFC 7512 PKCS#11 URIs: `pkcs11:token=T;object=L?module-path=M&pin-value=P`.
//!
//! Path attributes pick the token and the key; query attributes say how to reach them. Values are
//! percent-decoded; an attribute flexgate does not know is an error, never ignored.
//!
//! `${VAR}` in the config is expanded here, after the URI is split into attributes
//! ([`Pkcs11Uri::parse_expanding`]): a variable's value can never add, end or change an attribute.
//! A `pin-value` that refers to a variable is taken exactly as the variable holds it — not URI
//! syntax, not percent-decoded — and no error message repeats it.

use crate::secret::Secret;
use std::fmt;
use std::path::PathBuf;

/// Where the PIN comes from (`Debug` redacts a PIN value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSpec {
    /// No PIN (a token that needs no login, or a module with its own authentication).
    None,
    /// `pin-value=…`.
    Value(Secret),
    /// `pin-source=file:…`: the file's first line.
    File(PathBuf),
}

/// Which token: every given attribute must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenMatch {
    pub token: Option<String>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
}

/// A parsed `pkcs11:` URI naming one private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: TokenMatch,
    /// `object=`: the key's CKA_LABEL.
    pub object: Option<String>,
    /// `id=`: the key's CKA_ID (bytes).
    pub id: Option<Vec<u8>>,
    pub module_path: PathBuf,
    pub pin: PinSpec,
}

/// Why a `pkcs11:` URI cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(pub String);

const PATH_ATTRS: &str = "token, manufacturer, serial, model, slot-id, object, id, type";
const QUERY_ATTRS: &str = "module-path, pin-value, pin-source";

/// `true` when a key location is a PKCS#11 URI rather than a file path.
pub fn is_pkcs11_uri(s: &str) -> bool {
    s.starts_with("pkcs11:")
}

/// Strict percent-decoding: every `%` must start two hex digits.
fn decode(name: &str, v: &str) -> Result<Vec<u8>, UriError> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = v
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
            let hex = hex.ok_or_else(|| {
                UriError(format!(
                    "`{name}` has a `%` not followed by two hex digits (write a literal % as %25)"
                ))
            })?;
            out.push(u8::from_str_radix(hex, 16).map_err(|e| UriError(e.to_string()))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn decode_str(name: &str, v: &str) -> Result<String, UriError> {
    String::from_utf8(decode(name, v)?)
        .map_err(|_| UriError(format!("`{name}` is not UTF-8 once percent-decoded")))
}

/// Splits `a=b` pieces separated by `sep`, refusing repeats.
fn pairs(part: &str, sep: char) -> Result<Vec<(&str, &str)>, UriError> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for piece in part.split(sep).filter(|p| !p.is_empty()) {
        let (k, v) = piece
            .split_once('=')
            .ok_or_else(|| UriError(format!("`{piece}` is not name=value")))?;
        if seen.contains(&k) {
            return Err(UriError(format!("`{k}` appears twice")));
        }
        seen.push(k);
        out.push((k, v));
    }
    Ok(out)
}

fn path_attr(uri: &mut Pkcs11Uri, k: &str, v: &str) -> Result<(), UriError> {
    let t = &mut uri.token;
    match k {
        "token" => t.token = Some(decode_str(k, v)?),
        "manufacturer" => t.manufacturer = Some(decode_str(k, v)?),
        "serial" => t.serial = Some(decode_str(k, v)?),
        "model" => t.model = Some(decode_str(k, v)?),
        "slot-id" => {
            t.slot_id = Some(decode_str(k, v)?.parse().map_err(|_| {
                UriError(format!(
                "`slot-id={v}` is not a decimal number (pkcs11-tool --list-slots shows the ids)"
            ))
            })?)
        }
        "object" => uri.object = Some(decode_str(k, v)?),
        "id" => uri.id = Some(decode(k, v)?),
        "type" if matches!(v, "private" | "private-key") => {}
        "type" => {
            return Err(UriError(format!(
                "`type={v}`: the signing key is a private key; write type=private or leave it out"
            )))
        }
        other => {
            return Err(UriError(format!(
            "has the path attribute `{other}`, which flexgate does not use (it knows {PATH_ATTRS})"
        )))
        }
    }
    Ok(())
}

fn query_attr(uri: &mut Pkcs11Uri, k: &str, v: &str) -> Result<(), UriError> {
    match k {
        "module-path" => uri.module_path = PathBuf::from(decode_str(k, v)?),
        "pin-value" => uri.pin = PinSpec::Value(Secret::new(decode_str(k, v)?)),
        "pin-source" => {
            let s = decode_str(k, v)?;
            let path = s.strip_prefix("file://").or_else(|| s.strip_prefix("file:")).unwrap_or(&s);
            if !path.starts_with('/') {
                return Err(UriError(format!(
                    "`pin-source={s}` must name an absolute file, e.g. pin-source=file:/etc/flexgate/hsm-pin"
                )));
            }
            uri.pin = PinSpec::File(PathBuf::from(path));
        }
        "module-name" => {
            return Err(UriError(
                "uses `module-name`; flexgate needs the module's file: write module-path=/path/to/the/vendor/library.so".into(),
            ))
        }
        other => {
            return Err(UriError(format!(
                "has the query attribute `{other}`, which flexgate does not use (it knows {QUERY_ATTRS})"
            )))
        }
    }
    Ok(())
}

impl Pkcs11Uri {
    /// Parses a `pkcs11:` URI naming a private key, as written (no `${VAR}` expansion).
    pub fn parse(s: &str) -> Result<Pkcs11Uri, UriError> {
        Self::parse_expanding(s, &|v| Ok(v.to_string()))
    }

    /// Parses a `pkcs11:` URI whose attribute values may refer to `${VAR}`: `expand` resolves
    /// each value after the URI is split (its error names the variable, never a value). A
    /// `pin-value` with a `${` is the expansion itself, not percent-decoded.
    pub fn parse_expanding(
        s: &str,
        expand: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Pkcs11Uri, UriError> {
        let rest = s
            .strip_prefix("pkcs11:")
            .ok_or_else(|| UriError("does not start with pkcs11:".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri {
            token: TokenMatch::default(),
            object: None,
            id: None,
            module_path: PathBuf::new(),
            pin: PinSpec::None,
        };
        let expanded = |k: &str, v: &str| expand(v).map_err(|e| UriError(format!("`{k}` {e}")));
        for (k, v) in pairs(path, ';')? {
            path_attr(&mut uri, k, &expanded(k, v)?)?;
        }
        for (k, v) in pairs(query, '&')? {
            if k == "pin-value" && v.contains("${") {
                uri.pin = PinSpec::Value(Secret::new(expanded(k, v)?));
                continue;
            }
            query_attr(&mut uri, k, &expanded(k, v)?)?;
        }
        if uri.module_path.as_os_str().is_empty() {
            return Err(UriError("has no module-path: add ?module-path=/path/to/the/vendor/pkcs11-library.so (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)".into()));
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(UriError(
                "names no key: add object=LABEL (or id=%01%02…) to the path".into(),
            ));
        }
        Ok(uri)
    }

    /// How the key is named in messages: the label, else the id in hex.
    pub fn key_name(&self) -> String {
        match (&self.object, &self.id) {
            (Some(o), _) => format!("object={o}"),
            (None, Some(id)) => format!("id={}", hex::encode(id)),
            (None, None) => "(no key named)".into(),
        }
    }

    /// How the token is named in messages.
    pub fn token_name(&self) -> String {
        let t = &self.token;
        let mut parts = Vec::new();
        if let Some(v) = &t.token {
            parts.push(format!("token={v}"));
        }
        if let Some(v) = &t.serial {
            parts.push(format!("serial={v}"));
        }
        if let Some(v) = t.slot_id {
            parts.push(format!("slot-id={v}"));
        }
        if parts.is_empty() {
            "(any token)".into()
        } else {
            parts.join(";")
        }
    }
}

/// Prints the URI with its PIN redacted (for logs and `flexgate check`).
impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pkcs11:{};{}", self.token_name(), self.key_name())?;
        write!(f, "?module-path={}", self.module_path.display())?;
        match &self.pin {
            PinSpec::None => Ok(()),
            PinSpec::Value(_) => f.write_str("&pin-value=<redacted>"),
            PinSpec::File(p) => write!(f, "&pin-source=file:{}", p.display()),
        }
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "module-path=/usr/lib/softhsm/libsofthsm2.so";

    #[test]
    fn parses_the_documented_shape() {
        let u = Pkcs11Uri::parse(&format!(
            "pkcs11:token=flexgate;object=idp-signing?{M}&pin-value=1234"
        ))
        .unwrap();
        assert_eq!(u.token.token.as_deref(), Some("flexgate"));
        assert_eq!(u.object.as_deref(), Some("idp-signing"));
        assert_eq!(
            u.module_path,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(u.pin, PinSpec::Value(Secret::new("1234")));
        assert!(!u.to_string().contains("1234"), "{u}");
        assert!(!format!("{u:?}").contains("1234"));
    }

    #[test]
    fn percent_decodes_every_value() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=My%20Token;id=%01%a2;slot-id=3;object=a%3Bb?module-path=/opt/x%20y/p11.so&pin-value=p%26w",
        )
        .unwrap();
        assert_eq!(u.token.token.as_deref(), Some("My Token"));
        assert_eq!(u.id, Some(vec![0x01, 0xa2]));
        assert_eq!(u.token.slot_id, Some(3));
        assert_eq!(u.object.as_deref(), Some("a;b"));
        assert_eq!(u.module_path, PathBuf::from("/opt/x y/p11.so"));
        assert_eq!(u.pin, PinSpec::Value(Secret::new("p&w")));
    }

    #[test]
    fn pin_source_file_forms() {
        for src in ["file:/run/pin", "file:///run/pin", "/run/pin"] {
            let u = Pkcs11Uri::parse(&format!("pkcs11:object=k?{M}&pin-source={src}")).unwrap();
            assert_eq!(u.pin, PinSpec::File(PathBuf::from("/run/pin")), "{src}");
        }
        let e = Pkcs11Uri::parse(&format!("pkcs11:object=k?{M}&pin-source=file:pin")).unwrap_err();
        assert!(e.0.contains("absolute"), "{e}");
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        let cases = [
            (format!("pkcs11:token=t;object=k;colour=red?{M}"), "colour"),
            (format!("pkcs11:object=k?{M}&x-vendor=1"), "x-vendor"),
            (
                "pkcs11:object=k?module-name=softhsm2".to_string(),
                "module-path",
            ),
            ("pkcs11:object=k".to_string(), "module-path"),
            (format!("pkcs11:token=t?{M}"), "object=LABEL"),
            (format!("pkcs11:object=k;object=j?{M}"), "twice"),
            (format!("pkcs11:object=k%2?{M}"), "two hex digits"),
            (format!("pkcs11:object=k%zz?{M}"), "two hex digits"),
            (format!("pkcs11:object=k;slot-id=one?{M}"), "decimal"),
            (format!("pkcs11:object=k;type=cert?{M}"), "private key"),
            (format!("pkcs11:object?{M}"), "name=value"),
            (format!("pkcs11:object=%ff?{M}"), "UTF-8"),
        ];
        for (uri, needle) in cases {
            let e = Pkcs11Uri::parse(&uri).unwrap_err();
            assert!(e.0.contains(needle), "{uri}: {e}");
        }
    }

    /// What the config's `${VAR}` expansion does, for one variable.
    fn env_pin(pin: &str) -> impl Fn(&str) -> Result<String, String> + '_ {
        move |v: &str| Ok(v.replace("${FLEXGATE_HSM_PIN}", pin))
    }

    #[test]
    fn a_pin_from_a_variable_is_taken_as_it_is_never_as_uri_syntax() {
        let written = format!("pkcs11:token=t;object=k?{M}&pin-value=${{FLEXGATE_HSM_PIN}}");
        for pin in [
            "4711&TopSecretTail",
            "47%41",
            "a;b?c=d&e",
            "%zz",
            "x&pin-source=/etc/p",
        ] {
            let u = Pkcs11Uri::parse_expanding(&written, &env_pin(pin))
                .unwrap_or_else(|e| panic!("{pin:?}: {e}"));
            assert_eq!(u.pin, PinSpec::Value(Secret::new(pin)), "{pin:?}");
            assert_eq!(u.object.as_deref(), Some("k"));
            assert_eq!(u.token.token.as_deref(), Some("t"));
        }
        // Other attributes are expanded too, then decoded as before.
        let u = Pkcs11Uri::parse_expanding(
            "pkcs11:token=${FLEXGATE_HSM_PIN};object=k?module-path=/m.so",
            &env_pin("My%20Token"),
        )
        .unwrap();
        assert_eq!(u.token.token.as_deref(), Some("My Token"));
        // An expansion error names the attribute and the variable, never a value.
        let unset = |v: &str| match v.contains("${") {
            true => Err("refers to X, which is not set".to_string()),
            false => Ok(v.to_string()),
        };
        let e = Pkcs11Uri::parse_expanding(&written, &unset).unwrap_err();
        assert!(e.0.contains("`pin-value` refers to X"), "{e}");
    }
}
