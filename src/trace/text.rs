//! Traces as people read them (`flexgate trace`), and XML pretty-printed for display. Pure.

use super::{Check, StageOutcome, Trace};
use chrono::{DateTime, Utc};

/// Unix milliseconds as `2026-01-15T10:00:00.123Z`.
pub fn time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// ✔ or ✗.
pub fn tick(ok: bool) -> &'static str {
    if ok {
        "✔"
    } else {
        "✗"
    }
}

/// One line per trace, for lists: when, reference, outcome, SP, email, and the reason.
pub fn summary(t: &Trace, now_ms: i64) -> String {
    format!(
        "{}  {}  {:<9}  {:<12}  {:<28}  {}",
        time(t.started_at_ms),
        t.reference,
        t.outcome_label(now_ms),
        t.sp.as_deref().unwrap_or("-"),
        t.email.as_deref().unwrap_or("-"),
        t.reason.as_deref().unwrap_or("")
    )
}

/// The whole trace; `checks` are the contract checks of its Response (see `checks::run`).
pub fn render(t: &Trace, checks: &[Check], now_ms: i64) -> String {
    let mut o = String::new();
    let mut row = |k: &str, v: &str| o.push_str(&format!("  {k:<14} {v}\n"));
    row("Reference", &t.reference);
    row("Started", &time(t.started_at_ms));
    row("Outcome", t.outcome_label(now_ms));
    if let Some(r) = &t.reason {
        row("Reason", r);
    }
    row("SP", t.sp.as_deref().unwrap_or("-"));
    row("Binding", t.binding.as_deref().unwrap_or("-"));
    for (k, v) in [
        ("AuthnRequest", &t.request_id),
        ("Response", &t.response_id),
        ("Subject", &t.subject),
        ("Email", &t.email),
    ] {
        if let Some(v) = v {
            row(k, v);
        }
    }
    o.push_str("Stages\n");
    for s in &t.stages {
        let mark = tick(s.outcome == StageOutcome::Ok);
        o.push_str(&format!(
            "  {mark} {:<16} {}  +{:.1} ms  {}\n",
            s.name.label(),
            time(s.at_ms),
            s.took_us as f64 / 1000.0,
            s.detail
        ));
        if let Some(fix) = &s.fix {
            o.push_str(&format!("      fix: {fix}\n"));
        }
    }
    if t.abandoned(now_ms) {
        o.push_str("  ✗ callback         never came back: the person did not finish at the upstream before the login timed out\n");
    }
    if !t.claims.is_empty() {
        o.push_str("Claims read\n");
        for c in &t.claims {
            o.push_str(&format!("  {} ({}) = {}\n", c.claim, c.used_for, c.value));
        }
    }
    if !t.attributes.is_empty() {
        o.push_str("Attributes sent\n");
        for (n, v) in &t.attributes {
            o.push_str(&format!("  {n} = {v:?}\n"));
        }
    }
    if !checks.is_empty() {
        o.push_str("Response checks\n");
        for c in checks {
            o.push_str(&format!(
                "  {} {}: expected {}, found {}\n",
                tick(c.ok),
                c.name,
                c.expected,
                c.found
            ));
        }
    }
    if let Some(x) = &t.authn_request_xml {
        o.push_str("AuthnRequest\n");
        o.push_str(&indent(&pretty_xml(x)));
    }
    if let Some(r) = &t.response {
        o.push_str("Response as sent\n");
        o.push_str(&indent(&pretty_xml(&r.xml)));
    }
    for note in &t.truncated {
        o.push_str(&format!("  (truncated: {note})\n"));
    }
    o
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// XML with one element per line, indented by depth. Text stays with its element; nothing is
/// parsed or resolved (display only; the input may be truncated or not well-formed).
pub fn pretty_xml(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len() * 5 / 4);
    let mut depth: usize = 0;
    let mut rest = xml.trim();
    let mut after_text = false;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            out.push_str(rest.trim());
            break;
        };
        let text = &rest[..lt];
        if !text.trim().is_empty() {
            out.push_str(text.trim());
            after_text = true;
        }
        rest = &rest[lt..];
        let end = tag_end(rest);
        let tag = &rest[..end];
        rest = &rest[end..];
        let closing = tag.starts_with("</");
        let opening =
            !closing && !tag.ends_with("/>") && !tag.starts_with("<?") && !tag.starts_with("<!");
        if closing {
            depth = depth.saturating_sub(1);
            if !after_text {
                newline(&mut out, depth);
            }
        } else {
            newline(&mut out, depth);
        }
        out.push_str(tag);
        after_text = false;
        if opening {
            depth += 1;
        }
    }
    out.trim_start().to_string() + "\n"
}

fn newline(out: &mut String, depth: usize) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&"  ".repeat(depth.min(40)));
}

/// The end of the markup at the start of `s` (a comment or CDATA section ends at its own
/// terminator; attribute values may contain `>`).
fn tag_end(s: &str) -> usize {
    for (open, close) in [("<!--", "-->"), ("<![CDATA[", "]]>")] {
        if s.starts_with(open) {
            return s.find(close).map(|i| i + close.len()).unwrap_or(s.len());
        }
    }
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return i + 1,
            _ => {}
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_xml_indents_elements_and_keeps_text_inline() {
        let x = r#"<?xml version="1.0"?><a x="1>2"><b>t</b><c/><!-- c > d --><d><e>u</e></d></a>"#;
        assert_eq!(
            pretty_xml(x),
            "<?xml version=\"1.0\"?>\n<a x=\"1>2\">\n  <b>t</b>\n  <c/>\n  <!-- c > d -->\n  <d>\n    <e>u</e>\n  </d>\n</a>\n"
        );
        // Truncated or broken input is shown, not refused.
        assert_eq!(pretty_xml("<a><b>"), "<a>\n  <b>\n");
        assert_eq!(pretty_xml("plain"), "plain\n");
    }
}
