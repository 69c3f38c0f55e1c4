//! `https://` and `wss://` to a relay with a private CA.

use crate::support::*;
use clipmesh_relay::{Relay, SignupPolicy};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A throwaway CA and a relay certificate for 127.0.0.1 / localhost.
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "clipmesh test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();
        Self { dir }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_relay_over_https_and_wss() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = relay_config(
        data.path(),
        "127.0.0.1:0".parse().unwrap(),
        SignupPolicy::Open,
    );
    cfg.tls_cert = Some(pki.dir.path().join("cert.pem"));
    cfg.tls_key = Some(pki.dir.path().join("key.pem"));
    let relay = Relay::bind(cfg).await.unwrap();
    let url = relay.url();
    assert!(url.starts_with("https://"), "{url}");
    let ca = pki.dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();

    // Without the CA the certificate is not trusted.
    let x = device_dir();
    let out = auth("signup", x.path(), &url, "ann", PASSWORD, "x").await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("relay unreachable"), "{out:?}");

    let a = device_dir();
    let b = device_dir();
    let mut c = clipmesh(a.path());
    c.args([
        "signup",
        "--server",
        &url,
        "--username",
        "ann",
        "--password-stdin",
    ]);
    c.args(["--device-name", "a", "--ca-file", ca]);
    let out = run(c, Some(&format!("{PASSWORD}\n"))).await;
    assert!(out.status.success(), "{out:?}");
    let mut c = clipmesh(b.path());
    c.args([
        "login",
        "--server",
        &url,
        "--username",
        "ann",
        "--password-stdin",
    ]);
    c.args(["--device-name", "b"]);
    c.env("CLIPMESH_CA_FILE", ca);
    let out = run(c, Some(&format!("{PASSWORD}\n"))).await;
    assert!(out.status.success(), "{out:?}");

    // The CA file is remembered: watch and send use wss:// with it.
    let mut w = {
        let mut c = clipmesh(b.path());
        c.args(["watch"]);
        Running::spawn(c)
    };
    w.stderr_until("watching").await;
    let mut c = clipmesh(a.path());
    c.args(["send", "over tls"]);
    let out = run(c, None).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(w.next_stdout().await, "over tls");
    w.child.start_kill().unwrap();
    w.wait().await;
    relay.shutdown();
    relay.wait().await;
}
