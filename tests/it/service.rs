//! Clientele under systemd: readiness and stop notices on `NOTIFY_SOCKET`, and a reload on
//! SIGHUP that swaps the certificate and log level without closing open connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{clientele, spawn_server};

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client that trusts exactly the certificate in `cert`.
fn client_trusting(cert: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn connect(port: u16, tls: &Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::clone(tls), name).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    // Drive the handshake now, so a certificate the client refuses shows here.
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// One keep-alive `GET /healthz` on an open connection; returns the status code.
fn healthz(stream: &mut TlsStream) -> u16 {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    stream.flush().unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    status_line.split(' ').nth(1).unwrap().parse().unwrap()
}

fn next_notice(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 512];
    let n = socket.recv(&mut buffer).expect("a notice on NOTIFY_SOCKET");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn notifies_systemd_and_reloads_certificate_and_log_level_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let init = clientele(&dir)
        .arg("init")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");

    let config = tmp.path().join("clientele.toml");
    let write_config = |level: &str| {
        std::fs::write(
            &config,
            format!("[log]\nlevel = \"{level}\"\nstderr = false\n"),
        )
        .unwrap();
    };
    write_config("warn");
    let notify_path = tmp.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();

    let mut command = clientele(&dir);
    command
        .env("NOTIFY_SOCKET", &notify_path)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let mut server = spawn_server(command);
    let ready = next_notice(&notify);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains(&format!(":{}", server.port)), "{ready}");

    let old_cert = tmp.path().join("old-cert.pem");
    std::fs::copy(dir.join("tls/cert.pem"), &old_cert).unwrap();
    let trusts_old = client_trusting(&old_cert);
    let mut open = connect(server.port, &trusts_old).unwrap();
    assert_eq!(healthz(&mut open), 200);

    // A new self-signed certificate is made at the reload, and the log level rises to info.
    std::fs::remove_file(dir.join("tls/cert.pem")).unwrap();
    std::fs::remove_file(dir.join("tls/key.pem")).unwrap();
    write_config("info");
    signal(server.child.id(), "HUP");
    assert_eq!(next_notice(&notify), "RELOADING=1");
    let reloaded = next_notice(&notify);
    assert!(reloaded.starts_with("READY=1\n"), "{reloaded}");

    let new_cert = dir.join("tls/cert.pem");
    assert_ne!(
        std::fs::read(&new_cert).unwrap(),
        std::fs::read(&old_cert).unwrap()
    );
    let mut fresh = connect(server.port, &client_trusting(&new_cert)).unwrap();
    assert_eq!(healthz(&mut fresh), 200);
    // A fresh client, without a session to resume, must be shown the new certificate.
    assert!(
        connect(server.port, &client_trusting(&old_cert)).is_err(),
        "new connections must get the new certificate"
    );
    assert_eq!(
        healthz(&mut open),
        200,
        "a connection opened before the reload keeps working"
    );

    signal(server.child.id(), "TERM");
    assert_eq!(next_notice(&notify), "STOPPING=1");
    assert!(server.child.wait().unwrap().success());

    let mut log = String::new();
    for entry in std::fs::read_dir(dir.join("logs")).unwrap() {
        log.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(
        !log.contains("listening (HTTPS)"),
        "info lines are filtered out before the reload: {log}"
    );
    assert!(
        log.contains("reloaded"),
        "info lines are written after the reload: {log}"
    );
}
