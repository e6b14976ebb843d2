//! Frames: a u32 big-endian length prefix, then a bincode 2 (serde) payload
//! holding a version number followed by the message.
//!
//! Decoding never panics and never trusts a length it has not checked: the
//! prefix is compared with the maximum frame size before anything is
//! allocated, and bincode runs with an allocation limit so a hostile length
//! inside the payload cannot make it reserve gigabytes.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of the envelope and of the messages inside it. A peer speaking
/// another version gets an error instead of a misparse.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest payload accepted by default (snapshot chunks are the biggest messages).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Upper bound on what bincode may allocate while decoding one message.
const DECODE_ALLOC_LIMIT: usize = 32 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_big_endian().with_limit::<DECODE_ALLOC_LIMIT>()
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("protocol version {got}, expected {expected}")]
    Version { got: u16, expected: u16 },
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("malformed frame: {0}")]
    Decode(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `msg` as one frame, prefix included.
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    bincode::serde::encode_into_std_write(PROTOCOL_VERSION, &mut buf, config())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    bincode::serde::encode_into_std_write(msg, &mut buf, config()).map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = buf.len() - 4;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    buf[..4].copy_from_slice(&len32.to_be_bytes());
    Ok(buf)
}

/// Decodes one payload (the bytes after the prefix).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (version, used): (u16, usize) =
        bincode::serde::decode_from_slice(payload, config()).map_err(|e| FrameError::Decode(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: version, expected: PROTOCOL_VERSION });
    }
    let rest = &payload[used..];
    let (msg, used): (T, usize) =
        bincode::serde::decode_from_slice(rest, config()).map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != rest.len() {
        return Err(FrameError::Trailing(rest.len() - used));
    }
    Ok(msg)
}

/// Decodes the first frame of `buf` if it is complete: `Ok(None)` asks for
/// more bytes, `Ok(Some((msg, consumed)))` hands back the message.
pub fn decode_from_buffer<T: DeserializeOwned>(buf: &[u8], max: usize) -> Result<Option<(T, usize)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((decode(&buf[4..4 + len])?, 4 + len)))
}

/// Writes one frame.
pub async fn write_frame<W, T>(w: &mut W, msg: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buf = encode(msg, max)?;
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly between
/// frames; an end inside a frame is an error.
pub async fn read_frame<R, T>(r: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(FrameError::Truncated) };
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    decode(&payload).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u64),
        Data { name: String, bytes: Vec<u8>, tags: Vec<String> },
    }

    #[test]
    fn round_trip() {
        let m = Msg::Data { name: "x".into(), bytes: vec![1, 2, 3], tags: vec!["a".into()] };
        let buf = encode(&m, DEFAULT_MAX_FRAME).unwrap();
        let (back, used): (Msg, usize) = decode_from_buffer(&buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(back, m);
        assert_eq!(used, buf.len());
        assert!(decode_from_buffer::<Msg>(&buf[..buf.len() - 1], DEFAULT_MAX_FRAME).unwrap().is_none());
    }

    #[test]
    fn oversized_and_wrong_version_are_errors() {
        let m = Msg::Data { name: "x".repeat(100), bytes: vec![], tags: vec![] };
        assert!(matches!(encode(&m, 10), Err(FrameError::TooLarge { .. })));
        let buf = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(decode_from_buffer::<Msg>(&buf, DEFAULT_MAX_FRAME), Err(FrameError::TooLarge { .. })));
        let mut other = Vec::new();
        bincode::serde::encode_into_std_write(7u16, &mut other, config()).unwrap();
        bincode::serde::encode_into_std_write(Msg::Ping(1), &mut other, config()).unwrap();
        assert!(matches!(decode::<Msg>(&other), Err(FrameError::Version { got: 7, .. })));
        let mut trailing = encode(&Msg::Ping(1), DEFAULT_MAX_FRAME).unwrap()[4..].to_vec();
        trailing.push(0);
        assert!(matches!(decode::<Msg>(&trailing), Err(FrameError::Trailing(1))));
    }

    #[test]
    fn hostile_inner_length_does_not_allocate_wildly() {
        // version 1, variant 1 (Data), then a string length claiming ~2^60 bytes.
        let mut p = Vec::new();
        bincode::serde::encode_into_std_write(PROTOCOL_VERSION, &mut p, config()).unwrap();
        bincode::serde::encode_into_std_write(1u32, &mut p, config()).unwrap();
        bincode::serde::encode_into_std_write(1u64 << 60, &mut p, config()).unwrap();
        assert!(decode::<Msg>(&p).is_err());
    }

    #[tokio::test]
    async fn stream_reads() {
        let m = Msg::Ping(42);
        let mut bytes = encode(&m, DEFAULT_MAX_FRAME).unwrap();
        bytes.extend(encode(&Msg::Ping(43), DEFAULT_MAX_FRAME).unwrap());
        let mut r = &bytes[..];
        assert_eq!(read_frame::<_, Msg>(&mut r, DEFAULT_MAX_FRAME).await.unwrap(), Some(Msg::Ping(42)));
        assert_eq!(read_frame::<_, Msg>(&mut r, DEFAULT_MAX_FRAME).await.unwrap(), Some(Msg::Ping(43)));
        assert_eq!(read_frame::<_, Msg>(&mut r, DEFAULT_MAX_FRAME).await.unwrap(), None);
        let mut cut = &bytes[..3];
        assert!(matches!(read_frame::<_, Msg>(&mut cut, DEFAULT_MAX_FRAME).await, Err(FrameError::Truncated)));
        let mut cut = &bytes[..6];
        assert!(matches!(read_frame::<_, Msg>(&mut cut, DEFAULT_MAX_FRAME).await, Err(FrameError::Truncated)));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Arbitrary bytes never panic the decoder; they decode or fail.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode_from_buffer::<Msg>(&bytes, 4096);
                let _ = decode::<Msg>(&bytes);
                let _ = decode::<(u64, String, Vec<Vec<u8>>, Option<bool>)>(&bytes);
            }

            /// Valid frames with random corruption never panic either.
            #[test]
            fn corrupted_frames_never_panic(
                name in ".{0,40}",
                data in proptest::collection::vec(any::<u8>(), 0..64),
                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            ) {
                let mut buf = encode(&Msg::Data { name, bytes: data, tags: vec!["t".into()] }, 4096).unwrap();
                for (at, v) in flips {
                    let i = at % buf.len();
                    buf[i] = v;
                }
                let _ = decode_from_buffer::<Msg>(&buf, 4096);
            }
        }
    }
}
