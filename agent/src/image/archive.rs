//! A tar archive indexed by entry path, read in place.

use super::*;

/// A tar archive indexed by entry path: blobs are streamed from their
/// offsets, never loaded whole (layers can be gigabytes).
#[derive(Clone)]
pub(super) struct Archive {
    display: PathBuf,
    file: PathBuf,
    /// Set when `file` is a decompressed temp copy to delete afterwards.
    temp: bool,
    entries: Arc<HashMap<String, (u64, u64)>>,
    /// Digest → entry path, for archives that do not store blobs by digest.
    by_digest: Arc<HashMap<String, String>>,
}

pub(super) fn norm(path: &str) -> String {
    path.trim_start_matches("./").trim_start_matches('/').to_string()
}

impl Archive {
    pub(super) async fn open(path: &Path, tmp_dir: &Path) -> Result<Archive> {
        let path = path.to_path_buf();
        let tmp_dir = tmp_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Archive::open_blocking(&path, &tmp_dir))
            .await
            .map_err(|e| Error::Host(format!("import task: {e}")))?
    }

    pub(super) fn open_blocking(path: &Path, tmp_dir: &Path) -> Result<Archive> {
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

    pub(super) fn cleanup(&self) {
        if self.temp {
            let _ = std::fs::remove_file(&self.file);
        }
    }

    pub(super) fn with_paths(&self, by_digest: HashMap<String, String>) -> Archive {
        Archive { by_digest: Arc::new(by_digest), ..self.clone() }
    }

    pub(super) fn err(&self, reason: impl Into<String>) -> Error {
        Error::Archive { path: self.display.clone(), reason: reason.into() }
    }

    pub(super) fn has(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    pub(super) fn blob_path(&self, digest: &str) -> String {
        if let Some(p) = self.by_digest.get(digest) {
            return norm(p);
        }
        let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        format!("blobs/{alg}/{hex}")
    }

    pub(super) fn entry(&self, path: &str) -> Result<(u64, u64)> {
        self.entries.get(&norm(path)).copied().ok_or_else(|| self.err(format!("{path} is missing")))
    }

    pub(super) fn blob_offset(&self, digest: &str, size: i64) -> Result<u64> {
        let (off, len) = self.entry(&self.blob_path(digest))?;
        if len != size as u64 {
            return Err(self.err(format!("blob {digest} has {len} bytes, its descriptor says {size}")));
        }
        Ok(off)
    }

    pub(super) async fn read_small(&self, path: &str) -> Result<Vec<u8>> {
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

    pub(super) async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let b = self.read_small(&self.blob_path(digest)).await?;
        if sha256_digest(&b) != digest {
            return Err(self.err(format!("blob {digest} does not match its digest")));
        }
        Ok(b)
    }

    /// Digest, size and gzip-ness of an entry (docker archives name layers
    /// by path; containerd needs digests).
    pub(super) async fn hash_entry(&self, path: &str) -> Result<(String, u64, bool)> {
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

    pub(super) async fn stream(
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
