//! A cluster CA and the certificates it issues (rcgen 0.14, ECDSA P-256).
//!
//! The identity of every certificate is one DNS SAN `<role>.<name>.zoe`.
//! Putting the role in a name the CA signs (rather than in a field the peer
//! sends) is what lets a coordinator refuse an agent certificate even though
//! both chain to the same CA.

use crate::NetError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

/// The domain every identity SAN ends with.
pub const IDENTITY_DOMAIN: &str = "zoe";

/// What a certificate holder may do in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Coordinator,
    Agent,
    /// Operators and tools (the CLI, benchmarks): may call client and admin RPCs.
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Agent => "agent",
            Role::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        match s {
            "coordinator" => Ok(Role::Coordinator),
            "agent" => Ok(Role::Agent),
            "client" => Ok(Role::Client),
            other => Err(NetError::Identity(format!("unknown role {other:?} (expected coordinator, agent or client)"))),
        }
    }
}

/// Role plus name, as signed into a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    /// Builds an identity, checking that the name is one DNS label so the
    /// SAN parses back unambiguously.
    pub fn new(role: Role, name: impl Into<String>) -> Result<Self, NetError> {
        let name = name.into();
        validate_name(&name)?;
        Ok(Identity { role, name })
    }

    /// The DNS SAN carrying this identity; also the server name a client
    /// passes to `connect()`, which makes webpki check the server's role.
    pub fn san(&self) -> String {
        format!("{}.{}.{IDENTITY_DOMAIN}", self.role, self.name)
    }

    /// Parses `<role>.<name>.zoe`; `None` for any other DNS name.
    pub fn from_san(san: &str) -> Option<Identity> {
        let mut parts = san.split('.');
        let (role, name, domain) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || domain != IDENTITY_DOMAIN {
            return None;
        }
        let role = role.parse().ok()?;
        validate_name(name).ok()?;
        Some(Identity { role, name: name.to_string() })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

fn validate_name(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NetError::Identity(format!(
            "invalid name {name:?}: use 1-63 characters a-z, 0-9 and '-', not starting or ending with '-'"
        )))
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl IssuedCert {
    /// Writes `<stem>.pem` and `<stem>-key.pem` into `dir` (key mode 0600).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(), NetError> {
        write_file(&dir.join(format!("{stem}.pem")), self.cert_pem.as_bytes(), 0o644)?;
        write_file(&dir.join(format!("{stem}-key.pem")), self.key_pem.as_bytes(), 0o600)
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), NetError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| NetError::File { path: path.display().to_string(), source };
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path).map_err(err)?;
    f.write_all(data).map_err(err)
}

/// The cluster CA: signs every coordinator, agent and client certificate.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// Creates a new CA (ECDSA P-256) named after the cluster.
    pub fn generate(cluster: &str) -> Result<Self, NetError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("zoe cluster CA {cluster}"));
        dn.push(DnType::OrganizationName, "zoe");
        params.distinguished_name = dn;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(CertificateAuthority { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// Loads an existing CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, NetError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(CertificateAuthority { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes `ca.pem` and `ca-key.pem` into `dir` (key mode 0600).
    pub fn write(&self, dir: &Path) -> Result<(), NetError> {
        IssuedCert { cert_pem: self.cert_pem.clone(), key_pem: self.key_pem.clone() }.write(dir, "ca")
    }

    /// Issues a certificate for `identity`, valid for both TLS client and
    /// server use (coordinators are both), with extra DNS and IP SANs for
    /// operators who connect by host name or address.
    pub fn issue(&self, identity: &Identity, extra_dns: &[String], ips: &[IpAddr]) -> Result<IssuedCert, NetError> {
        validate_name(&identity.name)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names.push(rcgen::SanType::DnsName(identity.san().try_into()?));
        for dns in extra_dns {
            if Identity::from_san(dns).is_some() {
                // A second identity SAN would make the certificate's role ambiguous.
                return Err(NetError::Identity(format!(
                    "extra DNS name {dns:?} looks like an identity; only one is allowed"
                )));
            }
            params.subject_alt_names.push(rcgen::SanType::DnsName(dns.clone().try_into()?));
        }
        for ip in ips {
            params.subject_alt_names.push(rcgen::SanType::IpAddress(*ip));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.san());
        dn.push(DnType::OrganizationalUnitName, identity.role.as_str());
        params.distinguished_name = dn;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn san_round_trip() {
        let id = Identity::new(Role::Agent, "node-7").unwrap();
        assert_eq!(id.san(), "agent.node-7.zoe");
        assert_eq!(Identity::from_san("agent.node-7.zoe"), Some(id));
        assert_eq!(Identity::from_san("agent.node-7.example"), None);
        assert_eq!(Identity::from_san("boss.x.zoe"), None);
        assert_eq!(Identity::from_san("agent.a.b.zoe"), None);
        assert!(Identity::new(Role::Client, "Bad.Name").is_err());
        assert!(Identity::new(Role::Client, "").is_err());
    }

    #[test]
    fn ca_reloads_from_pem_and_issues() {
        let ca = CertificateAuthority::generate("test").unwrap();
        let again = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let id = Identity::new(Role::Coordinator, "c1").unwrap();
        let cert = again.issue(&id, &["c1.example.org".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
        assert!(cert.cert_pem.contains("BEGIN CERTIFICATE"));
        let extra = again.issue(&id, &["client.x.zoe".into()], &[]);
        assert!(extra.is_err());
    }
}
