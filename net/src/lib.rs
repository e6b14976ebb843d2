//! zoe's mutual-TLS QUIC plumbing, shared by coordinators and agents.
//!
//! - [`pki`]: a cluster CA and the certificates it issues. A certificate's
//!   identity is a DNS SAN `<role>.<name>.zoe` (like Nomad's
//!   `server.region.nomad`), so the role is part of what the CA signed.
//! - [`tls`]: PEM loading, rustls server/client configs (TLS 1.3, the ring
//!   provider passed explicitly, client certificates required) and quinn
//!   endpoints built on them.
//! - [`identity`]: who the peer of a verified connection is, and role checks.
//! - [`frame`]: u32 length prefix + bincode 2 (serde) payload inside a
//!   versioned envelope, with a maximum frame size.
//! - [`rpc`]: request/response over bidirectional QUIC streams using frames.
//!
//! There is deliberately no plaintext mode and no way to skip verification.

pub mod error;
pub mod frame;
pub mod identity;
pub mod pki;
pub mod rpc;
pub mod tls;

pub use error::NetError;
pub use frame::{DEFAULT_MAX_FRAME, FrameError, PROTOCOL_VERSION};
pub use identity::{peer_identity, require_role};
pub use pki::{CertificateAuthority, Identity, IssuedCert, Role};
pub use tls::TlsMaterial;
