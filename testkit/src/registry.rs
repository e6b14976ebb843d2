//! A local registry: Debian's `docker-registry` (the CNCF distribution
//! server) on 127.0.0.1 with a random free port and a temp storage dir.
//!
//! Pushing uses the registry HTTP API directly over a plain TCP socket: a
//! test fixture needs only the few requests of a monolithic upload.

use crate::image::{BusyboxImage, MEDIA_OCI_MANIFEST};
use crate::{FixtureError, io_err};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits until `/v2/` answers.
    pub fn start() -> Result<Registry, FixtureError> {
        let mut last_err = String::new();
        // The free port is found by binding :0 and closing; another process
        // may grab it in between, so a failed start is retried on a new one.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(io_err("finding a free port"))?
                .port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let dir = tempfile::Builder::new().prefix("zoe-registry-").tempdir().map_err(io_err("temp dir"))?;
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                    dir.path().join("data").display()
                ),
            )
            .map_err(io_err("writing the registry config"))?;
            let log = std::fs::File::create(dir.path().join("registry.log")).map_err(io_err("registry log"))?;
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(io_err("starting docker-registry (apt-get install docker-registry)"))?;
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!(
                        "docker-registry exited with {status}: {}",
                        std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
                    );
                    break;
                }
                if let Ok((200, _, _)) = request(addr, "GET", "/v2/", &[], &[]) {
                    return Ok(Registry { addr, child, _dir: dir });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "docker-registry did not answer on /v2/ within 15 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(FixtureError::Setup(last_err))
    }

    /// `127.0.0.1:PORT`, the registry part of references into it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Pushes `image` as `repo:tag` (monolithic blob uploads, then the
    /// manifest) and returns the full reference.
    pub fn push(&self, image: &BusyboxImage, repo: &str, tag: &str) -> Result<String, FixtureError> {
        for blob in [&image.layer_gz, &image.config] {
            self.push_blob(repo, blob)?;
        }
        let (status, _, body) = request(
            self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", MEDIA_OCI_MANIFEST)],
            &image.manifest,
        )?;
        if status != 201 {
            return Err(FixtureError::Setup(format!(
                "manifest push: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(format!("{}/{repo}:{tag}", self.host()))
    }

    fn push_blob(&self, repo: &str, blob: &[u8]) -> Result<(), FixtureError> {
        let digest = crate::image::sha256_digest(blob);
        let (status, headers, body) = request(self.addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])?;
        if status != 202 {
            return Err(FixtureError::Setup(format!(
                "upload start: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let location = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| FixtureError::Setup("upload start: no Location header".into()))?;
        // Location may be absolute (http://host/...) or a path.
        let path = match location.find("/v2/") {
            Some(i) => location[i..].to_string(),
            None => location,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, _, body) = request(
            self.addr,
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            blob,
        )?;
        if status != 201 {
            return Err(FixtureError::Setup(format!("blob upload: HTTP {status}: {}", String::from_utf8_lossy(&body))));
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.1 request with `Connection: close`; enough for a test fixture.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, FixtureError> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io_err(format!("connecting to {addr}")))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).and_then(|_| s.write_all(body)).map_err(io_err("sending a request"))?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(io_err("reading a response"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| FixtureError::Setup(format!("bad HTTP status line {line:?}")))?;
    let mut hdrs = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).map_err(io_err("reading headers"))?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            hdrs.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    r.read_to_end(&mut body).map_err(io_err("reading a body"))?;
    Ok((status, hdrs, body))
}
