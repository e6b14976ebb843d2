use crate::frame::FrameError;
use crate::pki::Role;

/// Everything that can go wrong below the application protocol.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("PEM: {0}")]
    Pem(String),
    #[error("certificate generation: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC TLS configuration: {0}")]
    QuicTls(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// No connection could be made (no answer to the handshake, refused,
    /// unresolvable): nothing was sent, so a request may be retried.
    #[error("not connected: {0}")]
    NotConnected(String),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    ClosedStream(#[from] quinn::ClosedStream),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("peer identity: {0}")]
    Identity(String),
    #[error("peer role {got} is not allowed here (allowed: {allowed:?})")]
    Forbidden { got: Role, allowed: Vec<Role> },
    #[error("the peer closed the stream without answering")]
    NoAnswer,
    #[error("timed out")]
    Timeout,
}
