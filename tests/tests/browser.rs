//! The web UI in a real browser: headless Chromium driven over the W3C
//! WebDriver protocol (chromedriver) against a real cluster (a `zoe
//! coordinator` and a `zoe agent` process on the tests' containerd) whose
//! shop is `examples/shop`. A user logs in, starts a shop ZApp with a
//! changed parameter, watches it reach running on the execution page
//! without a reload, reads the expected line in its live log, and
//! terminates it. Screenshots of the shop, execution and status pages are
//! saved under `$ZOE_ARTIFACTS/browser/` (default
//! `target/test-artifacts/browser/`).

mod harness;
mod webdriver;

use harness::reserve_port;
use harness::zoe::{AgentSpec, ZoeCluster};
use reqwest::Method;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use webdriver::Driver;

fn artifacts() -> PathBuf {
    let base = match std::env::var_os("ZOE_ARTIFACTS") {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) => PathBuf::from(t).join("test-artifacts"),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts"),
        },
    };
    base.join("browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_start_watch_log_terminate_in_chromium() {
    let shop = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/shop").canonicalize().unwrap();
    let z = ZoeCluster::builder()
        .agent(AgentSpec::new("n1").cores(4.0).memory_mib(4096).label("ssd"))
        .coordinator_toml(&format!("[api.web]\nshop_dir = \"{}\"\n", shop.display()))
        .start()
        .await;
    let base = z.api().urls[0].clone();
    let r = z
        .api()
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({ "username": "ada", "password": "ada-password", "email": "ada@example.org" })),
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);

    let port = reserve_port();
    let driver = Driver::start(port.port, harness::zoe::http_client()).await;
    let b = driver.session().await;
    let shots = artifacts();

    // Log in: the UI sends us to the login page first.
    b.goto(&format!("{base}/")).await;
    b.wait_for("#username", Duration::from_secs(10)).await;
    assert!(b.url().await.ends_with("/ui/login"), "{}", b.url().await);
    b.type_text(&b.find("#username").await, "ada").await;
    b.type_text(&b.find("#password").await, "ada-password").await;
    b.click(&b.find("form[action='/ui/login'] button[type=submit]").await).await;
    b.wait_text("main h1", Duration::from_secs(10), |t| t == "Welcome, ada").await;

    // The shop: open the web page ZApp and change its text.
    b.click(&b.find("nav a[href='/ui/shop']").await).await;
    b.wait_text("main h1", Duration::from_secs(10), |t| t == "ZApp shop").await;
    b.wait_for("img.logo", Duration::from_secs(5)).await;
    b.screenshot(&shots.join("shop.png")).await;
    b.click(&b.find("a[href='/ui/shop/web-0']").await).await;
    let message = format!("hello from the browser test {}", std::process::id());
    let field = b.find("#p0").await;
    b.clear(&field).await;
    b.type_text(&field, &message).await;
    let name = b.find("#name").await;
    b.clear(&name).await;
    b.type_text(&name, "browser-run").await;
    b.click(&b.find("button[value=start]").await).await;

    // The execution page follows the execution live: mark the page, then
    // wait for "running" without reloading (a reload would drop the mark).
    b.wait_for("[data-live]", Duration::from_secs(10)).await;
    let url = b.url().await;
    let id: u64 = url.rsplit('/').next().unwrap().parse().unwrap_or_else(|_| panic!("{url}"));
    b.eval("window.zoeNoReload = 'still here'; return true;").await;
    b.wait_text("[data-part=summary] .badge", Duration::from_secs(120), |t| t == "running").await;
    assert_eq!(b.eval("return window.zoeNoReload || null;").await, "still here", "the page was reloaded");
    b.wait_text("[data-part=services] tbody", Duration::from_secs(30), |t| t.contains("started") && t.contains("n1"))
        .await;
    let zapp = z.api().ok(Method::GET, &format!("/api/v1/executions/{id}/zapp"), None).await;
    assert_eq!(zapp["services"][0]["environment"][0], json!(["MESSAGE", message]));
    b.wait_for("[data-part=endpoints] a[href^='http://']", Duration::from_secs(10)).await;
    b.screenshot(&shots.join("inspect.png")).await;

    // Its log, followed live, shows the line the changed parameter made.
    b.click(&b.find("[data-part=services] a[href$='/logs']").await).await;
    b.wait_text("pre.log", Duration::from_secs(60), |t| t.contains(&format!("serving: {message}"))).await;
    b.screenshot(&shots.join("log.png")).await;

    // Terminate it from its page; the page shows the end by itself.
    b.goto(&url).await;
    b.wait_text("[data-part=summary] .badge", Duration::from_secs(10), |t| t == "running").await;
    b.eval("window.zoeNoReload = 'after terminate'; return true;").await;
    b.click(&b.find("form[action$='/terminate'] button").await).await;
    b.wait_text("[data-part=summary] .badge", Duration::from_secs(60), |t| t == "terminated").await;
    let e = z.api().ok(Method::GET, &format!("/api/v1/executions/{id}"), None).await;
    assert_eq!(e["status"], "terminated", "{e}");

    // The status page, as the admin (logged in with the API token).
    b.click(&b.find("form.logout button").await).await;
    b.wait_for("#token", Duration::from_secs(10)).await;
    b.type_text(&b.find("#token").await, z.api().token.as_deref().unwrap()).await;
    b.click(&b.find("#token ~ button").await).await;
    b.wait_text("main h1", Duration::from_secs(10), |t| t == "Welcome, admin").await;
    b.goto(&format!("{base}/ui/status")).await;
    b.wait_text("main h1", Duration::from_secs(10), |t| t == "Cluster status").await;
    b.wait_text("article.node h3", Duration::from_secs(10), |t| t == "n1").await;
    b.screenshot(&shots.join("status.png")).await;
    b.close().await;
    eprintln!("screenshots in {}", shots.display());
}
