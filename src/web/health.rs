//! `GET /healthz` (the process answers) and `GET /readyz` (it can complete a login): the public
//! answer names only which check fails; the reasons and `/metrics` are the admin listener's.

use super::AppState;
use crate::login::Idp;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::time::{Duration, Instant};

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long a not-ready answer is reused. `/readyz` is public: without this, while the
/// upstream or the store fails, every probe would retry them. A ready answer costs no upstream
/// fetch (discovery and keys are cached) and is checked at each probe, so a store that goes
/// down shows at once.
pub(crate) const READY_CACHE: Duration = Duration::from_secs(2);

/// The last not-ready answer of one configuration generation. Concurrent probes wait for the
/// one that is checking and share its answer.
#[derive(Default)]
pub(crate) struct ReadyCache(tokio::sync::Mutex<Option<(Instant, Readiness)>>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Readiness {
    upstream: Result<(), String>,
    store: Result<(), String>,
    keys: Result<(), String>,
}

impl Readiness {
    fn is_ready(&self) -> bool {
        self.upstream.is_ok() && self.store.is_ok() && self.keys.is_ok()
    }
}

impl ReadyCache {
    /// The cached not-ready answer if younger than [`READY_CACHE`], else `check`'s (cached
    /// when not ready).
    async fn get<F: std::future::Future<Output = Readiness>>(
        &self,
        check: impl FnOnce() -> F,
    ) -> Readiness {
        let mut cached = self.0.lock().await;
        if let Some((at, r)) = cached.as_ref() {
            if at.elapsed() < READY_CACHE {
                return r.clone();
            }
        }
        let r = check().await;
        *cached = (!r.is_ready()).then(|| (Instant::now(), r.clone()));
        r
    }
}

async fn check(idp: &Idp) -> Readiness {
    Readiness {
        upstream: idp
            .upstream
            .warm_up()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        store: idp.store.ping().await.map_err(|e| e.to_string()),
        keys: signing_health(idp).await,
    }
}

/// Whether the signing key can sign (a token key is asked for a signature, off the reactor).
async fn signing_health(idp: &Idp) -> Result<(), String> {
    let keys = idp.keys.clone();
    tokio::task::spawn_blocking(move || keys.signer.health())
        .await
        .unwrap_or_else(|e| Err(format!("the signing check failed: {e}")))
}

/// The public `/readyz`: ready or not, and which checks fail, as `ok` / `failing` — nothing
/// else. The reasons (token labels, module and PIN-file paths, upstream error texts, agent
/// counts) are served only by the admin listener's [`readyz_detail`].
pub async fn readyz(State(st): State<AppState>) -> Response {
    let current = st.current();
    let r = current.ready.get(|| check(&current.idp)).await;
    let state = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "failing" };
    let body = serde_json::json!({
        "ready": r.is_ready(),
        "checks": {
            "keys": state(&r.keys),
            "upstream": state(&r.upstream),
            "store": state(&r.store),
        }
    });
    (status_of(&r), Json(body)).into_response()
}

/// The admin listener's `/readyz`: each check with its reason, and the roles snapshot line.
pub async fn readyz_detail(State(st): State<AppState>) -> Response {
    let current = st.current();
    let r = current.ready.get(|| check(&current.idp)).await;
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    let mut body = serde_json::json!({
        "ready": r.is_ready(),
        "checks": {
            "keys": show(&r.keys),
            "upstream": show(&r.upstream),
            "store": show(&r.store),
        }
    });
    // Informational, not a check: without a snapshot logins still read roles one by one.
    if let Some(roles) = current.idp.management.as_ref().and_then(|m| m.roles()) {
        body["roles"] = roles.describe(crate::auth0::prefetch::now_ms()).into();
    }
    (status_of(&r), Json(body)).into_response()
}

fn status_of(r: &Readiness) -> StatusCode {
    if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    let mut r = st.idp().metrics.render().into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    async fn probe(cache: Arc<ReadyCache>, checks: Arc<AtomicUsize>) -> Readiness {
        cache
            .get(|| async move {
                checks.fetch_add(1, Ordering::SeqCst);
                // A slow upstream: the other probes arrive while this one is checking.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Readiness {
                    upstream: Err("down".into()),
                    store: Ok(()),
                    keys: Ok(()),
                }
            })
            .await
    }

    #[tokio::test]
    async fn one_check_answers_every_probe_within_the_cache_time() {
        let cache = Arc::new(ReadyCache::default());
        let checks = Arc::new(AtomicUsize::new(0));
        let probes: Vec<_> = (0..20)
            .map(|_| tokio::spawn(probe(cache.clone(), checks.clone())))
            .collect();
        for p in probes {
            assert_eq!(p.await.unwrap().upstream, Err("down".to_string()));
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1);
        // Once the answer is older than READY_CACHE, the next probe checks again.
        if let Some((at, _)) = cache.0.lock().await.as_mut() {
            *at = at.checked_sub(READY_CACHE).expect("an instant 2 s back");
        }
        probe(cache.clone(), checks.clone()).await;
        assert_eq!(checks.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_ready_answer_is_checked_again_at_each_probe() {
        let cache = ReadyCache::default();
        let checks = AtomicUsize::new(0);
        for _ in 0..3 {
            let r = cache
                .get(|| async {
                    checks.fetch_add(1, Ordering::SeqCst);
                    Readiness {
                        upstream: Ok(()),
                        store: Ok(()),
                        keys: Ok(()),
                    }
                })
                .await;
            assert!(r.is_ready());
        }
        assert_eq!(checks.load(Ordering::SeqCst), 3);
    }
}
