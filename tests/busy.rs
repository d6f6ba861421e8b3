//! The CPU work queue is bounded (`src/blocking.rs`): with every slot taken and the queue full,
//! a sign-in request gets the 503 "busy" page at once — it does not wait for a slot. This file
//! is its own test process, so the process-wide pool is this test's alone.

use flexgate::blocking::{pool, QUEUE_PER_CORE};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Jobs that block until the gate opens.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let (open, cv) = &*self.0;
        let mut o = open.lock().unwrap();
        while !*o {
            o = cv.wait(o).unwrap();
        }
    }
    fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_queue_gets_503_pages_at_once() {
    let idp = Arc::new(flexgate::demo::idp("http://127.0.0.1:9", "s").unwrap());
    let app = flexgate::web::router(flexgate::web::AppState::new(idp));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sso = format!("http://{addr}/saml/sso?SAMLRequest=not-base64");
    let c = reqwest::Client::new();
    // The ordinary answer while nothing is queued: the request is read (and refused) at once.
    assert_eq!(c.get(&sso).send().await.unwrap().status(), 400);

    // Every slot taken by a job that runs until the gate opens, and the queue filled.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gate = Gate::default();
    let running: Vec<_> = (0..cores)
        .map(|_| {
            let g = gate.clone();
            tokio::spawn(flexgate::blocking::run(move || g.wait()))
        })
        .collect();
    while pool().free_slots() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued: Vec<_> = (0..cores * QUEUE_PER_CORE)
        .map(|_| tokio::spawn(flexgate::blocking::run(|| ())))
        .collect();
    while pool().waiting() < cores * QUEUE_PER_CORE {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The flood: every request answered with the busy page while the gate is still closed, so
    // none waited for a slot (a waiting one would hang until the deadline below).
    let flood = (0..40).map(|_| {
        let (c, sso) = (c.clone(), sso.clone());
        async move { c.get(&sso).send().await.unwrap() }
    });
    let answers = tokio::time::timeout(Duration::from_secs(20), futures_join_all(flood.collect()))
        .await
        .expect("refused requests do not wait for a slot");
    for r in answers {
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let body = r.text().await.unwrap();
        assert!(body.contains("flexgate is busy"), "{body}");
        assert!(body.contains("reference"), "{body}");
    }
    assert_eq!(pool().waiting(), cores * QUEUE_PER_CORE);

    // Once the jobs end, the queue drains and requests are served again.
    gate.open();
    for j in running.into_iter().chain(queued) {
        j.await.unwrap().unwrap();
    }
    assert_eq!(c.get(&sso).send().await.unwrap().status(), 400);
}

/// Awaits every future, concurrently (tasks, so they are in flight together).
async fn futures_join_all<F>(futs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
