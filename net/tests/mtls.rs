//! Real QUIC connections on 127.0.0.1 with mutual TLS: who gets in, who is
//! refused, and what a malformed frame does.

use std::net::SocketAddr;
use std::time::Duration;
use zoe_net::frame::DEFAULT_MAX_FRAME;
use zoe_net::{CertificateAuthority, Identity, Role, TlsMaterial, rpc};

const ALPN: &[&[u8]] = &[b"zoe-test/1"];

fn material(ca: &CertificateAuthority, role: Role, name: &str) -> TlsMaterial {
    let cert = ca.issue(&Identity::new(role, name).unwrap(), &[], &["127.0.0.1".parse().unwrap()]).unwrap();
    TlsMaterial::from_pem(ca.cert_pem().as_bytes(), cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap()
}

/// An echo server that accepts only coordinators and clients.
fn server(tls: &TlsMaterial) -> (quinn::Endpoint, SocketAddr) {
    let ep = tls.endpoint("127.0.0.1:0".parse().unwrap(), ALPN).unwrap();
    let addr = ep.local_addr().unwrap();
    let accept = ep.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                if zoe_net::require_role(&conn, &[Role::Coordinator, Role::Client]).is_err() {
                    return;
                }
                let peer = zoe_net::peer_identity(&conn).unwrap();
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let peer = peer.clone();
                    tokio::spawn(rpc::serve_stream(send, recv, 1024, move |req: String| {
                        let peer = peer.clone();
                        async move { format!("{}:{req}", peer.san()) }
                    }));
                }
            });
        }
    });
    (ep, addr)
}

async fn ask(client: &TlsMaterial, addr: SocketAddr, server_name: &str) -> Result<String, zoe_net::NetError> {
    let ep = client.client_endpoint(ALPN)?;
    let conn = ep.connect(addr, server_name)?.await?;
    tokio::time::timeout(Duration::from_secs(5), rpc::call::<String, String>(&conn, &"hi".to_string(), 1024))
        .await
        .map_err(|_| zoe_net::NetError::Timeout)?
}

#[tokio::test]
async fn mutual_tls_accepts_members_and_refuses_others() {
    let ca = CertificateAuthority::generate("t").unwrap();
    let other_ca = CertificateAuthority::generate("other").unwrap();
    let srv = material(&ca, Role::Coordinator, "c1");
    let (_ep, addr) = server(&srv);

    // Same CA, allowed roles: answered, and the server saw who we are.
    let coord = material(&ca, Role::Coordinator, "c2");
    assert_eq!(ask(&coord, addr, "coordinator.c1.zoe").await.unwrap(), "coordinator.c2.zoe:hi");
    let client = material(&ca, Role::Client, "ops");
    assert_eq!(ask(&client, addr, "coordinator.c1.zoe").await.unwrap(), "client.ops.zoe:hi");

    // Same CA, agent role: the handshake succeeds but the server closes.
    let agent = material(&ca, Role::Agent, "n1");
    assert!(ask(&agent, addr, "coordinator.c1.zoe").await.is_err());

    // Another CA: refused in the handshake (the client may only notice on
    // its first stream operation, see rust-stack-notes §6.4).
    let stranger = material(&other_ca, Role::Coordinator, "c9");
    assert!(ask(&stranger, addr, "coordinator.c1.zoe").await.is_err());

    // The server name encodes the expected role: a client asking for an
    // agent named c1 does not accept the coordinator's certificate.
    assert!(ask(&coord, addr, "agent.c1.zoe").await.is_err());
}

#[tokio::test]
async fn malformed_frame_closes_only_that_stream() {
    let ca = CertificateAuthority::generate("t").unwrap();
    let srv = material(&ca, Role::Coordinator, "c1");
    let (_ep, addr) = server(&srv);
    let client = material(&ca, Role::Client, "ops");
    let ep = client.client_endpoint(ALPN).unwrap();
    let conn = ep.connect(addr, "coordinator.c1.zoe").unwrap().await.unwrap();

    // An oversized length prefix: the stream is reset, no answer.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x7f, 0, 0, 0, 1, 2, 3]).await.unwrap();
    let _ = send.finish();
    let r = zoe_net::frame::read_frame::<_, String>(&mut recv, DEFAULT_MAX_FRAME).await;
    assert!(r.is_err() || r.unwrap().is_none());

    // Garbage inside a well-sized frame: same.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    let _ = send.finish();
    let r = zoe_net::frame::read_frame::<_, String>(&mut recv, DEFAULT_MAX_FRAME).await;
    assert!(r.is_err() || r.unwrap().is_none());

    // The connection itself still works.
    let ok: String = rpc::call(&conn, &"again".to_string(), 1024).await.unwrap();
    assert_eq!(ok, "client.ops.zoe:again");
}
