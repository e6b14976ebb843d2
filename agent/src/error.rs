//! Errors of the runtime library.
//!
//! Start failures get their own type, [`StartError`], because the scheduler
//! acts differently on them: a retryable failure (containerd busy, a shim
//! that died, a timeout) is tried again later, a fatal one (missing image,
//! invalid spec, missing executable) ends the execution, as in Zoe's
//! `ZoeStartExecutionRetryException` / `ZoeStartExecutionFatalException`.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to containerd at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("containerd {op}: {} ({:?})", .status.message(), .status.code())]
    Containerd {
        op: &'static str,
        #[source]
        status: tonic::Status,
    },
    #[error("image {0} is not present on this node (pull or import it first)")]
    ImageNotFound(String),
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("image {image}: {reason}")]
    BadImage { image: String, reason: String },
    #[error("registry pull of {reference}: {reason}")]
    Registry { reference: String, reason: String },
    #[error("archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error("invalid service spec: {field}: {reason}")]
    InvalidSpec { field: String, reason: String },
    #[error("service {0} is not known to this agent")]
    ServiceNotFound(String),
    #[error("service {0} already exists")]
    ServiceExists(String),
    #[error("service {0} is not running")]
    NotRunning(String),
    #[error("live update of {id} did not take: {file} reads {actual}, wanted {wanted}")]
    UpdateNotApplied { id: String, file: String, actual: String, wanted: String },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("host information: {0}")]
    Host(String),
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("the runtime's event stream ended; containerd may have stopped")]
    EventsLost,
    #[error("container network: {0}")]
    Network(#[from] crate::network::NetError),
    /// runc, inside the container's user namespace, could not reach the
    /// rootfs containerd mounted: a directory above containerd's state is
    /// closed to others (a private containerd under a 0700 temp dir).
    #[error(
        "containerd create task: {}: every directory above containerd's state must be searchable by \
         others (chmod o+x), as those above /run/containerd are, since containers run in user namespaces",
        .0.message()
    )]
    StateUnreachable(tonic::Status),
    /// Starting zoe's own containerd (`zoe dev`) failed.
    #[error("private containerd: {0}")]
    PrivateContainerd(String),
}

impl Error {
    pub(crate) fn ctd(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Containerd { op, status }
    }

    pub(crate) fn create_task(status: tonic::Status) -> Error {
        let m = status.message();
        if m.contains("error preparing rootfs") && m.contains("permission denied") {
            Error::StateUnreachable(status)
        } else {
            Error::Containerd { op: "create task", status }
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// The gRPC code when this is a containerd error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Containerd { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    /// Whether trying the same start again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout { .. } | Error::EventsLost => true,
            Error::Io { .. } => true,
            Error::Registry { .. } => true,
            // A plugin or the kernel refused now; the leader's configuration
            // may not have arrived yet. Invalid configurations are its own.
            Error::Network(e) => !matches!(e, crate::network::NetError::Invalid(_)),
            // The task vanished between create and start: its shim went
            // away (seen rarely under load); the process never ran.
            Error::Containerd { op: "start task", status } if status.code() == tonic::Code::NotFound => true,
            // A shim killed while it set up (its agent died mid-start)
            // leaves its bundle directory behind, and a new shim for the
            // same id cannot start. The process never ran: a new attempt,
            // under a new container id, is safe.
            Error::Containerd { op: "create task", status }
                if status.message().contains("failed to start shim") && status.message().contains("file exists") =>
            {
                true
            }
            Error::Containerd { status, .. } => {
                use tonic::Code::*;
                match status.code() {
                    Unavailable | DeadlineExceeded | ResourceExhausted | Aborted | Cancelled => true,
                    Unknown | Internal => {
                        // runc and the shim report everything as Unknown;
                        // only transient conditions are worth a retry.
                        let m = status.message();
                        TRANSIENT.iter().any(|t| m.contains(t)) && !FATAL.iter().any(|f| m.contains(f))
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// Message fragments of runtime errors that go away by themselves.
const TRANSIENT: &[&str] = &[
    "resource temporarily unavailable",
    "device or resource busy",
    "ttrpc: closed",
    "transport is closing",
    "connection refused",
    "context deadline exceeded",
    "timeout",
    "no space left on device",
    "cannot allocate memory",
];

/// Message fragments that mean the spec or the image is wrong.
const FATAL: &[&str] = &[
    "executable file not found",
    "no such file or directory",
    "permission denied",
    "invalid argument",
    "not a directory",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartErrorKind {
    /// Try again later (maybe elsewhere).
    Retryable,
    /// Trying again will fail the same way.
    Fatal,
}

impl std::fmt::Display for StartErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StartErrorKind::Retryable => "retryable",
            StartErrorKind::Fatal => "fatal",
        })
    }
}

/// Why a service did not start, classified for the scheduler.
#[derive(Debug, thiserror::Error)]
#[error("starting {service} failed ({kind}): {source}")]
pub struct StartError {
    pub service: String,
    pub kind: StartErrorKind,
    #[source]
    pub source: Error,
}

impl StartError {
    pub fn new(service: &str, source: Error) -> StartError {
        let kind = if source.is_retryable() { StartErrorKind::Retryable } else { StartErrorKind::Fatal };
        StartError { service: service.to_string(), kind, source }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == StartErrorKind::Retryable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_errors_are_classified() {
        let bundle = Error::Containerd {
            op: "create task",
            status: tonic::Status::unknown(
                "failed to start shim: mkdir /run/containerd/io.containerd.runtime.v2.task/ns/c: file exists",
            ),
        };
        assert!(StartError::new("s", bundle).is_retryable());
        let busy = Error::Containerd { op: "create task", status: tonic::Status::unavailable("shim busy") };
        assert!(StartError::new("s", busy).is_retryable());
        let exe = Error::Containerd {
            op: "start task",
            status: tonic::Status::unknown(
                "OCI runtime create failed: exec: \"nope\": executable file not found in $PATH",
            ),
        };
        assert!(!StartError::new("s", exe).is_retryable());
        assert!(!StartError::new("s", Error::ImageNotFound("x".into())).is_retryable());
        let ttrpc = Error::Containerd { op: "create task", status: tonic::Status::unknown("ttrpc: closed") };
        assert!(StartError::new("s", ttrpc).is_retryable());
        let gone = Error::Containerd { op: "start task", status: tonic::Status::not_found("not found") };
        assert!(StartError::new("s", gone).is_retryable());
        let closed = Error::create_task(tonic::Status::unknown(
            "runc create failed: error preparing rootfs: mount /tmp/x/state/r/rootfs, flags: 0x5000: permission denied",
        ));
        assert!(matches!(closed, Error::StateUnreachable(_)) && closed.to_string().contains("chmod o+x"));
        assert!(!StartError::new("s", closed).is_retryable());
    }
}
