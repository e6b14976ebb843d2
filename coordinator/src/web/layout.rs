//! The page shell, navigation and small formatting helpers.

use super::session::{CSRF_FIELD, Session};
use crate::api::HttpError;
use axum::response::Html;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use zoe_common::resources::{human_bytes, utc_time};

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Home,
    Shop,
    Executions,
    Workflows,
    Status,
    Admin,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · zoe" }
            link rel="stylesheet" href="/ui/static/zoe.css";
            script src="/ui/static/zoe.js" defer {}
        }
    }
}

/// A full page for a logged-in person.
pub fn page(s: &Session, nav: Nav, title: &str, body: Markup) -> Html<String> {
    let caps = s.caller.caps();
    let item = |target: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(nav == target).then_some("page")] { (label) } }
        }
    };
    let top = html! {
        a.skip href="#main" { "Skip to content" }
        header.top {
            a.brand href="/ui/" { "zoe" }
            nav aria-label="Main" {
                ul {
                    (item(Nav::Home, "/ui/", "Home"))
                    (item(Nav::Shop, "/ui/shop", "ZApp shop"))
                    (item(Nav::Executions, "/ui/executions", "Executions"))
                    (item(Nav::Workflows, "/ui/workflows", "Workflows"))
                    @if caps.can_see_status { (item(Nav::Status, "/ui/status", "Status")) }
                    @if caps.can_change_config { (item(Nav::Admin, "/ui/admin", "Admin")) }
                }
            }
            form.logout method="post" action="/ui/logout" {
                span.who { (s.caller.user.username) " (" (s.caller.role.name) ")" }
                (csrf(s))
                button.link type="submit" { "Log out" }
            }
        }
    };
    document(title, top, body)
}

/// A page without navigation (login, errors before a session).
pub fn bare_page(title: &str, body: Markup) -> Html<String> {
    document(title, html! { header.top { a.brand href="/ui/" { "zoe" } } }, body)
}

/// The HTML document every page is: `top` above the page's own title and body.
fn document(title: &str, top: Markup, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body {
                    (top)
                    main #main { h1 { (title) } (body) }
                }
            }
        }
        .into_string(),
    )
}

pub fn error_page(e: &HttpError) -> Html<String> {
    let title = e.status.canonical_reason().unwrap_or("Error");
    bare_page(
        title,
        html! {
            p.flash.error role="alert" { (e.message) }
            @if !e.details.is_empty() {
                ul.details {
                    @for d in &e.details { li { code { (d.path) } ": " (d.message) } }
                }
            }
            p { a href="/ui/" { "Back to the home page" } }
        },
    )
}

/// The hidden CSRF field of a session's forms.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(s.csrf); }
}

/// A one-button form posting to `action`.
pub fn button(s: &Session, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(s))
            button class=(class) type="submit" { (label) }
        }
    }
}

pub fn time(ms: Option<u64>) -> Markup {
    match ms {
        Some(ms) => html! { time datetime=(format!("{}Z", utc_time(ms).replace(' ', "T"))) { (utc_time(ms)) " UTC" } },
        None => html! { span.muted { "–" } },
    }
}

pub fn bytes(b: u64) -> String {
    human_bytes(b)
}

pub fn cores(c: f64) -> String {
    let s = format!("{c:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A status badge; the class lets the style colour it.
pub fn status(s: &str) -> Markup {
    let class = format!("badge st-{}", s.replace(' ', "-"));
    html! { span class=(class) { (s) } }
}

/// A labelled gauge: `used` of `total` (0 = unlimited).
pub fn gauge(label: &str, used: f64, total: f64, text: &str) -> Markup {
    html! {
        div.gauge {
            span.gauge-label { (label) }
            @if total > 0.0 {
                meter min="0" max=(total) value=(used.min(total)) high=(total * 0.9) aria-label=(label) { (text) }
            }
            span.gauge-text { (text) }
        }
    }
}

/// Trusted HTML produced by our own Markdown renderer.
pub fn trusted(html: &str) -> PreEscaped<String> {
    PreEscaped(html.to_string())
}

/// Only http(s) URLs become links; anything else is shown as text.
pub fn link(url: &str) -> Markup {
    let lower = url.trim().to_ascii_lowercase();
    html! {
        @if lower.starts_with("http://") || lower.starts_with("https://") {
            a href=(url) target="_blank" rel="noopener noreferrer" { (url) }
        } @else {
            code { (url) }
        }
    }
}
