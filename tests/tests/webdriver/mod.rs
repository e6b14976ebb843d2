//! A small W3C WebDriver client (https://www.w3.org/TR/webdriver2/) on
//! reqwest and serde_json, driving headless Chromium through
//! `chromedriver`: the few commands the browser test needs.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key W3C WebDriver puts element references under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib/chromium")]) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A `chromedriver` process on a port of ours.
pub struct Driver {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

/// One browser session, with a profile (cookies) of its own.
pub struct Session {
    http: reqwest::Client,
    base: String,
    _profile: tempfile::TempDir,
}

#[derive(Debug, Clone)]
pub struct Element(String);

impl Driver {
    /// Starts chromedriver on `port` and waits until it is ready.
    pub async fn start(port: u16, http: reqwest::Client) -> Driver {
        let bin = find_program(&["chromedriver"]).expect(
            "chromedriver not found: install the Debian packages chromium and chromium-driver (scripts/install-deps.sh)",
        );
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let d = Driver { child, url, http };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = d.http.get(format!("{}/status", d.url)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return d;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new headless Chromium session with a fresh profile.
    pub async fn session(&self) -> Session {
        let browser = find_program(&["chromium", "chromium-browser"]).expect("chromium not found");
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1100", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display())],
            }
        } } });
        let r = self.http.post(format!("{}/session", self.url)).json(&caps).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        let id = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("new session: {v}")).to_string();
        Session { http: self.http.clone(), base: format!("{}/session/{id}", self.url), _profile: profile }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Session {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rq = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            rq = rq.json(&b);
        } else if method == reqwest::Method::POST {
            rq = rq.json(&json!({}));
        }
        let r = rq.send().await.unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "webdriver {method} {path}: {status} {v}");
        v["value"].clone()
    }

    async fn try_cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Option<Value> {
        let mut rq = self.http.request(method, format!("{}{path}", self.base));
        if !body.is_null() {
            rq = rq.json(&body);
        }
        let r = rq.send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        Some(r.json::<Value>().await.ok()?["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        self.cmd(reqwest::Method::GET, "/source", None).await.as_str().unwrap_or_default().to_string()
    }

    pub async fn title(&self) -> String {
        self.cmd(reqwest::Method::GET, "/title", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching a CSS selector, if any.
    pub async fn find_opt(&self, css: &str) -> Option<Element> {
        let v =
            self.try_cmd(reqwest::Method::POST, "/element", json!({ "using": "css selector", "value": css })).await?;
        v[ELEMENT].as_str().map(|id| Element(id.to_string()))
    }

    /// Waits up to `within` for an element matching `css`.
    pub async fn wait_for(&self, css: &str, within: Duration) -> Element {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.find_opt(css).await {
                return e;
            }
            if Instant::now() >= deadline {
                panic!("no element `{css}` within {within:?} on {}:\n{}", self.url().await, self.source().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(css, Duration::from_secs(10)).await
    }

    pub async fn click(&self, e: &Element) {
        self.cmd(reqwest::Method::POST, &format!("/element/{}/click", e.0), None).await;
    }

    pub async fn clear(&self, e: &Element) {
        self.cmd(reqwest::Method::POST, &format!("/element/{}/clear", e.0), None).await;
    }

    pub async fn type_text(&self, e: &Element, text: &str) {
        self.cmd(reqwest::Method::POST, &format!("/element/{}/value", e.0), Some(json!({ "text": text }))).await;
    }

    pub async fn text(&self, e: &Element) -> String {
        self.cmd(reqwest::Method::GET, &format!("/element/{}/text", e.0), None).await.as_str().unwrap_or("").to_string()
    }

    /// Runs a script in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }

    /// Runs an asynchronous script: it ends by calling its last argument
    /// (`arguments[arguments.length - 1]`) with the result.
    pub async fn eval_async(&self, script: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/async", Some(json!({ "script": script, "args": [] }))).await
    }

    /// Waits up to `within` until the text of the first `css` element
    /// satisfies `pred`; returns that text.
    pub async fn wait_text(&self, css: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            if let Some(e) = self.find_opt(css).await
                && let Some(t) = self
                    .try_cmd(reqwest::Method::GET, &format!("/element/{}/text", e.0), json!(null))
                    .await
                    .and_then(|v| v.as_str().map(str::to_string))
            {
                if pred(&t) {
                    return t;
                }
                last = t;
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{css}` did not get the expected text within {within:?}; last: {last:?}; on {}:\n{}",
                    self.url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a PNG screenshot of the viewport.
    pub async fn screenshot(&self, to: &Path) {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png =
            zoe_coordinator::api::admin::base64_lite::decode(b64.as_str().unwrap()).expect("screenshot is base64");
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}
