//! `zoe image`: pull an image on nodes ahead of use, load an image archive
//! onto nodes through the API (for clusters without a registry), and build
//! the sample busybox archive.

use super::http::{Conn, connect};
use super::output;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use futures::StreamExt;
use reqwest::Method;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use zoe_common::resources::human_bytes;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Pull an image from its registry on nodes (all connected nodes unless
    /// --node is given) before executions need it, with progress.
    Preload {
        /// The image reference, e.g. `registry.example:5000/spark:3.5`.
        image: String,
        /// A node to pull it on (repeatable).
        #[arg(long = "node", value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Load an OCI image layout or `docker save` tarball onto nodes (all
    /// connected nodes unless --node is given), streamed through the API.
    Load {
        /// The archive (e.g. from `docker save`, `ctr export`, `skopeo copy ... oci-archive:`).
        archive: PathBuf,
        /// A node to load it on (repeatable).
        #[arg(long = "node", value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Write the sample image (busybox from the host's busybox-static) as an
    /// OCI archive, for trying zoe without a registry.
    #[command(hide = true)]
    BuildSample {
        /// Where to write the archive.
        #[arg(long)]
        out: PathBuf,
        /// The reference it carries.
        #[arg(long, default_value = zoe_oci::DEFAULT_REFERENCE)]
        reference: String,
    },
}

pub async fn run(conn: &Conn, cmd: ImageCmd) -> Result<()> {
    match cmd {
        ImageCmd::BuildSample { out, reference } => {
            let image = zoe_oci::BusyboxImage::build_named(&reference)?;
            image.write_oci_archive(&out)?;
            eprintln!("wrote {} ({reference}, {})", out.display(), human_bytes(image.oci_archive().len() as u64));
            Ok(())
        }
        ImageCmd::Load { archive, nodes } => load(conn, archive, nodes).await,
        ImageCmd::Preload { image, nodes } => preload(conn, image, nodes).await,
    }
}

/// Streams the API's progress lines: one status line per change on stderr,
/// each node's outcome on stdout (or every line with `--json`).
async fn preload(conn: &Conn, image: String, nodes: Vec<String>) -> Result<()> {
    let c = connect(conn)?;
    let body = serde_json::json!({ "image": image, "nodes": nodes });
    let resp = c.send(c.request(Method::POST, "/api/v1/images/preload").json(&body)).await?;
    let mut bytes = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let (mut failed, mut done) = (0, 0);
    let mut on_line = |line: &[u8]| -> Result<()> {
        let v: serde_json::Value = serde_json::from_slice(line).context("progress line")?;
        if conn.json {
            output::json(&v);
        }
        let node = v["node"].as_str().unwrap_or("?");
        match (v["done"].as_bool(), v["error"].as_str()) {
            (_, Some(e)) => {
                failed += 1;
                eprintln!("{node}: {e}");
            }
            (Some(true), None) => {
                done += 1;
                if !conn.json {
                    println!("{node}: pulled {image}");
                }
            }
            _ if !conn.json => eprintln!("{node}: {}", v["message"].as_str().unwrap_or("")),
            _ => {}
        }
        Ok(())
    };
    while let Some(chunk) = bytes.next().await {
        pending.extend_from_slice(&chunk.context("progress stream")?);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            if line.len() > 1 {
                on_line(&line[..line.len() - 1])?;
            }
        }
    }
    if !pending.is_empty() {
        on_line(&pending)?;
    }
    if failed > 0 {
        bail!("{failed} node(s) did not pull {image}");
    }
    if done == 0 {
        bail!("no node pulled {image}: the progress stream ended early");
    }
    Ok(())
}

async fn load(conn: &Conn, archive: PathBuf, nodes: Vec<String>) -> Result<()> {
    let c = connect(conn)?;
    // The API refuses an unknown node before reading the body; asking first
    // gives that answer instead of a connection cut in mid-upload.
    for n in &nodes {
        c.get(&format!("/api/v1/nodes/{}", super::q(n))).await?;
    }
    let file = tokio::fs::File::open(&archive).await.with_context(|| format!("{}", archive.display()))?;
    let total = file.metadata().await?.len();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let stream = file_stream(file).map(move |chunk| {
        if let Ok(b) = &chunk {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    let path = if nodes.is_empty() {
        "/api/v1/images/load".to_string()
    } else {
        format!("/api/v1/images/load{}", super::query(&[("nodes", Some(nodes.join(",")))]))
    };
    let req = c
        .request(Method::POST, &path)
        .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
        .header(reqwest::header::CONTENT_LENGTH, total)
        .body(reqwest::Body::wrap_stream(stream));
    let show = !conn.json;
    let last = sent.clone();
    let bar = tokio::spawn(async move {
        loop {
            let done = sent.load(Ordering::Relaxed);
            if show {
                progress_bar(done, total);
            }
            if done >= total {
                if show {
                    eprintln!("\nimporting on the nodes...");
                }
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let resp = c.send(req).await;
    bar.abort();
    // A small archive can be sent and answered between two ticks: the bar
    // still ends on what was really sent.
    if bar.await.is_err() && show {
        progress_bar(last.load(Ordering::Relaxed), total);
        eprintln!();
    }
    let v: serde_json::Value = resp?.json().await?;
    if conn.json {
        output::json(&v);
    }
    let mut failed = 0;
    for n in v["nodes"].as_array().cloned().unwrap_or_default() {
        let node = n["node"].as_str().unwrap_or("?");
        match n["error"].as_str() {
            None => {
                if !conn.json {
                    println!("{node}: loaded {}", archive.display());
                }
            }
            Some(e) => {
                failed += 1;
                eprintln!("{node}: {e}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} node(s) did not load the image");
    }
    Ok(())
}

/// The file as a stream of 256 KiB pieces (no extra dependency for a
/// reader-to-stream adapter).
fn file_stream(file: tokio::fs::File) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures::stream::unfold(Some(file), |f| async move {
        use tokio::io::AsyncReadExt;
        let mut f = f?;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

fn progress_bar(done: u64, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { '.' }).collect();
    eprint!("\rsending [{bar}] {:>3}%  {} / {}", pct, human_bytes(done), human_bytes(total));
    let _ = std::io::stderr().flush();
}
