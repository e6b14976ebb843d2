//! `/etc/hosts` and `/etc/resolv.conf` of bridged containers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use zoe_common::proto::HostEntry;

/// The hosts file of one container: localhost, the container's own names
/// on its own address (they win over a stale entry from the leader), then
/// every other instance of its execution.
pub fn render(own_ip: &str, own_names: &[String], entries: &[HostEntry]) -> String {
    let mut by_name: BTreeMap<&str, &str> = BTreeMap::new();
    for e in entries {
        for n in &e.names {
            by_name.insert(n, &e.ip);
        }
    }
    for n in own_names {
        by_name.insert(n, own_ip);
    }
    // Group names by address, in a stable order, own address first.
    let mut by_ip: BTreeMap<(bool, &str), Vec<&str>> = BTreeMap::new();
    for (n, ip) in &by_name {
        by_ip.entry((*ip != own_ip, ip)).or_default().push(n);
    }
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for ((_, ip), names) in by_ip {
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    out
}

/// Rewrites `path` in place: the container has the file bind-mounted, and
/// a bind mount pins the inode, so a rename would never reach it.
pub fn write_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    f.write_all(text.as_bytes())?;
    f.flush()
}

/// The host's resolver configuration without loopback name servers, which
/// a container in its own namespace cannot reach.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    for l in host.lines() {
        let t = l.trim();
        if let Some(ns) = t.strip_prefix("nameserver")
            && ns.trim().parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
        {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_names_win_and_lines_group_by_address() {
        let entries = vec![
            HostEntry { ip: "10.88.1.2".into(), names: vec!["worker1".into(), "worker1.7.zoe".into()] },
            HostEntry { ip: "10.88.0.9".into(), names: vec!["head0".into(), "head0.7.zoe".into()] },
        ];
        let own = vec!["head0".to_string(), "head0.7.zoe".to_string()];
        let t = render("10.88.0.3", &own, &entries);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2], "10.88.0.3\thead0 head0.7.zoe");
        assert_eq!(lines[3], "10.88.1.2\tworker1 worker1.7.zoe");
        assert!(!t.contains("10.88.0.9"));
        assert_eq!(
            resolv_conf("nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch x\n"),
            "nameserver 10.0.0.2\nsearch x\n"
        );
    }
}
