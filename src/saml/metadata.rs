//! IdP metadata (SAML metadata 2.0): entity id, signing certificate(s), both SSO bindings.

use super::ns;
use super::xml::{push_attr_value, push_text};

/// Renders the IdP's metadata. `certs_der_b64` lists the live certificate first, then the next
/// one during a key rollover; SPs that read metadata accept signatures by either.
pub fn idp_metadata(entity_id: &str, sso_url: &str, certs_der_b64: &[String]) -> String {
    let attr = |s: &str| {
        let mut o = String::new();
        push_attr_value(&mut o, s);
        o
    };
    let mut out = String::with_capacity(4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<md:EntityDescriptor xmlns:md=\"{}\" xmlns:ds=\"{}\" entityID=\"{}\">\n",
        ns::MD,
        ns::DS,
        attr(entity_id)
    ));
    out.push_str(&format!(
        "  <md:IDPSSODescriptor WantAuthnRequestsSigned=\"false\" protocolSupportEnumeration=\"{}\">\n",
        ns::SAMLP
    ));
    for cert in certs_der_b64 {
        out.push_str("    <md:KeyDescriptor use=\"signing\">\n      <ds:KeyInfo>\n        <ds:X509Data>\n          <ds:X509Certificate>");
        push_text(&mut out, cert);
        out.push_str("</ds:X509Certificate>\n        </ds:X509Data>\n      </ds:KeyInfo>\n    </md:KeyDescriptor>\n");
    }
    out.push_str(&format!(
        "    <md:NameIDFormat>{}</md:NameIDFormat>\n",
        ns::NAMEID_EMAIL
    ));
    for binding in [ns::BINDING_REDIRECT, ns::BINDING_POST] {
        out.push_str(&format!(
            "    <md:SingleSignOnService Binding=\"{binding}\" Location=\"{}\"/>\n",
            attr(sso_url)
        ));
    }
    out.push_str("  </md:IDPSSODescriptor>\n</md:EntityDescriptor>\n");
    out
}
