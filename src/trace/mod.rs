//! One trace per login attempt, for support and QA: what was asked, what came back, each stage
//! with its time and outcome, and — for the stage that stopped it — the reason and the fix.
//!
//! - this file: the model ([`Trace`]) and the [`Recorder`] that `login` threads through its
//!   stages as a value (no global); recording is a few small allocations per stage;
//! - `checks.rs`: the contract checks `flexgate verify` makes, run on the Response as sent;
//! - `keep.rs`: traces in the store (memory or Redis), their indexes, caps and sampling;
//! - `text.rs`: the readable form (`flexgate trace`) and the XML pretty-printer.
//!
//! No secret enters a trace: the login never hands one to the recorder (only claims, never the
//! tokens), and [`Recorder::forbid`] names the per-login secrets (authorization code, binding
//! cookie, state, PKCE verifier, nonce) and `keep` the configured ones (client secrets), which
//! are replaced by [`REDACTED`] wherever they would appear.

pub mod checks;
pub mod keep;
pub mod text;

use crate::clock::Clock;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// What replaces a secret found in a trace (never longer than a secret [`Recorder::forbid`]
/// accepts, so scrubbing never grows a trace past its cap).
pub const REDACTED: &str = "[secret]";

/// Secrets shorter than this are not scrubbed (they would match ordinary text).
const MIN_SECRET_LEN: usize = 8;

/// The stages of a login, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    RequestReceived,
    RequestChecks,
    ToUpstream,
    Callback,
    Token,
    IdTokenChecks,
    RolesSource,
    Mapping,
    MfaDecision,
    Signing,
    ResponseSent,
}

impl StageName {
    pub fn label(self) -> &'static str {
        match self {
            StageName::RequestReceived => "request received",
            StageName::RequestChecks => "request checks",
            StageName::ToUpstream => "to the upstream",
            StageName::Callback => "callback",
            StageName::Token => "token",
            StageName::IdTokenChecks => "ID-token checks",
            StageName::RolesSource => "roles source",
            StageName::Mapping => "mapping",
            StageName::MfaDecision => "MFA decision",
            StageName::Signing => "signing",
            StageName::ResponseSent => "Response sent",
        }
    }
}

/// How one stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageOutcome {
    Ok,
    Failed,
}

/// One stage: when it ended, how long it took, what it found or why it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: StageName,
    /// When the stage ended (unix milliseconds).
    pub at_ms: i64,
    /// How long since the previous stage ended (or the attempt began), in microseconds.
    pub took_us: u64,
    pub outcome: StageOutcome,
    /// What the stage found (or, when it failed, the error).
    pub detail: String,
    /// A failed stage's stable reason label (as in logs and metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A failed stage's fix, for the person who can apply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// How the attempt started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    SpInitiated,
    IdpInitiated,
    /// A callback that matched no login in progress (its start is unknown).
    #[default]
    Callback,
}

/// How the attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to the upstream; no callback (yet). Past `expires_at_ms`: abandoned.
    #[default]
    Upstream,
    /// An assertion was sent to the SP.
    Completed,
    /// A SAML status Response (NoPassive, NoAuthnContext) was sent to the SP.
    Status,
    /// An error page was shown.
    Failed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Upstream => "upstream",
            Outcome::Completed => "completed",
            Outcome::Status => "status",
            Outcome::Failed => "failed",
        }
    }

    /// `upstream`, `completed`, `status`, `failed` (and `abandoned` for `upstream`).
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "upstream" | "abandoned" => Some(Outcome::Upstream),
            "completed" => Some(Outcome::Completed),
            "status" => Some(Outcome::Status),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }
}

/// A claim the mapping read, with the value it found (`null`: absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub claim: String,
    /// What it was read for (a SAML attribute, the NameID, MFA, the subject).
    pub used_for: String,
    pub value: Value,
}

/// What the SP will check in the Response, as flexgate knew it when it signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Expected {
    pub issuer: String,
    /// The ACS URL (Destination and Recipient), query string included.
    pub destination: String,
    pub audience: String,
    /// `None`: IdP-initiated (no InResponseTo).
    pub in_response_to: Option<String>,
    /// The NameID; empty for a status Response.
    pub name_id: String,
    /// Attributes Flex requires (empty for a generic SP).
    pub required_attributes: Vec<String>,
    /// The second-level status sent, for a status Response.
    pub status: Option<String>,
}

/// The Response as sent, and what it should say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentResponse {
    pub xml: String,
    pub expected: Expected,
    /// When it was signed (unix milliseconds): the time window is checked at this instant.
    pub sent_at_ms: i64,
}

/// What a trace keeps instead of each SignatureValue: with it, a trace would be a signed
/// Response anyone who can read the store could post to the SP while it is valid.
pub const SIGNATURE_ELIDED: &str = "elided-from-the-trace";

impl SentResponse {
    /// The Response as sent, its SignatureValue(s) replaced by [`SIGNATURE_ELIDED`] (the
    /// digests stay, so the trace still shows its content is what was signed).
    pub fn new(xml: &str, expected: Expected, sent_at_ms: i64) -> SentResponse {
        SentResponse {
            xml: elide_signature_values(xml),
            expected,
            sent_at_ms,
        }
    }
}

/// `xml` with the text of every `<ds:SignatureValue>` (as flexgate writes it) replaced.
pub fn elide_signature_values(xml: &str) -> String {
    const OPEN: &str = "<ds:SignatureValue>";
    const CLOSE: &str = "</ds:SignatureValue>";
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find(OPEN) {
        let (head, tail) = rest.split_at(i + OPEN.len());
        out.push_str(head);
        match tail.find(CLOSE) {
            Some(j) => {
                out.push_str(SIGNATURE_ELIDED);
                rest = &tail[j..];
            }
            None => {
                rest = tail;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One contract check on the Response: expected next to found, ticked or crossed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub expected: String,
    pub found: String,
    pub ok: bool,
}

/// One login attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Trace {
    /// The reference id shown on the error page (and in the log line).
    pub reference: String,
    pub kind: Kind,
    /// When the attempt began (unix milliseconds).
    pub started_at_ms: i64,
    /// When a login sent upstream stops waiting (unix milliseconds); 0 when not sent.
    #[serde(default)]
    pub expires_at_ms: i64,
    pub outcome: Outcome,
    /// The reason label of the failure or status, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp: Option<String>,
    /// `HTTP-Redirect`, `HTTP-POST`, or `IdP-initiated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub stages: Vec<Stage>,
    /// The decoded AuthnRequest XML, as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn_request_xml: Option<String>,
    /// The upstream's claims the login read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
    /// The SAML attributes the mapping produced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(String, Vec<String>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<SentResponse>,
    /// Parts dropped to keep the trace under `trace.max_trace_bytes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
}

impl Trace {
    /// The begin part of a login (written when it went upstream) joined with its end part.
    pub fn merge(begin: Trace, end: Trace) -> Trace {
        let mut t = begin;
        let or = |a: &mut Option<String>, b: Option<String>| {
            if b.is_some() {
                *a = b;
            }
        };
        t.outcome = end.outcome;
        or(&mut t.reason, end.reason);
        or(&mut t.sp, end.sp);
        or(&mut t.response_id, end.response_id);
        or(&mut t.subject, end.subject);
        or(&mut t.email, end.email);
        t.stages.extend(end.stages);
        t.claims.extend(end.claims);
        t.attributes.extend(end.attributes);
        if end.response.is_some() {
            t.response = end.response;
        }
        t.truncated.extend(end.truncated);
        t
    }

    /// Sent upstream and past its login timeout at `now_ms`.
    pub fn abandoned(&self, now_ms: i64) -> bool {
        self.outcome == Outcome::Upstream && self.expires_at_ms > 0 && now_ms > self.expires_at_ms
    }

    /// The outcome in words, with `abandoned` for a login that never came back.
    pub fn outcome_label(&self, now_ms: i64) -> &'static str {
        if self.abandoned(now_ms) {
            "abandoned"
        } else {
            self.outcome.label()
        }
    }

    /// The stage that stopped the attempt, if one did.
    pub fn failed_stage(&self) -> Option<&Stage> {
        self.stages
            .iter()
            .find(|s| s.outcome == StageOutcome::Failed)
    }
}

/// A trace as shown (`flexgate trace --json`, the admin view): the trace, its outcome at the
/// time of showing (`abandoned` included), and the contract checks of its Response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct View {
    pub status: String,
    pub checks: Vec<Check>,
    #[serde(flatten)]
    pub trace: Trace,
}

impl View {
    /// `keys`: the IdP certificates' public keys the checks trust.
    pub fn new(
        trace: Trace,
        keys: &[openssl::pkey::PKey<openssl::pkey::Public>],
        now_ms: i64,
    ) -> View {
        let checks = trace
            .response
            .as_ref()
            .map(|r| checks::run(r, keys))
            .unwrap_or_default();
        View {
            status: trace.outcome_label(now_ms).to_string(),
            checks,
            trace,
        }
    }
}

/// An error a stage can end with: its stable label, its text, and the fix.
pub trait Explain: std::fmt::Display {
    fn reason(&self) -> &'static str;
    fn fix(&self) -> String;
}

/// A fresh reference id: 12 characters from an alphabet without look-alikes (no `0 o 1 l i`)
/// and without `-` or `_`, so it is safe to read aloud, type, and paste as a command-line
/// argument (≈ 59 bits).
pub fn reference_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Records one attempt as it goes through the stages. A disabled recorder keeps only the
/// reference id and records nothing (closures that build details are never called).
pub struct Recorder {
    reference: String,
    trace: Option<Box<Trace>>,
    clock: Arc<dyn Clock>,
    mark: Instant,
    forbidden: Vec<String>,
    /// The begin part of this attempt is in the store (a login sent upstream).
    continues: bool,
}

impl Recorder {
    pub fn new(clock: Arc<dyn Clock>, kind: Kind, enabled: bool) -> Recorder {
        let reference = reference_id();
        let trace = enabled.then(|| {
            Box::new(Trace {
                reference: reference.clone(),
                kind,
                started_at_ms: clock.now().timestamp_millis(),
                ..Trace::default()
            })
        });
        Recorder {
            reference,
            trace,
            clock,
            mark: Instant::now(),
            forbidden: Vec::new(),
            continues: false,
        }
    }

    /// The reference id (for the page and the log line).
    pub fn reference(&self) -> &str {
        &self.reference
    }

    pub fn is_on(&self) -> bool {
        self.trace.is_some()
    }

    /// Whether this recorder continues a login whose begin part was stored.
    pub fn continues(&self) -> bool {
        self.continues
    }

    /// From now on, this recorder writes the end part of the login begun under `reference`
    /// (the callback of a login sent upstream).
    pub fn continue_login(&mut self, reference: &str, kind: Kind, started_at_ms: i64) {
        self.reference = reference.to_string();
        self.continues = true;
        if let Some(t) = self.trace.as_mut() {
            t.reference = reference.to_string();
            t.kind = kind;
            t.started_at_ms = started_at_ms;
        }
    }

    /// Changes the trace (only when recording).
    pub fn with(&mut self, f: impl FnOnce(&mut Trace)) {
        if let Some(t) = self.trace.as_mut() {
            f(t);
        }
    }

    /// A value that must never appear in the trace (it is replaced by [`REDACTED`]).
    pub fn forbid(&mut self, secret: &str) {
        if self.trace.is_some() && secret.len() >= MIN_SECRET_LEN {
            self.forbidden.push(secret.to_string());
        }
    }

    fn push(
        &mut self,
        name: StageName,
        outcome: StageOutcome,
        detail: String,
        why: Option<(&str, String)>,
    ) {
        let now = Instant::now();
        let took_us = now.duration_since(self.mark).as_micros() as u64;
        self.mark = now;
        let at_ms = self.clock.now().timestamp_millis();
        if let Some(t) = self.trace.as_mut() {
            let (reason, fix) = match why {
                Some((r, f)) => (Some(r.to_string()), Some(f)),
                None => (None, None),
            };
            t.stages.push(Stage {
                name,
                at_ms,
                took_us,
                outcome,
                detail,
                reason,
                fix,
            });
        }
    }

    /// A stage that went well; `detail` says what it found.
    pub fn ok(&mut self, name: StageName, detail: impl FnOnce() -> String) {
        if self.trace.is_some() {
            self.push(name, StageOutcome::Ok, detail(), None);
        }
    }

    /// A stage that stopped the attempt.
    pub fn failed<E: Explain + ?Sized>(&mut self, name: StageName, e: &E) {
        if self.trace.is_some() {
            let reason = e.reason();
            self.push(
                name,
                StageOutcome::Failed,
                e.to_string(),
                Some((reason, e.fix())),
            );
            self.with(|t| {
                t.outcome = Outcome::Failed;
                t.reason = Some(reason.to_string());
            });
        }
    }

    /// Records `r` as the outcome of stage `name` and passes it on.
    pub fn step<T, E: Explain>(
        &mut self,
        name: StageName,
        r: Result<T, E>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, E> {
        match &r {
            Ok(v) => self.ok(name, || detail(v)),
            Err(e) => self.failed(name, e),
        }
        r
    }

    /// Has a stage failed?
    pub fn has_failed(&self) -> bool {
        self.trace
            .as_ref()
            .is_some_and(|t| t.failed_stage().is_some())
    }

    /// The trace recorded, with every forbidden value (and each of `secrets`) replaced by
    /// [`REDACTED`]; `None` when recording is off.
    pub fn finish(self, secrets: &[String]) -> Option<Trace> {
        self.finish_json(secrets).map(|(t, _)| t)
    }

    /// [`Recorder::finish`], with the redacted trace's JSON: the one serialisation a login's
    /// trace needs (the redaction searches it, the store keeps it).
    pub fn finish_json(self, secrets: &[String]) -> Option<(Trace, String)> {
        let trace = *self.trace?;
        let all: Vec<&str> = self
            .forbidden
            .iter()
            .map(String::as_str)
            .chain(secrets.iter().map(String::as_str))
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        Some(scrub_json(trace, &all))
    }
}

/// `trace` with every occurrence of each secret (as written, and as JSON escapes it) replaced.
pub fn scrub(trace: Trace, secrets: &[&str]) -> Trace {
    scrub_json(trace, secrets).0
}

/// [`scrub`], and the JSON of the result. A trace with no secret in it (every ordinary login) is
/// serialised once and searched, never parsed back.
pub fn scrub_json(trace: Trace, secrets: &[&str]) -> (Trace, String) {
    // Sized up front: grown from serde_json's 128 bytes, the ~10 KB of a login's trace was
    // reallocated and copied seven times (≈ 40 % of its serialisation in the profile; issue 21).
    let xml_len = trace.authn_request_xml.as_ref().map_or(0, String::len)
        + trace.response.as_ref().map_or(0, |r| r.xml.len());
    let mut buf = Vec::with_capacity(xml_len + xml_len / 8 + 4096);
    let serialised = serde_json::to_writer(&mut buf, &trace)
        .ok()
        .and_then(|()| String::from_utf8(buf).ok());
    let Some(mut json) = serialised else {
        return unredactable(trace.reference);
    };
    let mut changed = false;
    for s in secrets {
        let escaped = serde_json::to_string(s).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        // Most secrets (tokens, codes) read the same escaped: search such a one once.
        let forms = if escaped == *s {
            [*s, ""]
        } else {
            [*s, escaped]
        };
        for form in forms {
            if !form.is_empty() && memchr::memmem::find(json.as_bytes(), form.as_bytes()).is_some()
            {
                json = json.replace(form, REDACTED);
                changed = true;
            }
        }
    }
    if !changed {
        return (trace, json);
    }
    match serde_json::from_str(&json) {
        Ok(t) => (t, json),
        Err(_) => unredactable(trace.reference),
    }
}

/// What is kept of a trace that could not be redacted (its reference and why it is empty), and
/// its JSON.
fn unredactable(reference: String) -> (Trace, String) {
    let dropped = Trace {
        reference,
        truncated: vec!["the trace could not be redacted and was dropped".into()],
        ..Trace::default()
    };
    let json = serde_json::to_string(&dropped).unwrap_or_default();
    (dropped, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;

    struct Boom;
    impl std::fmt::Display for Boom {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the code c0de-c0de-c0de was refused")
        }
    }
    impl Explain for Boom {
        fn reason(&self) -> &'static str {
            "upstream_error"
        }
        fn fix(&self) -> String {
            "check the upstream".into()
        }
    }

    fn clock() -> Arc<dyn Clock> {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-15T10:00:00Z").unwrap();
        Arc::new(FixedClock(at.with_timezone(&chrono::Utc)))
    }

    #[test]
    fn signature_values_are_kept_out_and_everything_else_stays() {
        let xml = "<r><ds:SignatureValue>AAAA</ds:SignatureValue><a>x</a><s><ds:SignatureValue>\nBB==\n</ds:SignatureValue></s></r>";
        assert_eq!(
            elide_signature_values(xml),
            format!("<r><ds:SignatureValue>{SIGNATURE_ELIDED}</ds:SignatureValue><a>x</a><s><ds:SignatureValue>{SIGNATURE_ELIDED}</ds:SignatureValue></s></r>")
        );
        assert_eq!(elide_signature_values("<r>none</r>"), "<r>none</r>");
        // An unclosed one (not something flexgate writes) is left as it is.
        assert_eq!(
            elide_signature_values("<ds:SignatureValue>AA"),
            "<ds:SignatureValue>AA"
        );
    }

    #[test]
    fn reference_ids_are_safe_to_type_and_paste() {
        for _ in 0..2000 {
            let r = reference_id();
            assert_eq!(r.len(), 12);
            assert!(!r.starts_with('-'), "{r}");
            assert!(
                r.chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()),
                "{r}"
            );
            assert!(!r.contains(['0', 'o', '1', 'l', 'i']), "{r}");
        }
    }

    #[test]
    fn records_stages_and_the_failure_with_its_fix() {
        let mut rec = Recorder::new(clock(), Kind::SpInitiated, true);
        rec.ok(StageName::RequestReceived, || "HTTP-Redirect".into());
        let r: Result<u8, Boom> = rec.step(StageName::Token, Err(Boom), |_| unreachable!());
        assert!(r.is_err());
        assert!(rec.has_failed());
        let t = rec.finish(&[]).unwrap();
        assert_eq!(t.stages.len(), 2);
        assert_eq!(t.outcome, Outcome::Failed);
        assert_eq!(t.reason.as_deref(), Some("upstream_error"));
        let failed = t.failed_stage().unwrap();
        assert_eq!(failed.name, StageName::Token);
        assert_eq!(failed.fix.as_deref(), Some("check the upstream"));
        assert_eq!(failed.at_ms, 1_768_471_200_000);
    }

    #[test]
    fn a_disabled_recorder_keeps_only_its_reference() {
        let mut rec = Recorder::new(clock(), Kind::SpInitiated, false);
        rec.ok(StageName::RequestReceived, || {
            unreachable!("not called when off")
        });
        rec.with(|_| unreachable!("not called when off"));
        assert!(!rec.reference().is_empty());
        assert!(rec.finish(&[]).is_none());
    }

    #[test]
    fn forbidden_values_are_redacted_everywhere() {
        let mut rec = Recorder::new(clock(), Kind::SpInitiated, true);
        rec.forbid("c0de-c0de-c0de");
        rec.forbid("short");
        rec.with(|t| t.email = Some("a\"quoted\"secret@example.com".into()));
        rec.failed(StageName::Token, &Boom);
        let t = rec.finish(&["\"quoted\"secret".to_string()]).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert!(!json.contains("c0de-c0de-c0de"), "{json}");
        assert!(!json.contains("quoted"), "{json}");
        assert!(json.contains(REDACTED));
        assert!(REDACTED.len() <= MIN_SECRET_LEN);
    }

    #[test]
    fn finish_json_is_the_json_of_the_redacted_trace() {
        for secrets in [vec![], vec!["\"quoted\"secret".to_string()]] {
            let mut rec = Recorder::new(clock(), Kind::SpInitiated, true);
            rec.forbid("c0de-c0de-c0de");
            rec.with(|t| t.email = Some("a\"quoted\"secret@example.com".into()));
            rec.failed(StageName::Token, &Boom);
            let (t, json) = rec.finish_json(&secrets).unwrap();
            assert_eq!(json, serde_json::to_string(&t).unwrap());
            assert!(!json.contains("c0de-c0de-c0de"), "{json}");
            assert_eq!(json.contains("quoted"), secrets.is_empty(), "{json}");
        }
    }

    #[test]
    fn merge_joins_the_begin_and_end_parts() {
        let begin = Trace {
            reference: "r".into(),
            kind: Kind::SpInitiated,
            request_id: Some("_q".into()),
            stages: vec![Stage {
                name: StageName::ToUpstream,
                at_ms: 1,
                took_us: 1,
                outcome: StageOutcome::Ok,
                detail: String::new(),
                reason: None,
                fix: None,
            }],
            expires_at_ms: 10,
            ..Trace::default()
        };
        assert!(begin.abandoned(11) && !begin.abandoned(10));
        assert_eq!(begin.outcome_label(11), "abandoned");
        let mut end = begin.clone();
        end.outcome = Outcome::Completed;
        end.request_id = None;
        end.email = Some("a@example.com".into());
        let t = Trace::merge(begin, end);
        assert_eq!(t.stages.len(), 2);
        assert_eq!(t.request_id.as_deref(), Some("_q"));
        assert_eq!(t.email.as_deref(), Some("a@example.com"));
        assert!(!t.abandoned(11));
    }
}
