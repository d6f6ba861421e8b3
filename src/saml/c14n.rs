//! Exclusive XML Canonicalization 1.0 (<https://www.w3.org/TR/xml-exc-c14n/>) of a parsed
//! subtree, for verifying signatures made by others (`verify.rs`).
//!
//! flexgate's own output never passes through here: it is written canonical (`xml.rs`). This
//! implementation covers what XML-DSig over SAML needs: an element subtree as the node-set, one
//! excluded subtree (the enveloped signature), with or without comments, and the
//! `InclusiveNamespaces PrefixList` parameter. It is checked against xmlsec1 and lxml in tests.

use roxmltree::{Node, NodeId, NodeType};

/// Canonicalisation parameters.
#[derive(Debug, Clone, Default)]
pub struct Options<'a> {
    pub with_comments: bool,
    /// Prefixes handled as in inclusive c14n (`#default` for the default namespace → `""`).
    pub inclusive_prefixes: &'a [String],
    /// A subtree left out of the output (the enveloped-signature transform).
    pub exclude: Option<NodeId>,
}

fn qname_prefix<'a>(input: &'a str, node: &Node) -> Option<&'a str> {
    let start = node.range().start + 1;
    let rest = input.get(start..)?;
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .unwrap_or(rest.len());
    let qname = &rest[..end];
    qname.split_once(':').map(|(p, _)| p)
}

fn push_text(out: &mut String, s: &str) {
    super::xml::push_text(out, s)
}

fn push_attr(out: &mut String, s: &str) {
    super::xml::push_attr_value(out, s)
}

/// Canonicalises `apex` and its descendants. The walk keeps its own stack, so a deep tree costs
/// heap, never the thread's stack.
pub fn canonicalize(apex: Node<'_, '_>, opts: &Options<'_>) -> String {
    let mut out = String::with_capacity(apex.range().len() + 256);
    let mut rendered: Vec<(String, String)> = Vec::new();
    let mut stack = vec![Step::Enter(apex)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Enter(node) if Some(node.id()) == opts.exclude => {}
            Step::Enter(node) => {
                if node.is_element() {
                    let mark = start_tag(node, opts, &mut rendered, &mut out);
                    stack.push(Step::Leave(node, mark));
                } else {
                    leaf(node, opts, &mut out);
                }
                if node.is_element() || node.node_type() == NodeType::Root {
                    stack.extend(node.children().rev().map(Step::Enter));
                }
            }
            Step::Leave(node, mark) => {
                out.push_str("</");
                push_qname(node, &mut out);
                out.push('>');
                rendered.truncate(mark);
            }
        }
    }
    out
}

/// One step of the walk: entering a node, or closing an element (with the length of the
/// rendered-namespace stack to go back to).
enum Step<'a, 'i> {
    Enter(Node<'a, 'i>),
    Leave(Node<'a, 'i>, usize),
}

fn lookup<'v>(rendered: &'v [(String, String)], prefix: &str) -> Option<&'v str> {
    rendered
        .iter()
        .rev()
        .find(|(p, _)| p == prefix)
        .map(|(_, u)| u.as_str())
}

fn in_scope<'a>(node: &Node<'a, '_>, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        node.default_namespace()
    } else {
        node.lookup_namespace_uri(Some(prefix))
    }
}

/// A text, comment or processing-instruction node (the root has no output of its own).
fn leaf(node: Node<'_, '_>, opts: &Options<'_>, out: &mut String) {
    match node.node_type() {
        NodeType::Text => push_text(out, node.text().unwrap_or("")),
        NodeType::Comment if opts.with_comments => {
            out.push_str("<!--");
            out.push_str(node.text().unwrap_or(""));
            out.push_str("-->");
        }
        NodeType::PI => {
            if let Some(pi) = node.pi() {
                out.push_str("<?");
                out.push_str(pi.target);
                if let Some(v) = pi.value {
                    out.push(' ');
                    out.push_str(v);
                }
                out.push_str("?>");
            }
        }
        _ => {}
    }
}

/// The element's name as written: its prefix (if any) and local name.
fn push_qname(node: Node<'_, '_>, out: &mut String) {
    let input = node.document().input_text();
    if let Some(prefix) = qname_prefix(input, &node) {
        out.push_str(prefix);
        out.push(':');
    }
    out.push_str(node.tag_name().name());
}

/// Writes the start tag of `node` with the namespace declarations exclusive c14n renders there;
/// returns the length `rendered` had before them.
fn start_tag(
    node: Node<'_, '_>,
    opts: &Options<'_>,
    rendered: &mut Vec<(String, String)>,
    out: &mut String,
) -> usize {
    let input = node.document().input_text();
    let prefix = qname_prefix(input, &node).unwrap_or("");
    let uri = node.tag_name().namespace().unwrap_or("");

    // Namespaces visibly utilised by this element and its attributes, plus the inclusive ones.
    let mut needed: Vec<(&str, &str)> = vec![(prefix, uri)];
    let mut attrs: Vec<(&str, &str, &str, &str)> = Vec::new(); // (ns uri, local, qname, value)
    for a in node.attributes() {
        let qname = input.get(a.range_qname()).unwrap_or(a.name());
        let a_uri = a.namespace().unwrap_or("");
        if let Some((p, _)) = qname.split_once(':') {
            if p != "xml" && !needed.iter().any(|(q, _)| *q == p) {
                needed.push((p, a_uri));
            }
        }
        attrs.push((a_uri, a.name(), qname, a.value()));
    }
    for p in opts.inclusive_prefixes {
        if let Some(u) = in_scope(&node, p) {
            if !needed.iter().any(|(q, _)| q == p) {
                needed.push((p.as_str(), u));
            }
        }
    }
    needed.sort_by(|a, b| a.0.cmp(b.0));

    let mark = rendered.len();
    out.push('<');
    push_qname(node, out);
    for (p, u) in &needed {
        let current = lookup(rendered, p).unwrap_or("");
        if current == *u {
            continue;
        }
        if p.is_empty() {
            out.push_str(" xmlns=\"");
        } else {
            out.push_str(" xmlns:");
            out.push_str(p);
            out.push_str("=\"");
        }
        push_attr(out, u);
        out.push('"');
        rendered.push((p.to_string(), u.to_string()));
    }
    attrs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, _, qname, value) in attrs {
        out.push(' ');
        out.push_str(qname);
        out.push_str("=\"");
        push_attr(out, value);
        out.push('"');
    }
    out.push('>');
    mark
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n(xml: &str, path_local: &str) -> String {
        let doc = roxmltree::Document::parse(xml).unwrap();
        let n = doc
            .descendants()
            .find(|n| n.tag_name().name() == path_local)
            .unwrap();
        canonicalize(n, &Options::default())
    }

    #[test]
    fn moves_unused_namespaces_to_where_they_are_used() {
        let xml =
            r#"<a:R xmlns:a="urn:a" xmlns:b="urn:b" Z="1" A="2"><b:I>x &amp; y</b:I><b:I/></a:R>"#;
        assert_eq!(
            c14n(xml, "R"),
            r#"<a:R xmlns:a="urn:a" A="2" Z="1"><b:I xmlns:b="urn:b">x &amp; y</b:I><b:I xmlns:b="urn:b"></b:I></a:R>"#
        );
    }

    #[test]
    fn subtree_declares_inherited_namespaces() {
        let xml = r#"<a:R xmlns:a="urn:a" xmlns="urn:d"><a:S><T q="1"/></a:S></a:R>"#;
        assert_eq!(
            c14n(xml, "S"),
            r#"<a:S xmlns:a="urn:a"><T xmlns="urn:d" q="1"></T></a:S>"#
        );
    }

    #[test]
    fn deep_trees_do_not_use_the_thread_stack() {
        let depth = 200_000;
        let xml = format!("{}{}", "<e>".repeat(depth), "</e>".repeat(depth));
        let doc = roxmltree::Document::parse_with_options(
            &xml,
            roxmltree::ParsingOptions {
                nodes_limit: u32::MAX,
                ..Default::default()
            },
        )
        .unwrap();
        let out = canonicalize(doc.root_element(), &Options::default());
        assert_eq!(
            out,
            format!("{}{}", "<e>".repeat(depth), "</e>".repeat(depth))
        );
    }

    #[test]
    fn sorts_qualified_attributes_by_namespace_uri() {
        let xml = r#"<e xmlns:z="urn:a" xmlns:y="urn:b" y:k="1" z:k="2" b="3"/>"#;
        assert_eq!(
            c14n(xml, "e"),
            r#"<e xmlns:y="urn:b" xmlns:z="urn:a" b="3" z:k="2" y:k="1"></e>"#
        );
    }
}
