//! Importing an image archive (OCI layout or `docker save`): plan what to
//! write from the archive's index or manifest, write the blobs under a
//! lease, create the image record and unpack it.

use super::*;

impl ImageStore {
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

    pub(super) async fn import_inner(
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

    pub(super) async fn plan_oci(&self, archive: &Archive, override_name: Option<&str>) -> Result<Vec<ImportPlan>> {
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

    pub(super) async fn plan_from_manifest(
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
    pub(super) async fn plan_docker(&self, archive: &Archive, override_name: Option<&str>) -> Result<Vec<ImportPlan>> {
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

pub(super) struct ImportPlan {
    name: String,
    manifest_digest: String,
    manifest_size: i64,
    manifest_media_type: String,
    manifest: Manifest,
    config: ConfigFile,
    blobs: Vec<PlannedBlob>,
}

pub(super) struct PlannedBlob {
    digest: String,
    size: i64,
    labels: HashMap<String, String>,
    source: BlobSource,
}

pub(super) enum BlobSource {
    Archive { offset: u64 },
    Memory(Vec<u8>),
}
