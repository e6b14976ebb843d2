//! zoe-echo: a small static HTTP/1.1 and WebSocket test server, std only,
//! built by the testkit with `rustc -C target-feature=+crt-static` and put
//! into a busybox image (see `zoe_testkit::echo`). It stands in for a
//! notebook behind zoe's service proxy.
//!
//! `zoe-echo PORT` serves, under any path prefix:
//! - `.../ws`: a WebSocket that sends every message back;
//! - `.../sse`: three server-sent events, then the end of the stream;
//! - `.../bytes/N`: N bytes (`x`), streamed;
//! - `POST` anywhere: the body back;
//! - anything else: the request line and the headers a service sees
//!   (`path=`, `prefix=`, `cookie=`, `authorization=`, `forwarded-for=`,
//!   `host=`) and its `PROXY_PATH` environment variable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8080".into());
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).expect("bind");
    eprintln!("zoe-echo listening on {port}");
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(s);
        });
    }
}

fn serve(s: TcpStream) -> std::io::Result<()> {
    // Answers go out in several writes: without this, Nagle's algorithm
    // and the client's delayed ACK hold each small answer for ~40 ms.
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("/").to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        if path.ends_with("/ws") && get("upgrade").eq_ignore_ascii_case("websocket") {
            let accept = base64(&sha1(format!("{}258EAFA5-E914-47DA-95CA-C5AB0DC85B11", get("sec-websocket-key")).as_bytes()));
            write!(w, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")?;
            w.flush()?;
            return websocket(r, w.into_inner().map_err(|e| e.into_error())?);
        }
        if method == "POST" {
            let n: usize = get("content-length").parse().unwrap_or(0);
            let mut body = vec![0; n];
            r.read_exact(&mut body)?;
            write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n")?;
            w.write_all(&body)?;
        } else if path.ends_with("/sse") {
            write!(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")?;
            for i in 1..=3 {
                write!(w, "data: event {i}\n\n")?;
                w.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            return Ok(());
        } else if let Some(n) = path.rsplit_once("/bytes/").and_then(|(_, n)| n.parse::<usize>().ok()) {
            write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n")?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len());
                w.write_all(&chunk[..k])?;
                left -= k;
            }
        } else {
            let body = format!(
                "path={path}\nprefix={}\ncookie={}\nauthorization={}\nforwarded-for={}\nhost={}\nenv-proxy-path={}\n",
                get("x-forwarded-prefix"),
                get("cookie"),
                get("authorization"),
                get("x-forwarded-for"),
                get("host"),
                std::env::var("PROXY_PATH").unwrap_or_default(),
            );
            write!(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
        }
        w.flush()?;
    }
}

/// Echoes frames (RFC 6455): client frames are masked, ours are not.
fn websocket(mut r: BufReader<TcpStream>, mut w: TcpStream) -> std::io::Result<()> {
    loop {
        let mut h = [0u8; 2];
        r.read_exact(&mut h)?;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let mut len = (h[1] & 0x7f) as u64;
        if len == 126 {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            len = u16::from_be_bytes(b) as u64;
        } else if len == 127 {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            len = u64::from_be_bytes(b);
        }
        let mut mask = [0u8; 4];
        if masked {
            r.read_exact(&mut mask)?;
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload)?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n < 65536 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&payload);
        w.write_all(&out)?;
        if opcode == 8 {
            return Ok(());
        }
    }
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64) * 8;
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([block[4 * i], block[4 * i + 1], block[4 * i + 2], block[4 * i + 3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}
