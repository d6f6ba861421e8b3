//! Traces in the store (memory or Redis), so any instance can show any login.
//!
//! Keys, in the store's `trace` space:
//! - `b:{ref}` the trace of an attempt (for a login sent upstream: its begin part, written when
//!   it went — so a login that never comes back is found as "sent upstream, never came back");
//! - `e:{ref}` the end part of a login sent upstream, written once at its callback;
//! - `q:{AuthnRequest ID}` and `r:{Response ID}` → the reference;
//! - `m:{email}` the references of that person's most recent attempts (`per_email`);
//! - `recent` every reference, newest first, at most `max_traces`: what falls off the end is
//!   deleted, which caps the total at `max_traces` × `max_trace_bytes` (× 2 parts).
//!
//! Writes happen once per part, at the end of each HTTP step, never per stage; a store failure
//! is logged and never fails a login. Failures are always kept; successes are kept with the
//! probability `sample` (an unsampled success also deletes its begin part).

use super::{Kind, Outcome, Recorder, Trace};
use crate::clock::Clock;
use crate::config::{Config, StoreConfig, TraceConfig};
use crate::store::memory::MemoryStore;
use crate::store::{Space, Store, StoreError};
use std::sync::Arc;

const RECENT: &str = "recent";

/// The traces of one deployment.
pub struct TraceLog {
    store: Arc<dyn Store>,
    cfg: TraceConfig,
    /// Configured secrets, redacted from every trace.
    secrets: Vec<String>,
}

impl std::fmt::Debug for TraceLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceLog").field("cfg", &self.cfg).finish()
    }
}

/// The configured secrets a trace must never show.
fn config_secrets(config: &Config) -> Vec<String> {
    let mut s = vec![config.upstream.client_secret.expose().to_string()];
    if let Some(m) = &config.upstream.management {
        s.push(m.client_secret.expose().to_string());
    }
    s
}

impl TraceLog {
    /// Traces in `store`; with the in-memory store, in one of their own (bounded by
    /// `max_traces`), so traces never crowd out logins in progress.
    pub fn new(config: &Config, store: Arc<dyn Store>) -> TraceLog {
        let cfg = config.trace.clone();
        let store: Arc<dyn Store> = match config.store {
            StoreConfig::Memory => Arc::new(MemoryStore::new(cfg.max_traces * 6 + 16)),
            StoreConfig::Redis { .. } => store,
        };
        TraceLog {
            store,
            cfg,
            secrets: config_secrets(config),
        }
    }

    /// Traces in exactly `store` (for `flexgate trace` and tests).
    pub fn in_store(config: &Config, store: Arc<dyn Store>) -> TraceLog {
        TraceLog {
            store,
            cfg: config.trace.clone(),
            secrets: config_secrets(config),
        }
    }

    pub fn config(&self) -> &TraceConfig {
        &self.cfg
    }

    /// A recorder for a new attempt (recording only when traces are on).
    pub fn recorder(&self, clock: Arc<dyn Clock>, kind: Kind) -> Recorder {
        Recorder::new(clock, kind, self.cfg.enabled)
    }

    /// Saves what `rec` recorded. Never fails: a store problem is logged.
    pub async fn save(&self, rec: Recorder) {
        let continues = rec.continues();
        let reference = rec.reference().to_string();
        let Some((trace, json)) = rec.finish_json(&self.secrets) else {
            return;
        };
        if let Err(e) = self.write_json(trace, json, continues).await {
            tracing::warn!(reference, error = %e, "the login trace was not saved");
        }
    }

    fn sampled(&self) -> bool {
        self.cfg.sample >= 1.0 || rand::random::<f64>() < self.cfg.sample
    }

    /// [`TraceLog::write_json`] for a trace not yet serialised (tests).
    #[cfg(test)]
    async fn write(&self, trace: Trace, continues: bool) -> Result<(), StoreError> {
        let json = serde_json::to_string(&trace).unwrap_or_default();
        self.write_json(trace, json, continues).await
    }

    /// Stores `trace`, whose JSON is `json`, and its index entries.
    async fn write_json(
        &self,
        trace: Trace,
        json: String,
        continues: bool,
    ) -> Result<(), StoreError> {
        let ttl = self.cfg.keep;
        let r = trace.reference.clone();
        if trace.outcome == Outcome::Completed && !self.sampled() {
            if continues {
                self.store.take(Space::Trace, &format!("b:{r}")).await?;
            }
            return Ok(());
        }
        let max = self.cfg.max_trace_bytes;
        let bytes = if json.len() <= max {
            json.into_bytes()
        } else {
            fit(trace.clone(), max)
        };
        let part = if continues { "e" } else { "b" };
        let s = &self.store;
        let key = format!("{part}:{r}");
        let put = s.put(Space::Trace, &key, bytes, ttl);
        let recent = async {
            if continues {
                return Ok(Vec::new());
            }
            s.push_list(Space::Trace, RECENT, &r, self.cfg.max_traces, ttl)
                .await
        };
        let by_request = index(s.as_ref(), "q", trace.request_id.as_deref(), &r, ttl);
        let by_response = index(s.as_ref(), "r", trace.response_id.as_deref(), &r, ttl);
        let by_email = async {
            match trace.email.as_deref() {
                Some(e) => s
                    .push_list(Space::Trace, &email_key(e), &r, self.cfg.per_email, ttl)
                    .await
                    .map(|_| ()),
                None => Ok(()),
            }
        };
        let (put, recent, q, rs, m) = tokio::join!(put, recent, by_request, by_response, by_email);
        put?;
        q?;
        rs?;
        m?;
        for old in recent? {
            self.forget(&old).await?;
        }
        Ok(())
    }

    /// Deletes a trace that fell off the `recent` list, and the index entries that lead to it.
    async fn forget(&self, r: &str) -> Result<(), StoreError> {
        let s = &self.store;
        for part in ["b", "e"] {
            let Some(bytes) = s.take(Space::Trace, &format!("{part}:{r}")).await? else {
                continue;
            };
            let Ok(t) = serde_json::from_slice::<Trace>(&bytes) else {
                continue;
            };
            for (p, v) in [("q", &t.request_id), ("r", &t.response_id)] {
                if let Some(v) = v {
                    s.take(Space::Trace, &format!("{p}:{v}")).await?;
                }
            }
            if let Some(e) = &t.email {
                let key = email_key(e);
                if s.list(Space::Trace, &key)
                    .await?
                    .first()
                    .map(String::as_str)
                    == Some(r)
                {
                    s.take(Space::Trace, &key).await?;
                }
            }
        }
        Ok(())
    }

    /// The trace under reference `r` (both parts joined).
    pub async fn get(&self, r: &str) -> Result<Option<Trace>, StoreError> {
        if r.is_empty() || r.len() > 200 {
            return Ok(None);
        }
        let read = |k: String| async move {
            Ok::<_, StoreError>(
                self.store
                    .get(Space::Trace, &k)
                    .await?
                    .and_then(|b| serde_json::from_slice::<Trace>(&b).ok()),
            )
        };
        let (b, e) = tokio::join!(read(format!("b:{r}")), read(format!("e:{r}")));
        Ok(match (b?, e?) {
            (Some(b), Some(e)) => Some(Trace::merge(b, e)),
            (b, e) => b.or(e),
        })
    }

    /// The traces `query` names: a reference id, an AuthnRequest ID, a Response ID, or an email
    /// address (that person's most recent attempts, newest first), at most `limit`.
    pub async fn find(&self, query: &str, limit: usize) -> Result<Vec<Trace>, StoreError> {
        let q = query.trim();
        if q.is_empty() || q.len() > 512 {
            return Ok(Vec::new());
        }
        if let Some(t) = self.get(q).await? {
            return Ok(vec![t]);
        }
        for p in ["q", "r"] {
            if let Some(r) = self.store.get(Space::Trace, &format!("{p}:{q}")).await? {
                let r = String::from_utf8_lossy(&r).into_owned();
                return Ok(self.get(&r).await?.into_iter().collect());
            }
        }
        if q.contains('@') {
            let refs = self.store.list(Space::Trace, &email_key(q)).await?;
            return self.load(refs.iter().take(limit)).await;
        }
        Ok(Vec::new())
    }

    /// The most recent attempts, newest first, at most `limit`.
    pub async fn recent(&self, limit: usize) -> Result<Vec<Trace>, StoreError> {
        let refs = self.store.list(Space::Trace, RECENT).await?;
        self.load(refs.iter().take(limit)).await
    }

    async fn load(&self, refs: impl Iterator<Item = &String>) -> Result<Vec<Trace>, StoreError> {
        let mut out = Vec::new();
        for r in refs {
            if let Some(t) = self.get(r).await? {
                out.push(t);
            }
        }
        Ok(out)
    }
}

async fn index(
    s: &dyn Store,
    prefix: &str,
    id: Option<&str>,
    reference: &str,
    ttl: std::time::Duration,
) -> Result<(), StoreError> {
    match id {
        Some(id) if !id.is_empty() && id.len() <= 256 => {
            let key = format!("{prefix}:{id}");
            s.put(Space::Trace, &key, reference.as_bytes().to_vec(), ttl)
                .await
        }
        _ => Ok(()),
    }
}

fn email_key(email: &str) -> String {
    format!("m:{}", email.trim().to_lowercase())
}

/// Cuts `s` to at most `max` bytes (on a character boundary), saying so.
fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = s.len() - end;
    s.truncate(end);
    s.push_str(&format!("… [{dropped} bytes cut]"));
    true
}

/// The trace as JSON of at most `max` bytes: the XML goes first, then claims, attributes and
/// stage details; what was cut is listed in `truncated`.
pub fn fit(mut t: Trace, max: usize) -> Vec<u8> {
    let json = |t: &Trace| serde_json::to_vec(t).unwrap_or_default();
    let mut bytes = json(&t);
    if bytes.len() <= max {
        return bytes;
    }
    let xml_max = max / 4;
    if let Some(x) = t.authn_request_xml.as_mut() {
        if cut(x, xml_max) {
            t.truncated.push("the AuthnRequest XML".into());
        }
    }
    if let Some(r) = t.response.as_mut() {
        if cut(&mut r.xml, xml_max) {
            t.truncated.push("the Response XML".into());
        }
    }
    bytes = json(&t);
    if bytes.len() <= max {
        return bytes;
    }
    t.authn_request_xml = None;
    t.response = None;
    t.claims.clear();
    t.attributes.clear();
    for s in &mut t.stages {
        cut(&mut s.detail, 200);
    }
    t.truncated
        .push("the XML, claims and attributes (over trace.max_trace_bytes)".into());
    bytes = json(&t);
    if bytes.len() <= max {
        return bytes;
    }
    let keep = t.stages.len().min(4);
    t.stages.drain(..t.stages.len() - keep);
    t.truncated.push("all but the last stages".into());
    json(&t)
}

#[cfg(test)]
mod tests {
    use super::super::{SentResponse, Stage, StageName, StageOutcome};
    use super::*;

    fn config(extra: &str) -> Config {
        let toml = crate::demo::demo_config_toml("http://127.0.0.1:9", "demo-client-secret-1")
            + "\n[trace]\n"
            + extra;
        Config::from_toml(&toml, std::path::Path::new("<test>"), |_| None).unwrap()
    }

    fn trace(r: &str, outcome: Outcome, email: &str) -> Trace {
        Trace {
            reference: r.into(),
            kind: Kind::SpInitiated,
            outcome,
            request_id: Some(format!("_q{r}")),
            response_id: Some(format!("_r{r}")),
            email: Some(email.into()),
            ..Trace::default()
        }
    }

    fn log(extra: &str) -> TraceLog {
        let c = config(extra);
        TraceLog::in_store(&c, Arc::new(MemoryStore::new(1000)))
    }

    #[tokio::test]
    async fn found_by_reference_request_response_and_email() {
        let l = log("");
        l.write(trace("ref1", Outcome::Failed, "A@example.com"), false)
            .await
            .unwrap();
        l.write(trace("ref2", Outcome::Failed, "a@example.com"), false)
            .await
            .unwrap();
        for q in ["ref1", "_qref1", "_rref1"] {
            let found = l.find(q, 10).await.unwrap();
            assert_eq!(found.len(), 1, "{q}");
            assert_eq!(found[0].reference, "ref1");
        }
        let by_email: Vec<String> = l
            .find("a@EXAMPLE.com", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.reference)
            .collect();
        assert_eq!(by_email, ["ref2", "ref1"]);
        assert_eq!(l.find("a@example.com", 1).await.unwrap().len(), 1);
        assert!(l.find("nothing", 10).await.unwrap().is_empty());
        assert_eq!(l.recent(10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_oldest_traces_go_when_there_are_too_many() {
        let l = log("max_traces = 10\n");
        for i in 0..12 {
            l.write(
                trace(&format!("r{i}"), Outcome::Failed, "x@example.com"),
                false,
            )
            .await
            .unwrap();
        }
        let recent = l.recent(100).await.unwrap();
        assert_eq!(recent.len(), 10);
        assert_eq!(recent[0].reference, "r11");
        for gone in ["r0", "r1", "_qr0", "_rr1"] {
            assert!(l.find(gone, 10).await.unwrap().is_empty(), "{gone}");
        }
    }

    #[tokio::test]
    async fn unsampled_successes_leave_nothing_and_failures_are_always_kept() {
        let l = log("sample = 0.0\n");
        let mut begin = trace("s1", Outcome::Upstream, "x@example.com");
        begin.email = None;
        l.write(begin, false).await.unwrap();
        assert_eq!(
            l.find("s1", 1).await.unwrap().len(),
            1,
            "abandoned logins are findable"
        );
        l.write(trace("s1", Outcome::Completed, "x@example.com"), true)
            .await
            .unwrap();
        assert!(l.get("s1").await.unwrap().is_none());
        l.write(trace("f1", Outcome::Failed, "x@example.com"), false)
            .await
            .unwrap();
        assert!(l.get("f1").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_end_part_joins_the_begin_part() {
        let l = log("");
        let mut begin = trace("j1", Outcome::Upstream, "");
        begin.email = None;
        begin.response_id = None;
        l.write(begin, false).await.unwrap();
        let mut end = trace("j1", Outcome::Completed, "j@example.com");
        end.request_id = None;
        l.write(end, true).await.unwrap();
        let t = l.find("_rj1", 1).await.unwrap().remove(0);
        assert_eq!(t.outcome, Outcome::Completed);
        assert_eq!(t.request_id.as_deref(), Some("_qj1"));
        assert_eq!(l.recent(10).await.unwrap().len(), 1, "listed once");
    }

    #[test]
    fn fit_cuts_the_xml_first_and_stays_under_the_cap() {
        let big = "<x>".repeat(5_000);
        let stage = Stage {
            name: StageName::Signing,
            at_ms: 0,
            took_us: 0,
            outcome: StageOutcome::Ok,
            detail: "d".repeat(1000),
            reason: None,
            fix: None,
        };
        let t = Trace {
            reference: "r".into(),
            authn_request_xml: Some(big.clone()),
            response: Some(SentResponse {
                xml: big,
                expected: Default::default(),
                sent_at_ms: 0,
            }),
            stages: vec![stage; 3],
            ..Trace::default()
        };
        for max in [4_096, 8_000, 20_000] {
            let bytes = fit(t.clone(), max);
            assert!(bytes.len() <= max, "{max}: {}", bytes.len());
            let back: Trace = serde_json::from_slice(&bytes).unwrap();
            assert!(!back.truncated.is_empty());
            assert_eq!(back.reference, "r");
        }
        let small = Trace::default();
        assert_eq!(
            fit(small.clone(), 4_096),
            serde_json::to_vec(&small).unwrap()
        );
    }
}
