//! rustls configurations for QUIC with mutual TLS.
//!
//! Both sides present a certificate and verify the other's against the
//! cluster CA. TLS 1.3 only (QUIC requires it) and the ring provider is
//! passed explicitly everywhere: if another crate in the build enables
//! rustls's default aws-lc-rs provider, the process-level default becomes
//! ambiguous and `builder()` would panic at runtime.

use crate::identity::identity_from_cert;
use crate::{Identity, NetError};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificate(s), our certificate chain and our private key.
pub struct TlsMaterial {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    identity: Identity,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            identity: self.identity.clone(),
        }
    }
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").field("identity", &self.identity).finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, NetError> {
    std::fs::read(path).map_err(|source| NetError::File { path: path.display().to_string(), source })
}

fn certs_from_pem(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NetError::Pem(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(NetError::Pem(format!("{what}: no CERTIFICATE block found")));
    }
    Ok(certs)
}

impl TlsMaterial {
    /// Builds the material from PEM text. Our own identity must be readable
    /// from the certificate: a certificate without one is a setup mistake
    /// better reported at start-up than at the first handshake.
    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, NetError> {
        let ca = certs_from_pem("CA certificate", ca_pem)?;
        let chain = certs_from_pem("certificate", cert_pem)?;
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| NetError::Pem(format!("private key: {e}")))?
            .ok_or_else(|| NetError::Pem("private key: no PRIVATE KEY block found".into()))?;
        let identity = identity_from_cert(&chain[0])?;
        Ok(TlsMaterial { ca, chain, key, identity })
    }

    /// Loads the CA certificate, our certificate and our key from PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, NetError> {
        Self::from_pem(&read(ca)?, &read(cert)?, &read(key)?)
    }

    /// Who our certificate says we are.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, NetError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone())?;
        }
        Ok(Arc::new(roots))
    }

    /// A rustls server config that requires a client certificate from our CA.
    pub fn rustls_server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, NetError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider()).build()?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }

    /// A rustls client config that presents our certificate and trusts only our CA.
    pub fn rustls_client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, NetError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }

    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<quinn::ServerConfig, NetError> {
        let tls = QuicServerConfig::try_from(self.rustls_server_config(alpn)?)
            .map_err(|e| NetError::QuicTls(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(tls));
        cfg.transport_config(transport_config());
        Ok(cfg)
    }

    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<quinn::ClientConfig, NetError> {
        let tls = QuicClientConfig::try_from(self.rustls_client_config(alpn)?)
            .map_err(|e| NetError::QuicTls(e.to_string()))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(tls));
        cfg.transport_config(transport_config());
        Ok(cfg)
    }

    /// One UDP socket that both accepts and initiates connections. Using the
    /// same socket for outgoing connections means all of a node's traffic
    /// carries its listen port, which keeps packet-filter partitions simple.
    pub fn endpoint(&self, bind: SocketAddr, alpn: &[&[u8]]) -> Result<quinn::Endpoint, NetError> {
        let mut ep = quinn::Endpoint::server(self.server_config(alpn)?, bind)?;
        ep.set_default_client_config(self.client_config(alpn)?);
        Ok(ep)
    }

    /// A client-only endpoint on an ephemeral port.
    pub fn client_endpoint(&self, alpn: &[&[u8]]) -> Result<quinn::Endpoint, NetError> {
        let bind: SocketAddr = "0.0.0.0:0".parse().expect("literal address");
        let mut ep = quinn::Endpoint::client(bind)?;
        ep.set_default_client_config(self.client_config(alpn)?);
        Ok(ep)
    }
}

/// Keep-alives well under the idle timeout so a quiet but healthy link stays
/// up, and an idle timeout short enough that a dead peer is noticed quickly.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    t.max_idle_timeout(Some(Duration::from_secs(5).try_into().expect("5 s fits a VarInt")));
    t.max_concurrent_bidi_streams(1024u32.into());
    Arc::new(t)
}
