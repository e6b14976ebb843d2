//! The ZApp shop's pages: the catalogue, a start form per ZApp, starting
//! or downloading the tuned ZApp, and logos.

use super::layout::{self, Nav, csrf, page};
use super::pages::{download, submit};
use super::session::{Form, Session};
use super::shop::{self, Entry, ParamType};
use super::{Web, WebResult};
use crate::api::HttpError;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use std::collections::BTreeMap;

/// The entry with this id, if the session's role may see it (404 either
/// way, so that hidden entries do not show they exist).
async fn visible_entry(web: &Web, s: &Session, id: &str) -> WebResult<Entry> {
    let cat = web.catalogue().await;
    cat.get(id)
        .filter(|e| e.visible_to(&s.caller.role))
        .cloned()
        .ok_or_else(|| HttpError::not_found(format!("no ZApp `{id}` in the shop")).into())
}

pub async fn catalogue(State(web): State<Web>, s: Session) -> WebResult<Html<String>> {
    let cat = web.catalogue().await;
    let mut by_cat: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in cat.entries.iter().filter(|e| e.visible_to(&s.caller.role)) {
        by_cat.entry(e.category.as_str()).or_default().push(e);
    }
    let admin = s.caller.caps().can_change_config;
    let content = html! {
        @if admin && !cat.problems.is_empty() {
            div.flash.error role="alert" {
                p { "Some shop packages could not be read:" }
                ul { @for p in &cat.problems { li { (p) } } }
            }
        }
        @if by_cat.is_empty() {
            p { "The shop is empty. Admins set " code { "[api.web] shop_dir" } " in the coordinator's configuration." }
        }
        @for (category, entries) in &by_cat {
            section.category aria-label=(category) {
                h2 { (category) }
                ul.cards {
                    @for e in entries {
                        li.card {
                            @if e.logo.is_some() {
                                img.logo src=(format!("/ui/shop/{}/logo", e.id)) alt="" width="64" height="64";
                            }
                            div {
                                h3 { a href=(format!("/ui/shop/{}", e.id)) { (e.name) } }
                                p.muted { "ZApp " code { (e.zapp.name) } ", " (e.zapp.services.len()) " service group(s)" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&s, Nav::Shop, "ZApp shop", content))
}

pub async fn form(State(web): State<Web>, s: Session, Path(id): Path<String>) -> WebResult<Html<String>> {
    let e = visible_entry(&web, &s, &id).await?;
    Ok(form_page(&s, &e, &[], &|_| None))
}

fn form_page<'a>(
    s: &Session,
    e: &Entry,
    errors: &[shop::FieldError],
    value: &dyn Fn(&str) -> Option<&'a str>,
) -> Html<String> {
    let customize = s.caller.caps().can_customize_resources;
    let err_of = |f: &str| errors.iter().find(|x| x.field == f).map(|x| x.message.clone());
    let content = html! {
        div.shop-head {
            @if e.logo.is_some() {
                img.logo src=(format!("/ui/shop/{}/logo", e.id)) alt="" width="96" height="96";
            }
            div.readme { (layout::trusted(&e.readme_html)) }
        }
        @if !errors.is_empty() {
            div.flash.error role="alert" {
                p { "Please correct:" }
                ul { @for x in errors { li { a href=(format!("#{}", x.field)) { (x.message) } } } }
            }
        }
        form.card method="post" action=(format!("/ui/shop/{}", e.id)) {
            (csrf(s))
            label for="name" { "Execution name" }
            input #name name="name" required maxlength="256" value=(value("name").unwrap_or(&e.zapp.name));
            @if !e.parameters.is_empty() {
                fieldset {
                    legend { "Parameters" }
                    @for (i, p) in e.parameters.iter().enumerate() {
                        @let f = shop::param_field(i);
                        @let current = value(&f).map(str::to_string).unwrap_or_else(|| p.default_text());
                        @let help = format!("{f}-help");
                        div.field {
                            label for=(f) { (p.label()) }
                            @match p.ty {
                                ParamType::Int => {
                                    input id=(f) name=(f) type="number" value=(current) min=[p.min] max=[p.max] step=[p.step]
                                        aria-describedby=(help) aria-invalid=[err_of(&f).map(|_| "true")];
                                }
                                ParamType::String => {
                                    input id=(f) name=(f) value=(current) aria-describedby=(help)
                                        aria-invalid=[err_of(&f).map(|_| "true")];
                                }
                            }
                            p.hint id=(help) { (p.description) }
                        }
                    }
                }
            }
            @if customize {
                fieldset {
                    legend { "Resources (minimum reserved per instance)" }
                    @for (gi, g) in e.zapp.services.iter().enumerate() {
                        @let mf = shop::memory_field(gi);
                        @let cf = shop::cores_field(gi);
                        @let mem = g.resources.memory.min.map(|b| format!("{}", b as f64 / (1u64 << 30) as f64)).unwrap_or_default();
                        @let cores = g.resources.cores.min.map(|c| layout::cores(c.as_cores())).unwrap_or_default();
                        div.field.pair {
                            div {
                                label for=(mf) { "Memory of " (g.name) " (GiB)" }
                                input id=(mf) name=(mf) type="number" step="any" min="0" value=(value(&mf).unwrap_or(&mem));
                            }
                            div {
                                label for=(cf) { "Cores of " (g.name) }
                                input id=(cf) name=(cf) type="number" step="any" min="0" value=(value(&cf).unwrap_or(&cores));
                            }
                        }
                    }
                }
            }
            div.actions {
                button type="submit" name="action" value="start" { "Start" }
                button.secondary type="submit" name="action" value="download" { "Download JSON" }
            }
        }
    };
    page(s, Nav::Shop, &e.name, content)
}

/// Starts the tuned ZApp (through the API's submit handler) or returns it
/// as a download for the CLI.
pub async fn start(State(web): State<Web>, Path(id): Path<String>, f: Form) -> WebResult<Response> {
    let s = &f.session;
    let e = visible_entry(&web, s, &id).await?;
    let customize_fields = (0..e.zapp.services.len()).flat_map(|gi| [shop::memory_field(gi), shop::cores_field(gi)]);
    let wants_resources =
        customize_fields.filter(|k| f.fields.get(k).is_some_and(|v| !v.trim().is_empty())).count() > 0;
    if wants_resources {
        s.caller.require(
            s.caller.caps().can_customize_resources,
            "change the resources of a shop ZApp (needs can_customize_resources)",
        )?;
    }
    let app = match shop::apply(&e, |k| f.fields.get(k)) {
        Ok(app) => app,
        Err(errors) => {
            let page = form_page(s, &e, &errors, &|k| f.fields.get(k));
            return Ok((axum::http::StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    if f.fields.get("action") == Some("download") {
        return download(&format!("{}.json", app.name), &app);
    }
    let name = f.fields.get("name").map(str::trim).filter(|n| !n.is_empty()).unwrap_or(&app.name).to_string();
    let v = serde_json::to_value(&app).map_err(|e| HttpError::internal(e.to_string()))?;
    submit(s, name, v).await
}

pub async fn logo(State(web): State<Web>, s: Session, Path(id): Path<String>) -> WebResult<Response> {
    let e = visible_entry(&web, &s, &id).await?;
    let path = e.logo.ok_or_else(|| HttpError::not_found("this ZApp has no logo"))?;
    let ty = match path.extension().and_then(|x| x.to_str()).map(|x| x.to_ascii_lowercase()).as_deref() {
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        _ => return Err(HttpError::not_found("logos are png, svg, jpg, gif or webp").into()),
    };
    let bytes = tokio::fs::read(&path).await.map_err(|e| HttpError::not_found(format!("logo: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "private, max-age=86400"),
            // An SVG opened on its own must not run script in this origin.
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; sandbox"),
        ],
        bytes,
    )
        .into_response())
}
