//! `[trace]`: login traces for support and QA. Each key's default and range live here (the
//! README's table follows them).

use super::Problems;
use crate::config::raw::RawTrace;
use crate::config::TraceConfig;

/// `trace.keep_secs`: default one day, at most 30 days.
pub const KEEP_SECS: (u64, std::ops::RangeInclusive<u64>) = (86_400, 60..=2_592_000);
/// `trace.sample`: the fraction of successes kept.
pub const SAMPLE: (f64, std::ops::RangeInclusive<f64>) = (1.0, 0.0..=1.0);
/// `trace.max_traces`: the most traces kept in all.
pub const MAX_TRACES: (u64, std::ops::RangeInclusive<u64>) = (2_000, 10..=1_000_000);
/// `trace.max_trace_bytes`: the largest trace kept.
pub const MAX_TRACE_BYTES: (u64, std::ops::RangeInclusive<u64>) = (32_768, 4_096..=1_048_576);
/// `trace.per_email`: the attempts found per email address.
pub const PER_EMAIL: (u64, std::ops::RangeInclusive<u64>) = (20, 1..=1_000);

pub(super) fn trace(raw: RawTrace, p: &mut Problems) -> Option<TraceConfig> {
    let keep = p.secs("trace.keep_secs", raw.keep_secs, KEEP_SECS.0, KEEP_SECS.1);
    let max_traces = p.within(
        "trace.max_traces",
        raw.max_traces,
        MAX_TRACES.0,
        MAX_TRACES.1,
        "traces",
    );
    let max_trace_bytes = p.within(
        "trace.max_trace_bytes",
        raw.max_trace_bytes,
        MAX_TRACE_BYTES.0,
        MAX_TRACE_BYTES.1,
        "bytes",
    );
    let per_email = p.within(
        "trace.per_email",
        raw.per_email,
        PER_EMAIL.0,
        PER_EMAIL.1,
        "attempts",
    );
    let sample = raw.sample.unwrap_or(SAMPLE.0);
    let sample_ok = SAMPLE.1.contains(&sample);
    if !sample_ok {
        p.add(
            "trace.sample",
            format!("is {sample}, outside 0.0..=1.0"),
            "write the fraction of successful logins to keep, e.g. 0.1 (failures are always kept)",
        );
    }
    Some(TraceConfig {
        enabled: raw.enabled.unwrap_or(true),
        keep: keep?,
        sample: sample_ok.then_some(sample)?,
        max_traces: usize::try_from(max_traces?).ok()?,
        max_trace_bytes: usize::try_from(max_trace_bytes?).ok()?,
        per_email: usize::try_from(per_email?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    fn load(trace: &str) -> Result<Config, ConfigError> {
        let toml = crate::demo::demo_config_toml("http://127.0.0.1:9", "demo-secret-123")
            + "\n[trace]\n"
            + trace;
        Config::from_toml(&toml, Path::new("<test>"), |_| None)
    }

    #[test]
    fn defaults_and_ranges() {
        let t = load("").unwrap().trace;
        assert!(t.enabled);
        assert_eq!(t.keep.as_secs(), super::KEEP_SECS.0);
        assert_eq!(t.sample, super::SAMPLE.0);
        assert_eq!(t.max_traces as u64, super::MAX_TRACES.0);
        assert_eq!(t.max_trace_bytes as u64, super::MAX_TRACE_BYTES.0);
        assert_eq!(t.per_email as u64, super::PER_EMAIL.0);
        let t = load("enabled = false\nsample = 0.25\nkeep_secs = 60\n")
            .unwrap()
            .trace;
        assert!(!t.enabled && t.sample == 0.25 && t.keep.as_secs() == 60);
        for (bad, key) in [
            ("sample = 1.5", "trace.sample"),
            ("sample = -0.1", "trace.sample"),
            ("keep_secs = 59", "trace.keep_secs"),
            ("max_traces = 9", "trace.max_traces"),
            ("max_trace_bytes = 100", "trace.max_trace_bytes"),
            ("per_email = 0", "trace.per_email"),
            ("nope = 1", "nope"),
        ] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}
