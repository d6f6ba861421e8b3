//! `flexgate.toml` checked section by section: one validator per section, each recording
//! every problem it finds in one [`Problems`], so an admin sees all mistakes in one run.
//! A validator returns `None` only after recording why.

mod idp;
mod server;
mod sp;
mod trace;
mod upstream;

use super::raw::RawConfig;
use super::{Config, ConfigError};
use serde::de::DeserializeOwned;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every problem found so far, for one config file; relative paths start at `base`.
/// `env` resolves `${VAR}` where a value is expanded during validation (the key URI).
pub(super) struct Problems<'e> {
    path: PathBuf,
    base: PathBuf,
    env: &'e dyn Fn(&str) -> Option<String>,
    found: Vec<ConfigError>,
}

impl<'e> Problems<'e> {
    fn new(path: &Path, base: &Path, env: &'e dyn Fn(&str) -> Option<String>) -> Problems<'e> {
        Problems {
            path: path.to_path_buf(),
            base: base.to_path_buf(),
            env,
            found: Vec::new(),
        }
    }

    /// `s` with `${VAR}` expanded; the error names the variable, never its value.
    fn expand(&self, s: &str) -> Result<String, String> {
        super::expand_vars(s, self.env).map_err(|(problem, fix)| format!("{problem} ({fix})"))
    }

    /// Records that `key` `problem`, and what to do about it.
    fn add(&mut self, key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.found.push(ConfigError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// A path from the config: relative ones start at the config file's folder.
    fn path(&self, p: &Path) -> PathBuf {
        super::resolve(&self.base, p)
    }

    /// `v` (else `default`) seconds, if within `range`.
    fn secs(
        &mut self,
        key: &str,
        v: Option<u64>,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Option<Duration> {
        self.within(key, v, default, range, "seconds")
            .map(Duration::from_secs)
    }

    /// `v` (else `default`) if within `range`; otherwise the problem names the range in `unit`.
    fn within(
        &mut self,
        key: &str,
        v: Option<u64>,
        default: u64,
        range: RangeInclusive<u64>,
        unit: &str,
    ) -> Option<u64> {
        let v = v.unwrap_or(default);
        if range.contains(&v) {
            return Some(v);
        }
        let (lo, hi) = (range.start(), range.end());
        self.add(
            key,
            format!("is {v}, outside {lo}..={hi}"),
            format!("pick a value between {lo} and {hi} {unit}"),
        );
        None
    }

    /// `v` (else `default`) as one of `T`'s serde variant names; see [`Problems::variant`].
    fn choice<T: DeserializeOwned>(
        &mut self,
        key: &str,
        v: Option<&str>,
        default: T,
        fix: &str,
    ) -> Option<T> {
        match v {
            Some(v) => self.variant(key, v, fix),
            None => Some(default),
        }
    }

    /// `v` as one of `T`'s serde variant names; an unknown name is recorded with `fix`, which
    /// lists the allowed ones.
    fn variant<T: DeserializeOwned>(&mut self, key: &str, v: &str, fix: &str) -> Option<T> {
        let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(v);
        let parsed = T::deserialize(de).ok();
        if parsed.is_none() {
            self.add(key, format!("is {v:?}"), fix);
        }
        parsed
    }

    /// The config, if nothing was recorded; else every problem.
    fn finish(mut self, config: Option<Config>) -> Result<Config, ConfigError> {
        match (config, self.found.len()) {
            (Some(c), 0) => Ok(c),
            (_, 1) => Err(self.found.remove(0)),
            // Not reached: a validator gives `None` only after recording a problem.
            (None, 0) => Err(ConfigError::Invalid {
                path: self.path,
                key: "(config)".into(),
                problem: "cannot be used".into(),
                fix: "compare with the configuration reference in the README".into(),
            }),
            _ => Err(ConfigError::Several(self.found)),
        }
    }
}

/// Checks every section of `raw` and builds the [`Config`]; `path` names the file in messages
/// and `base` (its folder) resolves relative paths.
pub(super) fn validate(
    raw: RawConfig,
    path: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut p = Problems::new(path, base, env);
    let server = server::server(raw.server, &mut p);
    let store = server::store(raw.store, &mut p);
    let log = server::log(raw.log, &mut p);
    let trace = trace::trace(raw.trace.unwrap_or_default(), &mut p);
    let public_url = server.as_ref().map(|s| s.public_url.as_str());
    let idp = idp::idp(raw.idp, public_url, &mut p);
    let client_id = raw.upstream.client_id.clone();
    let (upstream, preset) = upstream::upstream(raw.upstream, &mut p);
    let sps = sp::sps(
        raw.sp,
        &sp::Upstream {
            preset,
            client_id: &client_id,
        },
        &mut p,
    );
    let limits = idp::limits(raw.limits);
    let plain_class = idp.as_ref().map(|i| i.authn_context_class.clone());
    let mfa = idp::mfa(raw.mfa, plain_class, &mut p);
    if let (Some(u), Some(sps)) = (&upstream, &sps) {
        upstream::groups_reachable(u, sps, &mut p);
    }
    let config = (|| {
        Some(Config {
            source: path.to_path_buf(),
            server: server?,
            idp: idp?,
            upstream: upstream?,
            sps: sps?,
            limits,
            mfa: mfa?,
            store: store?,
            log: log?,
            trace: trace?,
        })
    })();
    p.finish(config)
}
