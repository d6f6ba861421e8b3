//! `GET /healthz` (the process answers) and `GET /readyz` (it can complete a login): the public
//! answer names only which check fails; the reasons and `/metrics` are the admin listener's.

use super::AppState;
use crate::login::Idp;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long a not-ready answer is reused. `/readyz` is public: without this, while the
/// upstream or the store fails, every probe would retry them. A ready answer costs no upstream
/// fetch (discovery and keys are cached) and is checked again whenever no check is running, so a
/// store that goes down shows at once.
pub(crate) const READY_CACHE: Duration = Duration::from_secs(2);

/// The last answer of one configuration generation. One probe checks at a time, and no lock is
/// held while it does: the others take the last answer at once. Only the first probes of a
/// generation, which have no answer to take, wait for the first check's.
pub(crate) struct ReadyCache {
    last: parking_lot::Mutex<Option<(Instant, Readiness)>>,
    checking: AtomicBool,
    /// Bumped when a check ends (or its probe goes away).
    done: tokio::sync::watch::Sender<u64>,
}

impl Default for ReadyCache {
    fn default() -> Self {
        ReadyCache {
            last: Default::default(),
            checking: AtomicBool::new(false),
            done: tokio::sync::watch::channel(0).0,
        }
    }
}

/// The checking probe's turn: ends when dropped, also when the probe's request goes away.
struct Turn<'a>(&'a ReadyCache);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.checking.store(false, Ordering::Release);
        self.0.done.send_modify(|n| *n = n.wrapping_add(1));
    }
}

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
    /// The last answer if it stands (a not-ready one younger than [`READY_CACHE`], or any while
    /// another probe is checking); else `check`'s.
    async fn get<F: std::future::Future<Output = Readiness>>(
        &self,
        check: impl FnOnce() -> F,
    ) -> Readiness {
        let mut done = self.done.subscribe();
        loop {
            if let Some(r) = self.standing() {
                return r;
            }
            if !self.checking.swap(true, Ordering::AcqRel) {
                let _turn = Turn(self);
                let r = check().await;
                *self.last.lock() = Some((Instant::now(), r.clone()));
                return r;
            }
            // The first check of this generation is running and there is no answer yet: its
            // answer is this probe's too (unless its probe went away without one).
            if self.last.lock().is_none() {
                if done.changed().await.is_err() {
                    return check().await;
                }
                if let Some((_, r)) = self.last.lock().as_ref() {
                    return r.clone();
                }
            }
        }
    }

    fn standing(&self) -> Option<Readiness> {
        let last = self.last.lock();
        let (at, r) = last.as_ref()?;
        let fresh = !r.is_ready() && at.elapsed() < READY_CACHE;
        (fresh || self.checking.load(Ordering::Acquire)).then(|| r.clone())
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

/// Whether the signing key can sign: a token key's recent outcome, else one signature off the
/// reactor (at most one per `pkcs11::pool::HEALTH_TTL`, whatever the probe rate).
async fn signing_health(idp: &Idp) -> Result<(), String> {
    if let Some(known) = idp.keys.signer.known_health() {
        return known;
    }
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
    use std::sync::atomic::AtomicUsize;
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
        if let Some((at, _)) = cache.last.lock().as_mut() {
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

    #[tokio::test]
    async fn a_probe_never_waits_for_another_probes_check() {
        let cache = Arc::new(ReadyCache::default());
        let ready = || Readiness {
            upstream: Ok(()),
            store: Ok(()),
            keys: Ok(()),
        };
        cache.get(|| async { ready() }).await;
        // A check that does not end until the test says so.
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let slow = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get(|| async move {
                        let _ = wait.await;
                        ready()
                    })
                    .await
            }
        });
        while !cache.checking.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        // Another probe gets the last answer while that check runs, and makes no check itself.
        let checks = AtomicUsize::new(0);
        let other = tokio::time::timeout(
            Duration::from_secs(5),
            cache.get(|| async {
                checks.fetch_add(1, Ordering::SeqCst);
                ready()
            }),
        )
        .await
        .expect("a probe waited for another probe's check");
        assert!(other.is_ready());
        assert_eq!(checks.load(Ordering::SeqCst), 0);
        let _ = release.send(());
        assert!(slow.await.unwrap().is_ready());
    }
}
