//! One request to a service: zoe's credentials stripped, `X-Forwarded-*`
//! added, bodies streamed both ways (hyper's flow control is the
//! back-pressure: nothing is buffered whole), and a WebSocket or other
//! `Upgrade` spliced byte for byte once the service answers 101.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// Connecting to a service that does not answer gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most the proxy reads from a service at once.
const READ_BUF_MAX: usize = 1 << 20;

/// Cookies of zoe's own, never passed to a service.
pub const COOKIE_PREFIX: &str = "zoe_";

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0} did not accept the connection within 5 s")]
    ConnectTimeout(String),
    #[error("{0}: {1}")]
    Http(String, hyper::Error),
}

/// What the service is told about the original request.
pub struct Forwarded<'a> {
    /// The path prefix the proxy serves the service under.
    pub prefix: &'a str,
    pub client: Option<IpAddr>,
    /// `http` or `https`, as the client reached the proxy.
    pub proto: &'static str,
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in HOP_BY_HOP.iter().chain(&named) {
        h.remove(n);
    }
    h.remove(header::UPGRADE);
}

/// The `Cookie` header without zoe's cookies (`None` if none is left).
pub fn without_zoe_cookies(h: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with(COOKIE_PREFIX))
        .collect();
    if kept.is_empty() { None } else { HeaderValue::from_str(&kept.join("; ")).ok() }
}

/// The protocol a request asks to switch to (`websocket`), if any.
fn upgrade_of(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    asks.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

/// Sends `req` to the service at `upstream` and returns its answer.
pub async fn forward(
    mut req: Request<Body>,
    upstream: &str,
    fwd: &Forwarded<'_>,
) -> Result<Response<Body>, ForwardError> {
    let upgrade = upgrade_of(req.headers());
    let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // HTTP/2 carries the host in the URI's authority, HTTP/1.1 in `Host`.
    let host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    h.remove(header::AUTHORIZATION);
    match without_zoe_cookies(h) {
        Some(c) => {
            h.insert(header::COOKIE, c);
        }
        None => {
            h.remove(header::COOKIE);
        }
    }
    if let Some(host) = &host {
        h.insert(header::HOST, host.clone());
        h.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    if let Some(ip) = fwd.client {
        let chain = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            h.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
    }
    h.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static(fwd.proto));
    if let Ok(v) = HeaderValue::from_str(fwd.prefix) {
        h.insert(HeaderName::from_static("x-forwarded-prefix"), v);
    }
    if let Some(u) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u.clone());
    }
    parts.version = Version::HTTP_11;
    parts.uri =
        parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/").parse().unwrap_or(Uri::from_static("/"));

    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ForwardError::Connect(upstream.to_string(), e)),
        Err(_) => return Err(ForwardError::ConnectTimeout(upstream.to_string())),
    };
    let _ = tcp.set_nodelay(true);
    // Large reads: a download then crosses the proxy in few, big chunks.
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(READ_BUF_MAX)
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| ForwardError::Http(upstream.to_string(), e))?;
    let request = Request::from_parts(parts, body);
    let Some(client_side) = client_side else {
        // The connection is driven by the task that writes the answer to
        // the client (see `Relay`), not by a task of its own: a download
        // then reads from the service and writes to the client without a
        // wake-up of another thread for every chunk.
        let mut conn = Some(Box::pin(conn));
        let mut sending = std::pin::pin!(sender.send_request(request));
        let resp = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = sending.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if drive(&mut conn, cx) {
                // The answer, or the error, is in `sending` now.
                return sending.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
        .map_err(|e| ForwardError::Http(upstream.to_string(), e))?;
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(parts, Body::new(Relay { conn, body })));
    };
    let name = upstream.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(upstream = %name, "proxy connection: {e}");
        }
    });
    let mut resp = sender.send_request(request).await.map_err(|e| ForwardError::Http(upstream.to_string(), e))?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let service_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match futures::future::try_join(client_side, service_side).await {
                Ok((c, s)) => {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(s)).await;
                }
                Err(e) => tracing::debug!("proxy upgrade: {e}"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

type Upstream = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Body>;

/// A service's answer body, with the connection it arrives on: polling the
/// body polls the connection first, so it reads more from the service.
/// Once the body has ended the connection has nothing left to carry (it
/// serves one request) and is dropped with the body.
struct Relay {
    conn: Option<Pin<Box<Upstream>>>,
    body: Incoming,
}

/// Polls the service connection while it lasts; true when it has just
/// ended (and is dropped).
fn drive(conn: &mut Option<Pin<Box<Upstream>>>, cx: &mut Context<'_>) -> bool {
    let Some(c) = conn.as_mut() else { return false };
    let Poll::Ready(r) = c.as_mut().poll(cx) else { return false };
    *conn = None;
    if let Err(e) = r {
        tracing::debug!("proxy connection: {e}");
    }
    true
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        drive(&mut this.conn, cx);
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoe_cookies_never_reach_a_service() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("zoe_proxy_7=secret; _xsrf=abc"));
        h.append(header::COOKIE, HeaderValue::from_static("zoe_session=s; theme=dark"));
        assert_eq!(without_zoe_cookies(&h).unwrap(), "_xsrf=abc; theme=dark");
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("zoe_proxy_7=secret"));
        assert_eq!(without_zoe_cookies(&only), None);
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(upgrade_of(&h).is_none());
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_of(&h).unwrap(), "websocket");
    }
}
