//! `flexgate demo` end to end: Flex stand-in → proxy → development issuer → proxy → stand-in ACS,
//! for a user with roles and for one without.

mod common;
use common::*;
use std::process::{Command, Stdio};

struct Demo {
    child: std::process::Child,
    base: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo() -> Demo {
    let port = free_port();
    let child = Command::new(flexgate_bin())
        .args(["demo", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let d = Demo {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if tinyhttp::blocking_get(&format!("{}/healthz", d.base)).unwrap_or(false) {
            return d;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the demo did not start");
}

fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<input type=\"hidden\" name=\"") {
        rest = &rest[i + 27..];
        let name_end = rest.find('"').unwrap();
        let name = rest[..name_end].to_string();
        let v = rest.find("value=\"").unwrap() + 7;
        let v_end = rest[v..].find('"').unwrap();
        out.push((name, html_unescape(&rest[v..v + v_end])));
    }
    out
}

async fn demo_login(d: &Demo, user: &str) -> (u16, String) {
    let b = Browser::new();
    let mut next = format!("{}/flex/login", d.base);
    // Flex stand-in → /saml/sso → /dev-oidc/authorize (login page)
    let page = loop {
        let r = b.client.get(&next).send().await.unwrap();
        if r.status().is_redirection() {
            next = r
                .url()
                .join(r.headers()["location"].to_str().unwrap())
                .unwrap()
                .to_string();
            continue;
        }
        assert_eq!(r.status(), 200);
        break r.text().await.unwrap();
    };
    assert!(page.contains("Development issuer"), "{page}");
    let mut form = hidden_fields(&page);
    form.push(("user".into(), user.into()));
    let r = b
        .client
        .post(format!("{}/dev-oidc/authorize/login", d.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cb = r.headers()["location"].to_str().unwrap().to_string();
    let r = b.client.get(&cb).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    if status != 200 {
        return (status, body);
    }
    let post = parse_post_form(&body).expect("post form");
    let mut fields = vec![("SAMLResponse".to_string(), post.saml_response.clone())];
    if let Some(rs) = post.relay_state {
        fields.push(("RelayState".into(), rs));
    }
    let r = b
        .client
        .post(&post.action)
        .form(&fields)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_logs_an_agent_into_the_flex_stand_in() {
    let d = start_demo();
    let (status, page) = demo_login(&d, "zoe.markup").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Flex accepted the login"), "{page}");
    assert!(page.contains("zoe.markup@example.com"));
    assert!(
        page.contains("Zoë &quot;Zed&quot; &lt;O&#39;Brien&gt; &amp; Co"),
        "escaped display name: {page}"
    );
    assert!(page.contains("<code>agent</code>"));

    let (status, page) = demo_login(&d, "nora.norole").await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("no Flex role"));
}
