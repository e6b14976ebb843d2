//! Issue #19: a service's web port through the coordinators' service proxy,
//! from a follower, with the owner's login only. Three `zoe coordinator`
//! processes and a `zoe agent`; the service is `zoe-echo` (a static HTTP
//! and WebSocket server the testkit builds) in a container on the tests'
//! containerd. The proxy is reached as `localhost`, the UI as `127.0.0.1`.
//! The first test speaks HTTP and WebSocket by hand; the second is a user
//! in headless Chromium.

mod harness;
mod webdriver;

use harness::zoe::{AgentSpec, Api, ZoeCluster};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "zoe.local/echo:1";

/// Tests run side by side on host networking: each its own port.
fn echo_app(port: u16) -> Value {
    json!({ "name": "notebook", "version": 3, "will_end": false, "size": 1, "services": [{
        "name": "web", "image": IMAGE, "monitor": true,
        "essential_count": 1, "total_count": 1, "startup_order": 0,
        "resources": { "memory": {"min": 33554432, "max": null}, "cores": {"min": 0.1, "max": null} },
        "environment": [["PROXY_PATH", "{proxy_path}"]], "volumes": [],
        "command": format!("/bin/zoe-echo {port}"),
        "ports": [{ "name": "notebook", "port_number": port, "protocol": "tcp", "url_template": "http://{ip_port}/" }]
    }]})
}

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    harness::zoe::http_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn get(c: &reqwest::Client, url: &str, auth: Option<&str>, cookie: Option<&str>) -> reqwest::Response {
    let mut r = c.get(url);
    if let Some(t) = auth {
        r = r.bearer_auth(t);
    }
    if let Some(k) = cookie {
        r = r.header(COOKIE, k);
    }
    r.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// One masked client text frame (RFC 6455 §5.2).
fn ws_frame(text: &str) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Three coordinators with the proxy, one agent with the zoe-echo image;
/// and the index of a follower.
async fn echo_cluster() -> (ZoeCluster, usize) {
    let t0 = Instant::now();
    let z = ZoeCluster::builder()
        .coordinators(3)
        .proxy()
        .agent(AgentSpec::new("n1").cores(2.0).memory_mib(1024))
        .start()
        .await;
    let leader = z.leader().await;
    let f = (leader + 1) % 3;
    let archive = z.dir().join("echo-oci.tar");
    zoe_testkit::echo::image(z.dir(), IMAGE).unwrap().write_oci_archive(&archive).unwrap();
    let out = z.cli_on(f, &["image", "load", archive.to_str().unwrap(), "--node", "n1"]);
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    eprintln!("cluster and image up after {:?}; leader {leader}, follower {f}", t0.elapsed());
    (z, f)
}

/// Submits the echo notebook as `owner`; returns its id once it runs.
async fn start_notebook(owner: &Api, port: u16) -> u64 {
    let id = owner.submit("nb", &echo_app(port)).await;
    owner.wait_status(id, "running", Duration::from_secs(60)).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_page_through_a_follower_with_the_owners_login_only() {
    let (z, f) = echo_cluster().await;
    let proxy = z.proxy_urls[f].clone();
    let ui = z.api().urls[f].clone();
    let ada = z.user_api("ada").await;
    let eve = z.user_api("eve").await;
    let (ada_t, eve_t) = (ada.token.clone().unwrap(), eve.token.clone().unwrap());
    let id = start_notebook(&ada, 18_471).await;
    let prefix = format!("/{id}/web0/18471");
    let eps = ada.call_on(f, Method::GET, &format!("/api/v1/executions/{id}/endpoints"), None).await.unwrap();
    assert_eq!(eps.body["endpoints"][0]["proxy_url"], format!("{proxy}{prefix}/"), "{}", eps.body);
    let page = format!("{proxy}{prefix}/tree?x=1");
    let c = browser();

    // A script with a token: the service sees its own path, the prefix,
    // and none of zoe's credentials. The notebook may still be binding.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let r = get(&c, &page, Some(&ada_t), Some(&format!("zoe_proxy_{id}=forged; theme=dark"))).await;
        if r.status() == StatusCode::OK {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "no page through the proxy: {} {}", r.status(), r.text().await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for line in [
        format!("path={prefix}/tree?x=1"),
        format!("prefix={prefix}"),
        "cookie=theme=dark".to_string(),
        "authorization=\n".to_string(),
        "forwarded-for=127.0.0.1".to_string(),
        format!("env-proxy-path={prefix}"),
    ] {
        assert!(body.contains(&line), "{line:?} not in what the service saw:\n{body}");
    }

    // Another user: 403. Nobody: to the UI to log in.
    assert_eq!(get(&c, &page, Some(&eve_t), None).await.status(), StatusCode::FORBIDDEN);
    let r = get(&c, &page, None, None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to_ui = location(&r);
    assert!(to_ui.starts_with(&format!("{ui}/ui/proxy?to=")), "{to_ui}");

    // The browser's way: the UI session (on 127.0.0.1) becomes a one-use
    // ticket, the proxy (on localhost) trades it for its own cookie.
    let r = get(&c, &to_ui, None, Some(&format!("zoe_session={eve_t}"))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "eve may not open ada's notebook");
    let r = get(&c, &to_ui, None, Some(&format!("zoe_session={ada_t}"))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let ticket = location(&r);
    assert!(ticket.starts_with(&format!("{proxy}/_zoe/ticket?ticket=")), "{ticket}");
    let r = get(&c, &ticket, None, None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), format!("{prefix}/tree?x=1"));
    let set = r.headers().get(SET_COOKIE).unwrap().to_str().unwrap().to_string();
    assert!(set.starts_with(&format!("zoe_proxy_{id}=")) && set.contains(&format!("Path=/{id}/")), "{set}");
    assert!(set.contains("HttpOnly"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let r = get(&c, &page, None, Some(&cookie)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("cookie=\n"), "the proxy cookie does not reach the service");
    assert_eq!(get(&c, &ticket, None, None).await.status(), StatusCode::UNAUTHORIZED, "a ticket is good once");
    let r = ada.call_on(f, Method::GET, "/api/v1/whoami", None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let as_api =
        c.get(format!("{ui}/api/v1/whoami")).bearer_auth(cookie.split_once('=').unwrap().1).send().await.unwrap();
    assert_eq!(as_api.status(), StatusCode::UNAUTHORIZED, "a proxy cookie is no API token");

    // Server-sent events, a large download and a large upload, streamed.
    let sse = get(&c, &format!("{proxy}{prefix}/sse"), Some(&ada_t), None).await.text().await.unwrap();
    assert_eq!(sse.matches("data: event").count(), 3, "{sse}");
    let big = get(&c, &format!("{proxy}{prefix}/bytes/20000000"), Some(&ada_t), None).await.bytes().await.unwrap();
    assert_eq!(big.len(), 20_000_000);
    let up = vec![b'u'; 5_000_000];
    let r = c.post(format!("{proxy}{prefix}/upload")).bearer_auth(&ada_t).body(up.clone()).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), up.len());

    // A WebSocket through the follower's proxy, with the cookie.
    let host = proxy.trim_start_matches("http://").to_string();
    let mut ws = tokio::net::TcpStream::connect(host.replace("localhost", "127.0.0.1")).await.unwrap();
    let hello = format!(
        "GET {prefix}/ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {cookie}\r\n\r\n"
    );
    ws.write_all(hello.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        ws.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    for msg in ["hello", "through the proxy"] {
        ws.write_all(&ws_frame(msg)).await.unwrap();
        let mut h = [0u8; 2];
        ws.read_exact(&mut h).await.unwrap();
        assert_eq!(h[0], 0x81);
        let mut payload = vec![0u8; h[1] as usize];
        ws.read_exact(&mut payload).await.unwrap();
        assert_eq!(String::from_utf8(payload).unwrap(), msg);
    }
    drop(ws);

    // A stopped service: a clear 502 at once, naming the execution.
    ada.terminate(id).await;
    ada.wait_status(id, "terminated", Duration::from_secs(60)).await;
    let t = Instant::now();
    let r = get(&c, &page, Some(&ada_t), None).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let text = r.text().await.unwrap();
    assert!(text.contains(&format!("execution {id}")) && text.contains("terminated"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_through_the_proxy_in_chromium() {
    let (z, f) = echo_cluster().await;
    let (proxy, ui) = (z.proxy_urls[f].clone(), z.api().urls[f].clone());
    let ada = z.user_api("ada").await;
    z.user_api("eve").await;
    let id = start_notebook(&ada, 18_472).await;
    let prefix = format!("/{id}/web0/18472");
    let port = harness::reserve_port();
    let driver = webdriver::Driver::start(port.port, harness::zoe::http_client()).await;

    // Ada logs in on a follower's UI and opens her notebook from its page.
    let b = driver.session().await;
    b.goto(&format!("{ui}/ui/login")).await;
    log_in(&b, "ada").await;
    b.wait_text("main h1", Duration::from_secs(10), |t| t == "Welcome, ada").await;
    b.goto(&format!("{ui}/ui/executions/{id}")).await;
    let open = b.wait_for("[data-part=endpoints] a[href^='/ui/proxy']", Duration::from_secs(10)).await;
    let href = b.eval("return document.querySelector(\"[data-part=endpoints] a[href^='/ui/proxy']\").href;").await;
    drop(open);
    b.goto(href.as_str().unwrap()).await;
    let page = b.wait_text("body", Duration::from_secs(10), |t| t.contains("path=")).await;
    assert!(b.url().await.starts_with(&format!("{proxy}{prefix}/")), "{}", b.url().await);
    assert!(page.contains(&format!("prefix={prefix}")), "{page}");
    assert!(page.contains("cookie=\n"), "no cookie reaches the service, and the UI's never reaches the proxy: {page}");
    // Its WebSocket, from the page, through the proxy.
    let echoed = b
        .eval_async(&format!(
            "const done = arguments[arguments.length - 1];\
             const ws = new WebSocket('ws://' + location.host + '{prefix}/ws');\
             ws.onopen = () => ws.send('hello from chromium');\
             ws.onmessage = (e) => {{ done(e.data); ws.close(); }};\
             ws.onerror = () => done('websocket error');"
        ))
        .await;
    assert_eq!(echoed, "hello from chromium");
    b.close().await;

    // Someone without a session is sent to log in first; eve then gets a 403.
    let b = driver.session().await;
    b.goto(&format!("{proxy}{prefix}/")).await;
    let go_on = b.wait_for("a.button", Duration::from_secs(10)).await;
    assert!(b.url().await.starts_with(&format!("{ui}/ui/proxy")), "{}", b.url().await);
    b.click(&go_on).await;
    log_in(&b, "eve").await;
    let said = b.wait_text("body", Duration::from_secs(10), |t| t.contains("may not")).await;
    assert!(said.contains("eve") && said.contains("ada"), "{said}");
    assert!(b.url().await.starts_with(&format!("{ui}/ui/proxy")), "{}", b.url().await);
    b.close().await;
}

/// Fills the UI's login form as `who` (the password `z.user_api` gave).
async fn log_in(b: &webdriver::Session, who: &str) {
    b.wait_for("#username", Duration::from_secs(10)).await;
    b.type_text(&b.find("#username").await, who).await;
    b.type_text(&b.find("#password").await, &format!("{who}-password-1")).await;
    b.click(&b.find("form[action='/ui/login'] button[type=submit]").await).await;
}
