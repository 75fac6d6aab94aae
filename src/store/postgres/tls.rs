//! TLS to PostgreSQL (`sslmode=require|verify-full`) with rustls (ring provider).
//!
//! Data enters as a [`PostgresTarget`] (its [`TlsMode`], parsed in `target.rs`) and leaves as
//! the connector its connections use, or `None` for plain TCP (`sslmode=disable`). The pool
//! (`connections.rs`) and [`connect`](super::connect) (migrations, `check-config`) both take it
//! from here, so every connection of a target is secured the same way.
//!
//! * `require` encrypts and does not check the server's certificate, as libpq does: the
//!   handshake's signatures are still verified, but any certificate is accepted.
//! * `verify-full` checks the chain against the CA certificates of `sslrootcert` (a PEM file,
//!   read when the connector is made), else the public roots of `webpki-roots`, and the host
//!   name of the URL against the certificate.

use super::target::TlsMode;
use super::PostgresTarget;
use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS connector for `target`, or `None` when it connects in plain text.
pub fn connector(target: &PostgresTarget) -> Result<Option<MakeRustlsConnect>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = match &target.tls {
        TlsMode::Disable => return Ok(None),
        TlsMode::Require => builder(provider.clone())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        TlsMode::VerifyFull { root_cert } => {
            let roots = match root_cert {
                Some(path) => roots_from_file(path)?,
                None => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            builder(provider)?
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// A client configuration on `provider` with rustls's safe default protocol versions.
fn builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")
}

/// The CA certificates of a PEM file (`sslrootcert`).
fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the sslrootcert file {}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        bail!(
            "the sslrootcert file {} holds no usable CA certificate",
            path.display()
        );
    }
    Ok(roots)
}

/// `sslmode=require`: any certificate is accepted (the connection is encrypted, the server is
/// not authenticated); the handshake's signatures are verified with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
