//! Registry pulls with oci-client, written straight into containerd's
//! content store (no temp files), then unpacked like an import.

use crate::error::{Error, Result};
use crate::image::{
    ConfigFile, Descriptor, ImageInfo, ImageStore, Index, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST, Manifest, Phase, Progress, ProgressFn, canonical_name, manifest_gc_labels, pick_platform,
    sha256_digest,
};
use futures::TryStreamExt;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use std::collections::HashMap;
use std::time::Duration;

/// Credentials and transport per registry host (`host[:port]`).
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registries spoken to over plain HTTP (local registries only).
    pub insecure: Vec<String>,
    /// Basic credentials; the client trades them for a bearer token when the
    /// registry asks for one.
    pub credentials: HashMap<String, (String, String)>,
}

const ACCEPTED: &[&str] = &[MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST];

impl ImageStore {
    fn registry_client(&self) -> oci_client::Client {
        // reqwest is built without a bundled crypto provider so that rustls
        // stays ring-only across the workspace; install ring for the process
        // (an Err means a provider is already installed, which is fine).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(self.registry.insecure.clone()),
            // The agent picks the platform manifest itself.
            platform_resolver: None,
            ..Default::default()
        };
        oci_client::Client::new(config)
    }

    fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self.registry.credentials.get(registry) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Pulls an image from its registry. Digests are verified twice: by
    /// oci-client while streaming and by containerd at commit.
    pub async fn pull(&self, reference: &str, progress: Option<ProgressFn>) -> Result<ImageInfo> {
        let name = canonical_name(reference)?;
        let reg_err = |reason: String| Error::Registry { reference: name.clone(), reason };
        let r: Reference = name
            .parse()
            .map_err(|e| Error::BadReference { reference: reference.to_string(), reason: format!("{e}") })?;
        let client = self.registry_client();
        let auth = self.auth_for(r.registry());
        let (raw, digest) =
            client.pull_manifest_raw(&r, &auth, ACCEPTED).await.map_err(|e| reg_err(format!("manifest: {e}")))?;
        if sha256_digest(&raw) != digest {
            return Err(reg_err(format!("manifest does not match its digest {digest}")));
        }
        if let Some(want) = r.digest()
            && want != digest
        {
            return Err(reg_err(format!("registry sent manifest {digest}, the reference pins {want}")));
        }
        let top: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| reg_err(format!("manifest: {e}")))?;
        let media = top.get("mediaType").and_then(|m| m.as_str()).unwrap_or(MEDIA_OCI_MANIFEST).to_string();
        let (raw, desc) = if media == MEDIA_OCI_INDEX || media == MEDIA_DOCKER_LIST || top.get("manifests").is_some() {
            let idx: Index = serde_json::from_value(top).map_err(|e| reg_err(format!("index: {e}")))?;
            let m = pick_platform(&idx.manifests)
                .cloned()
                .ok_or_else(|| reg_err("no manifest for this platform".into()))?;
            let by_digest =
                Reference::with_digest(r.registry().to_string(), r.repository().to_string(), m.digest.clone());
            let (raw, d) = client
                .pull_manifest_raw(&by_digest, &auth, ACCEPTED)
                .await
                .map_err(|e| reg_err(format!("manifest: {e}")))?;
            if d != m.digest || sha256_digest(&raw) != m.digest {
                return Err(reg_err(format!("platform manifest does not match its digest {}", m.digest)));
            }
            (raw, m)
        } else {
            let desc = Descriptor {
                media_type: media,
                digest: digest.clone(),
                size: raw.len() as i64,
                annotations: HashMap::new(),
                platform: None,
            };
            (raw, desc)
        };
        let manifest: Manifest = serde_json::from_slice(&raw).map_err(|e| reg_err(format!("manifest: {e}")))?;

        let lease = self.ctd.lease("pull", Duration::from_secs(3600)).await?;
        let result = self.pull_blobs(&client, &r, &lease, &name, &raw, &desc, &manifest, progress).await;
        self.ctd.end_lease(&lease).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn pull_blobs(
        &self,
        client: &oci_client::Client,
        r: &Reference,
        lease: &str,
        name: &str,
        raw: &[u8],
        desc: &Descriptor,
        manifest: &Manifest,
        progress: Option<ProgressFn>,
    ) -> Result<ImageInfo> {
        let reg_err = |reason: String| Error::Registry { reference: name.to_string(), reason };
        let mut blobs: Vec<&Descriptor> = manifest.layers.iter().collect();
        blobs.push(&manifest.config);
        let total: u64 = blobs.iter().map(|b| b.size as u64).sum();
        let mut done_before = 0u64;
        for b in &blobs {
            if self.ctd.has_content(&b.digest).await? {
                self.ctd.lease_content(lease, &b.digest).await?;
            } else {
                let od = oci_client::manifest::OciDescriptor {
                    media_type: b.media_type.clone(),
                    digest: b.digest.clone(),
                    size: b.size,
                    ..Default::default()
                };
                let stream =
                    client.pull_blob_stream(r, &od).await.map_err(|e| reg_err(format!("blob {}: {e}", b.digest)))?;
                let stream = stream.map_err(std::io::Error::other);
                let p = progress.clone();
                let image = name.to_string();
                let base = done_before;
                let report = move |done: u64| {
                    if let Some(p) = &p {
                        p(&Progress { image: image.clone(), phase: Phase::Fetching, done: base + done, total });
                    }
                };
                self.ctd.write_content(lease, &b.digest, b.size, HashMap::new(), Box::pin(stream), report).await?;
            }
            done_before += b.size as u64;
        }
        let config_raw = self.ctd.read_content(&manifest.config.digest).await?;
        let config: ConfigFile = serde_json::from_slice(&config_raw).map_err(|e| reg_err(format!("config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(reg_err("config and manifest disagree on the number of layers".into()));
        }
        let raw_stream = futures::stream::iter(vec![Ok(bytes::Bytes::copy_from_slice(raw))]);
        self.ctd
            .write_content(lease, &desc.digest, raw.len() as i64, manifest_gc_labels(manifest), raw_stream, |_| {})
            .await?;
        let target = containerd_client::types::Descriptor {
            media_type: manifest.media_type.clone().unwrap_or_else(|| desc.media_type.clone()),
            digest: desc.digest.clone(),
            size: raw.len() as i64,
            annotations: HashMap::new(),
        };
        self.set_image(lease, name, target).await?;
        let p = progress.as_ref().map(|p| (p, manifest.layers.len() as u64));
        self.unpack(lease, name, manifest, &config, p).await?;
        if let Some(p) = &progress {
            p(&Progress { image: name.to_string(), phase: Phase::Done, done: total, total });
        }
        tracing::info!(image = name, digest = %desc.digest, bytes = total, "pulled");
        Ok(ImageInfo { name: name.to_string(), digest: desc.digest.clone(), size: total + raw.len() as u64 })
    }
}
