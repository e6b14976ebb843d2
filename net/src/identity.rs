//! The identity of a verified peer, read from its certificate.

use crate::{Identity, NetError, Role};
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// Reads the one identity SAN (`<role>.<name>.zoe`) of a certificate.
/// Zero or several identity SANs are refused: an ambiguous role must never
/// be resolved by picking one.
pub fn identity_from_cert(der: &CertificateDer<'_>) -> Result<Identity, NetError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| NetError::Identity(format!("unparsable certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| NetError::Identity(format!("bad subjectAltName: {e}")))?
        .ok_or_else(|| NetError::Identity("certificate has no subjectAltName".into()))?;
    let mut found = None;
    for name in &san.value.general_names {
        if let GeneralName::DNSName(dns) = name
            && let Some(id) = Identity::from_san(dns)
        {
            if found.is_some() {
                return Err(NetError::Identity("certificate carries several identities".into()));
            }
            found = Some(id);
        }
    }
    found.ok_or_else(|| NetError::Identity("certificate carries no <role>.<name>.zoe identity".into()))
}

/// The identity of the peer of an established connection. The chain was
/// already verified against the cluster CA during the handshake.
pub fn peer_identity(conn: &quinn::Connection) -> Result<Identity, NetError> {
    let any = conn.peer_identity().ok_or_else(|| NetError::Identity("peer presented no certificate".into()))?;
    let certs = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| NetError::Identity("unexpected peer identity type".into()))?;
    let leaf = certs.first().ok_or_else(|| NetError::Identity("empty certificate chain".into()))?;
    identity_from_cert(leaf)
}

/// Application close code for a peer whose role is not allowed.
pub const CLOSE_FORBIDDEN: u32 = 0x403;

/// Checks the peer's role; closes the connection with [`CLOSE_FORBIDDEN`]
/// when it is not one of `allowed`.
pub fn require_role(conn: &quinn::Connection, allowed: &[Role]) -> Result<Identity, NetError> {
    let id = match peer_identity(conn) {
        Ok(id) => id,
        Err(e) => {
            conn.close(CLOSE_FORBIDDEN.into(), b"no identity");
            return Err(e);
        }
    };
    if allowed.contains(&id.role) {
        Ok(id)
    } else {
        conn.close(CLOSE_FORBIDDEN.into(), b"role not allowed");
        Err(NetError::Forbidden { got: id.role, allowed: allowed.to_vec() })
    }
}
