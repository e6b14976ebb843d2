//! In-process coordinators with their REST API for the API tests: real
//! Raft on sled in a temp dir, real mutual-TLS QUIC between members (a
//! throwaway CA), real HTTP on 127.0.0.1 with ports the OS picked.

#![allow(dead_code)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zoe_coordinator::api::ApiServer;
use zoe_coordinator::config::CoordinatorConfig;
use zoe_coordinator::raft::Coordinator;
use zoe_net::{CertificateAuthority, Identity, Role};

pub struct Member {
    pub coord: Coordinator,
    pub api: Option<ApiServer>,
    pub url: String,
    pub data_dir: PathBuf,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ca: CertificateAuthority,
    pub members: Vec<Member>,
    /// Raw HTTP, for what the API client does not do (metrics, basic auth).
    pub http: reqwest::Client,
    /// zoe's API client over every member (each call names its token).
    pub client: std::sync::Arc<zoe_client::Client>,
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Extra lines for the `[api]` section, per member index.
pub type ApiExtra = dyn Fn(usize, &std::path::Path) -> String;

impl Cluster {
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &|_, _| String::new()).await
    }

    pub async fn start_with(n: usize, api_extra: &ApiExtra) -> Cluster {
        Cluster::start_opts(n, n, 5000, api_extra, None).await
    }

    /// `n` configured members of which the first `running` are started,
    /// with an optional live source for all of them.
    pub async fn start_opts(
        n: usize,
        running: usize,
        write_timeout_ms: u64,
        api_extra: &ApiExtra,
        live: Option<std::sync::Arc<dyn zoe_coordinator::api::LiveSource>>,
    ) -> Cluster {
        let dir = tempfile::Builder::new().prefix("zoe-api-").tempdir().unwrap();
        let ca = CertificateAuthority::generate("test").unwrap();
        ca.write(dir.path()).unwrap();
        let ports: Vec<u16> = (0..n).map(|_| free_udp_port()).collect();
        let mut peers = String::new();
        for (i, p) in ports.iter().enumerate() {
            peers += &format!("[[peers]]\nid = {}\naddr = \"127.0.0.1:{p}\"\nname = \"c{}\"\n\n", i + 1, i + 1);
        }
        let mut configs = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let name = format!("c{}", i + 1);
            let id = Identity::new(Role::Coordinator, name.clone()).unwrap();
            ca.issue(&id, &["localhost".into()], &["127.0.0.1".parse().unwrap()])
                .unwrap()
                .write(dir.path(), &name)
                .unwrap();
            let text = format!(
                "id = {}\nname = \"{name}\"\nlisten = \"127.0.0.1:{p}\"\ndata_dir = \"{name}-data\"\n\n\
                 [tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}-key.pem\"\n\n{peers}\
                 [raft]\nheartbeat_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n\
                 write_timeout_ms = {write_timeout_ms}\n\n[api]\nlisten = \"127.0.0.1:0\"\nbody_limit_bytes = 65536\n{}",
                i + 1,
                api_extra(i, dir.path()),
            );
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, text).unwrap();
            configs.push(CoordinatorConfig::load(&path).unwrap());
        }
        let mut members = Vec::new();
        for cfg in configs.into_iter().take(running) {
            let data_dir = cfg.data_dir.clone();
            let coord = Coordinator::start(cfg).await.unwrap();
            let api = ApiServer::start(coord.clone(), live.clone()).await.unwrap();
            let url = api.url();
            members.push(Member { coord, api: Some(api), url, data_dir });
        }
        let http = http_client(Some(ca.cert_pem()));
        let config = zoe_client::ClientConfig {
            addrs: members.iter().map(|m| m.url.clone()).collect(),
            ca_pem: Some(ca.cert_pem().as_bytes().to_vec()),
            ..Default::default()
        };
        let client = std::sync::Arc::new(zoe_client::Client::new(&config).unwrap());
        Cluster { dir, ca, members, http, client }
    }

    pub fn url(&self, i: usize) -> &str {
        &self.members[i].url
    }

    /// Waits until member `i` knows a leader and returns its index.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for m in &self.members {
                let st = m.coord.status().await;
                if let Some(l) = st.leader
                    && st.id == l
                {
                    return self.members.iter().position(|x| x.coord.id() == l).unwrap();
                }
            }
            assert!(Instant::now() < deadline, "no leader within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads the bootstrap token the first leader wrote.
    pub async fn bootstrap_token(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for m in &self.members {
                if let Ok(t) = std::fs::read_to_string(m.data_dir.join("bootstrap-token")) {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(m.data_dir.join("bootstrap-token")).unwrap().permissions().mode();
                    assert_eq!(mode & 0o777, 0o600, "bootstrap token file mode");
                    return t.trim().to_string();
                }
            }
            assert!(Instant::now() < deadline, "no bootstrap token file within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Bootstraps the ACL and returns the admin token.
    pub async fn admin(&self) -> String {
        let t = self.bootstrap_token().await;
        let r = self.call(0, Method::POST, "/api/v1/acl/bootstrap", Some(&t), Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["token"].as_str().unwrap().to_string()
    }

    pub async fn call(&self, i: usize, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        call(&self.client, i, method, path, token, body).await
    }

    /// Creates a user with a password and returns (id, session token).
    pub async fn user(&self, admin: &str, name: &str, extra: Value) -> (u64, String) {
        let mut body = json!({ "username": name, "password": format!("{name}-password") });
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let r = self.call(0, Method::POST, "/api/v1/users", Some(admin), Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let id = r.body["id"].as_u64().unwrap();
        let r = self
            .http
            .post(format!("{}/api/v1/login", self.url(0)))
            .basic_auth(name, Some(format!("{name}-password")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        (id, v["token"].as_str().unwrap().to_string())
    }

    pub async fn stop(mut self) {
        for m in &mut self.members {
            if let Some(a) = m.api.take() {
                a.shutdown().await;
            }
        }
        for m in &self.members {
            m.coord.shutdown().await;
        }
    }
}

pub fn http_client(ca_pem: Option<&str>) -> reqwest::Client {
    client_builder(ca_pem).build().unwrap()
}

/// A client as a browser's first request would be: it does not follow
/// redirects (the tests check them) and keeps no cookies by itself.
pub fn web_client(ca_pem: Option<&str>) -> reqwest::Client {
    client_builder(ca_pem).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn client_builder(ca_pem: Option<&str>) -> reqwest::ClientBuilder {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(60))
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub index: Option<u64>,
    pub body: Value,
}

pub async fn call(
    client: &zoe_client::Client,
    i: usize,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let r = client
        .with_token(token.map(str::to_string))
        .raw_on(i, method, path, body.as_ref())
        .await
        .unwrap_or_else(|| panic!("coordinator {i} unreachable"));
    Resp { status: r.status, index: r.index(), body: r.body }
}

/// Asserts the error shape and code, and returns the details.
pub fn expect_error(r: &Resp, status: StatusCode, code: &str) -> Vec<Value> {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{:?}", r.body);
    r.body["error"]["details"].as_array().cloned().expect("details array")
}

pub fn hello_zapp() -> Value {
    json!({
        "name": "hello-batch", "version": 3, "will_end": true, "size": 128,
        "services": [{
            "name": "hello", "image": "zoe.local/busybox:1", "monitor": true,
            "essential_count": 1, "total_count": 1, "startup_order": 0,
            "resources": { "memory": { "min": 16777216, "max": 33554432 }, "cores": { "min": 0.5, "max": null } },
            "environment": [], "volumes": [], "command": "/bin/true",
            "ports": [{ "name": "web", "port_number": 8080, "protocol": "tcp", "url_template": "http://{ip_port}/" }]
        }]
    })
}

/// What an agent's registration and the leader's loop would commit for
/// one running execution: node `n1` (4 cores, 8 GiB, holding the sample
/// image) registers, `hello_zapp()` is submitted as `name` by `token`,
/// queued, placed on `n1` with 0.5 core, and its service started with
/// `ports`. Returns (execution id, service id).
pub async fn running_on_n1(
    c: &Cluster,
    token: &str,
    name: &str,
    ip_address: Option<String>,
    ports: Vec<zoe_coordinator::state::PublishedPort>,
) -> (u64, u64) {
    use zoe_common::resources::Millicores;
    use zoe_coordinator::state::{Capacity, Command, Placement, Plan, Registration};
    let coord = &c.members[0].coord;
    let registration = Registration {
        addresses: vec!["10.0.0.5".into()],
        containerd_version: "1.6".into(),
        cgroup_mode: "v2".into(),
        images: ["zoe.local/busybox:1".to_string()].into(),
        ..Registration::bare("n1", Capacity { cores: Millicores(4000), memory: 8 << 30 })
    };
    coord.write(Command::RegisterNode { registration, time: 1 }).await.unwrap();
    let body = json!({"name": name, "application": hello_zapp()});
    let r = c.call(0, Method::POST, "/api/v1/executions", Some(token), Some(body)).await;
    let id = r.body["id"].as_u64().unwrap();
    let r = c.call(0, Method::GET, &format!("/api/v1/executions/{id}"), Some(token), None).await;
    let svc = r.body["services"][0].as_u64().unwrap();
    coord.write(Command::QueueExecution { id, time: 2 }).await.unwrap().result.unwrap();
    let placements = vec![Placement { service: svc, node: "n1".into(), cores: Millicores(500) }];
    let plan = Plan { time: 3, starting: vec![id], placements, ..Plan::default() };
    coord.write(Command::ApplyPlan(plan)).await.unwrap().result.unwrap();
    let container_id = format!("zoe-{id}-hello0-1");
    let started = Command::ServiceStarted { id: svc, container_id, ip_address, ports, time: 4 };
    coord.write(started).await.unwrap().result.unwrap();
    (id, svc)
}
