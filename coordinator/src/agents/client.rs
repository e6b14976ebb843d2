//! Asking a coordinator's agent listener for ClusterStats, with a `client`
//! certificate (the CLI, tests, benchmarks).

use super::ClusterStats;
use std::net::SocketAddr;
use std::time::Duration;
use zoe_common::proto::{self, ClientReply, ClientRequest};
use zoe_net::{Identity, Role, TlsMaterial};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Net(#[from] zoe_net::NetError),
    #[error("{0}")]
    Failed(String),
}

/// Parses `host:port` or `name@host:port` into a socket address and the TLS
/// server name to verify.
fn target(s: &str) -> Result<(SocketAddr, String), ClientError> {
    let (name, addr) = match s.split_once('@') {
        Some((n, a)) => (Some(n), a),
        None => (None, s),
    };
    let sa: SocketAddr = addr.parse().map_err(|_| ClientError::Failed(format!("{s:?}: expected ip:port")))?;
    let server_name = match name {
        Some(n) => Identity::new(Role::Coordinator, n)?.san(),
        None => sa.ip().to_string(),
    };
    Ok((sa, server_name))
}

/// Fetches ClusterStats from the leader, following one redirect.
pub async fn cluster_stats(tls: &TlsMaterial, addrs: &[String]) -> Result<ClusterStats, ClientError> {
    let mut client = tls.client_config(&[proto::ALPN])?;
    client.transport_config(super::agent_transport());
    let mut ep = quinn::Endpoint::client("0.0.0.0:0".parse().expect("literal")).map_err(zoe_net::NetError::from)?;
    ep.set_default_client_config(client);
    let mut todo: Vec<String> = addrs.to_vec();
    let mut last = String::from("no coordinator address");
    let mut hops = 0;
    while let Some(a) = todo.pop() {
        let (sa, name) = target(&a)?;
        let attempt = async {
            let conn = ep.connect(sa, &name).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
            let r: ClientReply = zoe_net::rpc::call(&conn, &ClientRequest::ClusterStats, proto::MAX_FRAME)
                .await
                .map_err(|e| e.to_string())?;
            conn.close(0u32.into(), b"done");
            Ok::<_, String>(r)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(ClientReply::ClusterStats { json })) => {
                return serde_json::from_str(&json).map_err(|e| ClientError::Failed(e.to_string()));
            }
            Ok(Ok(ClientReply::NotLeader { leader: Some(l) })) if hops < 3 => {
                hops += 1;
                todo.push(l);
            }
            Ok(Ok(other)) => last = format!("{a}: {other:?}"),
            Ok(Err(e)) => last = format!("{a}: {e}"),
            Err(_) => last = format!("{a}: timed out"),
        }
    }
    Err(ClientError::Failed(last))
}
