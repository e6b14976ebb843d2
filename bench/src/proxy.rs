//! `zoe-bench proxy`: the service proxy against going to the service
//! directly, side by side in the same run. One `zoe coordinator` with
//! `[api.proxy]`, one real `zoe agent` on the test containerd, one
//! execution of `zoe-echo` (the testkit's static HTTP server); the client
//! is this process, over keep-alive connections, on the same machine.
//!
//! - download: `--download-mb` MB streamed, `--downloads` times each way,
//!   interleaved; MB/s per transfer. Twice: first with every process free
//!   to use both CPUs (`*_shared_cpus`), then with the proxy on CPU 1 and
//!   the client and the service on CPU 0 (the headline figures). On one
//!   machine the shared run charges the proxy's kernel TCP work to the very
//!   CPUs the two ends need; a deployed proxy runs on a coordinator, not on
//!   the client's or the service's host, and the pinned run measures that:
//!   whether the hop through the proxy slows a transfer down;
//! - small requests: `--requests` sequential GETs of a ~200-byte page each
//!   way, interleaved in blocks of 100; latency per request.

use crate::common::{
    Api, Cluster, bootstrap_admin, cleanup_namespace, cpu_s, free_tcp_port, import_image, pct, round2, sorted,
    start_agent, zoe_bin,
};
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Size of one download, in MB.
    #[arg(long, default_value_t = 100)]
    download_mb: usize,
    /// Timed downloads each way.
    #[arg(long, default_value_t = 5)]
    downloads: usize,
    /// Timed small requests each way.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// The zoe binary.
    #[arg(long, env = "ZOE_BIN")]
    zoe: Option<PathBuf>,
}

const IMAGE: &str = "zoe.local/echo:1";

fn http() -> Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(120)).build()?)
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    let zoe = zoe_bin(args.zoe.clone())?;
    let socket = zoe_testkit::containerd().socket.clone();
    let ns = zoe_testkit::unique_namespace("bench-proxy");
    let proxy_port = free_tcp_port()?;
    let extra = format!("stop_grace_ms = 500\n\n[api.proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\n");
    let mut cluster = Cluster::new(1, zoe.clone(), "zoe-bench-proxy-", &extra)?;
    let dir = cluster.dir.clone();
    let image = zoe_testkit::echo::image(&dir, IMAGE).context("building the zoe-echo image")?;
    import_image(&socket, &ns, &dir, &image).await?;
    cluster.spawn_all()?;
    let r = bench(&args, &cluster, &zoe, &socket, &ns).await;
    if r.is_err() {
        cluster.dump_logs();
    }
    drop(cluster);
    cleanup_namespace(&socket, &ns, &dir).await;
    r
}

async fn bench(
    args: &Args,
    cluster: &Cluster,
    zoe: &std::path::Path,
    socket: &std::path::Path,
    ns: &str,
) -> Result<serde_json::Value> {
    let api = bootstrap_admin(cluster, &Api::new(&cluster.members[0].api)?, Duration::from_secs(60)).await?;
    let _agent = start_agent(cluster, zoe, socket, ns, &api).await?;
    let token = api.token.clone().context("an admin token")?;
    let app = json!({ "name": "echo", "version": 3, "will_end": false, "size": 1, "services": [{
        "name": "web", "image": IMAGE, "monitor": true, "essential_count": 1, "total_count": 1, "startup_order": 0,
        "resources": { "memory": {"min": 67108864, "max": null}, "cores": {"min": 0.5, "max": null} },
        "environment": [], "volumes": [], "command": "/bin/zoe-echo 8080",
        "ports": [{ "name": "web", "port_number": 8080, "protocol": "tcp", "url_template": "http://{ip_port}" }]
    }]});
    let id = api.submit("echo", &app).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (direct, proxied) = loop {
        let (eps, _) = api.get(&format!("/api/v1/executions/{id}/endpoints")).await?;
        let ep = &eps["endpoints"][0];
        if let (Some(d), Some(p)) = (ep["url"].as_str(), ep["proxy_url"].as_str())
            && eps["status"] == "running"
        {
            // The same path both ways: the service sees the proxy's prefix.
            let path = zoe_common::zapp::template::proxy_path(id, "web0", 8080);
            break (format!("{}{path}/", d.trim_end_matches('/')), p.to_string());
        }
        if Instant::now() > deadline {
            bail!("the echo service never ran: {eps}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let c = http()?;
    let get = |base: &str, what: &str| c.get(format!("{base}{what}")).bearer_auth(&token);
    // Up, both ways.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(get(&direct, "up").send().await.is_ok_and(|r| r.status().is_success())
        && get(&proxied, "up").send().await.is_ok_and(|r| r.status().is_success()))
    {
        if Instant::now() > deadline {
            bail!("zoe-echo does not answer at {direct} and {proxied}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("echo running: direct {direct}, proxied {proxied}");

    // A conventional reverse proxy on the same path, as a baseline.
    let nginx = Nginx::start(&cluster.dir, &direct)?;
    if nginx.is_none() {
        eprintln!("nginx not installed (apt-get install nginx-light): no baseline proxy");
    }
    let base = nginx.as_ref().map(|n| n.url.as_str());
    let shared = downloads(args, cluster, &get, &direct, &proxied, base).await?;
    let echo = echo_pid().context("finding the zoe-echo process")?;
    let coordinator = cluster.pid(0).context("the coordinator's pid")?;
    let mut placed = vec![(coordinator, 1), (echo, 0), (std::process::id(), 0)];
    // With `master_process off` nginx is one process.
    placed.extend(nginx.iter().map(|n| (n.child.id(), 1)));
    for &(pid, cpu) in &placed {
        pin(pid, cpu).with_context(|| format!("pinning process {pid} to CPU {cpu}"))?;
    }
    eprintln!(
        "pinned: the proxies (coordinator {coordinator}, nginx) to CPU 1, the client and zoe-echo ({echo}) to CPU 0"
    );
    let apart = downloads(args, cluster, &get, &direct, &proxied, base).await;
    for &(pid, _) in &placed {
        let _ = unpin(pid);
    }
    let apart = apart?;

    let (mut d_ms, mut p_ms) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < args.requests + 200 {
        for (base, out) in [(&direct, &mut d_ms), (&proxied, &mut p_ms)] {
            for k in 0..100 {
                let t = Instant::now();
                let r = get(base, "page").send().await?.error_for_status()?;
                r.bytes().await?;
                // 200 requests each way warm up first.
                if done + k >= 200 {
                    out.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        done += 100;
    }
    let (d_ms, p_ms) = (sorted(d_ms), sorted(p_ms));
    let (d50, p50) = (pct(&d_ms, 0.5), pct(&p_ms, 0.5));
    eprintln!("small requests: direct p50 {d50:.3} ms, proxied p50 {p50:.3} ms");
    api.post(&format!("/api/v1/executions/{id}/terminate"), &json!({})).await?;
    Ok(json!({
        "bench": "proxy",
        "download_mb": args.download_mb,
        "downloads": args.downloads,
        "direct_mb_s_p50": round2(apart.direct_mb_s),
        "proxy_mb_s_p50": round2(apart.proxy_mb_s),
        "throughput_ratio": round2(apart.ratio()),
        "nginx_mb_s_p50": apart.nginx_mb_s.map(round2),
        "nginx_ratio": apart.nginx_ratio(),
        "nginx_ratio_shared_cpus": shared.nginx_ratio(),
        "proxy_cpu_s_per_gb": round2(apart.proxy_cpu_s_per_gb),
        "direct_mb_s_p50_shared_cpus": round2(shared.direct_mb_s),
        "proxy_mb_s_p50_shared_cpus": round2(shared.proxy_mb_s),
        "throughput_ratio_shared_cpus": round2(shared.ratio()),
        "proxy_cpu_s_per_gb_shared_cpus": round2(shared.proxy_cpu_s_per_gb),
        "client_cpu_s_per_gb_proxied": round2(shared.client_cpu_s_per_gb_proxied),
        "client_cpu_s_per_gb_direct": round2(shared.client_cpu_s_per_gb_direct),
        "requests": d_ms.len(),
        "direct_ms_p50": round2(d50),
        "direct_ms_p99": round2(pct(&d_ms, 0.99)),
        "proxy_ms_p50": round2(p50),
        "proxy_ms_p99": round2(pct(&p_ms, 0.99)),
        "added_ms_p50": round2(p50 - d50),
    }))
}

/// Download figures, both ways.
struct Transfers {
    direct_mb_s: f64,
    proxy_mb_s: f64,
    nginx_mb_s: Option<f64>,
    proxy_cpu_s_per_gb: f64,
    client_cpu_s_per_gb_proxied: f64,
    client_cpu_s_per_gb_direct: f64,
}

impl Transfers {
    fn ratio(&self) -> f64 {
        self.proxy_mb_s / self.direct_mb_s
    }

    fn nginx_ratio(&self) -> Option<f64> {
        self.nginx_mb_s.map(|n| round2(n / self.direct_mb_s))
    }
}

/// `--downloads` downloads each way, alternating, after one of each to
/// warm up.
async fn downloads(
    args: &Args,
    cluster: &Cluster,
    get: &impl Fn(&str, &str) -> reqwest::RequestBuilder,
    direct: &str,
    proxied: &str,
    nginx: Option<&str>,
) -> Result<Transfers> {
    let bytes = args.download_mb * 1_000_000;
    let (mut d_mbs, mut p_mbs, mut n_mbs) = (Vec::new(), Vec::new(), Vec::new());
    // CPU the coordinator (the proxy) and this client spend per proxied GB.
    let (mut proxy_cpu, mut client_cpu, mut client_direct_cpu) = (0.0, 0.0, 0.0);
    for i in 0..args.downloads + 1 {
        let ways = [(Some(direct), &mut d_mbs), (Some(proxied), &mut p_mbs), (nginx, &mut n_mbs)];
        for (base, out) in ways.into_iter().filter_map(|(b, o)| Some((b?, o))) {
            let (c0, s0) = (cluster.cpu_s(0), cpu_s("self"));
            let t = Instant::now();
            let mut r = get(base, &format!("bytes/{bytes}")).send().await?.error_for_status()?;
            let mut n = 0;
            while let Some(chunk) = r.chunk().await? {
                n += chunk.len();
            }
            if n != bytes {
                bail!("{base}: {n} bytes of {bytes}");
            }
            // The first round warms both paths up.
            if i > 0 {
                out.push(bytes as f64 / 1e6 / t.elapsed().as_secs_f64());
                if base == proxied {
                    proxy_cpu += cluster.cpu_s(0) - c0;
                    client_cpu += cpu_s("self") - s0;
                } else if base == direct {
                    client_direct_cpu += cpu_s("self") - s0;
                }
            }
        }
    }
    let gb = (bytes * args.downloads) as f64 / 1e9;
    let (d_mbs, p_mbs, n_mbs) = (sorted(d_mbs), sorted(p_mbs), sorted(n_mbs));
    let nginx_mb_s = (!n_mbs.is_empty()).then(|| pct(&n_mbs, 0.5));
    eprintln!(
        "download: direct {:.0} MB/s, proxied {:.0} MB/s, nginx {} (medians)",
        pct(&d_mbs, 0.5),
        pct(&p_mbs, 0.5),
        nginx_mb_s.map_or("-".into(), |n| format!("{n:.0} MB/s"))
    );

    Ok(Transfers {
        direct_mb_s: pct(&d_mbs, 0.5),
        proxy_mb_s: pct(&p_mbs, 0.5),
        nginx_mb_s,
        proxy_cpu_s_per_gb: proxy_cpu / gb,
        client_cpu_s_per_gb_proxied: client_cpu / gb,
        client_cpu_s_per_gb_direct: client_direct_cpu / gb,
    })
}

/// The process of the running `zoe-echo` (the service's main process).
fn echo_pid() -> Result<u32> {
    for e in std::fs::read_dir("/proc")? {
        let Ok(pid) = e?.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "zoe-echo") {
            return Ok(pid);
        }
    }
    bail!("no zoe-echo process")
}

/// Every thread of `pid` on CPU `cpu` only (affinity is per thread;
/// threads started later inherit their creator's).
fn pin(pid: u32, cpu: usize) -> Result<()> {
    set_affinity(pid, &[cpu])
}

fn unpin(pid: u32) -> Result<()> {
    let all: Vec<usize> = (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    set_affinity(pid, &all)
}

fn set_affinity(pid: u32, cpus: &[usize]) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(tid) = t?.file_name().to_string_lossy().parse::<libc::pid_t>() else { continue };
        // SAFETY: a valid set of the size passed; a thread that ended
        // meanwhile only makes the call fail.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// nginx as a plain reverse proxy in front of the same service (one
/// worker, answers passed on as they come, in reads of up to 512 KiB as
/// zoe's proxy reads, keep-alive to the service), when it is installed.
/// Stopped on drop.
struct Nginx {
    child: std::process::Child,
    url: String,
}

impl Nginx {
    fn start(dir: &std::path::Path, direct: &str) -> Result<Option<Nginx>> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists());
        let Some(bin) = bin else { return Ok(None) };
        let rest = direct.strip_prefix("http://").context("a plain-HTTP service address")?;
        let (upstream, path) = rest.split_once('/').context("a service path")?;
        let port = free_tcp_port()?;
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs"))?;
        let conf = format!(
            r#"worker_processes 1;
daemon off;
master_process off;
error_log {p}/logs/error.log;
pid {p}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {p}/body;
  proxy_temp_path {p}/proxy;
  upstream service {{ server {upstream}; keepalive 4; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://service;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_buffer_size 512k;
      proxy_buffers 4 512k;
      proxy_busy_buffers_size 1m;
    }}
  }}
}}
"#,
            p = prefix.display()
        );
        let file = prefix.join("nginx.conf");
        std::fs::write(&file, conf)?;
        let child = std::process::Command::new(bin)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let url = format!("http://127.0.0.1:{port}/{path}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on {port}: see {}", prefix.join("logs/error.log").display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Some(Nginx { child, url }))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
