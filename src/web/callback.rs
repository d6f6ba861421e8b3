//! `GET /oidc/callback`: the upstream sends the browser back here with `code` and `state`.

use super::{errors, params, AppState};
use crate::login::{self, Callback};
use crate::trace::Kind;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::time::Instant;

pub async fn get(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let query = params(q.as_deref().unwrap_or("").as_bytes());
    let first = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let cb = Callback {
        state: first("state"),
        code: first("code"),
        error: first("error"),
        error_description: first("error_description"),
    };
    let idp = st.idp();
    let browser = super::browser_cookie(&headers, idp.config.secure_cookies());
    let mut rec = idp.recorder(Kind::Callback);
    match login::finish(&idp, cb, browser.as_deref(), &mut rec).await {
        Ok(issued) if issued.status.is_some() => errors::status_sent(&idp, &issued, rec).await,
        Ok(issued) => errors::completed(&idp, &issued, started.elapsed(), rec).await,
        Err(f) => errors::login_failed(&idp, &f.error, f.sp.as_deref(), rec).await,
    }
}

#[cfg(test)]
mod tests {
    use crate::login::tests::{pending, test_idp};
    use crate::store::Space;
    use std::sync::Arc;
    use std::time::Duration;

    /// A pending login whose stored browser hash is not a SHA-256 hex digest (a corrupt or
    /// foreign store entry) ends on the mismatch page.
    #[tokio::test]
    async fn a_foreign_browser_hash_in_the_store_gets_the_mismatch_page() {
        let idp = Arc::new(test_idp());
        let entry = serde_json::to_vec(&pending("0123")).unwrap();
        idp.store
            .put(Space::Pending, "st", entry, Duration::from_secs(60))
            .await
            .unwrap();
        let app = crate::web::router(crate::web::AppState::new(idp.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cookie = crate::clock::random_token(32);
        let resp = reqwest::Client::new()
            .get(format!("http://{addr}/oidc/callback?state=st&code=c"))
            .header("cookie", format!("{}={cookie}", crate::web::BROWSER_COOKIE))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("This sign-in was started in another browser"),
            "{body}"
        );
        let m = idp.metrics.render();
        assert!(
            m.contains("flexgate_logins_failed_total{reason=\"browser_mismatch\",sp=\"flex\"} 1"),
            "{m}"
        );
    }

    /// On https the binding cookie is read under its `__Host-` name only: one planted under the
    /// unprefixed name (a sibling subdomain can set that one) does not bind, the real one does.
    #[tokio::test]
    async fn on_https_a_cookie_under_the_unprefixed_name_is_not_accepted() {
        let idp = Arc::new(crate::demo::idp("https://127.0.0.1:9", "test-secret").unwrap());
        assert!(idp.config.secure_cookies());
        let cookie = crate::clock::random_token(32);
        let hash = crate::login::browser_hash(&cookie);
        for state in ["planted", "real"] {
            let entry = serde_json::to_vec(&pending(&hash)).unwrap();
            idp.store
                .put(Space::Pending, state, entry, Duration::from_secs(60))
                .await
                .unwrap();
        }
        let app = crate::web::router(crate::web::AppState::new(idp.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let callback = |state: &str, name: &str| {
            reqwest::Client::new()
                .get(format!("http://{addr}/oidc/callback?state={state}&code=c"))
                .header("cookie", format!("{name}={cookie}"))
                .send()
        };
        let mismatches = |idp: &crate::login::Idp| {
            idp.metrics
                .render()
                .contains("flexgate_logins_failed_total{reason=\"browser_mismatch\",sp=\"flex\"} 1")
        };

        let resp = callback("planted", crate::web::BROWSER_COOKIE)
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let body = resp.text().await.unwrap();
        assert!(body.contains("started in another browser"), "{body}");
        assert!(mismatches(&idp));

        // The same value under the __Host- name passes the binding (and goes on to the
        // upstream, which is not there: a different page).
        let resp = callback("real", crate::web::BROWSER_COOKIE_HOST)
            .await
            .unwrap();
        let body = resp.text().await.unwrap();
        assert!(!body.contains("started in another browser"), "{body}");
        assert!(mismatches(&idp), "still one mismatch");
    }
}
