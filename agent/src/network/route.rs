//! Routes to the other nodes' container subnets (host-gateway routing),
//! over rtnetlink directly: a few fixed-layout messages on a
//! `NETLINK_ROUTE` socket, which is all this needs (no netlink crate).
//!
//! zoe's routes carry their own protocol number ([`RTPROT_ZOE`]) in the
//! main table, so a sync can find and remove the ones no longer wanted
//! without touching anybody else's.

use std::io;
use std::net::Ipv4Addr;

/// `rtm_protocol` of zoe's routes (unassigned in iproute2's rt_protos).
pub const RTPROT_ZOE: u8 = 211;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u8 = 254;
const RTN_UNICAST: u8 = 1;

/// One of zoe's routes: `dst/len via gateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub len: u8,
    pub gateway: Ipv4Addr,
}

struct Socket(libc::c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

impl Socket {
    fn open() -> io::Result<Socket> {
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = Socket(fd);
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let r = unsafe {
            libc::bind(fd, &addr as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_nl>() as u32)
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let r = unsafe {
            libc::sendto(
                self.0,
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let r = unsafe { libc::recv(self.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
    }

    /// Reads answers to `seq` until the ACK (or DONE for a dump), handing
    /// every other message's payload to `each`.
    fn read_until_done(&self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
                let typ = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2"));
                let mseq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4"));
                if len < 16 || at + len > n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
                }
                let payload = &buf[at + 16..at + len];
                at += align(len);
                if mseq != seq {
                    continue;
                }
                match typ {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(payload[0..4].try_into().expect("4"));
                        return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    t => each(t, payload),
                }
            }
        }
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, typ: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align(buf.len()), 0);
}

fn message(typ: u16, flags: u16, seq: u32, rtm_dst_len: u8, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m[4..6].copy_from_slice(&typ.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // struct rtmsg
    m.extend_from_slice(&[
        libc::AF_INET as u8,
        rtm_dst_len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_ZOE,
        0, // RT_SCOPE_UNIVERSE
        RTN_UNICAST,
    ]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    for (t, d) in attrs {
        push_attr(&mut m, *t, d);
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

fn seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(1);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// zoe's routes in the main table of the calling thread's namespace.
pub fn list() -> io::Result<Vec<Route>> {
    let s = Socket::open()?;
    let sq = seq();
    s.send(&message(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, sq, 0, &[]))?;
    let mut out = Vec::new();
    s.read_until_done(sq, |typ, p| {
        if typ != RTM_NEWROUTE || p.len() < 12 {
            return;
        }
        let (family, dst_len, table, proto) = (p[0], p[1], p[4], p[5]);
        if family != libc::AF_INET as u8 || proto != RTPROT_ZOE {
            return;
        }
        let (mut dst, mut gw, mut tbl) = (None, None, u32::from(table));
        let mut at = 12;
        while at + 4 <= p.len() {
            let len = u16::from_ne_bytes([p[at], p[at + 1]]) as usize;
            let typ = u16::from_ne_bytes([p[at + 2], p[at + 3]]);
            if len < 4 || at + len > p.len() {
                break;
            }
            let d = &p[at + 4..at + len];
            match (typ, d.len()) {
                (RTA_DST, 4) => dst = Some(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
                (RTA_GATEWAY, 4) => gw = Some(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
                (RTA_TABLE, 4) => tbl = u32::from_ne_bytes(d.try_into().expect("4")),
                _ => {}
            }
            at += align(len);
        }
        if tbl == u32::from(RT_TABLE_MAIN)
            && let (Some(dst), Some(gateway)) = (dst, gw)
        {
            out.push(Route { dst, len: dst_len, gateway });
        }
    })?;
    out.sort();
    Ok(out)
}

/// Adds or replaces `dst/len via gateway`.
pub fn replace(r: &Route) -> io::Result<()> {
    let s = Socket::open()?;
    let sq = seq();
    let attrs = [(RTA_DST, r.dst.octets().to_vec()), (RTA_GATEWAY, r.gateway.octets().to_vec())];
    s.send(&message(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, sq, r.len, &attrs))?;
    s.read_until_done(sq, |_, _| {})
}

/// Deletes one of zoe's routes; a missing one is success.
pub fn delete(r: &Route) -> io::Result<()> {
    let s = Socket::open()?;
    let sq = seq();
    let attrs = [(RTA_DST, r.dst.octets().to_vec()), (RTA_GATEWAY, r.gateway.octets().to_vec())];
    s.send(&message(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, sq, r.len, &attrs))?;
    match s.read_until_done(sq, |_, _| {}) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r,
    }
}

/// What a [`sync`] did.
#[derive(Debug, Default)]
pub struct Synced {
    pub added: usize,
    pub removed: usize,
    /// Routes the kernel refused (e.g. a peer address not on any local
    /// network): one unreachable peer must not cut the node off the rest.
    pub failed: Vec<(Route, io::Error)>,
}

/// Makes zoe's routes `want`: adds the missing, replaces changed gateways,
/// deletes the rest.
pub fn sync(want: &[Route]) -> io::Result<Synced> {
    let have = list()?;
    let mut out = Synced::default();
    for r in want {
        if !have.contains(r) {
            match replace(r) {
                Ok(()) => out.added += 1,
                Err(e) => out.failed.push((*r, e)),
            }
        }
    }
    for r in &have {
        if !want.iter().any(|w| w.dst == r.dst && w.len == r.len) {
            match delete(r) {
                Ok(()) => out.removed += 1,
                Err(e) => out.failed.push((*r, e)),
            }
        }
    }
    Ok(out)
}
