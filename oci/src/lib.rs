//! A busybox image built from the host's busybox-static binary, as an OCI
//! image layout tarball or a `docker save` tarball. `zoe image build-sample`
//! (the demo's image, for machines without a registry) and the tests'
//! fixtures both use it.
//!
//! Everything is deterministic (fixed mtimes, owners, ordering, gzip header)
//! so the digests are the same on every run and every machine with the same
//! busybox binary.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Errors of building or writing an image.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OciError {
    let what = what.into();
    move |source| OciError::Io { what, source }
}

/// Reference the sample image carries unless told otherwise.
pub const DEFAULT_REFERENCE: &str = "zoe.local/busybox:1";

/// Where the static busybox lives on Debian (package busybox-static).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Applets linked into /bin: what tests and benchmarks use.
pub const APPLETS: &[&str] = &[
    "sh", "ash", "echo", "cat", "ls", "sleep", "httpd", "nc", "wget", "true", "false", "id", "env", "pwd", "dd",
    "tail", "head", "touch", "mkdir", "rm", "seq", "yes", "printf", "test", "[", "kill", "ps", "grep", "wc",
    "hostname", "whoami", "date", "uname", "cut", "sed", "awk", "stat", "df", "mount", "timeout", "tee", "cp", "mv",
    "chmod",
];

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The image's pieces, in the form a registry or an archive wants them.
#[derive(Debug, Clone)]
pub struct BusyboxImage {
    pub reference: String,
    /// Uncompressed layer tar.
    pub layer_tar: Vec<u8>,
    /// The same layer gzip-compressed (what the OCI layout and registry carry).
    pub layer_gz: Vec<u8>,
    /// `sha256:…` of the uncompressed layer (the config's diff id).
    pub diff_id: String,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

pub fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).expect("valid tar path");
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

fn append_dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let h = header(path, tar::EntryType::Directory, mode, 0);
    b.append(&h, std::io::empty()).expect("tar dir");
}

fn append_file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let h = header(path, tar::EntryType::Regular, mode, data.len() as u64);
    b.append(&h, data).expect("tar file");
}

fn append_symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(path, tar::EntryType::Symlink, 0o777, 0);
    h.set_link_name(target).expect("link name");
    h.set_cksum();
    b.append(&h, std::io::empty()).expect("tar symlink");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // GzBuilder writes mtime 0 and no file name: a stable header.
    let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

impl BusyboxImage {
    /// Builds the image from `/bin/busybox` with the default reference.
    pub fn build() -> Result<BusyboxImage, OciError> {
        Self::build_named(DEFAULT_REFERENCE)
    }

    pub fn build_named(reference: &str) -> Result<BusyboxImage, OciError> {
        Self::build_with(reference, &[])
    }

    /// The busybox image with more executables, each `(path, bytes)`
    /// (mode 0755), e.g. a static test server.
    pub fn build_with(reference: &str, extra: &[(&str, &[u8])]) -> Result<BusyboxImage, OciError> {
        let busybox = std::fs::read(HOST_BUSYBOX)
            .map_err(io_err(format!("reading {HOST_BUSYBOX} (apt-get install busybox-static)")))?;
        let mut b = tar::Builder::new(Vec::new());
        for d in ["bin/", "etc/", "home/", "home/user/", "root/", "tmp/", "var/", "usr/", "usr/bin/"] {
            append_dir(&mut b, d, if d == "tmp/" { 0o1777 } else { 0o755 });
        }
        append_file(&mut b, "bin/busybox", 0o755, &busybox);
        for (path, data) in extra {
            append_file(&mut b, path.trim_start_matches('/'), 0o755, data);
        }
        for a in APPLETS {
            append_symlink(&mut b, &format!("bin/{a}"), "busybox");
        }
        append_file(
            &mut b,
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        );
        append_file(&mut b, "etc/group", 0o644, b"root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n");
        let layer_tar = b.into_inner().expect("tar in memory");
        let layer_gz = gzip(&layer_tar);
        let diff_id = sha256_digest(&layer_tar);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["sh"],
                "WorkingDir": "/"
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "zoe-testkit: busybox-static" }]
        }))
        .expect("json");
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": { "mediaType": MEDIA_OCI_CONFIG, "digest": sha256_digest(&config), "size": config.len() },
            "layers": [{ "mediaType": MEDIA_OCI_LAYER_GZIP, "digest": sha256_digest(&layer_gz), "size": layer_gz.len() }]
        }))
        .expect("json");
        Ok(BusyboxImage { reference: reference.to_string(), layer_tar, layer_gz, diff_id, config, manifest })
    }

    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config)
    }

    pub fn layer_digest(&self) -> String {
        sha256_digest(&self.layer_gz)
    }

    /// The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) as
    /// a tarball, the format `ctr export` and `docker save` (25+) write.
    pub fn oci_archive(&self) -> Vec<u8> {
        let tag = self.reference.rsplit_once(':').map(|(_, t)| t).filter(|t| !t.contains('/')).unwrap_or("latest");
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_INDEX,
            "manifests": [{
                "mediaType": MEDIA_OCI_MANIFEST,
                "digest": self.manifest_digest(),
                "size": self.manifest.len(),
                "annotations": {
                    "io.containerd.image.name": self.reference,
                    "org.opencontainers.image.ref.name": tag
                },
                "platform": { "architecture": "amd64", "os": "linux" }
            }]
        }))
        .expect("json");
        let mut b = tar::Builder::new(Vec::new());
        append_file(&mut b, "oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
        append_file(&mut b, "index.json", 0o644, &index);
        append_dir(&mut b, "blobs/", 0o755);
        append_dir(&mut b, "blobs/sha256/", 0o755);
        for blob in [&self.config, &self.layer_gz, &self.manifest] {
            append_file(&mut b, &format!("blobs/sha256/{}", hex_of(&sha256_digest(blob))), 0o644, blob);
        }
        b.into_inner().expect("tar in memory")
    }

    /// The classic `docker save` layout: `manifest.json`, `<id>.json`,
    /// `<layer id>/layer.tar` (uncompressed), `repositories`.
    pub fn docker_archive(&self) -> Vec<u8> {
        let config_name = format!("{}.json", hex_of(&self.config_digest()));
        let layer_id = hex_of(&self.diff_id).to_string();
        let layer_name = format!("{layer_id}/layer.tar");
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": config_name,
            "RepoTags": [self.reference],
            "Layers": [layer_name]
        }]))
        .expect("json");
        let (repo, tag) = self.reference.rsplit_once(':').unwrap_or((&self.reference, "latest"));
        let repositories = serde_json::to_vec(&serde_json::json!({ repo: { tag: layer_id } })).expect("json");
        let mut b = tar::Builder::new(Vec::new());
        append_file(&mut b, &config_name, 0o644, &self.config);
        append_dir(&mut b, &format!("{layer_id}/"), 0o755);
        append_file(&mut b, &format!("{layer_id}/VERSION"), 0o644, b"1.0");
        append_file(&mut b, &layer_name, 0o644, &self.layer_tar);
        append_file(&mut b, "manifest.json", 0o644, &manifest);
        append_file(&mut b, "repositories", 0o644, &repositories);
        b.into_inner().expect("tar in memory")
    }

    pub fn write_oci_archive(&self, path: &Path) -> Result<(), OciError> {
        std::fs::write(path, self.oci_archive()).map_err(io_err(format!("writing {}", path.display())))
    }

    pub fn write_docker_archive(&self, path: &Path) -> Result<(), OciError> {
        std::fs::write(path, self.docker_archive()).map_err(io_err(format!("writing {}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_deterministic() {
        let a = BusyboxImage::build().unwrap();
        let b = BusyboxImage::build().unwrap();
        assert_eq!(a.manifest_digest(), b.manifest_digest());
        assert_eq!(a.oci_archive(), b.oci_archive());
        assert_eq!(a.docker_archive(), b.docker_archive());
    }
}
