//! Service logs: stdout and stderr of a container arrive through two FIFOs
//! that the agent drains into size-rotated segment files.
//!
//! Why FIFOs and not files written by the shim: a file the shim holds open
//! cannot be rotated without losing or duplicating bytes (copytruncate), and
//! the runc shim of containerd 1.6 crashes when given a `file://` stdout
//! alone. With FIFOs the agent owns the file and rotates it between writes.
//!
//! Segments are named after the logical offset of their first byte
//! (`00000000000000004096.log`), so an offset stays meaningful across
//! rotations: readers ask for "from byte N", and get the oldest byte still
//! kept if N was rotated away.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

/// Rotation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment is closed once it would grow past this many bytes.
    pub max_segment_bytes: u64,
    /// Segments kept, the live one included; older ones are deleted.
    pub keep_segments: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { max_segment_bytes: 10 << 20, keep_segments: 5 }
    }
}

/// A piece of a log read from an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Logical offset of `data[0]`; larger than asked for when older bytes
    /// were rotated away.
    pub offset: u64,
    pub data: Vec<u8>,
    /// Offset to ask for next.
    pub next: u64,
}

/// Progress of a live log: bytes written so far, and whether the writer
/// has finished (the container exited and its pipes are drained).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogProgress {
    pub written: u64,
    pub closed: bool,
}

fn segment_name(start: u64) -> String {
    format!("{start:020}.log")
}

/// Segments of a log dir as (start offset, path), oldest first.
pub(crate) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::Io { what: format!("listing {}", dir.display()), source: e }),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(start) = name.strip_suffix(".log").and_then(|s| s.parse::<u64>().ok()) {
            out.push((start, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads up to `max` bytes from logical offset `from`.
pub fn read_from(dir: &Path, from: u64, max: usize) -> Result<LogChunk> {
    use std::io::{Read, Seek, SeekFrom};
    let segs = segments(dir)?;
    let mut data = Vec::new();
    let mut start_offset = None;
    let mut pos = from;
    for (i, (start, path)) in segs.iter().enumerate() {
        let end = segs.get(i + 1).map(|s| s.0);
        if end.is_some_and(|e| e <= pos) {
            continue;
        }
        // Bytes before the oldest kept segment are gone: start at it.
        if pos < *start {
            pos = *start;
        }
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            // Rotated away between listing and opening.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Io { what: format!("opening {}", path.display()), source: e }),
        };
        f.seek(SeekFrom::Start(pos - start)).map_err(Error::io("seeking in a log"))?;
        let want = max - data.len();
        let mut buf = Vec::with_capacity(want.min(1 << 20));
        f.take(want as u64).read_to_end(&mut buf).map_err(Error::io("reading a log"))?;
        if start_offset.is_none() {
            start_offset = Some(pos);
        }
        pos += buf.len() as u64;
        data.extend_from_slice(&buf);
        if data.len() >= max {
            break;
        }
    }
    let offset = start_offset.unwrap_or(pos);
    Ok(LogChunk { offset, next: offset + data.len() as u64, data })
}

/// Appends to the live segment, rotating by size.
struct Writer {
    dir: PathBuf,
    cfg: LogConfig,
    file: tokio::fs::File,
    seg_start: u64,
    seg_len: u64,
    progress: watch::Sender<LogProgress>,
}

impl Writer {
    async fn open(dir: &Path, cfg: LogConfig, progress: watch::Sender<LogProgress>) -> Result<Writer> {
        tokio::fs::create_dir_all(dir).await.map_err(Error::io(format!("creating {}", dir.display())))?;
        let segs = segments(dir)?;
        let (seg_start, path) = match segs.last() {
            Some((s, p)) => (*s, p.clone()),
            None => (0, dir.join(segment_name(0))),
        };
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(Error::io(format!("opening {}", path.display())))?;
        let seg_len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        progress.send_replace(LogProgress { written: seg_start + seg_len, closed: false });
        Ok(Writer { dir: dir.to_path_buf(), cfg, file, seg_start, seg_len, progress })
    }

    async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        let max = self.cfg.max_segment_bytes.max(1);
        while !data.is_empty() {
            if self.seg_len >= max {
                self.rotate().await?;
            }
            let room = (max - self.seg_len) as usize;
            // Cut at the last line end that fits, so segments hold whole
            // lines whenever lines are shorter than a segment.
            let n = if data.len() <= room {
                data.len()
            } else {
                match data[..room].iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if self.seg_len > 0 => {
                        self.rotate().await?;
                        continue;
                    }
                    None => room,
                }
            };
            self.file.write_all(&data[..n]).await.map_err(Error::io("writing a log"))?;
            self.seg_len += n as u64;
            data = &data[n..];
            if !data.is_empty() {
                self.rotate().await?;
            }
        }
        // tokio's File writes in the background: flush so that what the
        // progress announces is readable from the file.
        self.file.flush().await.map_err(Error::io("flushing a log"))?;
        let written = self.seg_start + self.seg_len;
        self.progress.send_modify(|p| p.written = written);
        Ok(())
    }

    async fn rotate(&mut self) -> Result<()> {
        self.file.flush().await.map_err(Error::io("flushing a log"))?;
        self.seg_start += self.seg_len;
        self.seg_len = 0;
        let path = self.dir.join(segment_name(self.seg_start));
        self.file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(Error::io(format!("opening {}", path.display())))?;
        let segs = segments(&self.dir)?;
        let keep = self.cfg.keep_segments.max(1);
        if segs.len() > keep {
            for (_, p) in &segs[..segs.len() - keep] {
                let _ = tokio::fs::remove_file(p).await;
            }
        }
        Ok(())
    }
}

/// The FIFO paths of a service (created here, given to Tasks.Create).
pub(crate) struct Fifos {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

pub(crate) fn make_fifos(run_dir: &Path) -> Result<Fifos> {
    std::fs::create_dir_all(run_dir).map_err(Error::io(format!("creating {}", run_dir.display())))?;
    let f = Fifos { stdout: run_dir.join("stdout"), stderr: run_dir.join("stderr") };
    for p in [&f.stdout, &f.stderr] {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL");
        // SAFETY: mkfifo reads a valid NUL-terminated path.
        let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(Error::Io { what: format!("mkfifo {}", p.display()), source: e });
            }
        }
    }
    Ok(f)
}

/// A running log pump: drains both FIFOs into the log until told the
/// container is gone, then drains what is left and closes.
pub(crate) struct LogPump {
    finish: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl LogPump {
    /// Opens the FIFOs read-write: the open never blocks waiting for the
    /// shim, and the pipe never reports EOF while the agent holds it, which
    /// also lets a restarted agent reopen the FIFOs of running containers.
    pub(crate) async fn start(
        fifos: &Fifos,
        dir: &Path,
        cfg: LogConfig,
        progress: watch::Sender<LogProgress>,
    ) -> Result<LogPump> {
        let open = |p: &Path| {
            pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(p)
                .map_err(Error::io(format!("opening {}", p.display())))
        };
        let out = open(&fifos.stdout)?;
        let err = open(&fifos.stderr)?;
        let mut writer = Writer::open(dir, cfg, progress).await?;
        let (finish, mut finished) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut bo = vec![0u8; 64 << 10];
            let mut be = vec![0u8; 64 << 10];
            loop {
                tokio::select! {
                    r = out.readable() => if r.is_ok() { drain(&out, &mut bo, &mut writer).await },
                    r = err.readable() => if r.is_ok() { drain(&err, &mut be, &mut writer).await },
                    _ = &mut finished => break,
                }
            }
            // The task is deleted: the shim has copied everything into the
            // pipes, so what is buffered there is the rest of the output.
            drain(&out, &mut bo, &mut writer).await;
            drain(&err, &mut be, &mut writer).await;
            let _ = writer.file.flush().await;
            writer.progress.send_modify(|p| p.closed = true);
        });
        Ok(LogPump { finish, task })
    }

    /// Stops reading without draining: the pipes keep the data (the shim
    /// holds them open) for the next agent to read.
    pub(crate) fn abandon(self) {
        self.task.abort();
    }

    /// Drains what is left and waits for the pump to end.
    pub(crate) async fn finish(self) {
        let _ = self.finish.send(());
        let _ = self.task.await;
    }
}

async fn drain(rx: &pipe::Receiver, buf: &mut [u8], w: &mut Writer) {
    loop {
        match rx.try_read(buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = w.write(&buf[..n]).await {
                    tracing::warn!(error = %e, "log write failed; dropping output");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "log pipe read failed");
                return;
            }
        }
    }
}

/// Follows a log from an offset: yields chunks as they are written, ends
/// once the writer is closed and everything was read.
pub(crate) fn follow(
    dir: PathBuf,
    from: u64,
    progress: Option<watch::Receiver<LogProgress>>,
) -> futures::stream::BoxStream<'static, Result<LogChunk>> {
    use futures::StreamExt;
    struct St {
        dir: Arc<PathBuf>,
        pos: u64,
        progress: Option<watch::Receiver<LogProgress>>,
        done: bool,
    }
    let st = St { dir: Arc::new(dir), pos: from, progress, done: false };
    futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            // Read the closed flag before reading data so that the last
            // bytes cannot slip between "no data" and "closed".
            let closed = st.progress.as_ref().is_none_or(|p| p.borrow().closed);
            let dir = st.dir.clone();
            let pos = st.pos;
            let chunk = tokio::task::spawn_blocking(move || read_from(&dir, pos, 1 << 20)).await;
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => Err(Error::Host(format!("log reader: {e}"))),
            };
            match chunk {
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                Ok(c) if !c.data.is_empty() => {
                    st.pos = c.next;
                    return Some((Ok(c), st));
                }
                Ok(_) if closed => return None,
                Ok(_) => {
                    let p = st.progress.as_mut().expect("not closed implies a writer");
                    let pos = st.pos;
                    // Wake on new bytes or on close; a dropped writer ends it.
                    if p.wait_for(|v| v.written > pos || v.closed).await.is_err() {
                        st.progress = None;
                    }
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rotation_keeps_offsets() {
        let d = tempfile::tempdir().unwrap();
        let (tx, _rx) = watch::channel(LogProgress::default());
        let mut w = Writer::open(d.path(), LogConfig { max_segment_bytes: 10, keep_segments: 2 }, tx).await.unwrap();
        for i in 0..10u8 {
            w.write(&[b'a' + i; 4]).await.unwrap();
        }
        w.file.flush().await.unwrap();
        let segs = segments(d.path()).unwrap();
        assert_eq!(segs.len(), 2);
        // 40 bytes written in segments of at most 10; 2 segments kept.
        w.write(b"0123456789abcdefghijklmnopqrstuvwxyz").await.unwrap();
        let c = read_from(d.path(), 0, 1000).unwrap();
        assert_eq!(c.next, 76);
        assert_eq!(c.offset, 60);
        assert_eq!(c.data, b"klmnopqrstuvwxyz");
        let c = read_from(d.path(), 74, 1000).unwrap();
        assert_eq!(c.data, b"yz");
    }
}
