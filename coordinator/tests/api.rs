//! The REST API against real in-process coordinators (Raft on sled, mTLS
//! QUIC between members, HTTP on 127.0.0.1): every route's success and
//! failure modes, forwarding from followers, blocking queries, HTTPS.

mod api_support;

use api_support::{Cluster, call, expect_error, hello_zapp, http_client, web_client};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use zoe_coordinator::api::ROUTES;
use zoe_coordinator::api::routes::Auth;

fn concrete(path: &str) -> String {
    path.replace("{id}", "999999").replace("{name}", "nosuchnode").replace("{group}", "all")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_auth_openapi_and_metrics() {
    let c = Cluster::start(1).await;
    let r = c.call(0, Method::GET, "/api/v1/info", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["api_version"], "v1");
    assert_eq!(r.body["application_format_version"], 3);

    // The bootstrap token: wrong token refused, right one works once.
    let bt = c.bootstrap_token().await;
    let r = c.call(0, Method::POST, "/api/v1/acl/bootstrap", Some("zoe-bootstrap-nope"), None).await;
    expect_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = c.call(0, Method::POST, "/api/v1/acl/bootstrap", Some(&bt), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let admin = r.body["token"].as_str().unwrap().to_string();
    let r = c.call(0, Method::POST, "/api/v1/acl/bootstrap", Some(&bt), None).await;
    expect_error(&r, StatusCode::CONFLICT, "conflict");

    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["username"], "admin");
    assert_eq!(r.body["role"]["name"], "admin");

    // Every route that needs a token refuses a request without one, or with
    // a forged one, with the JSON error shape.
    for route in ROUTES.iter().filter(|r| r.auth == Auth::Token) {
        let m = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
        let path = concrete(route.path);
        let body = (m != Method::GET && m != Method::DELETE).then(|| json!({}));
        let r = c.call(0, m.clone(), &path, None, body.clone()).await;
        expect_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        let r = c.call(0, m, &path, Some("zoe_0000_forged"), body).await;
        expect_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some("Basic abc"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The OpenAPI document lists exactly the routes, and every documented
    // route is served (a missing one would answer the router's `no_route`).
    let r = c.call(0, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["openapi"], "3.1.0");
    let documented_doc = r.body.clone();
    let documented: BTreeSet<(String, String)> = r.body["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), p.clone())))
        .collect();
    let routed: BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    assert_eq!(documented, routed);
    for route in ROUTES {
        let m = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
        let body = (m != Method::GET && m != Method::DELETE).then(|| json!({}));
        let r = c.call(0, m, &concrete(route.path), Some(&admin), body).await;
        assert_ne!(r.body["error"]["code"], "no_route", "{} {} is documented but not routed", route.method, route.path);
        assert!(r.status != StatusCode::METHOD_NOT_ALLOWED, "{} {}", route.method, route.path);
        assert!(
            !r.status.is_server_error() || r.status == StatusCode::SERVICE_UNAVAILABLE,
            "{} {}: {:?}",
            route.method,
            route.path,
            r.body
        );
    }
    let r = c.call(0, Method::GET, "/api/v1/nope", None, None).await;
    expect_error(&r, StatusCode::NOT_FOUND, "no_route");
    // The documented body fields are exactly those the handlers accept:
    // an unknown field is refused with the list of accepted ones.
    for (method, path) in ROUTES.iter().filter(|r| (r.fields)().is_some()).map(|r| (&r.method, &r.path)) {
        let fields = zoe_coordinator::api::routes::body_fields(method, path).unwrap();
        assert!(ROUTES.iter().any(|r| r.method == *method && r.path == *path), "{method} {path} is not a route");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = c.call(0, m, &concrete(path), Some(&admin), Some(json!({"zz_unknown": 1}))).await;
        let d = expect_error(&r, StatusCode::BAD_REQUEST, "invalid");
        assert_eq!(d[0]["path"], "/zz_unknown", "{method} {path}");
        let accepted = d[0]["message"].as_str().unwrap().split("one of: ").nth(1).unwrap().to_string();
        assert_eq!(accepted, fields.join(", "), "{method} {path}");
        let doc = &documented_doc["paths"][*path][*method]["requestBody"]["content"]["application/json"]["schema"];
        let props: Vec<&String> = doc["properties"].as_object().unwrap().keys().collect();
        assert_eq!(props, fields.iter().collect::<Vec<_>>(), "{method} {path}");
    }

    let text = c.http.get(format!("{}/metrics", c.url(0))).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("zoe_api_requests_total{method=\"GET\",route=\"/api/v1/info\",status=\"200\"} 2"), "{text}");
    assert!(text.contains("zoe_raft_index{kind=\"applied\"}"));
    assert!(text.contains("zoe_executions{status=\"queued\"} 0"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_permissions_validation_quotas() {
    let c = Cluster::start(1).await;
    let admin = c.admin().await;
    let (_, ada) = c.user(&admin, "ada", json!({})).await;
    let (bob_id, bob) = c.user(&admin, "bob", json!({})).await;

    // Submit: 201 with the id and the replicated index.
    let r = c
        .call(
            0,
            Method::POST,
            "/api/v1/executions",
            Some(&ada),
            Some(json!({"name": "run1", "application": hello_zapp()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let e1 = r.body["id"].as_u64().unwrap();
    assert!(r.index.is_some_and(|i| i > 0));

    let r = c.call(0, Method::GET, &format!("/api/v1/executions/{e1}"), Some(&ada), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "submitted");
    assert_eq!(r.body["owner"], "ada");
    assert_eq!(r.body["service_details"][0]["name"], "hello0");
    assert!(r.index.is_some());
    let svc = r.body["services"][0].as_u64().unwrap();

    // Validation errors carry pointers into the body.
    let mut bad = hello_zapp();
    bad["services"][0]["resources"]["memory"]["min"] = json!("lots");
    let r =
        c.call(0, Method::POST, "/api/v1/executions", Some(&ada), Some(json!({"name": "x", "application": bad}))).await;
    let d = expect_error(&r, StatusCode::BAD_REQUEST, "invalid_zapp");
    assert!(d.iter().any(|d| d["path"] == "/application/services/0/resources/memory/min"), "{d:?}");
    let r = c.call(0, Method::POST, "/api/v1/executions", Some(&ada), Some(json!({"application": hello_zapp()}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/name");
    let r = c.call(0, Method::POST, "/api/v1/executions", Some(&ada), Some(json!({"name": "x"}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/application");
    let r =
        c.call(0, Method::POST, "/api/v1/executions", Some(&ada), Some(json!({"name": "x", "aplication": {}}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/aplication");
    let r = c
        .http
        .post(format!("{}/api/v1/executions", c.url(0)))
        .bearer_auth(&ada)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c.call(0, Method::POST, "/api/v1/zapp/validate", Some(&ada), Some(bad.clone())).await;
    assert!(
        expect_error(&r, StatusCode::BAD_REQUEST, "invalid_zapp")
            .iter()
            .any(|d| d["path"] == "/services/0/resources/memory/min")
    );
    let r = c.call(0, Method::POST, "/api/v1/zapp/validate", Some(&ada), Some(hello_zapp())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["valid"], true);

    // 413 over the configured limit (64 KiB in these tests).
    let mut big = hello_zapp();
    big["services"][0]["command"] = json!("x".repeat(70_000));
    let r = c
        .call(0, Method::POST, "/api/v1/executions", Some(&ada), Some(json!({"name": "big", "application": big})))
        .await;
    expect_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // 404, and bad ids are 400s, not 500s.
    let r = c.call(0, Method::GET, "/api/v1/executions/424242", Some(&ada), None).await;
    expect_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = c.call(0, Method::GET, "/api/v1/executions/abc", Some(&ada), None).await;
    expect_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    let r = c.call(0, Method::GET, "/api/v1/executions?limit=0", Some(&ada), None).await;
    expect_error(&r, StatusCode::BAD_REQUEST, "invalid");
    let r = c.call(0, Method::GET, "/api/v1/executions?status=bogus", Some(&ada), None).await;
    expect_error(&r, StatusCode::BAD_REQUEST, "invalid");
    let r = c.call(0, Method::GET, "/api/v1/executions?colour=red", Some(&ada), None).await;
    expect_error(&r, StatusCode::BAD_REQUEST, "bad_request");

    // Another user sees and touches nothing of ada's.
    for (m, p) in [
        (Method::GET, format!("/api/v1/executions/{e1}")),
        (Method::POST, format!("/api/v1/executions/{e1}/terminate")),
        (Method::GET, format!("/api/v1/executions/{e1}/endpoints")),
        (Method::GET, format!("/api/v1/executions/{e1}/zapp")),
        (Method::POST, format!("/api/v1/executions/{e1}/resubmit")),
        (Method::GET, format!("/api/v1/services/{svc}")),
        (Method::GET, format!("/api/v1/discovery/{e1}/hello")),
    ] {
        let body = (m == Method::POST).then(|| json!({}));
        let r = c.call(0, m, &p, Some(&bob), body).await;
        expect_error(&r, StatusCode::FORBIDDEN, "forbidden");
        // The refusal does not tell bob whose execution it is.
        assert!(!r.body["error"]["message"].as_str().unwrap().contains("ada"), "{:?}", r.body);
    }
    let r = c.call(0, Method::GET, "/api/v1/executions", Some(&bob), None).await;
    assert_eq!(r.body["executions"].as_array().unwrap().len(), 0);
    let r = c.call(0, Method::GET, "/api/v1/executions?owner=ada", Some(&bob), None).await;
    expect_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // The admin (can_operate_others) sees it.
    let r = c.call(0, Method::GET, "/api/v1/executions?owner=ada", Some(&admin), None).await;
    assert_eq!(r.body["executions"][0]["id"], e1);

    // Owner reads: endpoints (none published yet), ZApp, service, discovery.
    let r = c.call(0, Method::GET, &format!("/api/v1/executions/{e1}/endpoints"), Some(&ada), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["endpoints"], json!([]));
    let r = c.call(0, Method::GET, &format!("/api/v1/executions/{e1}/zapp"), Some(&ada), None).await;
    assert_eq!(r.body["name"], "hello-batch");
    let r = c.call(0, Method::GET, &format!("/api/v1/services/{svc}"), Some(&ada), None).await;
    assert_eq!(r.body["dns_name"], format!("hello0.{e1}.zoe"));
    let r = c.call(0, Method::GET, &format!("/api/v1/discovery/{e1}/hello"), Some(&ada), None).await;
    assert_eq!(r.body["dns_names"], json!([format!("hello0.{e1}.zoe")]));
    let r = c.call(0, Method::GET, &format!("/api/v1/discovery/{e1}/nope"), Some(&ada), None).await;
    expect_error(&r, StatusCode::NOT_FOUND, "not_found");
    // Logs need the agents: a clear 503, never a fake answer.
    let r = c.call(0, Method::GET, &format!("/api/v1/services/{svc}/logs"), Some(&ada), None).await;
    expect_error(&r, StatusCode::SERVICE_UNAVAILABLE, "no_live_source");

    // Resubmit and pagination (newest first, cursor).
    let r = c
        .call(0, Method::POST, &format!("/api/v1/executions/{e1}/resubmit"), Some(&ada), Some(json!({"name": "run2"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let e2 = r.body["id"].as_u64().unwrap();
    let r = c
        .call(
            0,
            Method::POST,
            "/api/v1/executions",
            Some(&ada),
            Some(json!({"name": "run3", "application": hello_zapp()})),
        )
        .await;
    let e3 = r.body["id"].as_u64().unwrap();
    let r = c.call(0, Method::GET, "/api/v1/executions?limit=2", Some(&ada), None).await;
    let ids: Vec<u64> = r.body["executions"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![e3, e2]);
    let cursor = r.body["next_cursor"].as_u64().unwrap();
    let r = c.call(0, Method::GET, &format!("/api/v1/executions?limit=2&cursor={cursor}"), Some(&ada), None).await;
    let ids: Vec<u64> = r.body["executions"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![e1]);
    assert!(r.body["next_cursor"].is_null());
    let r = c.call(0, Method::GET, "/api/v1/executions?name=run2&status=submitted,queued", Some(&ada), None).await;
    assert_eq!(r.body["executions"].as_array().unwrap().len(), 1);

    // Quota: ada's default quota allows 20 cores; a ZApp of 30 cores is refused.
    let mut huge = hello_zapp();
    huge["services"][0]["resources"]["cores"]["min"] = json!(30);
    let r = c
        .call(0, Method::POST, "/api/v1/executions", Some(&ada), Some(json!({"name": "huge", "application": huge})))
        .await;
    let _ = expect_error(&r, StatusCode::CONFLICT, "quota_exceeded");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("cores"));
    // A quota of 1 concurrent execution for bob.
    let r = c
        .call(
            0,
            Method::POST,
            "/api/v1/quotas",
            Some(&admin),
            Some(json!({"name": "tiny", "concurrent_executions": 1, "memory": 0, "cores": 0, "runtime_limit": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let tiny = r.body["id"].as_u64().unwrap();
    let r = c
        .call(0, Method::PATCH, &format!("/api/v1/users/{bob_id}"), Some(&admin), Some(json!({"quota_id": tiny})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = c
        .call(
            0,
            Method::POST,
            "/api/v1/executions",
            Some(&bob),
            Some(json!({"name": "b1", "application": hello_zapp()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let b1 = r.body["id"].as_u64().unwrap();
    let r = c
        .call(
            0,
            Method::POST,
            "/api/v1/executions",
            Some(&bob),
            Some(json!({"name": "b2", "application": hello_zapp()})),
        )
        .await;
    expect_error(&r, StatusCode::CONFLICT, "quota_exceeded");

    // Terminate (a submitted execution ends at once), then delete: users
    // lack can_delete_executions; the admin may; an active one is a 409.
    let r = c.call(0, Method::DELETE, &format!("/api/v1/executions/{b1}"), Some(&admin), None).await;
    expect_error(&r, StatusCode::CONFLICT, "conflict");
    let r = c
        .call(
            0,
            Method::POST,
            &format!("/api/v1/executions/{b1}/terminate"),
            Some(&bob),
            Some(json!({"reason": "done"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["status"], "terminated");
    let r = c
        .call(
            0,
            Method::POST,
            "/api/v1/executions",
            Some(&bob),
            Some(json!({"name": "b2", "application": hello_zapp()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "the ended execution no longer counts");
    let r = c.call(0, Method::DELETE, &format!("/api/v1/executions/{b1}"), Some(&bob), None).await;
    expect_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = c.call(0, Method::DELETE, &format!("/api/v1/executions/{b1}"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c.call(0, Method::DELETE, &format!("/api/v1/executions/{b1}"), Some(&admin), None).await;
    expect_error(&r, StatusCode::NOT_FOUND, "not_found");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_users_roles_quotas_tokens_nodes() {
    let c = Cluster::start(1).await;
    let admin = c.admin().await;
    let (ada_id, ada) = c.user(&admin, "ada", json!({"email": "ada@example.org"})).await;

    // A plain user on admin routes: 403.
    for (m, p, b) in [
        (Method::GET, "/api/v1/users", None),
        (Method::POST, "/api/v1/users", Some(json!({"username": "eve"}))),
        (Method::GET, "/api/v1/roles", None),
        (Method::POST, "/api/v1/quotas", Some(json!({"name": "q"}))),
        (Method::DELETE, "/api/v1/quotas/4", None),
        (Method::GET, "/api/v1/nodes", None),
        (Method::GET, "/api/v1/statistics/scheduler", None),
        (Method::POST, "/api/v1/nodes/n1/eligibility", Some(json!({"eligible": false}))),
        (Method::GET, "/api/v1/cluster/members", None),
        (Method::DELETE, "/api/v1/cluster/members/1", None),
    ] {
        let r = c.call(0, m, p, Some(&ada), b).await;
        expect_error(&r, StatusCode::FORBIDDEN, "forbidden");
    }
    // Users: self read and self update (email, password), not role.
    let r = c.call(0, Method::GET, &format!("/api/v1/users/{ada_id}"), Some(&ada), None).await;
    assert_eq!(r.body["email"], "ada@example.org");
    assert_eq!(r.body["has_password"], true);
    assert!(r.body.get("password_hash").is_none());
    let r = c.call(0, Method::PATCH, &format!("/api/v1/users/{ada_id}"), Some(&ada), Some(json!({"role_id": 1}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/role_id");
    let r =
        c.call(0, Method::PATCH, &format!("/api/v1/users/{ada_id}"), Some(&ada), Some(json!({"email": "a@b.c"}))).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c.call(0, Method::POST, "/api/v1/users", Some(&admin), Some(json!({"username": "Bad Name"}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/username");
    let r = c.call(0, Method::POST, "/api/v1/users", Some(&admin), Some(json!({"username": "ada"}))).await;
    expect_error(&r, StatusCode::CONFLICT, "conflict");
    let r =
        c.call(0, Method::POST, "/api/v1/users", Some(&admin), Some(json!({"username": "zed", "role_id": 777}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/role_id");
    let r = c.call(0, Method::GET, "/api/v1/users?username=ada", Some(&admin), None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let r = c.call(0, Method::GET, "/api/v1/users/9999", Some(&admin), None).await;
    expect_error(&r, StatusCode::NOT_FOUND, "not_found");
    // Wrong password: 401.
    let r = c
        .http
        .post(format!("{}/api/v1/login", c.url(0)))
        .basic_auth("ada", Some("wrong-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Roles: create, update, the admin role is immutable; a role without
    // can_access_api cannot use the API.
    let r = c
        .call(
            0,
            Method::POST,
            "/api/v1/roles",
            Some(&admin),
            Some(json!({"name": "watcher", "can_see_status": true, "can_access_api": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let watcher = r.body["id"].as_u64().unwrap();
    let r = c
        .call(
            0,
            Method::PATCH,
            &format!("/api/v1/roles/{watcher}"),
            Some(&admin),
            Some(json!({"can_see_status": "yes"})),
        )
        .await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/can_see_status");
    let r = c.call(0, Method::PATCH, "/api/v1/roles/1", Some(&admin), Some(json!({"can_see_status": false}))).await;
    expect_error(&r, StatusCode::CONFLICT, "conflict");
    let r = c.call(0, Method::GET, &format!("/api/v1/roles/{watcher}"), Some(&ada), None).await;
    assert_eq!(r.body["can_see_status"], true);
    let r = c
        .call(0, Method::PATCH, &format!("/api/v1/users/{ada_id}"), Some(&admin), Some(json!({"role_id": watcher})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c.call(0, Method::GET, "/api/v1/nodes", Some(&ada), None).await;
    assert_eq!(r.status, StatusCode::OK, "can_see_status lets ada see nodes");
    let r = c
        .call(
            0,
            Method::PATCH,
            &format!("/api/v1/roles/{watcher}"),
            Some(&admin),
            Some(json!({"can_access_api": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&ada), None).await;
    expect_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = c.call(0, Method::DELETE, &format!("/api/v1/roles/{watcher}"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&ada), None).await;
    assert_eq!(r.body["role"]["name"], "user", "users of a deleted role become `user`");

    // Quotas: all limits required, default undeletable, cores in cores.
    let r = c.call(0, Method::POST, "/api/v1/quotas", Some(&admin), Some(json!({"name": "q", "memory": 1}))).await;
    expect_error(&r, StatusCode::BAD_REQUEST, "invalid");
    let r = c
        .call(
            0,
            Method::POST,
            "/api/v1/quotas",
            Some(&admin),
            Some(json!({"name": "q", "concurrent_executions": 2, "memory": 1024, "cores": 1.5, "runtime_limit": 3600})),
        )
        .await;
    let q = r.body["id"].as_u64().unwrap();
    let r =
        c.call(0, Method::PATCH, &format!("/api/v1/quotas/{q}"), Some(&admin), Some(json!({"cores": 2.0005}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/cores");
    let r = c.call(0, Method::GET, &format!("/api/v1/quotas/{q}"), Some(&ada), None).await;
    assert_eq!(r.body["cores"], 1.5);
    let r = c.call(0, Method::DELETE, "/api/v1/quotas/4", Some(&admin), None).await;
    expect_error(&r, StatusCode::CONFLICT, "conflict");
    let r = c.call(0, Method::GET, "/api/v1/quotas?name=q", Some(&admin), None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let r = c.call(0, Method::DELETE, &format!("/api/v1/quotas/{q}"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // Tokens: create (secret once), list (no secrets), revoke.
    let r = c.call(0, Method::POST, "/api/v1/tokens", Some(&ada), Some(json!({"name": "ci"}))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let (tid, tok) = (r.body["id"].as_str().unwrap().to_string(), r.body["token"].as_str().unwrap().to_string());
    let r = c.call(0, Method::GET, "/api/v1/tokens", Some(&tok), None).await;
    let listed: Vec<&Value> = r.body.as_array().unwrap().iter().collect();
    assert!(listed.iter().any(|t| t["id"] == tid.as_str() && t.get("token").is_none() && t.get("hash").is_none()));
    assert!(listed.iter().all(|t| t["username"] == "ada"));
    let r = c.call(0, Method::POST, "/api/v1/tokens", Some(&ada), Some(json!({"user_id": 1}))).await;
    expect_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = c.call(0, Method::DELETE, &format!("/api/v1/tokens/{tid}"), Some(&ada), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&tok), None).await;
    expect_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = c.call(0, Method::DELETE, "/api/v1/tokens/nope", Some(&ada), None).await;
    expect_error(&r, StatusCode::NOT_FOUND, "not_found");

    // Nodes: none registered yet (no agents): 404s on names, empty lists;
    // preload needs the agents.
    let r = c.call(0, Method::GET, "/api/v1/nodes", Some(&admin), None).await;
    assert_eq!(r.body, json!([]));
    for (m, p, b) in [
        (Method::GET, "/api/v1/nodes/n1", None),
        (Method::GET, "/api/v1/nodes/n1/images", None),
        (Method::POST, "/api/v1/nodes/n1/eligibility", Some(json!({"eligible": false}))),
        (Method::POST, "/api/v1/nodes/n1/drain", Some(json!({"enable": true, "deadline_s": 60}))),
        (Method::GET, "/api/v1/nodes/n1/drain", None),
        (Method::POST, "/api/v1/images/preload", Some(json!({"image": "zoe.local/busybox:1", "nodes": ["n1"]}))),
    ] {
        let r = c.call(0, m, p, Some(&admin), b).await;
        expect_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    let r = c.call(0, Method::POST, "/api/v1/nodes/n1/eligibility", Some(&admin), Some(json!({}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/eligible");
    let r = c
        .call(0, Method::POST, "/api/v1/images/preload", Some(&admin), Some(json!({"image": "zoe.local/busybox:1"})))
        .await;
    expect_error(&r, StatusCode::SERVICE_UNAVAILABLE, "no_live_source");
    let r = c.call(0, Method::GET, "/api/v1/statistics/scheduler", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["live_available"], false);
    assert_eq!(r.body["queue_length"], 0);
    let r = c.call(0, Method::GET, "/api/v1/cluster/members", Some(&admin), None).await;
    assert_eq!(r.body["members"].as_array().unwrap().len(), 1);
    let r = c.call(0, Method::DELETE, "/api/v1/cluster/members/7", Some(&admin), None).await;
    expect_error(&r, StatusCode::NOT_FOUND, "not_found");

    // Deleting a user: not yourself; others yes.
    let r = c.call(0, Method::DELETE, "/api/v1/users/100", Some(&admin), None).await;
    expect_error(&r, StatusCode::CONFLICT, "conflict");
    let r = c.call(0, Method::DELETE, &format!("/api/v1/users/{ada_id}"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&ada), None).await;
    expect_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_query_wakes_on_change() {
    let c = Cluster::start(1).await;
    let admin = c.admin().await;
    let r = c.call(0, Method::GET, "/api/v1/executions", Some(&admin), None).await;
    let index = r.index.unwrap();
    let client = c.client.clone();
    let tok = admin.clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        call(&client, 0, Method::GET, &format!("/api/v1/executions?index={index}&wait=30s"), Some(&tok), None).await
    });
    // The query must still be waiting: nothing changed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "a blocking query returned without a change");
    let r = c
        .call(
            0,
            Method::POST,
            "/api/v1/executions",
            Some(&admin),
            Some(json!({"name": "w", "application": hello_zapp()})),
        )
        .await;
    let id = r.body["id"].as_u64().unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woke").unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(r.index.unwrap() > index);
    assert_eq!(r.body["executions"][0]["id"], id);
    // A short wait with no change returns the same index.
    let r2 = c
        .call(0, Method::GET, &format!("/api/v1/executions?index={}&wait=200ms", r.index.unwrap()), Some(&admin), None)
        .await;
    assert_eq!(r2.status, StatusCode::OK);
    assert_eq!(r2.index, r.index);
    let r = c.call(0, Method::GET, "/api/v1/executions?index=1&wait=forever", Some(&admin), None).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/wait");

    // Stopping the server answers a blocking query at once instead of
    // holding shutdown for its whole wait.
    let last = r2.index.unwrap();
    let (http, url) = (c.http.clone(), c.url(0).to_string());
    let waiter = tokio::spawn(async move {
        http.get(format!("{url}/api/v1/executions?index={last}&wait=60s")).bearer_auth(&admin).send().await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    c.stop().await;
    assert!(t.elapsed() < Duration::from_millis(2500), "shutdown took {:?}", t.elapsed());
    if let Ok(resp) = waiter.await.unwrap() {
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_writes_and_serve_consistent_reads() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let bt = c.bootstrap_token().await;
    // Bootstrap through a follower: its writes are forwarded to the leader.
    let r = c.call(followers[0], Method::POST, "/api/v1/acl/bootstrap", Some(&bt), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let admin = r.body["token"].as_str().unwrap().to_string();
    // The token works at once on the other follower (miss → linearizable retry).
    let r = c
        .call(
            followers[1],
            Method::POST,
            "/api/v1/executions",
            Some(&admin),
            Some(json!({"name": "f", "application": hello_zapp()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_u64().unwrap();
    let r = c
        .call(followers[0], Method::GET, &format!("/api/v1/executions/{id}?consistent=true"), Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["name"], "f");
    let r = c.call(leader, Method::GET, "/api/v1/info", None, None).await;
    assert_eq!(r.body["leader"], c.members[leader].coord.id());
    let r = c.call(followers[1], Method::GET, "/api/v1/cluster/members", Some(&admin), None).await;
    assert_eq!(r.body["members"].as_array().unwrap().len(), 3);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_text_file_auth() {
    let c = Cluster::start_with(1, &|i, dir| {
        std::fs::write(dir.join("zoepass.csv"), "# users\ncarol,carol-secret,user\n").unwrap();
        format!(
            "tls_cert = \"c{n}.pem\"\ntls_key = \"c{n}-key.pem\"\nauth_file = \"zoepass.csv\"\n\n\
             [api.proxy]\nlisten = \"127.0.0.1:0\"\n",
            n = i + 1
        )
    })
    .await;
    assert!(c.url(0).starts_with("https://127.0.0.1:"));
    // The service proxy serves HTTPS with the same certificate; a visitor
    // without credentials goes to the UI's own origin to log in.
    let proxy = c.members[0].api.as_ref().and_then(|a| a.proxy_addr()).expect("the proxy listens");
    let browser = web_client(Some(c.ca.cert_pem()));
    let r = browser.get(format!("https://127.0.0.1:{}/7/web0/8080/", proxy.port())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to, format!("{}/ui/proxy?to=%2F7%2Fweb0%2F8080%2F", c.url(0)));
    let r = browser.get(format!("https://127.0.0.1:{}/not-a-service", proxy.port())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c.call(0, Method::GET, "/api/v1/info", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    // A client that does not trust the cluster CA is refused at the handshake.
    let untrusting = http_client(None);
    assert!(untrusting.get(format!("{}/api/v1/info", c.url(0))).send().await.is_err());

    let admin = c.admin().await;
    let r = c
        .call(
            0,
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({"username": "carol", "auth_source": "textfile"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = c
        .call(0, Method::POST, "/api/v1/login", None, Some(json!({"username": "carol", "password": "carol-secret"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let tok = r.body["token"].as_str().unwrap().to_string();
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&tok), None).await;
    assert_eq!(r.body["username"], "carol");
    let r =
        c.call(0, Method::POST, "/api/v1/login", None, Some(json!({"username": "carol", "password": "nope"}))).await;
    expect_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_is_503() {
    // Three members configured, one running: no quorum, no leader.
    let c = Cluster::start_opts(3, 1, 800, &|_, _| String::new(), None).await;
    let r = c.call(0, Method::POST, "/api/v1/acl/bootstrap", None, Some(json!({"token": "zoe-bootstrap-x"}))).await;
    expect_error(&r, StatusCode::SERVICE_UNAVAILABLE, "no_leader");
    let r = c.call(0, Method::GET, "/api/v1/info", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "info needs no leader");
    assert!(r.body["leader"].is_null());
    c.stop().await;
}

mod scripted {
    use futures::StreamExt;
    use futures::future::BoxFuture;
    use futures::stream::BoxStream;
    use std::collections::BTreeMap;
    use zoe_common::proto::{ContainerInfo, ContainerState, LiveStats};
    use zoe_common::resources::Millicores;
    use zoe_coordinator::agents::stats::NodeReport;
    use zoe_coordinator::api::live::PreloadProgress;
    use zoe_coordinator::api::{LiveError, LiveSource, LogChunk, LogRequest};
    use zoe_coordinator::scheduler::LiveNode;
    use zoe_coordinator::state::Service;

    /// A stand-in for the agents' side of the API (the real one arrives
    /// with the agent protocol): fixed live numbers for node `n1`, a
    /// two-line log per service, one progress event per node.
    pub struct ScriptedAgents;

    impl LiveSource for ScriptedAgents {
        fn live_nodes(&self) -> BoxFuture<'static, Option<BTreeMap<String, LiveNode>>> {
            let n = LiveNode {
                connected: true,
                images: Default::default(),
                cores_in_use: Millicores(1500),
                memory_in_use: 1 << 30,
                container_count: 1,
                zoe_containers: 1,
                ..LiveNode::default()
            };
            Box::pin(async move { Some(BTreeMap::from([("n1".to_string(), n)])) })
        }

        fn live_reports(&self) -> BoxFuture<'static, Option<BTreeMap<String, NodeReport>>> {
            // One running container (limit 0.75 core, 256 MiB; using 0.25
            // core, 100 MiB) and one that exited (counts nowhere).
            let running = ContainerInfo {
                container_id: "c-run".into(),
                service_id: Some(7),
                state: ContainerState::Running,
                cores_in_use_millis: 250,
                memory_in_use: 100 << 20,
                core_limit_millis: Some(750),
                memory_limit: Some(256 << 20),
            };
            let exited = ContainerInfo {
                container_id: "c-done".into(),
                state: ContainerState::Exited { exit_code: Some(0), oom_killed: false },
                ..running.clone()
            };
            let stats = LiveStats { containers: vec![running, exited], ..LiveStats::default() };
            let r = BTreeMap::from([("n1".to_string(), NodeReport { stats, images: vec![], timestamp: 42 })]);
            Box::pin(async move { Some(r) })
        }

        fn service_logs(
            &self,
            service: &Service,
            req: LogRequest,
        ) -> BoxFuture<'static, Result<BoxStream<'static, Result<LogChunk, LiveError>>, LiveError>> {
            let name = service.name.clone();
            Box::pin(async move {
                let text = format!("{name} line 1\n{name} line 2\n");
                let data = axum::body::Bytes::from(text[req.offset as usize..].to_string());
                let next_offset = text.len() as u64;
                Ok(futures::stream::iter([Ok(LogChunk { data, next_offset })]).boxed())
            })
        }

        fn preload(
            &self,
            image: String,
            nodes: Vec<String>,
        ) -> BoxFuture<'static, Result<BoxStream<'static, PreloadProgress>, LiveError>> {
            Box::pin(async move {
                let events: Vec<PreloadProgress> = nodes
                    .into_iter()
                    .map(|node| PreloadProgress { node, done: true, error: None, message: format!("pulled {image}") })
                    .collect();
                Ok(futures::stream::iter(events).boxed())
            })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_endpoints_logs_and_preload_with_a_live_source() {
    use zoe_common::zapp::Protocol;
    use zoe_coordinator::state::{Command, PublishedPort};
    let live: std::sync::Arc<dyn zoe_coordinator::api::LiveSource> = std::sync::Arc::new(scripted::ScriptedAgents);
    let c = Cluster::start_opts(1, 1, 5000, &|_, _| String::new(), Some(live)).await;
    let admin = c.admin().await;
    let coord = &c.members[0].coord;
    let ports = vec![PublishedPort {
        port_number: 8080,
        protocol: Protocol::Tcp,
        host_ip: "10.0.0.5".into(),
        host_port: 31000,
    }];
    let (id, svc) = api_support::running_on_n1(&c, &admin, "web", Some("10.88.0.2".into()), ports).await;

    let r = c.call(0, Method::GET, &format!("/api/v1/executions/{id}/endpoints"), Some(&admin), None).await;
    assert_eq!(r.body["status"], "running");
    assert_eq!(r.body["endpoints"][0]["url"], "http://10.0.0.5:31000/");
    let r = c.call(0, Method::GET, "/api/v1/nodes/n1", Some(&admin), None).await;
    assert_eq!(r.body["reserved_cores"], 0.5);
    assert_eq!(r.body["live"]["cores_in_use"], 1.5);
    assert_eq!(r.body["services"], 1);
    let r = c.call(0, Method::GET, "/api/v1/nodes/n1/images", Some(&admin), None).await;
    assert_eq!(r.body["images"], json!(["zoe.local/busybox:1"]));
    let reserved_memory =
        c.call(0, Method::GET, "/api/v1/nodes/n1", Some(&admin), None).await.body["reserved_memory"].clone();
    assert!(reserved_memory.as_u64().is_some_and(|m| m > 0));
    // Two more, queued, and one only submitted: Zoe's statistics list the
    // queue in the scheduler's (FIFO) order, the running execution in the
    // running queue, and per node total / reserved / allocated / in use.
    let mut queued = Vec::new();
    for name in ["q1", "q2", "s1"] {
        let body = json!({"name": name, "application": hello_zapp()});
        let r = c.call(0, Method::POST, "/api/v1/executions", Some(&admin), Some(body)).await;
        queued.push(r.body["id"].as_u64().unwrap());
    }
    for q in &queued[..2] {
        coord.write(Command::QueueExecution { id: *q, time: 5 }).await.unwrap().result.unwrap();
    }
    let r = c.call(0, Method::GET, "/api/v1/statistics/scheduler", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let b = &r.body;
    assert_eq!(
        (&b["queue_length"], &b["running_length"], &b["termination_queue_length"]),
        (&json!(2), &json!(1), &json!(0))
    );
    assert_eq!(b["queue"], json!(queued[..2]));
    assert_eq!(b["running_queue"], json!([id]));
    assert_eq!(b["termination_queue"], json!([]));
    assert_eq!(b["submitted"], json!([queued[2]]));
    assert_eq!(b["policy"], "fifo");
    assert_eq!(b["live_available"], true);
    let n1 = &b["platform_stats"]["nodes"][0];
    assert_eq!(n1["name"], "n1");
    assert_eq!(n1["status"], "online");
    assert_eq!(n1["timestamp"], 42);
    assert_eq!(n1["container_count"], 1);
    assert_eq!((&n1["cores_total"], &n1["memory_total"]), (&json!(4.0), &json!(8u64 << 30)));
    assert_eq!((&n1["cores_reserved"], &n1["memory_reserved"]), (&json!(0.5), &reserved_memory));
    assert_eq!((&n1["cores_allocated"], &n1["memory_allocated"]), (&json!(0.75), &json!(256u64 << 20)));
    assert_eq!((&n1["cores_in_use"], &n1["memory_in_use"]), (&json!(0.25), &json!(100u64 << 20)));
    assert_eq!(b["platform_stats"]["cores_allocated"], 0.75);
    assert_eq!(b["platform_stats"]["container_count"], 1);
    let text = c.http.get(format!("{}/metrics", c.url(0))).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("zoe_node_cores{node=\"n1\",kind=\"in_use\"} 1.5"), "{text}");
    assert!(text.contains("zoe_agents_connected 1"));

    // Logs stream through; an offset skips what was read.
    let r = c
        .http
        .get(format!("{}/api/v1/services/{svc}/logs?offset=13", c.url(0)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "\nhello0 line 2\n");
    // Preload: NDJSON progress per node.
    let r = c
        .http
        .post(format!("{}/api/v1/images/preload", c.url(0)))
        .bearer_auth(&admin)
        .json(&json!({"image": "zoe.local/busybox:1", "nodes": ["n1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["node"], "n1");
    assert_eq!(line["done"], true);
    let r =
        c.call(0, Method::POST, "/api/v1/images/preload", Some(&admin), Some(json!({"image": "Not A Ref!!"}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/image");

    // Eligibility and drain on a real node.
    let r =
        c.call(0, Method::POST, "/api/v1/nodes/n1/eligibility", Some(&admin), Some(json!({"eligible": false}))).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c
        .call(0, Method::POST, "/api/v1/nodes/n1/drain", Some(&admin), Some(json!({"enable": true, "deadline_s": 60})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c.call(0, Method::GET, "/api/v1/nodes", Some(&admin), None).await;
    assert_eq!(r.body[0]["eligible"], false);
    assert_eq!(r.body[0]["drain"]["requested_by"], "admin");
    assert_eq!(r.body[0]["schedulable"], false);

    // The drain's progress: who asked, what is left (the batch job waits
    // for the deadline), the agent's count, time to the deadline.
    let r = c.call(0, Method::GET, "/api/v1/nodes/n1/drain", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["draining"], true);
    assert_eq!(r.body["drain"]["requested_by"], "admin");
    assert_eq!(r.body["progress"]["remaining"], json!([format!("{id}/hello0")]));
    assert_eq!(r.body["progress"]["waiting_to_finish"], json!([id]));
    assert_eq!(r.body["progress"]["containers_reported"], 1);
    let left = r.body["progress"]["deadline_in_ms"].as_i64().unwrap();
    assert!(left > 0 && left <= 60_000, "{left}");
    // A blocking query on it wakes when the drain changes.
    let index = r.index.unwrap();
    let (client, tok) = (c.client.clone(), admin.clone());
    let waiter = tokio::spawn(async move {
        call(&client, 0, Method::GET, &format!("/api/v1/nodes/n1/drain?index={index}&wait=30s"), Some(&tok), None).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "a blocking query returned without a change");
    // Bad input names the field; keep_ineligible is for cancelling only.
    for (body, field) in [
        (json!({"enable": true, "keep_ineligible": true}), "/keep_ineligible"),
        (json!({"enable": false, "force": true}), "/force"),
        (json!({"enable": true, "deadline_s": "1h"}), "/deadline_s"),
    ] {
        let r = c.call(0, Method::POST, "/api/v1/nodes/n1/drain", Some(&admin), Some(body)).await;
        assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], field);
    }
    // Cancel, keeping the node ineligible.
    let body = json!({"enable": false, "keep_ineligible": true});
    let r = c.call(0, Method::POST, "/api/v1/nodes/n1/drain", Some(&admin), Some(body)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["eligible"], false);
    let r = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woke").unwrap();
    assert_eq!(r.body["draining"], false);
    assert_eq!(r.body["eligible"], false);
    assert!(r.body["progress"].is_null());
    // Nothing to cancel any more: a conflict, not a silent eligibility change.
    let r = c.call(0, Method::POST, "/api/v1/nodes/n1/drain", Some(&admin), Some(json!({"enable": false}))).await;
    expect_error(&r, StatusCode::CONFLICT, "conflict");
    let r = c.call(0, Method::GET, "/api/v1/nodes/n2/drain", Some(&admin), None).await;
    expect_error(&r, StatusCode::NOT_FOUND, "not_found");
    c.stop().await;
}

/// Backups (issue #17): a snapshot saved from one cluster restores onto a
/// fresh one with the same executions, users and tokens; a tampered file
/// and a non-fresh target are refused with clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_saved_from_one_cluster_restores_onto_a_fresh_one() {
    let a = Cluster::start(1).await;
    let admin = a.admin().await;
    a.user(&admin, "ada", json!({})).await;
    let r = a
        .call(
            0,
            Method::POST,
            "/api/v1/executions",
            Some(&admin),
            Some(json!({"name": "kept", "application": hello_zapp()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_u64().unwrap();
    let (_, bob) = a.user(&admin, "bob", json!({})).await;
    let r = a.call(0, Method::GET, "/api/v1/cluster/snapshot", Some(&bob), None).await;
    expect_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let snap = a.call(0, Method::GET, "/api/v1/cluster/snapshot", Some(&admin), None).await;
    assert_eq!(snap.status, StatusCode::OK);
    assert_eq!(snap.body["format"], "zoe-snapshot/1");
    assert!(snap.body["index"].as_u64().is_some() && snap.body["sha256"].as_str().unwrap().len() == 64);
    a.stop().await;

    let b = Cluster::start(1).await;
    let b_admin = b.admin().await;
    let mut tampered = snap.body.clone();
    tampered["state"]["meta"]["tampered"] = json!("yes");
    let r = b.call(0, Method::POST, "/api/v1/cluster/snapshot/restore", Some(&b_admin), Some(tampered)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("checksum"), "{:?}", r.body);
    let r = b.call(0, Method::POST, "/api/v1/cluster/snapshot/restore", Some(&b_admin), Some(snap.body.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["executions"], 1);

    // The backed-up cluster's users and tokens, the new one's are gone.
    let r = b.call(0, Method::GET, "/api/v1/whoami", Some(&b_admin), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = b.call(0, Method::GET, &format!("/api/v1/executions/{id}"), Some(&admin), None).await;
    assert_eq!((r.status, r.body["name"].as_str()), (StatusCode::OK, Some("kept")), "{:?}", r.body);
    let r = b.call(0, Method::GET, "/api/v1/users", Some(&admin), None).await;
    let names: BTreeSet<&str> = r.body.as_array().unwrap().iter().filter_map(|u| u["username"].as_str()).collect();
    assert!(names.contains("ada") && names.contains("bob"), "{names:?}");
    // Not fresh any more: refused without force.
    let r = b.call(0, Method::POST, "/api/v1/cluster/snapshot/restore", Some(&admin), Some(snap.body.clone())).await;
    expect_error(&r, StatusCode::CONFLICT, "conflict");
    let r = b.call(0, Method::POST, "/api/v1/cluster/snapshot/restore?force=true", Some(&admin), Some(snap.body)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    b.stop().await;
}

/// Issue #15, bounded state and throttled login: a username locked after
/// its failures answers 429 with `Retry-After` even for the right password;
/// a password change ends the user's other sessions in the same write; a
/// token name over 256 characters and a long-lived token minted from a
/// session are refused naming the field; a revoked token leaves no record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_throttled_and_a_password_change_ends_sessions() {
    let limits = "[api.login]\nfailures_per_user = 3\nattempts_per_client = 1000\nwindow_s = 60\n";
    let c = Cluster::start_with(1, &|_, _| limits.to_string()).await;
    let admin = c.admin().await;
    let (uid, s1) = c.user(&admin, "dora", json!({})).await;
    let login = |pw: &str| {
        let body = json!({"username": "dora", "password": pw});
        c.call(0, Method::POST, "/api/v1/login", None, Some(body))
    };
    let r = login("dora-password").await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let s2 = r.body["token"].as_str().unwrap().to_string();

    // A new password, set through session 1, ends session 2 only.
    let r = c
        .call(0, Method::PATCH, &format!("/api/v1/users/{uid}"), Some(&s1), Some(json!({"password": "dora-new-pass"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&s2), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the other session outlived the password change");
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&s1), None).await;
    assert_eq!(r.status, StatusCode::OK, "the session that changed it stays");

    // Token names and lifetimes.
    let r = c.call(0, Method::POST, "/api/v1/tokens", Some(&s1), Some(json!({"name": "x".repeat(257)}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/name");
    let year = 365 * 24 * 3600;
    let r = c.call(0, Method::POST, "/api/v1/tokens", Some(&s1), Some(json!({"ttl_s": year}))).await;
    assert_eq!(expect_error(&r, StatusCode::BAD_REQUEST, "invalid")[0]["path"], "/ttl_s");
    let r = c.call(0, Method::POST, "/api/v1/tokens", Some(&s1), Some(json!({"name": "ci"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let expires = r.body["expires"].as_u64().expect("a token from a session expires");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(expires <= now + 30 * 24 * 3600 * 1000 + 60_000, "{expires}");
    let tid = r.body["id"].as_str().unwrap().to_string();
    let r = c.call(0, Method::DELETE, &format!("/api/v1/tokens/{tid}"), Some(&s1), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let key = format!("token.{tid}");
    let (kept, _) = c.members[0].coord.read_local(|s| s.meta.contains_key(&key));
    assert!(!kept, "a revoked token's record stays in the state");

    // A token a session minted ends with the credentials the session was
    // opened with: one minted from a stolen session dies with the next
    // password (the same text again: a new salt, new credentials).
    let r = c.call(0, Method::POST, "/api/v1/tokens", Some(&s1), Some(json!({"name": "from-session"}))).await;
    let minted = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(c.call(0, Method::GET, "/api/v1/whoami", Some(&minted), None).await.status, StatusCode::OK);
    let r = c
        .call(0, Method::PATCH, &format!("/api/v1/users/{uid}"), Some(&s1), Some(json!({"password": "dora-new-pass"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&minted), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a token minted by a session outlived a password change");
    assert_eq!(c.call(0, Method::GET, "/api/v1/whoami", Some(&s1), None).await.status, StatusCode::OK);

    // Three wrong passwords lock the username, the right one included.
    for _ in 0..3 {
        expect_error(&login("wrong").await, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let r = c
        .http
        .post(format!("{}/api/v1/login", c.url(0)))
        .json(&json!({"username": "dora", "password": "dora-new-pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests", "{body}");
    // Another user is not locked out by dora's failures.
    let r = c.call(0, Method::GET, "/api/v1/whoami", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK);
    c.stop().await;
}

/// Issue #15: with `[api] registries`, a ZApp naming an image of another
/// registry is refused at submission (403 naming the field), nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_of_registries_off_the_allow_list_are_refused() {
    let c = Cluster::start_with(1, &|_, _| "registries = [\"zoe.local\"]\n".to_string()).await;
    let admin = c.admin().await;
    let ok = json!({"name": "ok", "application": hello_zapp()});
    let r = c.call(0, Method::POST, "/api/v1/executions", Some(&admin), Some(ok)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let mut app = hello_zapp();
    app["services"][0]["image"] = json!("evil.example/miner:latest");
    let r = c
        .call(0, Method::POST, "/api/v1/executions", Some(&admin), Some(json!({"name": "bad", "application": app})))
        .await;
    let details = expect_error(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(details[0]["path"], "/application/services/0/image", "{:?}", r.body);
    let r = c.call(0, Method::GET, "/api/v1/executions", Some(&admin), None).await;
    assert_eq!(r.body["executions"].as_array().unwrap().len(), 1, "the refused one was stored");
    c.stop().await;
}

/// Issue #15: without can_customize_resources, a ZApp asking more per
/// instance than the quota's per-service ceilings is refused at submission
/// (403 naming the field); a role with the flag may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_service_ceilings_hold_without_can_customize_resources() {
    let c = Cluster::start(1).await;
    let admin = c.admin().await;
    let quota = json!({"name": "small", "concurrent_executions": 0, "memory": 0, "cores": 0, "runtime_limit": 0,
        "service_cores": 1, "service_memory": 256 << 20});
    let r = c.call(0, Method::POST, "/api/v1/quotas", Some(&admin), Some(quota)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let qid = r.body["id"].as_u64().unwrap();
    let (_, user) = c.user(&admin, "eve", json!({"quota_id": qid})).await;
    async fn submit(c: &Cluster, app: Value, token: &str) -> api_support::Resp {
        let body = json!({"name": "x", "application": app});
        c.call(0, Method::POST, "/api/v1/executions", Some(token), Some(body)).await
    }
    let mut app = hello_zapp();
    app["services"][0]["resources"] =
        json!({"memory": {"min": 64 << 20, "max": 128 << 20}, "cores": {"min": 0.5, "max": 1}});
    let r = submit(&c, app.clone(), &user).await;
    assert_eq!(r.status, StatusCode::CREATED, "within the ceilings: {:?}", r.body);
    for (field, value, pointer) in [
        ("cores", json!({"min": 0.5, "max": 2}), "/application/services/0/resources/cores/max"),
        ("cores", json!({"min": 0.5, "max": null}), "/application/services/0/resources/cores/max"),
        ("memory", json!({"min": 64 << 20, "max": 1 << 30}), "/application/services/0/resources/memory/max"),
    ] {
        let mut big = app.clone();
        big["services"][0]["resources"][field] = value;
        let r = submit(&c, big, &user).await;
        assert_eq!(expect_error(&r, StatusCode::FORBIDDEN, "forbidden")[0]["path"], pointer, "{:?}", r.body);
    }
    // No memory at all: the cluster's default limit (4 GiB), but never
    // above the ceiling; it is what the container gets and what counts.
    let mut none = app.clone();
    none["services"][0]["resources"]["memory"] = json!({"min": null, "max": null});
    let r = submit(&c, none, &user).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_u64().unwrap();
    let r = c.call(0, Method::GET, &format!("/api/v1/executions/{id}/zapp"), Some(&user), None).await;
    assert_eq!(r.body["services"][0]["resources"]["memory"], json!({"min": null, "max": 256 << 20}), "{:?}", r.body);
    // A role with can_customize_resources (superuser) may go above them.
    let mut big = app.clone();
    big["services"][0]["resources"]["cores"] = json!({"min": 0.5, "max": 2});
    let (_, power) = c.user(&admin, "pia", json!({"quota_id": qid, "role_id": 2})).await;
    let r = submit(&c, big, &power).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = c.call(0, Method::GET, &format!("/api/v1/quotas/{qid}"), Some(&admin), None).await;
    assert_eq!((r.body["service_cores"].clone(), r.body["service_memory"].clone()), (json!(1.0), json!(256 << 20)));
    c.stop().await;
}

/// Issue #15: a quota counts what containers may really use: a service
/// without memory gets the cluster's default limit, which its quota counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_count_the_default_memory_limit() {
    let c = Cluster::start(1).await;
    let admin = c.admin().await;
    let quota =
        json!({"name": "six", "concurrent_executions": 0, "memory": 6u64 << 30, "cores": 0, "runtime_limit": 0});
    let r = c.call(0, Method::POST, "/api/v1/quotas", Some(&admin), Some(quota)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let (_, user) = c.user(&admin, "max", json!({"quota_id": r.body["id"]})).await;
    let mut app = hello_zapp();
    app["services"][0]["resources"]["memory"] = json!({"min": null, "max": null});
    let body = json!({"name": "x", "application": app});
    let r = c.call(0, Method::POST, "/api/v1/executions", Some(&user), Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "4 GiB of 6: {:?}", r.body);
    let r = c.call(0, Method::POST, "/api/v1/executions", Some(&user), Some(body)).await;
    let details = expect_error(&r, StatusCode::CONFLICT, "quota_exceeded");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("may use 4 GiB"), "{:?} {details:?}", r.body);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_plans_a_zapp_without_submitting_it() {
    let live: std::sync::Arc<dyn zoe_coordinator::api::LiveSource> = std::sync::Arc::new(scripted::ScriptedAgents);
    let c = Cluster::start_opts(1, 1, 5000, &|_, _| String::new(), Some(live)).await;
    let admin = c.admin().await;
    api_support::running_on_n1(&c, &admin, "web", None, vec![]).await;
    let count = |c: &Cluster| c.members[0].coord.read_local(|s| s.executions.len()).0;
    let before = count(&c);
    // Without the port the running one holds on n1 (host networking), it fits.
    let mut portless = hello_zapp();
    portless["services"][0]["ports"] = json!([]);
    let r = c.call(0, Method::POST, "/api/v1/zapp/plan", Some(&admin), Some(portless)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["fits_now"], true, "{}", r.body);
    assert_eq!(r.body["start_in_s"], 0.0);
    assert!(r.body["placements"][0].as_str().unwrap().ends_with("@n1"), "{}", r.body);
    assert_eq!(count(&c), before, "nothing submitted");
    // With it, it waits for the running one, whose size hint (128
    // core-seconds on 0.5 core) says it should be done already: start now.
    let r = c.call(0, Method::POST, "/api/v1/zapp/plan", Some(&admin), Some(hello_zapp())).await;
    assert_eq!(r.body["fits_now"], false, "{}", r.body);
    assert!(r.body["reason"].as_str().unwrap().contains("waiting for room"), "{}", r.body);
    assert_eq!(r.body["start_in_s"], 0.0, "{}", r.body);
    let mut huge = hello_zapp();
    huge["services"][0]["resources"]["cores"] = json!({"min": 8, "max": 8});
    let r = c.call(0, Method::POST, "/api/v1/zapp/plan", Some(&admin), Some(huge)).await;
    // (A ZApp over the quota is refused as its submission would be.)
    assert_eq!((r.body["fits_now"].clone(), r.body["never_fits"].clone()), (json!(false), json!(true)), "{}", r.body);
    assert_eq!(r.body["queue_position"], 1);
    let r = c.call(0, Method::POST, "/api/v1/zapp/plan", Some(&admin), Some(json!({"services": 1}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // What a user's submission would be refused is refused by the plan too.
    let (_, user) = c.user(&admin, "uma", json!({})).await;
    let mut host = hello_zapp();
    host["services"][0]["network"] = json!("host");
    let r = c.call(0, Method::POST, "/api/v1/zapp/plan", Some(&user), Some(host)).await;
    assert_eq!(expect_error(&r, StatusCode::FORBIDDEN, "forbidden")[0]["path"], "/services/0/network", "{}", r.body);
    c.stop().await;
}
