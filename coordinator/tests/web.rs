//! The web UI against real in-process coordinators (the same setup as the
//! API tests): every page's status codes and permissions, the session
//! cookie's attributes, CSRF rejection, escaping of names containing
//! `<script>`, the shop's role filter and parameters, and the actions.

mod api_support;

use api_support::{Cluster, hello_zapp, web_client};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const EVIL: &str = "<script>alert(1)</script>";

/// A copy of `examples/shop` plus a package whose name and description
/// try to inject script.
fn shop_dir(root: &Path) -> PathBuf {
    let shop = root.join("shop");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    for pkg in std::fs::read_dir(&examples).unwrap() {
        let pkg = pkg.unwrap().path();
        let to = shop.join(pkg.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&pkg).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let evil = shop.join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::copy(examples.join("hello/hello.json"), evil.join("app.json")).unwrap();
    std::fs::write(evil.join("README.md"), format!("Raw HTML {EVIL} and [a link](javascript:alert(2)).\n")).unwrap();
    let manifest = json!({ "version": 1, "zapps": [{
        "category": EVIL, "name": EVIL, "description": "app.json", "readable_descr": "README.md",
        "parameters": [{ "kind": "environment", "name": "GREETING", "readable_name": EVIL,
            "description": EVIL, "type": "string", "default": EVIL }]
    }]});
    std::fs::write(evil.join("manifest.json"), manifest.to_string()).unwrap();
    // A broken package is reported to admins and does not hide the others.
    std::fs::create_dir_all(shop.join("broken")).unwrap();
    std::fs::write(shop.join("broken/manifest.json"), "{\"version\": 2, \"zapps\": []}").unwrap();
    shop
}

async fn start() -> (Cluster, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let shop = shop_dir(root.path());
    let extra = move |_: usize, _: &Path| format!("\n[api.web]\nshop_dir = \"{}\"\n", shop.display());
    (Cluster::start_with(1, &extra).await, root)
}

/// [`start`], then the admin's token and a user `ada` (password
/// `ada-password`).
async fn start_with_ada() -> (Cluster, tempfile::TempDir, String) {
    let (c, root) = start().await;
    let admin = c.admin().await;
    c.user(&admin, "ada", json!({})).await;
    (c, root, admin)
}

struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    /// The value of the first CSRF field on the page.
    fn csrf(&self) -> String {
        let at = self.text.find("name=\"csrf\" value=\"").unwrap_or_else(|| panic!("no CSRF field in {}", self.text));
        let rest = &self.text[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

/// A person with a browser: a cookie jar of one session.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(c: &Cluster) -> Browser {
        Browser { http: web_client(None), base: c.url(0).to_string(), cookies: Vec::new() }
    }

    fn keep_cookies(&mut self, p: &Page) {
        for c in p.cookies() {
            let (kv, _) = c.split_once(';').unwrap_or((&c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let r = req.header(COOKIE, self.cookie_header()).send().await.unwrap();
        let p = Page { status: r.status(), headers: r.headers().clone(), text: r.text().await.unwrap() };
        self.keep_cookies(&p);
        p
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    /// Posts a `multipart/form-data` form with one file, as a browser does.
    async fn upload(&mut self, path: &str, fields: &[(&str, &str)], file: (&str, &[u8])) -> Page {
        let boundary = "----zoe-test-boundary-7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (k, v) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"app.json\"\r\n\
                 Content-Type: application/json\r\n\r\n",
                file.0
            )
            .as_bytes(),
        );
        body.extend_from_slice(file.1);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        self.send(req).await
    }

    /// Logs in with an API token (the bootstrap admin has no password).
    async fn with_token(c: &Cluster, token: &str) -> Browser {
        let mut b = Browser::new(c);
        let csrf = b.get("/ui/login").await.csrf();
        let p = b.post("/ui/login", &[("csrf", &csrf), ("token", token)]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER);
        b
    }

    /// Posts a form with this session's CSRF token (read from `from`).
    async fn submit(&mut self, from: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }

    async fn login(c: &Cluster, user: &str, password: &str) -> Browser {
        let mut b = Browser::new(c);
        let p = b.get("/ui/login").await;
        let csrf = p.csrf();
        let p = b.post("/ui/login", &[("csrf", &csrf), ("username", user), ("password", password)]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
        assert_eq!(p.location(), "/ui/");
        b
    }
}

fn execution_id(p: &Page) -> u64 {
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
    p.location()
        .strip_prefix("/ui/executions/")
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{}", p.location()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_session_cookie_and_csrf() {
    let (c, _root, admin) = start_with_ada().await;
    let mut b = Browser::new(&c);

    // The root redirects to the UI; pages need a session.
    let p = b.get("/").await;
    assert_eq!((p.status, p.location()), (StatusCode::SEE_OTHER, "/ui/"));
    for path in ["/ui/", "/ui/shop", "/ui/executions", "/ui/executions/1", "/ui/status", "/ui/admin"] {
        let p = b.get(path).await;
        assert_eq!((p.status, p.location()), (StatusCode::SEE_OTHER, "/ui/login"), "{path}");
    }
    let p = b.get("/ui/static/zoe.css").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.headers[CONTENT_TYPE].to_str().unwrap().starts_with("text/css"));
    let p = b.get("/ui/static/zoe.js").await;
    assert!(p.headers[CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));

    // The login page: labelled fields, a double-submit CSRF cookie.
    let p = b.get("/ui/login").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.text.contains("<label for=\"username\">") && p.text.contains("<label for=\"password\">"));
    assert!(p.headers["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let login_cookie = p.cookies().into_iter().find(|c| c.starts_with("zoe_login_csrf=")).unwrap();
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"), "{login_cookie}");
    let csrf = p.csrf();

    // A forged or missing CSRF token is refused, even with the right password.
    let p = b.post("/ui/login", &[("csrf", "forged"), ("username", "ada"), ("password", "ada-password")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let p = b.post("/ui/login", &[("username", "ada"), ("password", "ada-password")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // Wrong password: 401 and the form again, no session.
    let p = b.post("/ui/login", &[("csrf", &csrf), ("username", "ada"), ("password", "nope")]).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.text.contains("wrong username or password"));
    assert!(!p.cookies().iter().any(|c| c.starts_with("zoe_session=zoe_")));

    // The right password: a session cookie, HttpOnly, SameSite=Strict, not
    // Secure over plain HTTP.
    let csrf = b.get("/ui/login").await.csrf();
    let p = b.post("/ui/login", &[("csrf", &csrf), ("username", "ada"), ("password", "ada-password")]).await;
    assert_eq!((p.status, p.location()), (StatusCode::SEE_OTHER, "/ui/"));
    let session = p.cookies().into_iter().find(|c| c.starts_with("zoe_session=zoe_")).expect("session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict") && session.contains("Path=/ui"));
    assert!(!session.contains("Secure"), "{session}");
    let home = b.get("/ui/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.text.contains("Welcome, ada"));
    assert!(home.text.contains("Quota") && home.text.contains("0 of 5"), "{}", home.text);
    // The login page sends a logged-in person home.
    assert_eq!(b.get("/ui/login").await.location(), "/ui/");

    // Logging out needs the CSRF token, then revokes the session.
    let p = b.post("/ui/logout", &[("csrf", "forged")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let old = b.cookie_header();
    let p = b.submit("/ui/", "/ui/logout", &[]).await;
    assert_eq!((p.status, p.location()), (StatusCode::SEE_OTHER, "/ui/login"));
    assert!(p.cookies().iter().any(|c| c.starts_with("zoe_session=;") && c.contains("Max-Age=0")));
    let r = b.http.get(format!("{}/ui/", b.base)).header(COOKIE, old).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the revoked session no longer works");

    // Logging in with an API token works too; a bad token does not.
    let mut t = Browser::new(&c);
    let csrf = t.get("/ui/login").await.csrf();
    let p = t.post("/ui/login", &[("csrf", &csrf), ("token", "zoe_nope_nope")]).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    let csrf = t.get("/ui/login").await.csrf();
    let p = t.post("/ui/login", &[("csrf", &csrf), ("token", &admin)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(t.get("/ui/").await.text.contains("Welcome, admin"));
    // Logging out of a pasted API token keeps the token valid for the API.
    t.submit("/ui/", "/ui/logout", &[]).await;
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK);

    // Unknown pages: an HTML 404 with the security headers.
    let mut a = Browser::login(&c, "ada", "ada-password").await;
    let p = a.get("/ui/nope").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(p.text.contains("<!DOCTYPE html>"));
    assert_eq!(p.headers["x-frame-options"], "DENY");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_and_executions() {
    let (c, _root, admin) = start_with_ada().await;
    c.user(&admin, "bob", json!({ "role_id": 2 })).await; // superuser: customize resources, full shop
    let mut ada = Browser::login(&c, "ada", "ada-password").await;
    let mut bob = Browser::login(&c, "bob", "bob-password").await;
    let mut adm = Browser::with_token(&c, &admin).await;

    // The catalogue: grouped by category, logos, role filter, escaping.
    let p = ada.get("/ui/shop").await;
    assert_eq!(p.status, StatusCode::OK);
    for s in ["Batch jobs", "Hello, batch", "Interactive", "Static web page", "/ui/shop/hello-0/logo"] {
        assert!(p.text.contains(s), "{s} missing");
    }
    assert!(!p.text.contains("Worker pool"), "disabled_for user");
    assert!(!p.text.contains(EVIL) && p.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!p.text.contains("could not be read"), "problems are for admins");
    assert!(bob.get("/ui/shop").await.text.contains("Worker pool"), "full shop");
    let p = adm.get("/ui/shop").await;
    assert!(p.text.contains("Worker pool") && p.text.contains("could not be read") && p.text.contains("broken"));
    // Hidden entries are not found, not forbidden.
    assert_eq!(ada.get("/ui/shop/workers-0").await.status, StatusCode::NOT_FOUND);
    assert_eq!(ada.get("/ui/shop/nope-0").await.status, StatusCode::NOT_FOUND);
    let p = ada.get("/ui/shop/hello-0/logo").await;
    assert_eq!(p.headers[CONTENT_TYPE], "image/svg+xml");
    assert!(p.headers["content-security-policy"].to_str().unwrap().contains("sandbox"));

    // The evil entry's form: names, labels, defaults and Markdown escaped.
    let p = ada.get("/ui/shop/evil-0").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(!p.text.contains(EVIL), "{}", p.text);
    assert!(!p.text.contains("javascript:"), "{}", p.text);
    assert!(p.text.contains("Raw HTML &lt;script&gt;"));

    // The form: parameters, no resource fields for plain users.
    let p = ada.get("/ui/shop/web-0").await;
    assert!(p.text.contains("<label for=\"p0\">Page text</label>"), "{}", p.text);
    assert!(!p.text.contains("memory0"));
    assert!(bob.get("/ui/shop/web-0").await.text.contains("name=\"memory0\""));

    // Download JSON with a changed parameter.
    let csrf = p.csrf();
    let d =
        ada.post("/ui/shop/web-0", &[("csrf", &csrf), ("name", "x"), ("p0", "tuned!"), ("action", "download")]).await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(d.headers["content-disposition"].to_str().unwrap().starts_with("attachment"));
    let app: Value = serde_json::from_str(&d.text).unwrap();
    assert_eq!(app["services"][0]["environment"][0], json!(["MESSAGE", "tuned!"]));

    // Starting needs the CSRF token.
    let p = ada.post("/ui/shop/web-0", &[("name", "x"), ("p0", "tuned!")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // Bad parameter values come back on the form, marked.
    let p = ada.post("/ui/shop/hello-0", &[("csrf", &csrf), ("name", "x"), ("p1", "1000")]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.text.contains("between 1 and 60") && p.text.contains("aria-invalid=\"true\""));
    // Resource overrides need can_customize_resources.
    let p = ada.post("/ui/shop/web-0", &[("csrf", &csrf), ("name", "x"), ("memory0", "1")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let bcsrf = bob.get("/ui/shop/web-0").await.csrf();
    let p = bob.post("/ui/shop/web-0", &[("csrf", &bcsrf), ("name", "bob-web"), ("memory0", "0.25")]).await;
    let bob_exec = execution_id(&p);
    let r = c.call(0, Method::GET, &format!("/api/v1/executions/{bob_exec}/zapp"), Some(&admin), None).await;
    assert_eq!(r.body["services"][0]["resources"]["memory"]["min"], 256 << 20);

    // Start with an execution name that tries to inject script.
    let p = ada.post("/ui/shop/web-0", &[("csrf", &csrf), ("name", EVIL), ("p0", "tuned!")]).await;
    let id = execution_id(&p);
    let r = c.call(0, Method::GET, &format!("/api/v1/executions/{id}/zapp"), Some(&admin), None).await;
    assert_eq!(r.body["services"][0]["environment"][0], json!(["MESSAGE", "tuned!"]));
    for path in [format!("/ui/executions/{id}"), "/ui/executions".into(), "/ui/".into()] {
        let p = ada.get(&path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}");
        assert!(!p.text.contains(EVIL), "{path} shows the name unescaped");
        assert!(p.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{path}");
    }
    let p = ada.get(&format!("/ui/executions/{id}")).await;
    assert!(p.text.contains(&format!("data-live=\"/ui/executions/{id}/live\"")));
    assert!(p.text.contains("Terminate") && !p.text.contains(">Delete<"), "users may not delete");

    // The live endpoint: a blocking query answered at once for index 0.
    let p = ada.get(&format!("/ui/executions/{id}/live?index=0")).await;
    assert_eq!(p.status, StatusCode::OK);
    let v: Value = serde_json::from_str(&p.text).unwrap();
    assert!(v["index"].as_u64().unwrap() > 0);
    assert!(v["parts"]["summary"].as_str().unwrap().contains("Status"));
    assert!(!v["parts"]["summary"].as_str().unwrap().contains(EVIL));

    // Others' executions: forbidden without can_operate_others; admins see them.
    assert_eq!(ada.get(&format!("/ui/executions/{bob_exec}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(bob.get(&format!("/ui/executions/{id}")).await.status, StatusCode::FORBIDDEN);
    let p = adm.get(&format!("/ui/executions/{id}")).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(adm.get("/ui/executions?status=active").await.text.contains("bob-web"));
    assert!(!ada.get("/ui/executions").await.text.contains("bob-web"));
    assert_eq!(ada.get("/ui/executions/999999").await.status, StatusCode::NOT_FOUND);

    // Services: the log page, and the log stream needs the agents (503 here).
    let svc = c.call(0, Method::GET, &format!("/api/v1/executions/{id}"), Some(&admin), None).await.body["services"][0]
        .as_u64()
        .unwrap();
    let p = ada.get(&format!("/ui/services/{svc}/logs")).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.text.contains(&format!("data-log=\"/ui/services/{svc}/log\"")));
    let p = ada.get(&format!("/ui/services/{svc}/log")).await;
    assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(bob.get(&format!("/ui/services/{svc}/logs")).await.status, StatusCode::FORBIDDEN);

    // Upload a ZApp file (multipart), and a broken one.
    let csrf = ada.get("/ui/executions").await.csrf();
    let zapp = hello_zapp().to_string();
    let up = execution_id(
        &ada.upload("/ui/executions", &[("csrf", &csrf), ("name", "up")], ("zapp", zapp.as_bytes())).await,
    );
    let p = ada.upload("/ui/executions", &[("csrf", &csrf), ("name", "up")], ("zapp", b"{\"name\": 1}")).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.text.contains("/application/name"), "{}", p.text);
    let p = ada.upload("/ui/executions", &[("csrf", "forged"), ("name", "up")], ("zapp", b"{}")).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);

    // Terminate: CSRF, permissions, then done; start again; delete (admins).
    let p = ada.post(&format!("/ui/executions/{up}/terminate"), &[]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let bcsrf = bob.get("/ui/").await.csrf();
    let p = bob.post(&format!("/ui/executions/{up}/terminate"), &[("csrf", &bcsrf)]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let p = ada.post(&format!("/ui/executions/{up}/terminate"), &[("csrf", &csrf)]).await;
    assert_eq!((p.status, p.location()), (StatusCode::SEE_OTHER, format!("/ui/executions/{up}").as_str()));
    let r = c.call(0, Method::GET, &format!("/api/v1/executions/{up}"), Some(&admin), None).await;
    assert!(["cleaning up", "terminated"].contains(&r.body["status"].as_str().unwrap()), "{:?}", r.body);
    let again = execution_id(&ada.post(&format!("/ui/executions/{up}/restart"), &[("csrf", &csrf)]).await);
    assert_ne!(again, up);
    let p = ada.post(&format!("/ui/executions/{up}/delete"), &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "users may not delete executions");
    let j = ada.get(&format!("/ui/executions/{up}/zapp.json")).await;
    assert_eq!(serde_json::from_str::<Value>(&j.text).unwrap()["name"], "hello-batch");
    let acsrf = adm.get("/ui/").await.csrf();
    let p = adm.post(&format!("/ui/executions/{up}/delete"), &[("csrf", &acsrf)]).await;
    assert_eq!((p.status, p.location()), (StatusCode::SEE_OTHER, "/ui/executions"));
    assert_eq!(adm.get(&format!("/ui/executions/{up}")).await.status, StatusCode::NOT_FOUND);

    // Quotas: the home page shows the usage; the API's quota check applies.
    let p = ada.get("/ui/").await;
    assert!(p.text.contains("2 of 5"), "{}", p.text);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_admin_pages() {
    let (c, _root, admin) = start_with_ada().await;
    let mut ada = Browser::login(&c, "ada", "ada-password").await;
    let mut adm = Browser::with_token(&c, &admin).await;

    // Plain users: no status, no admin, and no links to them.
    let home = ada.get("/ui/").await;
    assert!(!home.text.contains("href=\"/ui/status\"") && !home.text.contains("href=\"/ui/admin\""));
    assert_eq!(ada.get("/ui/status").await.status, StatusCode::FORBIDDEN);
    assert_eq!(ada.get("/ui/admin").await.status, StatusCode::FORBIDDEN);
    let csrf = home.csrf();
    let p = ada.post("/ui/nodes/n1/eligibility", &[("csrf", &csrf), ("eligible", "false")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let p = ada.post("/ui/admin/users", &[("csrf", &csrf), ("username", "eve")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);

    // Status: queues, nodes (none here), coordinators and the leader.
    let p = adm.get("/ui/status").await;
    assert_eq!(p.status, StatusCode::OK);
    for s in ["Scheduler", "queued", "No node has registered yet", "Coordinators", "leader", "c1"] {
        assert!(p.text.contains(s), "{s} missing");
    }

    // Its numbers are the API's: a node with 4 cores and a running
    // execution reserving 0.5 (this page once read renamed keys and showed
    // "cores reserved 0 of 0" and no running execution).
    let (id, _) = api_support::running_on_n1(&c, &admin, "st", None, vec![]).await;
    let stats = c.call(0, Method::GET, "/api/v1/statistics/scheduler", Some(&admin), None).await.body;
    let api_cores = stats["platform_stats"]["cores_reserved"].as_f64().unwrap();
    let p = adm.get("/ui/status").await;
    assert_eq!(api_cores, 0.5, "{stats}");
    assert!(p.text.contains("cores reserved 0.5 of 4"), "{}", p.text);
    assert!(stats["running_queue"].as_array().unwrap().contains(&json!(id)), "{stats}");
    assert!(p.text.contains(&format!("href=\"/ui/executions/{id}\"")), "the running execution is listed");

    let csrf = p.csrf();
    let p = adm.post("/ui/nodes/nosuch/eligibility", &[("csrf", &csrf), ("eligible", "false")]).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let p = adm.post("/ui/nodes/nosuch/drain", &[("eligible", "false")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "no CSRF token");

    // Admin: users, roles, quotas, tokens through forms.
    let p = adm.get("/ui/admin").await;
    assert_eq!(p.status, StatusCode::OK);
    for s in ["Users", "Roles", "Quotas", "Tokens", "ada", "superuser", "default"] {
        assert!(p.text.contains(s), "{s} missing");
    }
    let csrf = p.csrf();
    let p = adm
        .post(
            "/ui/admin/quotas",
            &[
                ("csrf", &csrf),
                ("name", "small"),
                ("concurrent_executions", "1"),
                ("cores", "2"),
                ("memory_gib", "1"),
                ("runtime_limit_h", "0.5"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
    let q = c.call(0, Method::GET, "/api/v1/quotas?name=small", Some(&admin), None).await.body[0].clone();
    assert_eq!((q["memory"].as_u64(), q["runtime_limit"].as_u64()), (Some(1 << 30), Some(1800)));
    let p = adm.post("/ui/admin/roles", &[("csrf", &csrf), ("name", EVIL), ("can_see_status", "true")]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let role = c
        .call(0, Method::GET, "/api/v1/roles", Some(&admin), None)
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == EVIL)
        .cloned()
        .unwrap();
    assert_eq!((role["can_see_status"].as_bool(), role["can_change_config"].as_bool()), (Some(true), Some(false)));
    let p = adm.get("/ui/admin").await;
    assert!(!p.text.contains(EVIL), "role names are escaped");
    let p = adm
        .post(
            "/ui/admin/users",
            &[
                ("csrf", &csrf),
                ("username", "eve"),
                ("password", "eve-password"),
                ("role_id", &role["id"].to_string()),
                ("quota_id", &q["id"].to_string()),
                ("auth_source", "internal"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
    // Bad input: the API's error, with the field, on an error page.
    let p = adm.post("/ui/admin/users", &[("csrf", &csrf), ("username", "Bad Name")]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.text.contains("/username"));
    // eve's role may see the status, and eve's home shows the small quota.
    let mut eve = Browser::login(&c, "eve", "eve-password").await;
    assert_eq!(eve.get("/ui/status").await.status, StatusCode::OK);
    assert!(eve.get("/ui/").await.text.contains("0 of 1"));
    // Update a user: disable eve; her session stops working.
    let eve_id =
        c.call(0, Method::GET, "/api/v1/users?username=eve", Some(&admin), None).await.body[0]["id"].as_u64().unwrap();
    let p = adm
        .post(
            &format!("/ui/admin/users/{eve_id}"),
            &[
                ("csrf", &csrf),
                ("role_id", &role["id"].to_string()),
                ("quota_id", &q["id"].to_string()),
                ("auth_source", "internal"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
    assert_eq!(eve.get("/ui/").await.location(), "/ui/login");
    // Tokens: create (secret shown once), revoke.
    let p = adm.post("/ui/admin/tokens", &[("csrf", &csrf), ("name", "ci"), ("ttl_s", "3600")]).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.text.contains("value=\"zoe_"));
    let tokens = c.call(0, Method::GET, "/api/v1/tokens", Some(&admin), None).await.body;
    let tid =
        tokens.as_array().unwrap().iter().find(|t| t["name"] == "ci").unwrap()["id"].as_str().unwrap().to_string();
    let p = adm.post(&format!("/ui/admin/tokens/{tid}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    // Delete the role and the quota.
    let rid = role["id"].to_string();
    assert_eq!(
        adm.post(&format!("/ui/admin/roles/{rid}/delete"), &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    let qid = q["id"].to_string();
    assert_eq!(
        adm.post(&format!("/ui/admin/quotas/{qid}/delete"), &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_from_the_shop_and_their_pages() {
    let (c, _root, admin) = start_with_ada().await;
    let hello = json!({"shop": {"id": "hello-0", "parameters": {"GREETING": "from a workflow", "COUNT": 2}}});
    let mut first = hello.clone();
    first["name"] = json!("first");
    let mut second = hello.clone();
    second["name"] = json!("second");
    second["depends_on"] = json!(["first"]);
    second["condition"] = json!("always");
    let doc = json!({"name": "greetings", "steps": [first, second]});

    // Shop parameters are checked by name, at their pointer.
    let mut bad = doc.clone();
    bad["steps"][1]["shop"]["parameters"]["COUNT"] = json!(99);
    let r = c.call(0, Method::POST, "/api/v1/workflows/validate", Some(&admin), Some(bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], "/steps/1/shop/parameters/COUNT", "{}", r.body);
    let mut bad = doc.clone();
    bad["steps"][0]["shop"]["id"] = json!("nope-0");
    let r = c.call(0, Method::POST, "/api/v1/workflows", Some(&admin), Some(bad)).await;
    assert_eq!(r.body["error"]["details"][0]["path"], "/steps/0/shop/id", "{}", r.body);

    let r = c.call(0, Method::POST, "/api/v1/workflows", Some(&admin), Some(doc)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let wf = r.body["id"].as_u64().unwrap();
    let w = c.call(0, Method::GET, &format!("/api/v1/workflows/{wf}"), Some(&admin), None).await.body;
    let env = &w["document"]["steps"][1]["zapp"]["services"][0]["environment"];
    assert_eq!(env, &json!([["GREETING", "from a workflow"], ["COUNT", "2"]]), "{w:#}");
    let r = c.call(0, Method::POST, &format!("/api/v1/workflows/{wf}/runs"), Some(&admin), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let run = r.body["id"].as_u64().unwrap();

    // Another user sees neither.
    let mut ada = Browser::login(&c, "ada", "ada-password").await;
    assert!(!ada.get("/ui/workflows").await.text.contains("greetings"));
    assert_eq!(ada.get(&format!("/ui/runs/{run}")).await.status, StatusCode::FORBIDDEN);

    let mut b = Browser::with_token(&c, &admin).await;
    let p = b.get("/ui/workflows").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.text.contains(&format!("href=\"/ui/workflows/{wf}\"")), "{}", p.text);
    let p = b.get(&format!("/ui/workflows/{wf}")).await;
    assert!(p.text.contains(&format!("href=\"/ui/runs/{run}\"")), "{}", p.text);
    let p = b.get(&format!("/ui/runs/{run}")).await;
    assert_eq!(p.status, StatusCode::OK);
    // The graph: two boxes, one arrow (dotted: `always`), the first step's
    // execution linked.
    assert_eq!(p.text.matches("<rect").count(), 2, "{}", p.text);
    assert!(p.text.contains("stroke-dasharray=\"2 3\""), "{}", p.text);
    let r = c.call(0, Method::GET, &format!("/api/v1/runs/{run}"), Some(&admin), None).await.body;
    let e = r["steps"][0]["instances"][0]["attempts"][0]["execution"].as_u64().unwrap();
    assert!(p.text.contains(&format!("href=\"/ui/executions/{e}\"")), "{}", p.text);

    // Terminated from the page: the run and its step's execution end.
    let csrf = p.csrf();
    let t = b.post(&format!("/ui/runs/{run}/terminate"), &[("csrf", &csrf)]).await;
    assert_eq!(t.status, StatusCode::SEE_OTHER, "{}", t.text);
    let r = c.call(0, Method::GET, &format!("/api/v1/runs/{run}"), Some(&admin), None).await.body;
    assert_eq!(r["status"], "terminated", "{r:#}");
    let ex = c.call(0, Method::GET, &format!("/api/v1/executions/{e}"), Some(&admin), None).await.body;
    assert_eq!(ex["status"], "terminated", "{ex:#}");
}
