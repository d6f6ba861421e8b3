//! Prometheus metrics (`GET /metrics`): logins by SP and outcome, end-to-end, upstream and
//! signing latency, store errors. One registry per process, created at start-up.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// flexgate's metrics.
pub struct Metrics {
    registry: Registry,
    pub logins_started: IntCounterVec,
    pub logins_completed: IntCounterVec,
    pub logins_failed: IntCounterVec,
    pub login_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub signing_duration: Histogram,
    pub store_errors: IntCounterVec,
    /// Where a login's roles came from: `snapshot`, `cache` or `api` (Management API).
    pub roles_reads: IntCounterVec,
    /// Bulk reads of every user's roles by this instance, by `result` (`ok`, `failed`).
    pub roles_refreshes: IntCounterVec,
    pub roles_snapshot_users: IntGauge,
    pub roles_snapshot_age: Gauge,
    /// Times the roles refresher task stopped (a panic) and was started again.
    pub roles_refresher_restarts: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let login_duration = HistogramVec::new(
            HistogramOpts::new("flexgate_login_duration_seconds", "From the AuthnRequest to the signed Response, per SP (includes the person's time at the upstream)")
                .buckets(vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
            &["sp"],
        )?;
        r.register(Box::new(login_duration.clone()))?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "flexgate_upstream_request_duration_seconds",
                "Calls to the upstream: discovery, jwks, token, userinfo, management",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["call"],
        )?;
        r.register(Box::new(upstream_duration.clone()))?;
        let signing_duration = Histogram::with_opts(
            HistogramOpts::new(
                "flexgate_signing_duration_seconds",
                "Building and signing one SAML Response",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
            ]),
        )?;
        r.register(Box::new(signing_duration.clone()))?;
        let roles_snapshot_users = IntGauge::new(
            "flexgate_roles_snapshot_users",
            "Users in the roles snapshot this instance serves from (0: none yet)",
        )?;
        r.register(Box::new(roles_snapshot_users.clone()))?;
        let roles_snapshot_age = Gauge::new(
            "flexgate_roles_snapshot_age_seconds",
            "Age of the roles snapshot this instance serves from",
        )?;
        r.register(Box::new(roles_snapshot_age.clone()))?;
        let roles_refresher_restarts = IntCounter::new(
            "flexgate_roles_refresher_restarts_total",
            "Times the roles snapshot refresher task stopped (a panic) and was started again",
        )?;
        r.register(Box::new(roles_refresher_restarts.clone()))?;
        Ok(Metrics {
            logins_started: counter(
                &r,
                "flexgate_logins_started_total",
                "Logins sent to the upstream, per SP",
                &["sp"],
            )?,
            logins_completed: counter(
                &r,
                "flexgate_logins_completed_total",
                "Logins that ended with a signed assertion, per SP",
                &["sp"],
            )?,
            logins_failed: counter(
                &r,
                "flexgate_logins_failed_total",
                "Logins that ended without an assertion, per SP and reason",
                &["sp", "reason"],
            )?,
            store_errors: counter(
                &r,
                "flexgate_store_errors_total",
                "State store operations that failed",
                &["op"],
            )?,
            roles_reads: counter(
                &r,
                "flexgate_roles_reads_total",
                "Roles read at login from the Management API, by source (snapshot, cache, api)",
                &["source"],
            )?,
            roles_refreshes: counter(
                &r,
                "flexgate_roles_snapshot_refreshes_total",
                "Bulk reads of every user's roles made by this instance, by result",
                &["result"],
            )?,
            roles_snapshot_users,
            roles_snapshot_age,
            roles_refresher_restarts,
            login_duration,
            upstream_duration,
            signing_duration,
            registry: r,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Times an upstream call.
    pub fn observe_upstream(&self, call: &str, started: std::time::Instant) {
        self.upstream_duration
            .with_label_values(&[call])
            .observe(started.elapsed().as_secs_f64());
    }
}
