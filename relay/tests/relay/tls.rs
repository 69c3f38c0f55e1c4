//! TLS terminated by the relay itself (rustls).

use super::common::*;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[tokio::test]
async fn serves_https_with_configured_certificate() {
    let relay = TestRelay::start_with(|c| {
        c.tls_cert = Some(data("test-cert.pem"));
        c.tls_key = Some(data("test-key.pem"));
    })
    .await;
    assert!(relay.url.starts_with("https://127.0.0.1:"), "{}", relay.url);

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(data("test-ca.pem")).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(relay.handle().local_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, tls.read_to_string(&mut out))
        .await
        .unwrap()
        .ok();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("ok\n"), "{out}");

    // A plain-HTTP client gets nowhere, and the relay keeps serving.
    let mut plain = tokio::net::TcpStream::connect(relay.handle().local_addr())
        .await
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

#[tokio::test]
async fn bad_tls_files_fail_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    c.tls_cert = Some(data("test-key.pem"));
    c.tls_key = Some(data("test-key.pem"));
    let err = clipmesh_relay::Relay::bind(c).await.err().unwrap();
    assert!(err.to_string().contains("no certificate"), "{err}");
}
