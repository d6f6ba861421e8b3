//! The admin view of login traces (`/admin/logins`, `/admin/logins/{ref}`) in a real browser:
//! headless Chromium (Debian's `chromium`) loads the pages from the admin listener's router and
//! must log no console message (a CSP violation is one), and an XML payload in a person's name
//! must show as text, never as markup.

mod common;

use flexgate::trace::{Claim, Expected, Kind, Outcome, SentResponse, StageName};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const PAYLOAD: &str =
    "Zoë <x:name xmlns:x=\"urn:x\"><img src=x onerror=\"document.title='pwned'\"></x:name> & Co -->";

fn chromium() -> &'static Path {
    let p = Path::new("/usr/bin/chromium");
    assert!(
        p.exists(),
        "chromium is missing; run scripts/install-test-deps"
    );
    p
}

/// Loads `url` in headless Chromium; returns (the DOM after load, Chromium's log).
fn load(url: &str) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Console messages (errors, CSP refusals) in Chromium's log.
fn console_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains(":CONSOLE")
                || l.contains("Content Security Policy")
                || l.contains("Refused to")
                || l.contains("Uncaught")
        })
        .collect()
}

#[test]
fn the_console_check_sees_a_csp_refusal_and_a_script_error() {
    // Without this, a Chromium that logged nothing would pass the test below.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<html><head><meta http-equiv=\"Content-Security-Policy\" content=\"style-src 'none'\"><style>b{color:red}</style></head><body><script>undefinedFn()</script></body></html>",
    )
    .unwrap();
    let (_, log) = load(&format!("file://{}", page.display()));
    let console = console_lines(&log);
    assert!(
        console
            .iter()
            .any(|l| l.contains("Content Security Policy")),
        "{log}"
    );
    assert!(console.iter().any(|l| l.contains("undefinedFn")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_pages_render_in_chromium_without_console_errors_and_show_markup_as_text() {
    let idp = Arc::new(flexgate::demo::idp("http://127.0.0.1:9", "demo-secret-123").unwrap());
    // One failed and one completed login, with the payload everywhere a person's data goes.
    let mut rec = idp.recorder(Kind::SpInitiated);
    rec.with(|t| {
        t.sp = Some("flex".into());
        t.binding = Some("HTTP-Redirect".into());
        t.request_id = Some("_req<1>".into());
        t.email = Some("zoe@example.com".into());
        t.authn_request_xml = Some(format!(
            "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_q1\"><saml:Issuer xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">urn:flex:JQ</saml:Issuer><!-- {} --></samlp:AuthnRequest>",
            PAYLOAD.replace("--", "- -")
        ));
        t.claims = vec![Claim {
            claim: "name".into(),
            used_for: "attribute full_name".into(),
            value: serde_json::json!(PAYLOAD),
        }];
        t.attributes = vec![("full_name".into(), vec![PAYLOAD.into()])];
        t.outcome = Outcome::Completed;
        t.response = Some(SentResponse {
            xml: format!(
                "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_r1\"><saml:AttributeValue xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">{}</saml:AttributeValue></samlp:Response>",
                flexgate::web::pages::escape(PAYLOAD)
            ),
            expected: Expected {
                issuer: "https://sso.example.com/saml/metadata".into(),
                ..Expected::default()
            },
            sent_at_ms: 0,
        });
    });
    rec.ok(StageName::RequestReceived, || format!("name {PAYLOAD}"));
    let good = rec.reference().to_string();
    idp.traces.save(rec).await;
    let mut rec = idp.recorder(Kind::Callback);
    rec.failed(
        StageName::Callback,
        &flexgate::login::LoginError::StateUnknown,
    );
    let bad = rec.reference().to_string();
    idp.traces.save(rec).await;

    let app = flexgate::web::admin::router(flexgate::web::AppState::new(idp));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    for (path, must_show) in [
        (format!("/admin/logins/{good}"), "Response checks"),
        (format!("/admin/logins/{bad}"), "bad_state"),
        ("/admin/logins".to_string(), good.as_str()),
        (
            "/admin/logins?outcome=failed&email=".to_string(),
            bad.as_str(),
        ),
    ] {
        let url = format!("{base}{path}");
        let (dom, log) = tokio::task::block_in_place(|| load(&url));
        assert!(dom.contains(must_show), "{path}: {dom}\n{log}");
        let console = console_lines(&log);
        assert!(
            console.is_empty(),
            "{path}: console messages:\n{}",
            console.join("\n")
        );
        // The payload is text: no element came from it, and the title is untouched.
        assert!(!dom.contains("<img"), "{path}: {dom}");
        assert!(!dom.contains("<x:name"), "{path}: {dom}");
        assert!(!dom.contains("<title>pwned"), "{path}: {dom}");
        if path.contains(&good) {
            assert!(dom.contains("&lt;x:name xmlns:x="), "{path}: {dom}");
        }
    }
}
