//! Sessions, CSRF tokens and form bodies.
//!
//! The session cookie holds an API token (a login session token from the
//! API's own login, or a token the user pasted), `HttpOnly`,
//! `SameSite=Strict`, `Secure` over HTTPS. Every form carries a CSRF token
//! derived from the session token (SHA-256 with a fixed prefix: only a
//! holder of the cookie can compute it); the login form, before any
//! session, uses a random double-submit cookie instead.

use super::{Web, WebError, WebResult, layout, see_other};
use crate::api::context::Caller;
use crate::api::routes::P;
use crate::api::{HttpError, admin};
use crate::auth::{self, TokenKind};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::json;

pub const SESSION_COOKIE: &str = "zoe_session";
const LOGIN_CSRF_COOKIE: &str = "zoe_login_csrf";
/// The hidden form field every form carries.
pub const CSRF_FIELD: &str = "csrf";

/// A logged-in person: the same [`Caller`] the API builds from a token.
#[derive(Clone)]
pub struct Session {
    pub caller: Caller,
    /// The value every form of this session must carry.
    pub csrf: String,
}

pub fn csrf_for(token: &str) -> String {
    auth::sha256_hex(&format!("zoe-web-csrf\0{token}"))
}

/// A cookie's value from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(web: &Web, name: &str, value: &str, max_age_s: u64) -> String {
    let secure = if web.0.https { "; Secure" } else { "" };
    format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

impl FromRequestParts<Web> for Session {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Session, WebError> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).filter(|t| !t.is_empty()) else {
            return Err(WebError::Login);
        };
        match web.ctx().caller(token).await {
            Ok(caller) => Ok(Session { caller, csrf: csrf_for(token) }),
            Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => Err(WebError::Login),
            Err(e) => Err(e.into()),
        }
    }
}

/// A form body: urlencoded fields, and uploaded files for multipart forms.
#[derive(Debug, Default)]
pub struct Fields {
    pub pairs: Vec<(String, String)>,
    pub files: Vec<(String, Vec<u8>)>,
}

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }

    fn check_csrf(&self, expected: &str) -> Result<(), HttpError> {
        match self.get(CSRF_FIELD) {
            Some(t) if auth::constant_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
            _ => Err(HttpError::forbidden(
                "the form's CSRF token is missing or wrong; reload the page and submit it again",
            )),
        }
    }
}

async fn read_fields(req: Request, limit: usize) -> Result<Fields, HttpError> {
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
        HttpError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the form could not be read (larger than {limit} bytes?): {e}"),
        )
    })?;
    if let Some(boundary) = ctype
        .strip_prefix("multipart/form-data")
        .and_then(|rest| rest.split(';').find_map(|p| p.trim().strip_prefix("boundary=")))
    {
        return multipart(&bytes, boundary.trim_matches('"'));
    }
    let pairs = form_urlencoded::parse(&bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    Ok(Fields { pairs, files: Vec::new() })
}

/// A `multipart/form-data` body (RFC 7578), read whole: the body limit
/// bounds it, and the forms here carry one small file at most.
fn multipart(body: &[u8], boundary: &str) -> Result<Fields, HttpError> {
    let bad = |m: &str| HttpError::bad_request(format!("malformed multipart form: {m}"));
    let delim = format!("--{boundary}").into_bytes();
    let mut fields = Fields::default();
    let mut parts = split(body, &delim).into_iter().skip(1);
    for part in parts.by_ref() {
        if part.starts_with(b"--") {
            return Ok(fields);
        }
        let part = part.strip_prefix(b"\r\n").ok_or_else(|| bad("no line break after a boundary"))?;
        let part = part.strip_suffix(b"\r\n").ok_or_else(|| bad("no line break before a boundary"))?;
        let head_end = find(part, b"\r\n\r\n").ok_or_else(|| bad("a part without headers"))?;
        let head = String::from_utf8_lossy(&part[..head_end]);
        let data = &part[head_end + 4..];
        let disp = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-disposition")))
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| bad("a part without Content-Disposition"))?;
        let param = |key: &str| {
            disp.split(';')
                .find_map(|p| p.trim().strip_prefix(key)?.strip_prefix('=').map(|v| v.trim_matches('"').to_string()))
        };
        let name = param("name").ok_or_else(|| bad("a part without a name"))?;
        if param("filename").is_some() {
            fields.files.push((name, data.to_vec()));
        } else {
            fields.pairs.push((name, String::from_utf8_lossy(data).into_owned()));
        }
    }
    Err(bad("no closing boundary"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], delim: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = find(hay, delim) {
        out.push(&hay[..i]);
        hay = &hay[i + delim.len()..];
    }
    out.push(hay);
    out
}

/// A form posted by a logged-in person, its CSRF token checked.
pub struct Form {
    pub session: Session,
    pub fields: Fields,
}

impl FromRequest<Web> for Form {
    type Rejection = WebError;

    async fn from_request(req: Request, web: &Web) -> Result<Form, WebError> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, web).await?;
        let limit = web.ctx().coord().config().api.body_limit_bytes;
        let fields = read_fields(Request::from_parts(parts, body), limit).await?;
        fields.check_csrf(&session.csrf)?;
        Ok(Form { session, fields })
    }
}

// ------------------------------------------------------------ login/logout

/// Where a login goes on to: a page of the UI named by `next`, else home.
/// Only this origin's `/ui/` paths: never an open redirect.
fn after_login(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.contains("//") && !n.contains('\\') => n,
        _ => "/ui/",
    }
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_page(
    State(web): State<Web>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    let next = after_login(q.next.as_deref());
    // Already logged in: go on.
    if let Some(t) = cookie(&headers, SESSION_COOKIE)
        && web.ctx().caller(t).await.is_ok()
    {
        return see_other(next);
    }
    login_form(&web, &headers, None, axum::http::StatusCode::OK, next)
}

fn login_form(
    web: &Web,
    headers: &HeaderMap,
    error: Option<&str>,
    status: axum::http::StatusCode,
    next: &str,
) -> Response {
    let token = cookie(headers, LOGIN_CSRF_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .unwrap_or_else(auth::random_secret);
    // One way to log in: a form that posts its fields with the CSRF token
    // and where to go next.
    let section = |id: &str, title: &str, fields: Markup| {
        html! {
            section aria-labelledby=(id) {
                h2 id=(id) { (title) }
                form method="post" action="/ui/login" {
                    input type="hidden" name=(CSRF_FIELD) value=(token);
                    input type="hidden" name="next" value=(next);
                    (fields)
                }
            }
        }
    };
    let body = layout::bare_page(
        "Log in",
        html! {
            @if let Some(e) = error {
                p.flash.error role="alert" { (e) }
            }
            div.login {
                (section("pw-title", "Username and password", html! {
                    label for="username" { "Username" }
                    input #username name="username" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password name="password" type="password" autocomplete="current-password" required;
                    button type="submit" { "Log in" }
                }))
                (section("tok-title", "API token", html! {
                    label for="token" { "Token" }
                    input #token name="token" type="password" autocomplete="off" required;
                    p.hint { "A token from " code { "zoe acl token create" } " or the admin page." }
                    button type="submit" { "Log in with token" }
                }))
            }
        },
    );
    (status, [(header::SET_COOKIE, set_cookie(web, LOGIN_CSRF_COOKIE, &token, 3600))], body).into_response()
}

pub async fn login(State(web): State<Web>, req: Request) -> Response {
    let headers = req.headers().clone();
    let client = crate::api::context::ClientAddr::of(req.extensions());
    let limit = web.ctx().coord().config().api.body_limit_bytes;
    let fields = match read_fields(req, limit).await {
        Ok(f) => f,
        Err(e) => return WebError::Http(e).into_response(),
    };
    let next = after_login(fields.get("next")).to_string();
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || fields.check_csrf(expected).is_err() {
        return login_form(
            &web,
            &headers,
            Some("The login form expired (or cookies are off); please try again."),
            axum::http::StatusCode::FORBIDDEN,
            &next,
        );
    }
    let token = if let Some(t) = fields.get("token") {
        let t = t.trim().to_string();
        if let Err(e) = web.ctx().caller(&t).await {
            return login_form(&web, &headers, Some(&e.message), e.status, &next);
        }
        t
    } else {
        let body = json!({ "username": fields.get("username").unwrap_or(""), "password": fields.get("password").unwrap_or("") });
        let body = crate::api::context::Body(body.as_object().cloned().unwrap_or_default());
        match admin::login(State(web.ctx().clone()), client, HeaderMap::new(), body).await {
            Ok(r) => r.value.token,
            Err(e) => return login_form(&web, &headers, Some(&e.message), e.status, &next),
        }
    };
    let max_age = admin::SESSION_TTL_MS / 1000;
    let mut resp = see_other(&next);
    let h = resp.headers_mut();
    if let Ok(v) = set_cookie(&web, SESSION_COOKIE, &token, max_age).parse() {
        h.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = set_cookie(&web, LOGIN_CSRF_COOKIE, "", 0).parse() {
        h.append(header::SET_COOKIE, v);
    }
    resp
}

/// Ends the session: a login session token is revoked (through the API's
/// own handler); a pasted API token stays valid for its other uses.
pub async fn logout(State(web): State<Web>, form: Form) -> WebResult<Response> {
    let caller = form.session.caller;
    if caller.token.kind == TokenKind::Session {
        let id = caller.token.id.clone();
        admin::revoke_token(caller, P(id)).await?;
    }
    let mut resp = see_other("/ui/login");
    if let Ok(v) = set_cookie(&web, SESSION_COOKIE, "", 0).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_fields_and_files() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n--XyZ\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"a.json\"\r\nContent-Type: application/json\r\n\r\n{\"a\":\r\n1}\r\n--XyZ--\r\n";
        let f = multipart(body, "XyZ").unwrap();
        assert_eq!(f.get("csrf"), Some("abc"));
        assert_eq!(f.file("file"), Some(&b"{\"a\":\r\n1}"[..]));
        assert!(multipart(b"--XyZ\r\nno headers", "XyZ").is_err());
    }

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; zoe_session=zoe_x_y; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("zoe_x_y"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
