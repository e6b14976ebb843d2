//! The route table. One macro call lists every route once; it expands to
//! both the axum router and [`ROUTES`], from which the OpenAPI document is
//! generated, so documentation and routing cannot disagree.

use super::context::Ctx;
use super::error::HttpError;
use super::{admin, cluster, executions, metrics, nodes, workflows};
use crate::state::Role;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::routing::{delete, get, patch, post};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use zoe_api::acl::{
    AddMember, Bootstrap, CreateToken, CreateUser, Created, Login, QuotaFields, QuotaView, RoleFields, TokenCreated,
    TokenView, UpdateUser, UserView, WhoAmI,
};
use zoe_api::cluster::{Info, Restored, Status};
use zoe_api::error::ErrorBody;
use zoe_api::execution::{
    Discovery, Endpoints, ExecutionCreated, ExecutionPage, ExecutionPlan, ExecutionResubmitted, ExecutionView,
    ResubmitExecution, ServiceView, StartExecution, TerminateExecution, TerminationAccepted, ZAppValid,
};
use zoe_api::node::{
    DrainStatus, ImagesLoaded, NodeChanged, NodeImages, NodeView, PreloadImage, SetDrain, SetEligibility,
};
use zoe_api::schema::{Doc, Schema, Schemas};
use zoe_api::stats::SchedulerStats;
use zoe_api::workflow::{RunCreated, RunRequest, RunView, WorkflowCreated, WorkflowValid, WorkflowView};
use zoe_common::zapp::ZApp;

/// A path parameter whose parse error is a JSON 400 (axum's is plain text).
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Ctx> for P<T> {
    type Rejection = HttpError;
    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<P<T>, HttpError> {
        Path::<T>::from_request_parts(parts, ctx)
            .await
            .map(|Path(v)| P(v))
            .map_err(|e| HttpError::bad_request(format!("bad path parameter: {}", e.body_text())))
    }
}

/// Query parameters whose parse error (unknown key, wrong type) is a JSON 400.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Ctx> for Q<T> {
    type Rejection = HttpError;
    async fn from_request_parts(parts: &mut Parts, _: &Ctx) -> Result<Q<T>, HttpError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(v)| Q(v))
            .map_err(|e| HttpError::bad_request(format!("bad query string: {}", e.body_text())))
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone.
    None,
    /// A user's bearer token; the handler checks the role's flags.
    Token,
    /// The one-time bootstrap token.
    Bootstrap,
    /// A username and password.
    Password,
}

/// One documented route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub auth: Auth,
    pub tag: &'static str,
    pub summary: &'static str,
    /// `true` when the route answers reads with `X-Zoe-Index` and accepts
    /// `consistent`, `index` and `wait`.
    pub read: bool,
    /// The JSON body's schema (`None`: no JSON body).
    pub request: fn(&mut Schemas) -> Option<Value>,
    /// The keys a JSON object body takes (the handler refuses others).
    pub fields: fn() -> Option<Vec<&'static str>>,
    /// The 2xx answer's schema (`None`: empty, or not JSON).
    pub response: fn(&mut Schemas) -> Option<Value>,
}

macro_rules! routes {
    ($( $method:ident $path:literal => $handler:path, $auth:ident, $tag:literal, $read:literal, $req:ty, $resp:ty, $summary:literal; )*) => {
        /// Every route of the API, in documentation order.
        pub const ROUTES: &[RouteDoc] = &[
            $( RouteDoc {
                method: stringify!($method),
                path: $path,
                auth: Auth::$auth,
                tag: $tag,
                summary: $summary,
                read: $read,
                request: <$req as Doc>::doc,
                fields: <$req as Doc>::fields,
                response: <$resp as Doc>::doc,
            }, )*
        ];

        fn add_routes(mut r: Router<Ctx>) -> Router<Ctx> {
            $( r = r.route($path, $method($handler)); )*
            r
        }
    };
}

routes! {
    get "/api/v1/info" => cluster::info, None, "cluster", false, (), Info, "Version, API version, ZApp format, cluster name, this coordinator and the leader";
    get "/api/v1/openapi.json" => openapi_handler, None, "cluster", false, (), Value, "This document";
    post "/api/v1/acl/bootstrap" => admin::bootstrap, Bootstrap, "auth", false, Bootstrap, TokenCreated, "Exchange the one-time bootstrap token for the first admin's API token";
    post "/api/v1/login" => admin::login, Password, "auth", false, Login, TokenCreated, "Exchange a username and password (HTTP Basic or JSON) for a session token";
    get "/api/v1/whoami" => admin::whoami, Token, "auth", false, (), WhoAmI, "The caller's user, role and token";
    post "/api/v1/zapp/validate" => executions::validate, Token, "executions", false, ZApp, ZAppValid, "Validate a ZApp; errors carry JSON pointers";
    post "/api/v1/zapp/plan" => executions::plan, Token, "executions", false, ZApp, ExecutionPlan, "Dry run: would the ZApp fit now, where, its queue position and a start estimate";
    get "/api/v1/executions" => executions::list, Token, "executions", true, (), ExecutionPage, "List executions (filters, cursor pagination, newest first)";
    post "/api/v1/executions" => executions::submit, Token, "executions", false, StartExecution, ExecutionCreated, "Submit {name, application}; quotas are checked";
    get "/api/v1/executions/{id}" => executions::get, Token, "executions", true, (), ExecutionView, "One execution with its services";
    delete "/api/v1/executions/{id}" => executions::delete, Token, "executions", false, (), (), "Delete an ended execution (can_delete_executions)";
    post "/api/v1/executions/{id}/terminate" => executions::terminate, Token, "executions", false, TerminateExecution, TerminationAccepted, "Terminate an execution";
    get "/api/v1/executions/{id}/endpoints" => executions::get_endpoints, Token, "executions", true, (), Endpoints, "URLs of the execution's published ports";
    get "/api/v1/executions/{id}/zapp" => executions::app, Token, "executions", true, (), ZApp, "The ZApp the execution runs";
    post "/api/v1/executions/{id}/resubmit" => executions::resubmit, Token, "executions", false, ResubmitExecution, ExecutionResubmitted, "Submit the execution's ZApp again as a new execution";
    get "/api/v1/services/{id}" => executions::get_service, Token, "executions", true, (), ServiceView, "One service instance";
    get "/api/v1/services/{id}/logs" => executions::logs, Token, "executions", false, (), (), "A service's log (offset, follow); needs the agents";
    get "/api/v1/discovery/{id}/{group}" => executions::discovery, Token, "executions", true, (), Discovery, "DNS names of a service group's instances ('all' for every group)";
    post "/api/v1/workflows/validate" => workflows::validate, Token, "workflows", false, Value, WorkflowValid, "Validate a workflow document; errors carry JSON pointers (docs/workflows.md)";
    get "/api/v1/workflows" => workflows::list, Token, "workflows", true, (), Vec<WorkflowView>, "List workflows (own; with can_operate_others: all)";
    post "/api/v1/workflows" => workflows::create, Token, "workflows", false, Value, WorkflowCreated, "Create a workflow from its document (the body); each step's ZApp is checked as a submission would be";
    get "/api/v1/workflows/{id}" => workflows::get, Token, "workflows", true, (), WorkflowView, "One workflow, by id or (own) name, with its next schedule slot";
    delete "/api/v1/workflows/{id}" => workflows::delete, Token, "workflows", false, (), (), "Delete a workflow and its ended runs (refused while a run goes on)";
    post "/api/v1/workflows/{id}/runs" => workflows::run, Token, "workflows", false, RunRequest, RunCreated, "Start a run by hand (Idempotency-Key: a retry answers the first run)";
    get "/api/v1/workflows/{id}/runs" => workflows::runs, Token, "workflows", true, (), Vec<RunView>, "The workflow's runs, newest first (status, limit)";
    get "/api/v1/runs/{id}" => workflows::get_run, Token, "workflows", true, (), RunView, "One run with each step's copies, attempts, executions and exit codes";
    post "/api/v1/runs/{id}/terminate" => workflows::terminate_run, Token, "workflows", false, RunRequest, RunView, "Terminate a run and its running steps' executions";
    get "/api/v1/nodes" => nodes::list, Token, "nodes", true, (), Vec<NodeView>, "Nodes with reserved and live resources (can_see_status)";
    get "/api/v1/nodes/{name}" => nodes::get, Token, "nodes", true, (), NodeView, "One node (can_see_status)";
    post "/api/v1/nodes/{name}/eligibility" => nodes::eligibility, Token, "nodes", false, SetEligibility, NodeChanged, "Set {eligible} (can_change_config)";
    post "/api/v1/nodes/{name}/drain" => nodes::drain, Token, "nodes", false, SetDrain, NodeChanged, "Start or update {enable: true, deadline_s, force}, or cancel {enable: false, keep_ineligible} a drain (can_change_config)";
    get "/api/v1/nodes/{name}/drain" => nodes::drain_status, Token, "nodes", true, (), DrainStatus, "A drain's progress: what is left, what moved, time to the deadline; the last completed drain (can_see_status)";
    get "/api/v1/nodes/{name}/images" => nodes::images, Token, "nodes", true, (), NodeImages, "Images the node reported (can_see_status)";
    post "/api/v1/images/preload" => nodes::preload, Token, "nodes", false, PreloadImage, (), "Pull {image} on {nodes} (all when absent), streaming progress; needs the agents";
    post "/api/v1/images/load" => nodes::load_image, Token, "nodes", false, (), ImagesLoaded, "Load the image archive in the body (OCI layout or docker save tarball) on ?nodes=a,b (all connected when absent), streamed to the agents in pieces; answers each node's outcome (can_change_config)";
    get "/api/v1/statistics/scheduler" => nodes::stats, Token, "nodes", true, (), SchedulerStats, "Zoe's scheduler statistics: queues and platform per node (can_see_status)";
    get "/api/v1/users" => admin::list_users, Token, "users", true, (), Vec<UserView>, "List users (can_change_config)";
    post "/api/v1/users" => admin::create_user, Token, "users", false, CreateUser, Created, "Create a user (can_change_config)";
    get "/api/v1/users/{id}" => admin::get_user, Token, "users", true, (), UserView, "One user (self, or can_change_config)";
    patch "/api/v1/users/{id}" => admin::update_user, Token, "users", false, UpdateUser, UserView, "Update a user (self: email and password; admins: everything)";
    delete "/api/v1/users/{id}" => admin::delete_user, Token, "users", false, (), (), "Delete a user and their ended executions (can_change_config)";
    get "/api/v1/roles" => admin::list_roles, Token, "users", true, (), Vec<Role>, "List roles (can_change_config)";
    post "/api/v1/roles" => admin::create_role, Token, "users", false, RoleFields, Created, "Create a role with capability flags (can_change_config)";
    get "/api/v1/roles/{id}" => admin::get_role, Token, "users", true, (), Role, "One role";
    patch "/api/v1/roles/{id}" => admin::update_role, Token, "users", false, RoleFields, Role, "Update a role (not admin) (can_change_config)";
    delete "/api/v1/roles/{id}" => admin::delete_role, Token, "users", false, (), (), "Delete a role; its users move to `user` (can_change_config)";
    get "/api/v1/quotas" => admin::list_quotas, Token, "users", true, (), Vec<QuotaView>, "List quotas (can_change_config)";
    post "/api/v1/quotas" => admin::create_quota, Token, "users", false, QuotaFields, Created, "Create a quota (can_change_config)";
    get "/api/v1/quotas/{id}" => admin::get_quota, Token, "users", true, (), QuotaView, "One quota";
    patch "/api/v1/quotas/{id}" => admin::update_quota, Token, "users", false, QuotaFields, QuotaView, "Update a quota (can_change_config)";
    delete "/api/v1/quotas/{id}" => admin::delete_quota, Token, "users", false, (), (), "Delete a quota; its users move to `default` (can_change_config)";
    get "/api/v1/tokens" => admin::list_tokens, Token, "auth", true, (), Vec<TokenView>, "List API tokens and sessions (own; admins: all)";
    post "/api/v1/tokens" => admin::create_token, Token, "auth", false, CreateToken, TokenCreated, "Create an API token {name, ttl_s, user_id (admins)}; the secret is shown once";
    delete "/api/v1/tokens/{id}" => admin::revoke_token, Token, "auth", false, (), (), "Revoke a token (own; admins: any)";
    get "/api/v1/cluster/members" => cluster::members, Token, "cluster", false, (), Status, "Coordinators, leader, term and Raft indexes (can_see_status)";
    post "/api/v1/cluster/members" => cluster::add_member, Token, "cluster", false, AddMember, AddMember, "Add a coordinator {id, addr, name} (can_change_config)";
    delete "/api/v1/cluster/members/{id}" => cluster::remove_member, Token, "cluster", false, (), (), "Remove a coordinator (can_change_config)";
    get "/api/v1/cluster/snapshot" => cluster::snapshot, Token, "cluster", false, (), Value, "The whole replicated state as a checksummed snapshot file (can_change_config)";
    post "/api/v1/cluster/snapshot/restore" => cluster::restore, Token, "cluster", false, (), Restored, "Replace the state with a snapshot file (body); ?force=true on a cluster that is not fresh (can_change_config)";
    get "/metrics" => metrics::handler, None, "cluster", false, (), (), "Prometheus metrics (text format)";
}

/// The body fields a route accepts, from its request type.
pub fn body_fields(method: &str, path: &str) -> Option<Vec<&'static str>> {
    ROUTES.iter().find(|r| r.method == method && r.path == path).and_then(|r| (r.fields)())
}

async fn openapi_handler() -> axum::Json<Value> {
    axum::Json(openapi())
}

async fn fallback(uri: axum::http::Uri) -> HttpError {
    HttpError::new(
        axum::http::StatusCode::NOT_FOUND,
        "no_route",
        format!("no route {}; see /api/v1/openapi.json", uri.path()),
    )
}

async fn method_not_allowed() -> HttpError {
    HttpError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The whole API, ready to serve.
pub fn router(ctx: Ctx) -> Router {
    // The body limit is enforced by the `Body` extractor (with a JSON 413);
    // axum's own default limit is lifted so it never answers first.
    add_routes(Router::new())
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), metrics::track))
        .with_state(ctx)
}

fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

/// The OpenAPI 3 document of [`ROUTES`].
pub fn openapi() -> Value {
    let error = json!({
        "description": "Error",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
    });
    let mut paths: Map<String, Value> = Map::new();
    let mut schemas = Schemas::default();
    <ErrorBody as Schema>::schema(&mut schemas);
    for r in ROUTES {
        let mut params: Vec<Value> = path_params(r.path)
            .into_iter()
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if r.read {
            params.push(json!({ "name": "consistent", "in": "query", "schema": { "type": "boolean" }, "description": "linearizable read through the leader" }));
            params.push(json!({ "name": "index", "in": "query", "schema": { "type": "integer" }, "description": "blocking query: wait until the state passes this index" }));
            params.push(json!({ "name": "wait", "in": "query", "schema": { "type": "string" }, "description": "longest blocking wait, e.g. 30s (default 5m, max 10m)" }));
        }
        let mut responses = Map::new();
        let ok = match (r.response)(&mut schemas) {
            Some(schema) => json!({ "description": "OK", "content": { "application/json": { "schema": schema } } }),
            None => json!({ "description": "OK" }),
        };
        responses.insert(if r.method == "delete" { "204" } else { "200" }.into(), ok);
        for code in ["400", "401", "403", "404", "409", "413", "503"] {
            responses.insert(code.into(), error.clone());
        }
        let mut op = json!({
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": format!("{}_{}", r.method, r.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": responses,
        });
        match r.auth {
            Auth::None => op["security"] = json!([]),
            Auth::Password => op["security"] = json!([{ "basic": [] }]),
            Auth::Token | Auth::Bootstrap => {}
        }
        if r.path == "/api/v1/cluster/snapshot/restore" {
            op["parameters"] = json!([{ "name": "force", "in": "query", "schema": { "type": "boolean" }, "description": "replace a cluster that holds executions or nodes" }]);
            op["requestBody"] = json!({ "content": { "application/json": { "schema": { "type": "object", "description": "a snapshot file from GET /api/v1/cluster/snapshot" } } } });
        } else if r.path == "/api/v1/images/load" {
            op["parameters"] = json!([{ "name": "nodes", "in": "query", "schema": { "type": "string" }, "description": "comma-separated node names" }]);
            op["requestBody"] =
                json!({ "content": { "application/x-tar": { "schema": { "type": "string", "format": "binary" } } } });
        } else if let Some(schema) = (r.request)(&mut schemas) {
            // Inline: a reader sees what to send where it is asked for.
            let schema = schemas.resolve(schema);
            op["requestBody"] = json!({ "content": { "application/json": { "schema": schema } } });
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "zoe API", "version": super::API_VERSION },
        "paths": paths,
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "basic": { "type": "http", "scheme": "basic" }
            },
            "schemas": schemas.into_map(),
        }
    })
}
