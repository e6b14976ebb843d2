//! The connection to containerd: one tonic channel over the unix socket, and
//! the request plumbing every call needs (namespace and lease metadata).
//!
//! containerd-client is raw gRPC, so the helpers the Go client provides
//! (leases, content writes) live here.

use crate::error::{Error, Result};
use containerd_client::services::v1::{
    AddResourceRequest, CreateRequest as LeaseCreateRequest, DeleteRequest as LeaseDeleteRequest, InfoRequest,
    ReadContentRequest, WriteAction, WriteContentRequest, containers_client::ContainersClient,
    content_client::ContentClient, diff_client::DiffClient, events_client::EventsClient, images_client::ImagesClient,
    leases_client::LeasesClient, namespaces_client::NamespacesClient, snapshots::snapshots_client::SnapshotsClient,
    tasks_client::TasksClient, version_client::VersionClient,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tonic::Request;
use tonic::transport::Channel;

/// The snapshotter zoe uses; the GC label names it too.
pub const SNAPSHOTTER: &str = "overlayfs";
/// The runc shim, the default runtime of containerd 1.6+.
pub const RUNTIME: &str = "io.containerd.runc.v2";
/// Chunk size for content writes: containerd's own client uses 1 MiB.
const WRITE_CHUNK: usize = 1 << 20;

/// Version of the containerd daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonVersion {
    pub version: String,
    pub revision: String,
}

/// A containerd connection bound to one namespace. Cheap to clone (tonic
/// channels multiplex calls over one connection).
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    socket: PathBuf,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd").field("socket", &self.socket).field("namespace", &self.namespace).finish()
    }
}

/// An accessor per containerd service client, each on the one channel.
macro_rules! clients {
    ($($name:ident: $client:ident),* $(,)?) => {
        $(
            pub fn $name(&self) -> $client<Channel> {
                $client::new(self.channel.clone())
            }
        )*
    };
}

impl Containerd {
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Containerd> {
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|source| Error::Connect { socket: socket.to_path_buf(), source })?;
        Ok(Containerd { channel, namespace: namespace.to_string(), socket: socket.to_path_buf() })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The same connection in another namespace.
    pub fn with_namespace(&self, namespace: &str) -> Containerd {
        Containerd { channel: self.channel.clone(), namespace: namespace.to_string(), socket: self.socket.clone() }
    }

    /// A request carrying the namespace: every containerd call needs it.
    pub fn rq<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert("containerd-namespace", self.namespace.parse().expect("namespace is ASCII"));
        r
    }

    /// A request inside a lease: what it creates is kept until the lease ends.
    pub fn rq_leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut r = self.rq(msg);
        r.metadata_mut().insert("containerd-lease", lease.parse().expect("lease id is ASCII"));
        r
    }

    clients! {
        containers: ContainersClient,
        content: ContentClient,
        diff: DiffClient,
        events: EventsClient,
        images: ImagesClient,
        leases: LeasesClient,
        namespaces: NamespacesClient,
        snapshots: SnapshotsClient,
        tasks: TasksClient,
    }

    pub async fn version(&self) -> Result<DaemonVersion> {
        let v = VersionClient::new(self.channel.clone()).version(()).await.map_err(Error::ctd("version"))?.into_inner();
        Ok(DaemonVersion { version: v.version, revision: v.revision })
    }

    /// Creates a lease that containerd's GC drops by itself after `expire`,
    /// so a crashed agent does not pin content forever.
    pub async fn lease(&self, purpose: &str, expire: std::time::Duration) -> Result<String> {
        let id = format!("zoe-{purpose}-{}", unique_suffix());
        let at = std::time::SystemTime::now() + expire;
        let mut labels = HashMap::new();
        labels.insert("containerd.io/gc.expire".to_string(), rfc3339(at));
        self.leases()
            .create(self.rq(LeaseCreateRequest { id: id.clone(), labels }))
            .await
            .map_err(Error::ctd("create lease"))?;
        Ok(id)
    }

    /// Ends a lease; what it protected is now kept only by references.
    pub async fn end_lease(&self, id: &str) {
        if let Err(e) = self.leases().delete(self.rq(LeaseDeleteRequest { id: id.to_string(), sync: false })).await {
            tracing::warn!(lease = id, error = %e, "could not delete lease; it expires by itself");
        }
    }

    /// Puts existing content under a lease (content found already present
    /// must not be collected while the import that relies on it runs).
    pub async fn lease_content(&self, lease: &str, digest: &str) -> Result<()> {
        let resource = containerd_client::services::v1::Resource { id: digest.to_string(), r#type: "content".into() };
        self.leases()
            .add_resource(self.rq(AddResourceRequest { id: lease.to_string(), resource: Some(resource) }))
            .await
            .map_err(Error::ctd("add lease resource"))?;
        Ok(())
    }

    /// Whether a blob is in this namespace's content store.
    pub async fn has_content(&self, digest: &str) -> Result<bool> {
        match self.content().info(self.rq(InfoRequest { digest: digest.to_string() })).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Error::Containerd { op: "content info", status: s }),
        }
    }

    /// Reads a whole (small) blob: manifests, configs, indexes.
    pub async fn read_content(&self, digest: &str) -> Result<Vec<u8>> {
        let mut stream = self
            .content()
            .read(self.rq(ReadContentRequest { digest: digest.to_string(), offset: 0, size: 0 }))
            .await
            .map_err(Error::ctd("read content"))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(Error::ctd("read content"))?.data);
        }
        Ok(out)
    }

    /// Writes a blob of known digest and size from a stream of chunks, under
    /// `lease`. containerd verifies the digest at commit. If another
    /// namespace already holds the blob, the store links it without a copy
    /// (the first status reply says the whole blob is there).
    pub async fn write_content<S>(
        &self,
        lease: &str,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
        chunks: S,
        mut progress: impl FnMut(u64),
    ) -> Result<()>
    where
        S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
    {
        match self.write_content_once(lease, digest, size, labels.clone(), chunks, &mut progress).await {
            // Already in this namespace (written meanwhile, or a re-pull):
            // keep it under the lease and make sure it carries the labels.
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {
                self.lease_content(lease, digest).await?;
                if !labels.is_empty() {
                    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
                    let info = containerd_client::services::v1::Info {
                        digest: digest.to_string(),
                        labels,
                        ..Default::default()
                    };
                    let req = containerd_client::services::v1::UpdateRequest {
                        info: Some(info),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    };
                    self.content().update(self.rq_leased(req, lease)).await.map_err(Error::ctd("label content"))?;
                }
                progress(size as u64);
                Ok(())
            }
            r => r,
        }
    }

    async fn write_content_once<S>(
        &self,
        lease: &str,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
        mut chunks: S,
        progress: &mut impl FnMut(u64),
    ) -> Result<()>
    where
        S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
    {
        // A fresh ref per write: two imports of the same blob must not fight
        // over one ingest ("ref locked"); leftovers expire with the lease.
        let reference = format!("zoe-{}-{}", digest.trim_start_matches("sha256:"), unique_suffix());
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let first = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total: size,
            expected: digest.to_string(),
            ..Default::default()
        };
        tx.send(first).await.expect("receiver alive");
        let mut responses = self
            .content()
            .write(self.rq_leased(tokio_stream::wrappers::ReceiverStream::new(rx), lease))
            .await
            .map_err(Error::ctd("write content"))?
            .into_inner();
        let next = |r: Option<std::result::Result<_, tonic::Status>>| -> Result<containerd_client::services::v1::WriteContentResponse> {
            match r {
                Some(Ok(x)) => Ok(x),
                Some(Err(s)) => Err(Error::Containerd { op: "write content", status: s }),
                None => Err(Error::Containerd { op: "write content", status: tonic::Status::aborted("stream ended early") }),
            }
        };
        let stat = next(responses.next().await)?;
        let request =
            |action: WriteAction, offset: i64, data: Vec<u8>, labels: HashMap<String, String>| WriteContentRequest {
                action: action as i32,
                r#ref: reference.clone(),
                total: size,
                expected: digest.to_string(),
                offset,
                data,
                labels,
            };
        if stat.offset == size && size > 0 {
            progress(size as u64);
            let _ = tx.send(request(WriteAction::Commit, size, Vec::new(), labels)).await;
            next(responses.next().await)?;
            return Ok(());
        }
        // Any partial data under our fresh ref is impossible; start at 0.
        let mut offset: i64 = 0;
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK.min(size.max(0) as usize));
        loop {
            let chunk = chunks.next().await.transpose().map_err(Error::io(format!("reading blob {digest}")))?;
            let done = chunk.is_none();
            if let Some(c) = chunk {
                buf.extend_from_slice(&c);
            }
            while buf.len() >= WRITE_CHUNK || (done && !buf.is_empty()) {
                let n = buf.len().min(WRITE_CHUNK);
                let data: Vec<u8> = buf.drain(..n).collect();
                let len = data.len() as i64;
                let req = request(WriteAction::Write, offset, data, HashMap::new());
                if tx.send(req).await.is_err() {
                    // The server closed the stream: its status says why.
                    next(responses.next().await)?;
                    return Err(Error::Containerd {
                        op: "write content",
                        status: tonic::Status::aborted("stream closed"),
                    });
                }
                next(responses.next().await)?;
                offset += len;
                progress(offset as u64);
            }
            if done {
                break;
            }
        }
        if offset != size {
            return Err(Error::BadImage {
                image: digest.to_string(),
                reason: format!("blob has {offset} bytes, its descriptor says {size}"),
            });
        }
        let _ = tx.send(request(WriteAction::Commit, offset, Vec::new(), labels)).await;
        next(responses.next().await)?;
        Ok(())
    }
}

/// A short random suffix for ids that must not collide (leases, refs, keys).
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}-{}-{}", nanos, std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// RFC 3339 in UTC (what containerd parses for `gc.expire`), without a
/// date-time dependency.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
