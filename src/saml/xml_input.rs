//! XML that others send (AuthnRequests, Responses given to `verify`), parsed in time linear in
//! its length: a streaming pre-scan (quick-xml's reader, which keeps no per-element state but
//! the open-tag stack) bounds the size, the nesting depth, the node count, the attributes and
//! namespace declarations per element and the namespace declarations in total, and refuses
//! DOCTYPEs (so entities) before the tree parser (roxmltree) sees a byte. roxmltree's
//! per-element namespace and duplicate-attribute work grows with those counts, which is what
//! made a 22 KB request cost seconds; with them bounded its cost is linear too.
//!
//! This module owns the one set of roxmltree parse options and the element look-up helpers
//! the SAML code reads documents with.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use roxmltree::{Document, Node, ParsingOptions};

/// Bounds on a document's shape. Each is checked before the tree is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    /// Longest document, in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting (the root is at depth 1).
    pub max_depth: usize,
    /// Most nodes: elements, text runs, comments, processing instructions.
    pub max_nodes: usize,
    /// Most attributes on one element, namespace declarations included.
    pub max_attributes: usize,
    /// Most namespace declarations on one element.
    pub max_namespaces_per_element: usize,
    /// Most namespace declarations in the whole document.
    pub max_namespaces: usize,
}

/// AuthnRequests. Flex's are about 1–2 KB, 2–4 elements deep, with at most 8 attributes and 2
/// namespace declarations on an element; a signed HTTP-POST request (python3-saml, node-saml)
/// has about 25 elements, 7 deep. The byte bound here is a backstop: the operative one is
/// `limits.max_authn_request_xml_bytes`, applied while inflating.
pub const AUTHN_REQUEST: XmlLimits = XmlLimits {
    max_bytes: 256 * 1024,
    max_depth: 32,
    max_nodes: 2048,
    max_attributes: 32,
    max_namespaces_per_element: 16,
    max_namespaces: 64,
};

/// SAML Responses given to `flexgate verify` and the demo's Flex stand-in: larger than
/// requests (many attributes, two signatures, certificates), still bounded.
pub const RESPONSE: XmlLimits = XmlLimits {
    max_bytes: 1024 * 1024,
    max_depth: 64,
    max_nodes: 100_000,
    max_attributes: 64,
    max_namespaces_per_element: 32,
    max_namespaces: 256,
};

/// Which bound a document broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Bytes,
    Depth,
    Nodes,
    Attributes,
    NamespacesPerElement,
    Namespaces,
}

/// A bound and its limit; displays as the predicate of a sentence ("nests deeper than 32
/// elements"), which the caller completes with what the document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub bound: Bound,
    pub limit: usize,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.limit;
        match self.bound {
            Bound::Bytes => write!(f, "is longer than {n} bytes"),
            Bound::Depth => write!(f, "nests deeper than {n} elements"),
            Bound::Nodes => write!(
                f,
                "has more than {n} nodes (elements, texts, comments, processing instructions)"
            ),
            Bound::Attributes => write!(f, "has an element with more than {n} attributes"),
            Bound::NamespacesPerElement => {
                write!(f, "has an element declaring more than {n} namespaces")
            }
            Bound::Namespaces => write!(f, "declares more than {n} namespaces"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the document has a DOCTYPE")]
    Doctype,
    #[error("not well-formed XML: {0}")]
    Syntax(String),
    #[error("the document {0}")]
    Exceeded(Exceeded),
}

/// Checks `xml` against `limits` in one pass, then builds the tree.
pub fn parse_bounded<'i>(xml: &'i str, limits: &XmlLimits) -> Result<Document<'i>, XmlError> {
    prescan(xml, limits)?;
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: u32::try_from(limits.max_nodes).unwrap_or(u32::MAX),
        ..ParsingOptions::default()
    };
    Document::parse_with_options(xml, opts).map_err(|e| match e {
        roxmltree::Error::DtdDetected => XmlError::Doctype,
        e => XmlError::Syntax(e.to_string()),
    })
}

/// Counts of the pre-scan, checked against the limits as they grow.
struct Scan<'l> {
    limits: &'l XmlLimits,
    depth: usize,
    nodes: usize,
    namespaces: usize,
}

fn exceeded(bound: Bound, limit: usize) -> XmlError {
    XmlError::Exceeded(Exceeded { bound, limit })
}

impl Scan<'_> {
    fn node(&mut self) -> Result<(), XmlError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(exceeded(Bound::Nodes, self.limits.max_nodes));
        }
        Ok(())
    }

    /// An element's start tag: its depth, its attributes and its namespace declarations.
    fn element(&mut self, tag: &BytesStart, depth: usize) -> Result<(), XmlError> {
        let l = self.limits;
        self.node()?;
        if depth > l.max_depth {
            return Err(exceeded(Bound::Depth, l.max_depth));
        }
        let (mut attributes, mut declared) = (0usize, 0usize);
        // Without checks: quick-xml's duplicate check is quadratic; roxmltree does it on the
        // bounded attribute list.
        for a in tag.attributes().with_checks(false) {
            let a = a.map_err(|e| XmlError::Syntax(e.to_string()))?;
            attributes += 1;
            if attributes > l.max_attributes {
                return Err(exceeded(Bound::Attributes, l.max_attributes));
            }
            let key = a.key.as_ref();
            if key == "xmlns" || key.starts_with("xmlns:") {
                declared += 1;
                self.namespaces += 1;
                if declared > l.max_namespaces_per_element {
                    return Err(exceeded(
                        Bound::NamespacesPerElement,
                        l.max_namespaces_per_element,
                    ));
                }
                if self.namespaces > l.max_namespaces {
                    return Err(exceeded(Bound::Namespaces, l.max_namespaces));
                }
            }
        }
        Ok(())
    }
}

/// One linear pass over `xml`: every bound of `limits`, DOCTYPE refused.
fn prescan(xml: &str, limits: &XmlLimits) -> Result<(), XmlError> {
    if xml.len() > limits.max_bytes {
        return Err(exceeded(Bound::Bytes, limits.max_bytes));
    }
    let mut reader = Reader::from_str(xml);
    let mut scan = Scan {
        limits,
        depth: 0,
        nodes: 0,
        namespaces: 0,
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Syntax(format!("{e} (at byte {})", reader.error_position())))?;
        match event {
            Event::Start(tag) => {
                scan.depth += 1;
                scan.element(&tag, scan.depth)?;
            }
            Event::Empty(tag) => scan.element(&tag, scan.depth + 1)?,
            Event::End(_) => scan.depth = scan.depth.saturating_sub(1),
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Text(_)
            | Event::CData(_)
            | Event::Comment(_)
            | Event::PI(_)
            | Event::GeneralRef(_) => scan.node()?,
            Event::Decl(_) => {}
            Event::Eof => return Ok(()),
        }
    }
}

/// The first child element `{uri}name` of `node`.
pub(crate) fn child<'a, 'i>(node: Node<'a, 'i>, uri: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is(*c, uri, name))
}

/// Every child element `{uri}name` of `node`, in document order.
pub(crate) fn children<'a, 'i>(
    node: Node<'a, 'i>,
    uri: &'a str,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a
where
    'i: 'a,
{
    node.children().filter(move |c| is(*c, uri, name))
}

/// Is `node` the element `{uri}name`?
pub(crate) fn is(node: Node, uri: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(uri) && node.tag_name().name() == name
}

/// An unqualified attribute. roxmltree's `attribute("X")` also matches a namespaced `p:X`;
/// SAML's attributes are unqualified, so a namespaced look-alike must not count.
pub(crate) fn attr<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
    n.attributes()
        .find(|a| a.namespace().is_none() && a.name() == name)
        .map(|a| a.value())
}

/// Text content as XPath `string()`: all descendant text. `Node::text()` returns only the first
/// text child, so a comment inside a signed value (invisible to exclusive c14n) would cut it
/// short (the CVE-2017-11427 class of bugs).
pub(crate) fn text_content(n: Node) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIGHT: XmlLimits = XmlLimits {
        max_bytes: 4096,
        max_depth: 4,
        max_nodes: 20,
        max_attributes: 3,
        max_namespaces_per_element: 2,
        max_namespaces: 3,
    };

    fn bound(xml: &str) -> Option<Bound> {
        match parse_bounded(xml, &TIGHT) {
            Err(XmlError::Exceeded(e)) => Some(e.bound),
            _ => None,
        }
    }

    #[test]
    fn each_bound_is_enforced_at_its_limit() {
        assert_eq!(bound("<a><b><c><d/></c></b></a>"), None);
        assert_eq!(
            bound("<a><b><c><d><e/></d></c></b></a>"),
            Some(Bound::Depth)
        );
        assert_eq!(bound("<a><b><c><d></d></c></b></a>"), None);
        assert_eq!(
            bound("<a><b><c><d><e></e></d></c></b></a>"),
            Some(Bound::Depth)
        );
        assert_eq!(bound(&format!("<a>{}</a>", "<b/>".repeat(19))), None);
        assert_eq!(
            bound(&format!("<a>{}</a>", "<b/>".repeat(20))),
            Some(Bound::Nodes)
        );
        assert_eq!(
            bound(&format!("<a>{}</a>", "<!--c-->".repeat(20))),
            Some(Bound::Nodes)
        );
        assert_eq!(bound(r#"<a x="1" y="2" z="3"/>"#), None);
        assert_eq!(
            bound(r#"<a w="0" x="1" y="2" z="3"/>"#),
            Some(Bound::Attributes)
        );
        assert_eq!(bound(r#"<a xmlns="u" xmlns:p="v"/>"#), None);
        assert_eq!(
            bound(r#"<a xmlns="u" xmlns:p="v" xmlns:q="w"/>"#),
            Some(Bound::NamespacesPerElement)
        );
        assert_eq!(
            bound(r#"<a xmlns:p="v"><b xmlns:q="w"><c xmlns:r="x"/></b></a>"#),
            None
        );
        assert_eq!(
            bound(r#"<a xmlns:p="v"><b xmlns:q="w"><c xmlns:r="x"/><d xmlns:s="y"/></b></a>"#),
            Some(Bound::Namespaces)
        );
        assert_eq!(
            bound(&format!("<a>{}</a>", "x".repeat(4096))),
            Some(Bound::Bytes)
        );
    }

    #[test]
    fn doctype_and_syntax_errors() {
        assert_eq!(
            parse_bounded("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>", &TIGHT).err(),
            Some(XmlError::Doctype)
        );
        assert!(matches!(
            parse_bounded("<a><b></a>", &TIGHT),
            Err(XmlError::Syntax(_))
        ));
        assert!(matches!(
            parse_bounded("not xml", &TIGHT),
            Err(XmlError::Syntax(_))
        ));
    }

    #[test]
    fn names_the_bound_in_words() {
        let e = XmlError::Exceeded(Exceeded {
            bound: Bound::Depth,
            limit: 32,
        });
        assert_eq!(e.to_string(), "the document nests deeper than 32 elements");
    }
}
