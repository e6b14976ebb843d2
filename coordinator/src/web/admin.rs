//! Administration (`can_change_config`): users, roles, quotas and tokens.
//! Each form becomes the JSON body of the matching API call.

use super::layout::{self, Nav, button, csrf, time};
use super::session::{Fields, Form, Session};
use super::{WebResult, see_other};
use crate::api::HttpError;
use crate::api::admin::{self as api, NameFilter, QuotaView, TokenFilter, UserFilter, UserView};
use crate::api::context::Body;
use crate::api::routes::{P, Q};
use crate::auth::AuthSources;
use crate::state::{Capabilities, Role};
use axum::extract::Path;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value, json};

const GIB: f64 = (1u64 << 30) as f64;

/// The role flags with their labels, in the API's order.
fn flags() -> impl Iterator<Item = (&'static str, &'static str)> {
    Capabilities::FLAGS.iter().map(|f| (f.name, f.label))
}

fn flag(r: &Role, k: &str) -> bool {
    r.capabilities.get(k).unwrap_or(false)
}

pub async fn page_html(s: &Session) -> WebResult<Markup> {
    let users = api::list_users(s.caller.clone(), Q(UserFilter::default())).await?.value;
    let roles = api::list_roles(s.caller.clone(), Q(NameFilter::default())).await?.value;
    let quotas = api::list_quotas(s.caller.clone(), Q(NameFilter::default())).await?.value;
    let tokens = api::list_tokens(s.caller.clone(), Q(TokenFilter::default())).await?.value;
    Ok(html! {
        nav.toc aria-label="Sections" {
            a href="#users" { "Users" } a href="#roles" { "Roles" } a href="#quotas" { "Quotas" } a href="#tokens" { "Tokens" }
        }
        section aria-labelledby="users" {
            h2 #users { "Users" }
            div.scroll { table.edit {
                thead { tr { th scope="col" { "User" } th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Quota" }
                    th scope="col" { "Source" } th scope="col" { "Enabled" } th scope="col" { "New password" } th scope="col" { "Actions" } } }
                tbody {
                    @for u in &users { (user_row(s, u, &roles, &quotas)) }
                }
            } }
            h3 { "New user" }
            form.card.grid method="post" action="/ui/admin/users" {
                (csrf(s))
                label for="nu-name" { "Username" } input #nu-name name="username" required pattern="[a-z0-9][a-z0-9._-]*";
                label for="nu-email" { "Email" } input #nu-email name="email" type="email";
                label for="nu-pw" { "Password (8+ characters)" } input #nu-pw name="password" type="password" autocomplete="new-password";
                label for="nu-role" { "Role" } (select("nu-role", "role_id", Some(crate::state::user::ROLE_USER), roles.iter().map(|r| (r.id, r.name.as_str()))))
                label for="nu-quota" { "Quota" } (select("nu-quota", "quota_id", Some(crate::state::user::QUOTA_DEFAULT), quotas.iter().map(|q| (q.id, q.name.as_str()))))
                label for="nu-src" { "Auth source" } (source_select("nu-src", "internal"))
                button type="submit" { "Create user" }
            }
        }
        section aria-labelledby="roles" {
            h2 #roles { "Roles" }
            div.scroll { table.edit {
                thead { tr { th scope="col" { "Name" } @for (_, l) in flags() { th scope="col" { (l) } } th scope="col" { "Actions" } } }
                tbody { @for r in &roles { (role_row(s, r)) } }
            } }
            h3 { "New role" }
            form.card.grid method="post" action="/ui/admin/roles" {
                (csrf(s))
                label for="nr-name" { "Name" } input #nr-name name="name" required;
                fieldset.flags { legend { "Capabilities" }
                    @for (k, l) in flags() { label { input type="checkbox" name=(k) value="true"; " " (l) } }
                }
                button type="submit" { "Create role" }
            }
        }
        section aria-labelledby="quotas" {
            h2 #quotas { "Quotas" }
            p.muted { "0 means unlimited." }
            div.scroll { table.edit {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Executions" } th scope="col" { "Cores" }
                    th scope="col" { "Memory (GiB)" } th scope="col" { "Runtime limit (h)" } th scope="col" { "Actions" } } }
                tbody { @for q in &quotas { (quota_row(s, q)) } }
            } }
            h3 { "New quota" }
            form.card.grid method="post" action="/ui/admin/quotas" {
                (csrf(s))
                label for="nq-name" { "Name" } input #nq-name name="name" required;
                label for="nq-ex" { "Concurrent executions" } input #nq-ex name="concurrent_executions" type="number" min="0" value="5" required;
                label for="nq-c" { "Cores" } input #nq-c name="cores" type="number" min="0" step="any" value="20" required;
                label for="nq-m" { "Memory (GiB)" } input #nq-m name="memory_gib" type="number" min="0" step="any" value="32" required;
                label for="nq-r" { "Runtime limit (hours)" } input #nq-r name="runtime_limit_h" type="number" min="0" step="any" value="24" required;
                button type="submit" { "Create quota" }
            }
        }
        section aria-labelledby="tokens" {
            h2 #tokens { "Tokens and sessions" }
            div.scroll { table {
                thead { tr { th scope="col" { "Id" } th scope="col" { "User" } th scope="col" { "Name" } th scope="col" { "Kind" }
                    th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Actions" } } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { code { (t.id) } }
                            td { (t.username.as_deref().unwrap_or("?")) }
                            td { (t.name) }
                            td { (format!("{:?}", t.kind).to_lowercase()) }
                            td { (time(Some(t.created))) }
                            td { (time(t.expires)) }
                            td { @if t.id != s.caller.token.id { (button(s, &format!("/ui/admin/tokens/{}/revoke", t.id), "Revoke", "danger")) }
                                 @else { span.muted { "this session" } } }
                        }
                    }
                }
            } }
            h3 { "New API token" }
            form.card.grid method="post" action="/ui/admin/tokens" {
                (csrf(s))
                label for="nt-name" { "Name" } input #nt-name name="name" value="api";
                label for="nt-user" { "User" } (select("nt-user", "user_id", Some(s.caller.user.id), users.iter().map(|u| (u.id, u.username.as_str()))))
                label for="nt-ttl" { "Lifetime (s, empty = forever)" } input #nt-ttl name="ttl_s" type="number" min="1";
                button type="submit" { "Create token" }
            }
        }
    })
}

fn select<'a>(id: &str, name: &str, selected: Option<u64>, opts: impl Iterator<Item = (u64, &'a str)>) -> Markup {
    html! {
        select id=(id) name=(name) {
            @for (v, label) in opts { option value=(v) selected[selected == Some(v)] { (label) } }
        }
    }
}

fn source_select(id: &str, current: &str) -> Markup {
    html! {
        select id=(id) name="auth_source" {
            @for src in AuthSources::known() { option value=(src) selected[*src == current] { (src) } }
        }
    }
}

fn user_row(s: &Session, u: &UserView, roles: &[Role], quotas: &[QuotaView]) -> Markup {
    let fid = format!("user-{}", u.id);
    html! {
        tr {
            th scope="row" { (u.username) }
            td { input form=(fid) name="email" type="email" value=(u.email.clone().unwrap_or_default()) aria-label=(format!("Email of {}", u.username)); }
            td { select form=(fid) name="role_id" aria-label=(format!("Role of {}", u.username)) {
                @for r in roles { option value=(r.id) selected[r.id == u.role_id] { (r.name) } } } }
            td { select form=(fid) name="quota_id" aria-label=(format!("Quota of {}", u.username)) {
                @for q in quotas { option value=(q.id) selected[q.id == u.quota_id] { (q.name) } } } }
            td { select form=(fid) name="auth_source" aria-label=(format!("Auth source of {}", u.username)) {
                @for src in AuthSources::known() { option value=(src) selected[*src == u.auth_source] { (src) } } } }
            td { input form=(fid) type="checkbox" name="enabled" value="true" checked[u.enabled] aria-label=(format!("{} enabled", u.username)); }
            td { input form=(fid) type="password" name="password" autocomplete="new-password" aria-label=(format!("New password for {}", u.username)); }
            td.row-actions {
                form id=(fid) method="post" action=(format!("/ui/admin/users/{}", u.id)) { (csrf(s)) button type="submit" { "Save" } }
                @if u.id != s.caller.user.id { (button(s, &format!("/ui/admin/users/{}/delete", u.id), "Delete", "danger")) }
            }
        }
    }
}

fn role_row(s: &Session, r: &Role) -> Markup {
    let fid = format!("role-{}", r.id);
    let fixed = r.id == crate::state::user::ROLE_ADMIN;
    html! {
        tr {
            th scope="row" { input form=(fid) name="name" value=(r.name) disabled[fixed] aria-label=(format!("Name of role {}", r.name)); }
            @for (k, l) in flags() {
                td { input form=(fid) type="checkbox" name=(k) value="true" checked[flag(r, k)] disabled[fixed]
                    aria-label=(format!("{}: {l}", r.name)); }
            }
            td.row-actions {
                @if fixed { span.muted { "built in" } } @else {
                    form id=(fid) method="post" action=(format!("/ui/admin/roles/{}", r.id)) { (csrf(s)) button type="submit" { "Save" } }
                    (button(s, &format!("/ui/admin/roles/{}/delete", r.id), "Delete", "danger"))
                }
            }
        }
    }
}

fn quota_row(s: &Session, q: &QuotaView) -> Markup {
    let fid = format!("quota-{}", q.id);
    let num = |v: f64| layout::cores(v);
    html! {
        tr {
            th scope="row" { input form=(fid) name="name" value=(q.name) aria-label=(format!("Name of quota {}", q.name)); }
            td { input form=(fid) name="concurrent_executions" type="number" min="0" value=(q.concurrent_executions) aria-label=(format!("{}: executions", q.name)); }
            td { input form=(fid) name="cores" type="number" min="0" step="any" value=(num(q.cores)) aria-label=(format!("{}: cores", q.name)); }
            td { input form=(fid) name="memory_gib" type="number" min="0" step="any" value=(num(q.memory as f64 / GIB)) aria-label=(format!("{}: memory in GiB", q.name)); }
            td { input form=(fid) name="runtime_limit_h" type="number" min="0" step="any" value=(num(q.runtime_limit as f64 / 3600.0)) aria-label=(format!("{}: runtime limit in hours", q.name)); }
            td.row-actions {
                form id=(fid) method="post" action=(format!("/ui/admin/quotas/{}", q.id)) { (csrf(s)) button type="submit" { "Save" } }
                @if q.id != crate::state::user::QUOTA_DEFAULT { (button(s, &format!("/ui/admin/quotas/{}/delete", q.id), "Delete", "danger")) }
            }
        }
    }
}

pub async fn page(s: Session) -> WebResult<Html<String>> {
    s.caller.require_config()?;
    let content = page_html(&s).await?;
    Ok(layout::page(&s, Nav::Admin, "Administration", content))
}

// ------------------------------------------------------------------ forms

fn text(f: &Fields, k: &str) -> Option<String> {
    f.get(k).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

fn number<T: std::str::FromStr>(f: &Fields, k: &str, what: &str) -> Result<Option<T>, HttpError> {
    match text(f, k) {
        None => Ok(None),
        Some(v) => {
            v.parse().map(Some).map_err(|_| HttpError::invalid_field(&format!("/{k}"), format!("{what}: `{v}`")))
        }
    }
}

fn body_of(m: Map<String, Value>) -> Body {
    Body(m)
}

fn user_body(f: &Fields, create: bool) -> Result<Body, HttpError> {
    let mut m = Map::new();
    if create {
        m.insert("username".into(), json!(f.get("username").unwrap_or("").trim()));
    }
    if let Some(e) = text(f, "email") {
        m.insert("email".into(), json!(e));
    }
    if let Some(p) = f.get("password").filter(|p| !p.is_empty()) {
        m.insert("password".into(), json!(p));
    }
    for k in ["role_id", "quota_id"] {
        if let Some(v) = number::<u64>(f, k, "not an id")? {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(src) = text(f, "auth_source") {
        m.insert("auth_source".into(), json!(src));
    }
    if !create {
        m.insert("enabled".into(), json!(f.has("enabled")));
    }
    Ok(body_of(m))
}

fn role_body(f: &Fields) -> Body {
    let mut m = Map::new();
    if let Some(n) = text(f, "name") {
        m.insert("name".into(), json!(n));
    }
    for (k, _) in flags() {
        m.insert(k.into(), json!(f.has(k)));
    }
    body_of(m)
}

fn quota_body(f: &Fields) -> Result<Body, HttpError> {
    let mut m = Map::new();
    if let Some(n) = text(f, "name") {
        m.insert("name".into(), json!(n));
    }
    if let Some(v) = number::<u64>(f, "concurrent_executions", "not a whole number")? {
        m.insert("concurrent_executions".into(), json!(v));
    }
    if let Some(v) = number::<f64>(f, "cores", "not a number")? {
        m.insert("cores".into(), json!(v));
    }
    if let Some(v) = number::<f64>(f, "memory_gib", "not a number")? {
        m.insert("memory".into(), json!((v.max(0.0) * GIB).round() as u64));
    }
    if let Some(v) = number::<f64>(f, "runtime_limit_h", "not a number")? {
        m.insert("runtime_limit".into(), json!((v.max(0.0) * 3600.0).round() as u64));
    }
    Ok(body_of(m))
}

const BACK: &str = "/ui/admin";

pub async fn create_user(f: Form) -> WebResult<Response> {
    let b = user_body(&f.fields, true)?;
    api::create_user(f.session.caller, b).await?;
    Ok(see_other(&format!("{BACK}#users")))
}

pub async fn update_user(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    let b = user_body(&f.fields, false)?;
    api::update_user(f.session.caller, P(id), b).await?;
    Ok(see_other(&format!("{BACK}#users")))
}

pub async fn delete_user(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    api::delete_user(f.session.caller, P(id)).await?;
    Ok(see_other(&format!("{BACK}#users")))
}

pub async fn create_role(f: Form) -> WebResult<Response> {
    api::create_role(f.session.caller, role_body(&f.fields)).await?;
    Ok(see_other(&format!("{BACK}#roles")))
}

pub async fn update_role(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    api::update_role(f.session.caller, P(id), role_body(&f.fields)).await?;
    Ok(see_other(&format!("{BACK}#roles")))
}

pub async fn delete_role(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    api::delete_role(f.session.caller, P(id)).await?;
    Ok(see_other(&format!("{BACK}#roles")))
}

pub async fn create_quota(f: Form) -> WebResult<Response> {
    let b = quota_body(&f.fields)?;
    api::create_quota(f.session.caller, b).await?;
    Ok(see_other(&format!("{BACK}#quotas")))
}

pub async fn update_quota(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    let b = quota_body(&f.fields)?;
    api::update_quota(f.session.caller, P(id), b).await?;
    Ok(see_other(&format!("{BACK}#quotas")))
}

pub async fn delete_quota(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    api::delete_quota(f.session.caller, P(id)).await?;
    Ok(see_other(&format!("{BACK}#quotas")))
}

/// Creates a token and shows its secret, once.
pub async fn create_token(f: Form) -> WebResult<Response> {
    let s = f.session.clone();
    let mut m = Map::new();
    m.insert("name".into(), json!(text(&f.fields, "name").unwrap_or_else(|| "api".into())));
    if let Some(u) = number::<u64>(&f.fields, "user_id", "not an id")? {
        m.insert("user_id".into(), json!(u));
    }
    if let Some(t) = number::<u64>(&f.fields, "ttl_s", "not a whole number of seconds")? {
        m.insert("ttl_s".into(), json!(t));
    }
    let r = api::create_token(s.caller.clone(), body_of(m)).await?;
    let secret = r.value.token;
    let content = html! {
        p.flash role="status" { "Token created. Copy it now: it is not shown again." }
        label for="secret" { "Token" }
        input #secret.secret readonly value=(secret);
        p { a href=(format!("{BACK}#tokens")) { "Back to the tokens" } }
    };
    Ok(layout::page(&s, Nav::Admin, "New token", content).into_response())
}

pub async fn revoke_token(Path(id): Path<String>, f: Form) -> WebResult<Response> {
    api::revoke_token(f.session.caller, P(id)).await?;
    Ok(see_other(&format!("{BACK}#tokens")))
}
