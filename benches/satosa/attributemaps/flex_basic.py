# pysaml2 attribute map for benches/run: Flex wants bare attribute names (NameFormat basic). Without it pysaml2's
# built-in basic map renames `email` to `urn:mace:dir:attribute-def:email`.
_NAMES = ["email", "full_name", "image_url", "roles"]
MAP = {
    "identifier": "urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
    "fro": {n: n for n in _NAMES},
    "to": {n: n for n in _NAMES},
}
