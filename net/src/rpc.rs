//! Request/response over QUIC bidirectional streams, one frame each way.
//!
//! A caller opens a stream per request, which lets many requests run
//! concurrently on one connection without head-of-line blocking. A server
//! also accepts several requests in sequence on one stream.

use crate::NetError;
use crate::frame::{read_frame, write_frame};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;

/// Stream error code sent when a frame is malformed or oversized.
pub const STREAM_BAD_FRAME: u32 = 0x400;

/// Sends one request and waits for its answer.
pub async fn call<Req, Resp>(conn: &quinn::Connection, req: &Req, max: usize) -> Result<Resp, NetError>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, req, max).await?;
    send.finish()?;
    match read_frame(&mut recv, max).await? {
        Some(resp) => Ok(resp),
        None => Err(NetError::NoAnswer),
    }
}

/// Serves requests arriving on one stream until the peer finishes it. A
/// malformed or oversized frame ends the stream with [`STREAM_BAD_FRAME`]
/// and is reported as an error; it never takes the process down.
pub async fn serve_stream<Req, Resp, F, Fut>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    max: usize,
    mut handler: F,
) -> Result<(), NetError>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Resp>,
{
    loop {
        match read_frame::<_, Req>(&mut recv, max).await {
            Ok(Some(req)) => {
                let resp = handler(req).await;
                write_frame(&mut send, &resp, max).await?;
            }
            Ok(None) => {
                // The peer may already be gone after reading its answer.
                let _ = send.finish();
                return Ok(());
            }
            Err(e) => {
                let _ = recv.stop(STREAM_BAD_FRAME.into());
                let _ = send.reset(STREAM_BAD_FRAME.into());
                return Err(e.into());
            }
        }
    }
}
