//! HTTPS as a browser, a load balancer or an attacker meets it.

use std::process::{Command, Stdio};

use crate::support::{clientele_dev, free_port, https_client, spawn_server};

/// Starts the appliance the way README.md says (`serve --dev`), in a temporary folder.
fn dev_server(dir: &std::path::Path) -> crate::support::Server {
    let mut cmd = clientele_dev(&dir.join("clientele-data"));
    cmd.current_dir(dir)
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"]);
    spawn_server(cmd)
}

#[tokio::test]
async fn readme_command_answers_healthz_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let server = dev_server(tmp.path());
    let data = tmp.path().join("clientele-data");
    assert!(
        server
            .stdout_lines
            .iter()
            .any(|l| l.contains("master key:")),
        "{:?}",
        server.stdout_lines
    );

    let client = https_client(&data);
    let res = client
        .get(format!("https://localhost:{}/healthz", server.port))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["store"], "open");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    let head = client
        .head(format!("https://localhost:{}/healthz", server.port))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let server = dev_server(tmp.path());
    let client = https_client(&tmp.path().join("clientele-data"));
    for path in [
        "/",
        "/login",
        "/healthz",
        "/static/app.css",
        "/static/app.js",
        "/no-such-page",
    ] {
        let res = client
            .get(format!("https://localhost:{}{path}", server.port))
            .send()
            .await
            .unwrap();
        if path.starts_with("/static/") {
            assert_eq!(res.status(), 200, "{path} is served");
        }
        let headers = res.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"),
            "{path}: {csp}"
        );
        assert!(
            headers["strict-transport-security"]
                .to_str()
                .unwrap()
                .contains("max-age=")
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(headers.contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn errors_are_pages_for_people_and_json_for_programs() {
    let tmp = tempfile::tempdir().unwrap();
    let server = dev_server(tmp.path());
    let client = https_client(&tmp.path().join("clientele-data"));

    let page = client
        .get(format!("https://localhost:{}/missing", server.port))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    let request_id = page.headers()["x-request-id"].to_str().unwrap().to_owned();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<h1>404") && html.contains(&request_id),
        "{html}"
    );

    let api = client
        .get(format!("https://localhost:{}/api/v1/nothing", server.port))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    let home = client
        .get(format!("https://localhost:{}/", server.port))
        .send()
        .await
        .unwrap();
    assert_eq!(
        home.status(),
        303,
        "signed-out visitors are sent to the sign-in page"
    );
    assert_eq!(home.headers()["location"], "/login");
    let login = client
        .get(format!("https://localhost:{}/login", server.port))
        .send()
        .await
        .unwrap();
    let html = login.text().await.unwrap();
    assert!(html.contains("<h1>Sign in</h1>"), "{html}");
}

/// Runs `openssl s_client` against the server with extra arguments; true when a session was
/// negotiated.
fn openssl_connects(port: u16, args: &[&str]) -> bool {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed by .ci/run");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("Cipher is") && !text.contains("Cipher is (NONE)")
}

#[test]
fn old_protocols_and_weak_ciphers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = dev_server(tmp.path());

    assert!(
        openssl_connects(server.port, &["-tls1_3"]),
        "TLS 1.3 must work"
    );
    assert!(
        openssl_connects(
            server.port,
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
        ),
        "TLS 1.2 AEAD must work"
    );

    for old in ["-tls1_1", "-tls1"] {
        assert!(
            !openssl_connects(server.port, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]),
            "{old} must be refused"
        );
    }
    for weak in [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384",
        "AES128-SHA",
        "AES256-GCM-SHA384",
        "DES-CBC3-SHA",
        "RC4-SHA",
        "NULL-SHA",
    ] {
        assert!(
            !openssl_connects(
                server.port,
                &["-tls1_2", "-cipher", &format!("{weak}@SECLEVEL=0")]
            ),
            "weak suite {weak} must be refused"
        );
    }
}

#[tokio::test]
async fn plain_http_only_redirects() {
    let tmp = tempfile::tempdir().unwrap();
    let redirect_port = free_port();
    let mut cmd = clientele_dev(&tmp.path().join("clientele-data"));
    cmd.current_dir(tmp.path())
        .env(
            "CLIENTELE_SERVER__REDIRECT_LISTEN",
            format!("127.0.0.1:{redirect_port}"),
        )
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"]);
    let server = spawn_server(cmd);

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(format!("http://localhost:{redirect_port}/healthz?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(
        res.headers()["location"],
        format!("https://localhost:{}/healthz?x=1", server.port).as_str()
    );
}
