//! Serving the API: plain HTTP (loopback only, checked by the config) or
//! HTTPS with the coordinator's certificate; clean shutdown; and the
//! one-time bootstrap token on the first leader of a new cluster.

use super::context::{Ctx, Urls};
use super::live::LiveSource;
use crate::auth;
use crate::raft::Coordinator;
use crate::state::Command;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("service proxy: listen on {addr}: {source}")]
    ProxyListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("API TLS: {0}")]
    Tls(String),
}

/// A running API server.
pub struct ApiServer {
    addr: SocketAddr,
    https: bool,
    proxy_addr: Option<SocketAddr>,
    urls: Urls,
    stop: watch::Sender<bool>,
    serve: JoinHandle<()>,
    proxy: Option<JoinHandle<()>>,
    bootstrap: JoinHandle<()>,
}

/// Serves `app` on `tcp` (through TLS when `acceptor` is set) until
/// `stopped` turns true.
fn spawn_serve(
    tcp: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    mut stopped: watch::Receiver<bool>,
    what: &'static str,
) -> JoinHandle<()> {
    let signal = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let app = app.into_make_service_with_connect_info::<super::context::Peer>();
    match acceptor {
        Some(acceptor) => tokio::spawn(async move {
            if let Err(e) = axum::serve(TlsListener::new(tcp, acceptor), app).with_graceful_shutdown(signal).await {
                tracing::error!("{what} server: {e}");
            }
        }),
        None => tokio::spawn(async move {
            if let Err(e) = axum::serve(tcp, app).with_graceful_shutdown(signal).await {
                tracing::error!("{what} server: {e}");
            }
        }),
    }
}

impl ApiServer {
    /// Binds `config().api.listen` and serves until [`ApiServer::shutdown`].
    /// `live` is the agents' side; `None` until the agent protocol is wired.
    pub async fn start(coord: Coordinator, live: Option<Arc<dyn LiveSource>>) -> Result<ApiServer, ServeError> {
        let settings = coord.config().api.clone();
        let (stop, stopped) = watch::channel(false);
        let ctx = Ctx::new(coord.clone(), live, stopped.clone());
        let listen = settings.listen_addr();
        let tcp = TcpListener::bind(listen).await.map_err(|source| ServeError::Listen { addr: listen, source })?;
        let addr = tcp.local_addr().map_err(|source| ServeError::Listen { addr: listen, source })?;
        let https = settings.tls_cert.is_some();
        let scheme = if https { "https" } else { "http" };
        let proxy_tcp = match settings.proxy.listen {
            Some(p) => Some(TcpListener::bind(p).await.map_err(|source| ServeError::ProxyListen { addr: p, source })?),
            None => None,
        };
        let proxy_addr = proxy_tcp.as_ref().and_then(|t| t.local_addr().ok());
        let urls = Urls {
            ui: settings.proxy.ui_url.clone().unwrap_or_else(|| format!("{scheme}://{addr}")),
            proxy: proxy_addr.map(|a| settings.proxy.url.clone().unwrap_or_else(|| format!("{scheme}://{a}"))),
        };
        ctx.set_urls(urls.clone());
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => None,
        };
        // The web UI shares the listener and origin: its session cookie and
        // forms never cross origins.
        let app = super::routes::router(ctx.clone()).merge(crate::web::router(ctx.clone()));
        let acceptor = |alpn: &[&[u8]]| tls.as_ref().map(|(c, k)| tls_acceptor(c, k, alpn)).transpose();
        let serve = spawn_serve(tcp, acceptor(&[b"http/1.1"])?, app, stopped.clone(), "API");
        tracing::info!(%addr, https, "API listening");
        // The service proxy takes HTTP/2 too: notebooks open many streams.
        let proxy = match proxy_tcp {
            Some(t) => {
                let app = crate::proxy::router(ctx.clone(), https);
                let handle = spawn_serve(t, acceptor(&[b"h2", b"http/1.1"])?, app, stopped.clone(), "service proxy");
                tracing::info!(addr = ?proxy_addr, https, "service proxy listening");
                Some(handle)
            }
            None => None,
        };
        let bootstrap = tokio::spawn(bootstrap_token(coord));
        Ok(ApiServer { addr, https, proxy_addr, urls, stop, serve, proxy, bootstrap })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` or `https://` and the bound address.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.addr)
    }

    /// The service proxy's bound address, when it serves.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy_addr
    }

    /// The service proxy's public base URL, when it serves.
    pub fn proxy_url(&self) -> Option<String> {
        self.urls.proxy.clone()
    }

    /// Stops accepting, answers blocking queries at once, lets requests in
    /// flight finish (up to 3 s: a followed log may never end), then returns.
    pub async fn shutdown(self) {
        self.bootstrap.abort();
        let _ = self.stop.send(true);
        // Both listeners drain at once, within the same 3 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        for mut serve in std::iter::once(self.serve).chain(self.proxy) {
            if tokio::time::timeout_at(deadline, &mut serve).await.is_err() {
                serve.abort();
            }
        }
        tracing::info!("API stopped");
    }
}

/// On the first leader of a cluster that has no users and never had a
/// bootstrap token: mint one, store its hash (replicated), write it with
/// mode 0600 into the data dir and print it once.
async fn bootstrap_token(coord: Coordinator) {
    let mut rx = coord.leadership();
    loop {
        let leader = rx.borrow_and_update().term.is_some();
        if leader {
            match coord.read_linearizable(auth::needs_bootstrap_token).await {
                Ok((false, _)) => return,
                Ok((true, _)) => {
                    let token = format!("zoe-bootstrap-{}", auth::random_secret());
                    let cmd = Command::SetMeta { key: auth::META_BOOTSTRAP.into(), value: auth::sha256_hex(&token) };
                    match coord.write(cmd).await {
                        Ok(_) => {
                            let dir = &coord.config().data_dir;
                            match auth::write_bootstrap_file(dir, &token) {
                                Ok(p) => tracing::warn!(file = %p.display(), "ACL bootstrap token created"),
                                Err(e) => tracing::error!("writing the bootstrap token file: {e}"),
                            }
                            eprintln!(
                                "\n==> zoe ACL bootstrap token (shown once; also in {}):\n\n    {token}\n\n    \
                                 Exchange it for the first admin token: zoe acl bootstrap --bootstrap-token <token>\n",
                                dir.join(auth::BOOTSTRAP_FILE).display()
                            );
                            return;
                        }
                        Err(e) => tracing::debug!("bootstrap token not stored yet: {e}"),
                    }
                }
                Err(e) => tracing::debug!("bootstrap check: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

// --------------------------------------------------------------------- TLS

fn tls_acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| ServeError::Tls(format!("{}: {e}", p.display())));
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(ServeError::Tls(format!("{}: no CERTIFICATE block", cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServeError::Tls(format!("{}: no PRIVATE KEY block", key.display())))?;
    // Users authenticate with tokens, not certificates: no client auth here.
    // The ring provider is passed explicitly (see zoe-net's tls module).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Accepts TCP connections and runs TLS handshakes off the accept path
/// (a slow or silent client must not stall everyone else).
struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    _accept: AbortOnDrop,
}

struct AbortOnDrop(JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TlsListener {
    fn new(tcp: TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> TlsListener {
        let addr = tcp.local_addr().expect("bound listener has an address");
        let (tx, rx) = mpsc::channel(64);
        let accept = tokio::spawn(async move {
            loop {
                let (sock, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { rx, addr, _accept: AbortOnDrop(accept) }
    }
}

impl<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, TlsListener>> for super::context::Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'a, TlsListener>) -> Self {
        super::context::Peer(*stream.remote_addr())
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
