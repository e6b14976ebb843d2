//! Images in containerd without the Go client: import from archives, pull
//! from registries (see [`crate::pull`]), unpack into snapshots, list, remove.
//!
//! containerd 1.6 has no Transfer service, so the agent does what `ctr
//! import` and `ctr pull` do client-side: write blobs into the content store
//! under a lease, label them so the garbage collector keeps what an image
//! references, create the image record, then unpack the layers into
//! snapshots named after their chain ids.

use crate::containerd::{Containerd, SNAPSHOTTER, unique_suffix};
use crate::error::{Error, Result};
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

    /// Imports every image of an archive: an OCI image layout tarball (what
    /// `ctr export`, buildkit and `docker save` 25+ write) or a classic
    /// `docker save` tarball (`manifest.json`). `name` names the image when
    /// the archive holds exactly one and does not name it, or overrides it.
    pub async fn import_archive(
        &self,
        path: &Path,
        name: Option<&str>,
        progress: Option<ProgressFn>,
    ) -> Result<Vec<ImageInfo>> {
        let archive = Archive::open(path, &self.tmp_dir).await?;
        let lease = self.ctd.lease("import", IMPORT_LEASE).await?;
        let r = self.import_inner(&archive, &lease, name, progress).await;
        self.ctd.end_lease(&lease).await;
        archive.cleanup();
        r
    }

    async fn import_inner(
        &self,
        archive: &Archive,
        lease: &str,
        name: Option<&str>,
        progress: Option<ProgressFn>,
    ) -> Result<Vec<ImageInfo>> {
        let override_name = name.map(canonical_name).transpose()?;
        let images = if archive.has("index.json") {
            self.plan_oci(archive, override_name.as_deref()).await?
        } else if archive.has("manifest.json") {
            self.plan_docker(archive, override_name.as_deref()).await?
        } else {
            return Err(archive.err("neither index.json (OCI layout) nor manifest.json (docker save) found"));
        };
        if images.is_empty() {
            return Err(archive.err("the archive holds no image"));
        }
        let mut out = Vec::new();
        for plan in images {
            let total: u64 = plan.blobs.iter().map(|b| b.size as u64).sum();
            let mut done_before = 0u64;
            for blob in &plan.blobs {
                if self.ctd.has_content(&blob.digest).await? {
                    self.ctd.lease_content(lease, &blob.digest).await?;
                } else {
                    let p = progress.clone();
                    let image = plan.name.clone();
                    let base = done_before;
                    let report = move |done: u64| {
                        if let Some(p) = &p {
                            p(&Progress { image: image.clone(), phase: Phase::Fetching, done: base + done, total });
                        }
                    };
                    let stream = match &blob.source {
                        BlobSource::Archive { offset } => archive.stream(*offset, blob.size as u64).await?,
                        BlobSource::Memory(b) => futures::stream::iter(vec![Ok(bytes::Bytes::from(b.clone()))]).boxed(),
                    };
                    self.ctd.write_content(lease, &blob.digest, blob.size, blob.labels.clone(), stream, report).await?;
                }
                done_before += blob.size as u64;
            }
            let manifest_desc = CtdDescriptor {
                media_type: plan.manifest_media_type.clone(),
                digest: plan.manifest_digest.clone(),
                size: plan.manifest_size,
                annotations: HashMap::new(),
            };
            self.set_image(lease, &plan.name, manifest_desc.clone()).await?;
            let p = progress.as_ref().map(|p| (p, plan.manifest.layers.len() as u64));
            self.unpack(lease, &plan.name, &plan.manifest, &plan.config, p).await?;
            if let Some(p) = &progress {
                p(&Progress { image: plan.name.clone(), phase: Phase::Done, done: total, total });
            }
            let size = plan.blobs.iter().map(|b| b.size as u64).sum();
            out.push(ImageInfo { name: plan.name.clone(), digest: plan.manifest_digest.clone(), size });
        }
        Ok(out)
    }

    async fn plan_oci(&self, archive: &Archive, override_name: Option<&str>) -> Result<Vec<ImportPlan>> {
        let index: Index = serde_json::from_slice(&archive.read_small("index.json").await?)
            .map_err(|e| archive.err(format!("index.json: {e}")))?;
        let single = index.manifests.len() == 1;
        let mut plans = Vec::new();
        for desc in &index.manifests {
            let name = match override_name {
                Some(n) if single => n.to_string(),
                _ => {
                    let annotated = desc
                        .annotations
                        .get("io.containerd.image.name")
                        .or_else(|| desc.annotations.get("org.opencontainers.image.ref.name"));
                    match annotated.map(|n| canonical_name(n)) {
                        Some(Ok(n)) => n,
                        _ => return Err(archive.err(format!("manifest {} has no image name; pass one", desc.digest))),
                    }
                }
            };
            let mut manifest_desc = desc.clone();
            if is_index(&desc.media_type) {
                // A multi-platform image: the image record points at this
                // platform's manifest.
                let raw = archive.read_blob(&desc.digest).await?;
                let idx: Index =
                    serde_json::from_slice(&raw).map_err(|e| archive.err(format!("index {}: {e}", desc.digest)))?;
                manifest_desc = pick_platform(&idx.manifests)
                    .cloned()
                    .ok_or_else(|| archive.err(format!("{name}: no manifest for this platform")))?;
            }
            let raw = archive.read_blob(&manifest_desc.digest).await?;
            plans.push(self.plan_from_manifest(archive, name, &manifest_desc, raw).await?);
        }
        Ok(plans)
    }

    async fn plan_from_manifest(
        &self,
        archive: &Archive,
        name: String,
        desc: &Descriptor,
        raw: Vec<u8>,
    ) -> Result<ImportPlan> {
        if sha256_digest(&raw) != desc.digest {
            return Err(archive.err(format!("manifest {} does not match its digest", desc.digest)));
        }
        let manifest: Manifest =
            serde_json::from_slice(&raw).map_err(|e| archive.err(format!("manifest {}: {e}", desc.digest)))?;
        let config_raw = archive.read_blob(&manifest.config.digest).await?;
        let config: ConfigFile =
            serde_json::from_slice(&config_raw).map_err(|e| archive.err(format!("config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(archive.err(format!("{name}: config and manifest disagree on the number of layers")));
        }
        let mut blobs = Vec::new();
        for l in &manifest.layers {
            blobs.push(PlannedBlob {
                digest: l.digest.clone(),
                size: l.size,
                labels: HashMap::new(),
                source: BlobSource::Archive { offset: archive.blob_offset(&l.digest, l.size)? },
            });
        }
        blobs.push(PlannedBlob {
            digest: manifest.config.digest.clone(),
            size: manifest.config.size,
            labels: HashMap::new(),
            source: BlobSource::Memory(config_raw),
        });
        // The manifest goes last, with the labels that keep the rest alive.
        blobs.push(PlannedBlob {
            digest: desc.digest.clone(),
            size: raw.len() as i64,
            labels: manifest_gc_labels(&manifest),
            source: BlobSource::Memory(raw.clone()),
        });
        Ok(ImportPlan {
            name,
            manifest_digest: desc.digest.clone(),
            manifest_size: raw.len() as i64,
            manifest_media_type: manifest.media_type.clone().unwrap_or_else(|| desc.media_type.clone()),
            manifest,
            config,
            blobs,
        })
    }

    /// A `docker save` archive has no manifest blob: write the Docker schema
    /// 2 manifest that describes its config and layers, as `ctr import` does.
    async fn plan_docker(&self, archive: &Archive, override_name: Option<&str>) -> Result<Vec<ImportPlan>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&archive.read_small("manifest.json").await?)
            .map_err(|e| archive.err(format!("manifest.json: {e}")))?;
        let single = entries.len() == 1;
        let mut plans = Vec::new();
        for e in entries {
            let names: Vec<String> = match override_name {
                Some(n) if single => vec![n.to_string()],
                _ => {
                    e.repo_tags.clone().unwrap_or_default().iter().map(|t| canonical_name(t)).collect::<Result<_>>()?
                }
            };
            if names.is_empty() {
                return Err(archive.err(format!("image {} has no RepoTags; pass a name", e.config)));
            }
            let config_raw = archive.read_small(&e.config).await?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let (digest, size, gz) = archive.hash_entry(l).await?;
                let media = if gz { MEDIA_DOCKER_LAYER_GZIP } else { MEDIA_DOCKER_LAYER };
                layers.push(serde_json::json!({ "mediaType": media, "digest": digest, "size": size }));
            }
            let manifest_raw = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_DOCKER_MANIFEST,
                "config": { "mediaType": MEDIA_DOCKER_CONFIG, "digest": sha256_digest(&config_raw), "size": config_raw.len() },
                "layers": layers,
            }))
            .expect("json");
            let desc = Descriptor {
                media_type: MEDIA_DOCKER_MANIFEST.into(),
                digest: sha256_digest(&manifest_raw),
                size: manifest_raw.len() as i64,
                annotations: HashMap::new(),
                platform: None,
            };
            // Blobs of a docker archive are addressed by entry path, not digest.
            let mut by_digest = HashMap::new();
            by_digest.insert(sha256_digest(&config_raw), e.config.clone());
            for (l, path) in layers.iter().zip(&e.layers) {
                by_digest.insert(l["digest"].as_str().unwrap_or_default().to_string(), path.clone());
            }
            let view = archive.with_paths(by_digest);
            for name in names {
                plans.push(self.plan_from_manifest(&view, name, &desc, manifest_raw.clone()).await?);
            }
        }
        Ok(plans)
    }
}

use futures::StreamExt;

struct ImportPlan {
    name: String,
    manifest_digest: String,
    manifest_size: i64,
    manifest_media_type: String,
    manifest: Manifest,
    config: ConfigFile,
    blobs: Vec<PlannedBlob>,
}

struct PlannedBlob {
    digest: String,
    size: i64,
    labels: HashMap<String, String>,
    source: BlobSource,
}

enum BlobSource {
    Archive { offset: u64 },
    Memory(Vec<u8>),
}

/// A tar archive indexed by entry path: blobs are streamed from their
/// offsets, never loaded whole (layers can be gigabytes).
#[derive(Clone)]
struct Archive {
    display: PathBuf,
    file: PathBuf,
    /// Set when `file` is a decompressed temp copy to delete afterwards.
    temp: bool,
    entries: Arc<HashMap<String, (u64, u64)>>,
    /// Digest → entry path, for archives that do not store blobs by digest.
    by_digest: Arc<HashMap<String, String>>,
}

fn norm(path: &str) -> String {
    path.trim_start_matches("./").trim_start_matches('/').to_string()
}

impl Archive {
    async fn open(path: &Path, tmp_dir: &Path) -> Result<Archive> {
        let path = path.to_path_buf();
        let tmp_dir = tmp_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Archive::open_blocking(&path, &tmp_dir))
            .await
            .map_err(|e| Error::Host(format!("import task: {e}")))?
    }

    fn open_blocking(path: &Path, tmp_dir: &Path) -> Result<Archive> {
        let err = |reason: String| Error::Archive { path: path.to_path_buf(), reason };
        let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic).map_err(|e| err(e.to_string()))?;
        let (file, temp) = if n == 2 && magic == [0x1f, 0x8b] {
            // A gzipped archive: random access needs a plain copy.
            std::fs::create_dir_all(tmp_dir).map_err(|e| err(format!("{}: {e}", tmp_dir.display())))?;
            let tmp = tmp_dir.join(format!("import-{}.tar", unique_suffix()));
            f.seek(SeekFrom::Start(0)).map_err(|e| err(e.to_string()))?;
            let mut dec = flate2::read::GzDecoder::new(std::io::BufReader::new(f));
            let mut out = std::fs::File::create(&tmp).map_err(|e| err(format!("{}: {e}", tmp.display())))?;
            std::io::copy(&mut dec, &mut out).map_err(|e| err(format!("decompressing: {e}")))?;
            (tmp, true)
        } else {
            (path.to_path_buf(), false)
        };
        let mut entries = HashMap::new();
        let f = std::fs::File::open(&file).map_err(|e| err(e.to_string()))?;
        let mut ar = tar::Archive::new(std::io::BufReader::new(f));
        for entry in ar.entries().map_err(|e| err(format!("not a tar archive: {e}")))? {
            let entry = entry.map_err(|e| err(format!("corrupt tar: {e}")))?;
            if entry.header().entry_type().is_file() {
                let p = entry.path().map_err(|e| err(e.to_string()))?.to_string_lossy().into_owned();
                entries.insert(norm(&p), (entry.raw_file_position(), entry.size()));
            }
        }
        Ok(Archive {
            display: path.to_path_buf(),
            file,
            temp,
            entries: Arc::new(entries),
            by_digest: Default::default(),
        })
    }

    fn cleanup(&self) {
        if self.temp {
            let _ = std::fs::remove_file(&self.file);
        }
    }

    fn with_paths(&self, by_digest: HashMap<String, String>) -> Archive {
        Archive { by_digest: Arc::new(by_digest), ..self.clone() }
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Archive { path: self.display.clone(), reason: reason.into() }
    }

    fn has(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    fn blob_path(&self, digest: &str) -> String {
        if let Some(p) = self.by_digest.get(digest) {
            return norm(p);
        }
        let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        format!("blobs/{alg}/{hex}")
    }

    fn entry(&self, path: &str) -> Result<(u64, u64)> {
        self.entries.get(&norm(path)).copied().ok_or_else(|| self.err(format!("{path} is missing")))
    }

    fn blob_offset(&self, digest: &str, size: i64) -> Result<u64> {
        let (off, len) = self.entry(&self.blob_path(digest))?;
        if len != size as u64 {
            return Err(self.err(format!("blob {digest} has {len} bytes, its descriptor says {size}")));
        }
        Ok(off)
    }

    async fn read_small(&self, path: &str) -> Result<Vec<u8>> {
        let (off, len) = self.entry(path)?;
        if len > 64 << 20 {
            return Err(self.err(format!("{path} is too large for metadata ({len} bytes)")));
        }
        let file = self.file.clone();
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(file)?;
            f.seek(SeekFrom::Start(off))?;
            let mut buf = vec![0; len as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        })
        .await
        .map_err(|e| Error::Host(format!("import task: {e}")))?;
        read.map_err(|e| self.err(format!("reading {path}: {e}")))
    }

    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let b = self.read_small(&self.blob_path(digest)).await?;
        if sha256_digest(&b) != digest {
            return Err(self.err(format!("blob {digest} does not match its digest")));
        }
        Ok(b)
    }

    /// Digest, size and gzip-ness of an entry (docker archives name layers
    /// by path; containerd needs digests).
    async fn hash_entry(&self, path: &str) -> Result<(String, u64, bool)> {
        let (off, len) = self.entry(path)?;
        let file = self.file.clone();
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64, bool)> {
            let mut f = std::fs::File::open(file)?;
            f.seek(SeekFrom::Start(off))?;
            let mut r = f.take(len);
            let mut h = Sha256::new();
            let mut buf = vec![0; 1 << 20];
            let mut first = true;
            let mut gz = false;
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if first {
                    gz = n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b;
                    first = false;
                }
                h.update(&buf[..n]);
            }
            Ok((format!("sha256:{}", hex::encode(h.finalize())), len, gz))
        })
        .await
        .map_err(|e| Error::Host(format!("import task: {e}")))?;
        r.map_err(|e| self.err(format!("reading {path}: {e}")))
    }

    async fn stream(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f =
            tokio::fs::File::open(&self.file).await.map_err(Error::io(format!("opening {}", self.file.display())))?;
        f.seek(SeekFrom::Start(offset)).await.map_err(Error::io("seeking in the archive"))?;
        let reader = f.take(len);
        let s = futures::stream::unfold(reader, |mut r| async move {
            let mut buf = vec![0u8; 1 << 20];
            match r.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), r))
                }
                Err(e) => Some((Err(e), r)),
            }
        });
        Ok(s.boxed())
    }
}

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
