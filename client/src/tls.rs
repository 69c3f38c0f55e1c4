//! Which TLS certificates the client trusts for `https://` / `wss://` relays.
//!
//! By default: Mozilla's root certificates (webpki-roots), built in, so a
//! relay behind Caddy, nginx with Let's Encrypt, or Cloudflare Tunnel works
//! with no setup and the system's certificate store is not needed. With a
//! CA file (`--ca-file`, stored in `[account] ca_file`): only the
//! certificates in that PEM file, for a relay with a private CA or a
//! self-signed certificate. The HTTP API and the WebSocket always use the
//! same roots.

use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// Why a CA file could not be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("CA file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It holds no usable PEM certificate.
    #[error("CA file {0}: no PEM certificate in it")]
    NoCertificate(String),
}

/// The trust roots for one relay.
#[derive(Clone, Default)]
pub struct TrustRoots {
    /// DER certificates from the CA file; `None` means webpki-roots.
    custom: Option<Arc<Vec<Vec<u8>>>>,
}

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.custom {
            None => f.write_str("TrustRoots(webpki)"),
            Some(c) => write!(f, "TrustRoots({} custom)", c.len()),
        }
    }
}

impl TrustRoots {
    /// Mozilla's roots.
    pub fn webpki() -> Self {
        Self::default()
    }

    /// The roots for an optional CA file.
    pub fn load(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let Some(path) = ca_file else {
            return Ok(Self::default());
        };
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?;
        let certs: Vec<Vec<u8>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.der().to_vec()),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(shown));
        }
        Ok(Self {
            custom: Some(Arc::new(certs)),
        })
    }

    /// TLS settings for the HTTP client.
    pub fn ureq_config(&self) -> ureq::tls::TlsConfig {
        let b = ureq::tls::TlsConfig::builder();
        match &self.custom {
            None => b.build(),
            Some(certs) => {
                let list: Vec<ureq::tls::Certificate<'static>> = certs
                    .iter()
                    .map(|d| ureq::tls::Certificate::from_der(d).to_owned())
                    .collect();
                b.root_certs(ureq::tls::RootCerts::new_with_certs(&list))
                    .build()
            }
        }
    }

    /// The WebSocket connector: `None` keeps tokio-tungstenite's default
    /// (rustls with webpki-roots).
    pub fn ws_connector(&self) -> Option<tokio_tungstenite::Connector> {
        let certs = self.custom.as_ref()?;
        let mut store = rustls::RootCertStore::empty();
        for der in certs.iter() {
            if let Err(e) = store.add(rustls::pki_types::CertificateDer::from(der.clone())) {
                tracing::warn!(error = %e, "ignoring a certificate from the CA file");
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(store)
            .with_no_client_auth();
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(cfg)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            TrustRoots::load(Some(&dir.path().join("nope.pem"))),
            Err(TlsError::Read { .. })
        ));
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "hello").unwrap();
        assert!(matches!(
            TrustRoots::load(Some(&p)),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(TrustRoots::load(None).unwrap().ws_connector().is_none());
    }

    #[test]
    fn a_pem_certificate_is_loaded() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, cert.pem()).unwrap();
        let roots = TrustRoots::load(Some(&p)).unwrap();
        assert!(roots.ws_connector().is_some());
        assert_eq!(format!("{roots:?}"), "TrustRoots(1 custom)");
    }
}
