//! Images in containerd without the Go client: import from archives, pull
//! from registries (see [`crate::pull`]), unpack into snapshots, list, remove.
//!
//! containerd 1.6 has no Transfer service, so the agent does what `ctr
//! import` and `ctr pull` do client-side: write blobs into the content store
//! under a lease, label them so the garbage collector keeps what an image
//! references, create the image record, then unpack the layers into
//! snapshots named after their chain ids.

mod archive;
mod import;

use crate::containerd::{Containerd, SNAPSHOTTER, unique_suffix};
use crate::error::{Error, Result};
use archive::Archive;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest, UpdateRequest as ContentUpdateRequest,
};
use containerd_client::types::Descriptor as CtdDescriptor;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zoe_common::image::ImageRef;

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// How long an import or pull may take before containerd forgets its lease.
const IMPORT_LEASE: Duration = Duration::from_secs(3600);

/// An OCI/Docker content descriptor as it appears in JSON.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Descriptor {
    pub(crate) fn to_ctd(&self) -> CtdDescriptor {
        CtdDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Index {
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config a container start needs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub config: Option<ImageConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// An image on this node, as the node's image list reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    /// Canonical name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of the image's target (manifest or index).
    pub digest: String,
    /// Bytes of content (manifest, config, compressed layers).
    pub size: u64,
}

/// What a container start needs from an image, resolved once and cached.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub name: String,
    pub manifest_digest: String,
    pub config: ImageConfig,
    /// Chain id of the top layer: the parent of a container's snapshot.
    pub top_chain_id: String,
    pub size: u64,
}

/// Phase of a long image operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Fetching,
    Unpacking,
    Done,
}

/// Progress of an import or a pull: bytes of blobs done out of the total.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub image: String,
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
}

/// Receives progress reports; the agent process forwards them.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Canonical containerd name of a reference, e.g. `busybox` →
/// `docker.io/library/busybox:latest`.
pub fn canonical_name(reference: &str) -> Result<String> {
    ImageRef::parse(reference)
        .map(|r| r.canonical())
        .map_err(|e| Error::BadReference { reference: reference.to_string(), reason: e.to_string() })
}

/// Chain ids of a layer stack: `chain[0] = diff[0]`,
/// `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))),
        };
        out.push(next);
    }
    out
}

pub(crate) fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// The platform manifest this node runs (linux/amd64 style, from the build).
pub(crate) fn pick_platform(manifests: &[Descriptor]) -> Option<&Descriptor> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
        .or_else(|| manifests.iter().find(|m| m.platform.is_none()))
}

/// Labels that make the GC keep a manifest's config and layers.
pub(crate) fn manifest_gc_labels(m: &Manifest) -> HashMap<String, String> {
    let mut l = HashMap::new();
    l.insert("containerd.io/gc.ref.content.config".to_string(), m.config.digest.clone());
    for (i, layer) in m.layers.iter().enumerate() {
        l.insert(format!("containerd.io/gc.ref.content.l.{i}"), layer.digest.clone());
    }
    l
}

/// Images of one containerd namespace.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) ctd: Containerd,
    pub(crate) tmp_dir: PathBuf,
    pub(crate) registry: crate::pull::RegistryConfig,
    /// Resolved images by manifest digest: a container start then costs one
    /// Images.Get instead of three content reads.
    cache: Arc<Mutex<HashMap<String, Arc<ResolvedImage>>>>,
    /// Serialises unpacks in this namespace: two concurrent unpacks of the
    /// same layers would only race each other to the same commits.
    unpack_lock: Arc<tokio::sync::Mutex<()>>,
}

impl ImageStore {
    pub(crate) fn new(ctd: Containerd, tmp_dir: PathBuf, registry: crate::pull::RegistryConfig) -> ImageStore {
        ImageStore { ctd, tmp_dir, registry, cache: Default::default(), unpack_lock: Default::default() }
    }

    /// Images in the namespace, with their content sizes.
    pub async fn list(&self) -> Result<Vec<ImageInfo>> {
        let images = self
            .ctd
            .images()
            .list(self.ctd.rq(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(Error::ctd("list images"))?
            .into_inner()
            .images;
        let mut out = Vec::with_capacity(images.len());
        for img in images {
            let Some(target) = img.target.as_ref() else { continue };
            let size = match self.resolve_target(&img.name, target).await {
                Ok(r) => r.size,
                // An image whose content is incomplete still gets listed.
                Err(e) => {
                    tracing::debug!(image = %img.name, error = %e, "image content incomplete");
                    target.size as u64
                }
            };
            out.push(ImageInfo { name: img.name.clone(), digest: target.digest.clone(), size });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Whether an image is present (by any reference form).
    pub async fn exists(&self, reference: &str) -> Result<bool> {
        match self.get(&canonical_name(reference)?).await {
            Ok(_) => Ok(true),
            Err(Error::ImageNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes an image record; the GC then frees its content and snapshots.
    /// Removing an absent image is success.
    pub async fn remove(&self, reference: &str) -> Result<()> {
        let name = canonical_name(reference)?;
        match self
            .ctd
            .images()
            .delete(self.ctd.rq(DeleteImageRequest { name: name.clone(), sync: true, target: None }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(Error::Containerd { op: "delete image", status: s }),
        }
        self.cache.lock().expect("cache lock").retain(|_, r| r.name != name);
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Image> {
        match self.ctd.images().get(self.ctd.rq(GetImageRequest { name: name.to_string() })).await {
            Ok(r) => r.into_inner().image.ok_or_else(|| Error::ImageNotFound(name.to_string())),
            Err(s) if s.code() == tonic::Code::NotFound => Err(Error::ImageNotFound(name.to_string())),
            Err(s) => Err(Error::Containerd { op: "get image", status: s }),
        }
    }

    /// Everything a container start needs from an image; unpacks it if its
    /// snapshots are missing (e.g. content shared into this namespace).
    pub async fn resolve(&self, reference: &str) -> Result<Arc<ResolvedImage>> {
        let name = canonical_name(reference)?;
        let img = self.get(&name).await?;
        let target =
            img.target.ok_or_else(|| Error::BadImage { image: name.clone(), reason: "image has no target".into() })?;
        if let Some(r) = self.cache.lock().expect("cache lock").get(&target.digest) {
            return Ok(r.clone());
        }
        let resolved = self.resolve_target(&name, &target).await?;
        let snap = self.stat_snapshot(&resolved.top_chain_id).await?;
        if !snap && !resolved.top_chain_id.is_empty() {
            let lease = self.ctd.lease("unpack", IMPORT_LEASE).await?;
            let (manifest, config) = self.read_manifest_and_config(&name, &target).await?;
            let r = self.unpack(&lease, &name, &manifest, &config, None).await;
            self.ctd.end_lease(&lease).await;
            r?;
        }
        let resolved = Arc::new(resolved);
        self.cache.lock().expect("cache lock").insert(target.digest.clone(), resolved.clone());
        Ok(resolved)
    }

    async fn read_manifest_and_config(&self, name: &str, target: &CtdDescriptor) -> Result<(Manifest, ConfigFile)> {
        let bad = |reason: String| Error::BadImage { image: name.to_string(), reason };
        let mut digest = target.digest.clone();
        let mut raw = self.ctd.read_content(&digest).await?;
        if is_index(&target.media_type) {
            let index: Index = serde_json::from_slice(&raw).map_err(|e| bad(format!("index: {e}")))?;
            let m = pick_platform(&index.manifests).ok_or_else(|| bad("no manifest for this platform".into()))?;
            digest = m.digest.clone();
            raw = self.ctd.read_content(&digest).await?;
        }
        let manifest: Manifest = serde_json::from_slice(&raw).map_err(|e| bad(format!("manifest {digest}: {e}")))?;
        let config_raw = self.ctd.read_content(&manifest.config.digest).await?;
        let config: ConfigFile = serde_json::from_slice(&config_raw).map_err(|e| bad(format!("config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "config lists {} layers, manifest {}",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        Ok((manifest, config))
    }

    async fn resolve_target(&self, name: &str, target: &CtdDescriptor) -> Result<ResolvedImage> {
        let (manifest, config) = self.read_manifest_and_config(name, target).await?;
        let chains = chain_ids(&config.rootfs.diff_ids);
        let size = target.size as u64
            + manifest.config.size as u64
            + manifest.layers.iter().map(|l| l.size as u64).sum::<u64>();
        Ok(ResolvedImage {
            name: name.to_string(),
            manifest_digest: target.digest.clone(),
            config: config.config.unwrap_or_default(),
            top_chain_id: chains.last().cloned().unwrap_or_default(),
            size,
        })
    }

    async fn stat_snapshot(&self, key: &str) -> Result<bool> {
        let req = StatSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: key.to_string() };
        match self.ctd.snapshots().stat(self.ctd.rq(req)).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Error::Containerd { op: "stat snapshot", status: s }),
        }
    }

    /// Unpacks layers into committed snapshots named by chain id, skipping
    /// those already there, and labels the config so the GC keeps the top
    /// snapshot as long as the image exists.
    pub(crate) async fn unpack(
        &self,
        lease: &str,
        name: &str,
        manifest: &Manifest,
        config: &ConfigFile,
        progress: Option<(&ProgressFn, u64)>,
    ) -> Result<String> {
        let _guard = self.unpack_lock.lock().await;
        let chains = chain_ids(&config.rootfs.diff_ids);
        let mut parent = String::new();
        for (i, layer) in manifest.layers.iter().enumerate() {
            let chain = &chains[i];
            if !self.stat_snapshot(chain).await? {
                let key = format!("extract-{}-{}", unique_suffix(), chain.trim_start_matches("sha256:"));
                let mounts = self
                    .ctd
                    .snapshots()
                    .prepare(self.ctd.rq_leased(
                        PrepareSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key: key.clone(),
                            parent: parent.clone(),
                            labels: HashMap::new(),
                        },
                        lease,
                    ))
                    .await
                    .map_err(Error::ctd("prepare snapshot"))?
                    .into_inner()
                    .mounts;
                let applied = self
                    .ctd
                    .diff()
                    .apply(self.ctd.rq_leased(
                        ApplyRequest { diff: Some(layer.to_ctd()), mounts, payloads: HashMap::new(), sync_fs: false },
                        lease,
                    ))
                    .await
                    .map_err(Error::ctd("apply layer"));
                let applied = match applied {
                    Ok(a) => a.into_inner().applied,
                    Err(e) => {
                        self.remove_snapshot(&key).await;
                        return Err(e);
                    }
                };
                let applied_digest = applied.map(|d| d.digest).unwrap_or_default();
                if applied_digest != config.rootfs.diff_ids[i] {
                    self.remove_snapshot(&key).await;
                    return Err(Error::BadImage {
                        image: name.to_string(),
                        reason: format!(
                            "layer {} unpacks to {applied_digest}, the config says {}",
                            layer.digest, config.rootfs.diff_ids[i]
                        ),
                    });
                }
                let commit = CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: chain.clone(),
                    key: key.clone(),
                    labels: HashMap::new(),
                };
                match self.ctd.snapshots().commit(self.ctd.rq_leased(commit, lease)).await {
                    Ok(_) => {}
                    // Someone else (another agent, ctr) committed it first.
                    Err(s) if s.code() == tonic::Code::AlreadyExists => self.remove_snapshot(&key).await,
                    Err(s) => {
                        self.remove_snapshot(&key).await;
                        return Err(Error::Containerd { op: "commit snapshot", status: s });
                    }
                }
            }
            if let Some((p, total)) = progress {
                p(&Progress { image: name.to_string(), phase: Phase::Unpacking, done: (i + 1) as u64, total });
            }
            parent = chain.clone();
        }
        let label = format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}");
        let mut labels = HashMap::new();
        labels.insert(label.clone(), parent.clone());
        let info = containerd_client::services::v1::Info {
            digest: manifest.config.digest.clone(),
            labels,
            ..Default::default()
        };
        self.ctd
            .content()
            .update(self.ctd.rq_leased(
                ContentUpdateRequest {
                    info: Some(info),
                    update_mask: Some(prost_types::FieldMask { paths: vec![format!("labels.{label}")] }),
                },
                lease,
            ))
            .await
            .map_err(Error::ctd("label config"))?;
        Ok(parent)
    }

    async fn remove_snapshot(&self, key: &str) {
        let req = RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: key.to_string() };
        if let Err(s) = self.ctd.snapshots().remove(self.ctd.rq(req)).await
            && s.code() != tonic::Code::NotFound
        {
            tracing::warn!(key, error = %s, "could not remove snapshot");
        }
    }

    /// Creates or moves the image record `name` to `target`.
    pub(crate) async fn set_image(&self, lease: &str, name: &str, target: CtdDescriptor) -> Result<()> {
        let image = Image { name: name.to_string(), target: Some(target), ..Default::default() };
        match self
            .ctd
            .images()
            .create(self.ctd.rq_leased(CreateImageRequest { image: Some(image.clone()), ..Default::default() }, lease))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.ctd
                    .images()
                    .update(self.ctd.rq_leased(
                        UpdateImageRequest {
                            image: Some(image),
                            update_mask: Some(prost_types::FieldMask { paths: vec!["target".into()] }),
                            ..Default::default()
                        },
                        lease,
                    ))
                    .await
                    .map_err(Error::ctd("update image"))?;
            }
            Err(s) => return Err(Error::Containerd { op: "create image", status: s }),
        }
        self.cache.lock().expect("cache lock").retain(|_, r| r.name != name);
        Ok(())
    }
}

use futures::StreamExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], format!("sha256:{}", hex::encode(Sha256::digest(b"sha256:aaaa sha256:bbbb"))));
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(canonical_name("busybox").unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(canonical_name("zoe.local/busybox:1").unwrap(), "zoe.local/busybox:1");
        assert!(matches!(canonical_name("Bad Name"), Err(Error::BadReference { .. })));
    }
}
