//! Claims → Flex attributes with the default mapping (and a namespaced roles claim), on arbitrary
//! JSON. Nothing may panic, and an accepted person must carry an email NameID and only role values
//! Flex knows, each trimmed, non-empty and without commas.
#![no_main]

use flexgate::config::AttributeMapping;
use flexgate::flex::{self, FLEX_ROLES, ROLES};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fn mapping(pairs: &[(&str, &str)]) -> Vec<AttributeMapping> {
    pairs
        .iter()
        .map(|(a, c)| AttributeMapping {
            saml_name: a.to_string(),
            claim: c.to_string(),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let claims: Map<String, Value> = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(m)) => m,
        // Not an object: still exercise the lookups with the value under common claim names.
        Ok(v) => ["email", "name", "picture", "app_metadata"]
            .iter()
            .map(|k| (k.to_string(), v.clone()))
            .collect(),
        Err(_) => return,
    };
    let default = mapping(&[
        ("email", "email"),
        ("full_name", "name"),
        ("image_url", "picture"),
        ("roles", "app_metadata.flex.roles"),
    ]);
    let namespaced = mapping(&[
        ("email", "email"),
        ("full_name", "name"),
        ("roles", "https://flex.example.com/roles"),
        ("department", "app_metadata.department"),
    ]);
    let extra = ["custom.role".to_string()];
    for (m, flex_roles, extra) in [
        (&default, true, &[][..]),
        (&namespaced, true, &extra[..]),
        (&default, false, &[][..]),
    ] {
        let Ok(user) = flex::map_attributes(&claims, m, flex_roles, extra) else {
            continue;
        };
        assert!(!user.name_id.trim().is_empty(), "empty NameID");
        assert_eq!(user.name_id, user.name_id.trim(), "NameID not trimmed");
        if flex_roles {
            let roles = user
                .attributes
                .iter()
                .find(|(n, _)| n == ROLES)
                .map(|(_, v)| v.clone())
                .expect("accepted without a roles attribute");
            assert!(!roles.is_empty(), "accepted with no role");
            for r in &roles {
                assert!(
                    FLEX_ROLES.contains(&r.as_str()) || extra.iter().any(|e| e == r),
                    "unknown role {r:?} passed"
                );
                assert!(!r.contains(',') && r.trim() == r && !r.is_empty());
            }
            assert!(
                user.attributes.iter().any(|(n, _)| n == "full_name"),
                "Flex needs full_name"
            );
        }
        for (n, v) in &user.attributes {
            assert!(!v.is_empty(), "attribute {n} with no value");
        }
    }
});
