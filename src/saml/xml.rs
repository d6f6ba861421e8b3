//! A writer whose output is already in Exclusive XML Canonicalization form
//! (<http://www.w3.org/2001/10/xml-exc-c14n#>, without comments).
//!
//! flexgate writes every XML document it signs with this writer, so the bytes it emits are the
//! bytes it digests: no parse, no re-serialisation. The writer guarantees the c14n rules that
//! depend on how a document is written:
//! - no XML declaration, no whitespace between elements, start and end tags (never `<x/>`);
//! - namespace declarations first, sorted by prefix, then attributes sorted by name
//!   (flexgate writes only unqualified attributes, for which c14n's order is the name's);
//! - text escaped as `&amp; &lt; &gt; &#xD;`, attribute values as `&amp; &lt; &quot; &#x9; &#xA; &#xD;`;
//! - a namespace is declared on each element whose output parent does not declare it (the
//!   caller declares prefixes exactly where they are first used, see `response.rs`).
//!
//! `tests/c14n_oracle.rs` checks the claim against an independent canonicaliser (lxml).

/// Characters XML 1.0 cannot carry at all (C0 controls other than TAB, LF, CR; U+FFFE/U+FFFF).
/// They are dropped rather than escaped: `&#x1;` is not well-formed XML 1.0 either.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Appends `s` escaped as c14n escapes text nodes.
pub fn push_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// Appends `s` escaped as c14n escapes attribute values.
pub fn push_attr_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// Builds canonical XML into a `String`.
#[derive(Debug, Default)]
pub struct CanonWriter {
    out: String,
}

impl CanonWriter {
    pub fn with_capacity(n: usize) -> Self {
        CanonWriter {
            out: String::with_capacity(n),
        }
    }

    /// Writes a start tag. `ns` are `(prefix, uri)` declarations, `attrs` `(name, value)` pairs of
    /// unqualified attributes; both are sorted here, so callers may list them in any order.
    pub fn start(&mut self, name: &str, ns: &[(&str, &str)], attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        let mut ns: Vec<&(&str, &str)> = ns.iter().collect();
        ns.sort_by(|a, b| a.0.cmp(b.0));
        for (prefix, uri) in ns {
            if prefix.is_empty() {
                self.out.push_str(" xmlns=\"");
            } else {
                self.out.push_str(" xmlns:");
                self.out.push_str(prefix);
                self.out.push_str("=\"");
            }
            push_attr_value(&mut self.out, uri);
            self.out.push('"');
        }
        let mut attrs: Vec<&(&str, &str)> = attrs.iter().collect();
        attrs.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            push_attr_value(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('>');
    }

    pub fn end(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    pub fn text(&mut self, s: &str) {
        push_text(&mut self.out, s);
    }

    /// `<name attrs>text</name>`
    pub fn leaf(&mut self, name: &str, ns: &[(&str, &str)], attrs: &[(&str, &str)], text: &str) {
        self.start(name, ns, attrs);
        self.text(text);
        self.end(name);
    }

    /// Appends markup that is already canonical (a signed subtree).
    pub fn raw(&mut self, canonical: &str) {
        self.out.push_str(canonical);
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_namespaces_then_attributes() {
        let mut w = CanonWriter::default();
        w.start(
            "p:E",
            &[("q", "urn:q"), ("p", "urn:p")],
            &[
                ("b", "2"),
                ("ID", "x"),
                ("InResponseTo", "y"),
                ("IssueInstant", "z"),
            ],
        );
        w.end("p:E");
        assert_eq!(
            w.finish(),
            r#"<p:E xmlns:p="urn:p" xmlns:q="urn:q" ID="x" InResponseTo="y" IssueInstant="z" b="2"></p:E>"#
        );
    }

    #[test]
    fn escapes_like_c14n() {
        let mut w = CanonWriter::default();
        w.leaf("a", &[], &[("v", "<&\"\t\n\r'>")], "<&>\r\"'\u{1}\u{7f}é");
        assert_eq!(
            w.finish(),
            "<a v=\"&lt;&amp;&quot;&#x9;&#xA;&#xD;'>\">&lt;&amp;&gt;&#xD;\"'\u{7f}é</a>"
        );
    }
}
