//! Bridged containers on one node, with the real CNI plugins and real
//! containers: the "node" is a network namespace the test creates (the
//! test's threads run inside it, so the agent's bridge, routes and
//! iptables rules are made there and vanish with it).

mod support;

use std::collections::HashSet;
use std::time::Duration;
use zoe_agent::network::{Identity, PortMapping};
use zoe_agent::{ContainerSpec, NetworkMode, Runtime};
use zoe_common::proto::{HostEntry, NodeNetwork, PeerSubnet};
use zoe_testkit::netns::Lan;

fn bridged(id: &str, argv: &[&str], ports: Vec<PortMapping>) -> ContainerSpec {
    ContainerSpec { network: NetworkMode::Bridge { ports }, ..support::spec(id, argv) }
}

fn node(lan: &Lan, peers: bool) -> NodeNetwork {
    NodeNetwork {
        cidr: "10.88.0.0/16".into(),
        subnet: "10.88.0.0/24".into(),
        peers: if peers {
            vec![
                PeerSubnet { subnet: "10.88.1.0/24".into(), address: lan.host_addr(1) },
                // Not on the node's segment: the kernel refuses the route,
                // the other peers are still routed.
                PeerSubnet { subnet: "10.88.2.0/24".into(), address: "10.232.0.9".into() },
            ]
        } else {
            vec![]
        },
    }
}

async fn http_get(addr: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
    Ok(out)
}

async fn http_get_eventually(addr: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + support::TIMEOUT;
    loop {
        match http_get(addr).await {
            Ok(body) if body.contains(needle) => return body,
            other => assert!(std::time::Instant::now() < deadline, "GET {addr}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whatever networking of the node's containers is left: pinned
/// namespaces, host-local leases, veths on the bridge, portmap chains.
fn leftovers(lan: &Lan, ns: &str, data: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let pinned = std::path::Path::new("/run/zoe/netns").join(ns);
    for e in std::fs::read_dir(&pinned).into_iter().flatten().flatten() {
        out.push(format!("namespace {}", e.path().display()));
    }
    let leases = data.join("net").join(ns).join("ipam").join("zoe");
    for e in std::fs::read_dir(&leases).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.parse::<std::net::IpAddr>().is_ok() {
            out.push(format!("lease {n}"));
        }
    }
    let veths = lan.hosts[0].ip_out(&["-o", "link", "show", "master", "zoe0"]);
    out.extend(veths.lines().map(|l| format!("veth {l}")));
    let nat = std::process::Command::new("iptables").args(["-t", "nat", "-S"]).output().unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout).into_owned();
    out.extend(nat.lines().filter(|l| l.starts_with("-N CNI-DN")).map(|l| format!("iptables {l}")));
    out
}

#[test]
fn bridged_containers_get_an_address_names_and_ports_and_leak_nothing() {
    let lan = Lan::new("zna", 2);
    // The test's threads (and the runtime's, made from them) are the node's.
    let _inside = lan.hosts[0].enter_current_thread();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(scenario(&lan));
}

/// Unpins the test's namespaces even when it fails half-way.
struct Pinned(std::path::PathBuf);

impl Drop for Pinned {
    fn drop(&mut self) {
        zoe_testkit::netns::remove_pinned(&self.0);
    }
}

async fn scenario(lan: &Lan) {
    let env = support::env("net").await;
    let _pinned = Pinned(std::path::Path::new("/run/zoe/netns").join(&env.ns));
    let data = env.dir.path().join("data");
    let net = env.rt.network();

    // Routes to the peers' subnets, via their addresses; removed with them.
    net.configure(node(lan, true)).await.expect("configure");
    let routes = lan.hosts[0].ip_out(&["route"]);
    assert!(routes.contains(&format!("10.88.1.0/24 via {} dev lan0 proto 211", lan.host_addr(1))), "{routes}");
    assert!(!routes.contains("10.88.2.0/24"), "{routes}");
    net.configure(node(lan, false)).await.expect("configure without peers");
    assert!(!lan.hosts[0].ip_out(&["route"]).contains("10.88.1.0/24"));
    net.configure(node(lan, true)).await.expect("configure again");
    let nat = std::process::Command::new("iptables").args(["-t", "nat", "-S", "POSTROUTING"]).output().unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout).into_owned();
    assert_eq!(nat.matches("-s 10.88.0.0/24 ! -d 10.88.0.0/16").count(), 1, "one masquerade rule: {nat}");

    // A server with a published port, and the execution's other instance.
    net.set_hosts(
        "42",
        vec![HostEntry { ip: "10.88.1.5".into(), names: vec!["worker1".into(), "worker1.42.zoe".into()] }],
    );
    let head = bridged(
        "head0",
        &["sh", "-c", "mkdir -p /www && echo hello-from-head > /www/index.html && exec httpd -f -p 8080 -h /www"],
        vec![PortMapping { host_port: 20080, container_port: 8080, protocol: "tcp".into() }],
    );
    env.rt.spawn(&head).await.expect("spawn head0");
    let ip = net.ip_of("head0").expect("an address");
    assert!(ip.starts_with("10.88.0."), "{ip}");
    http_get_eventually(&format!("{ip}:8080"), "hello-from-head").await;
    // The published port, on the node's address.
    http_get_eventually(&format!("{}:20080", lan.host_addr(0)), "hello-from-head").await;

    // The leader's list now has head0 (as it would once head0 reported
    // its address); another container finds it by name.
    net.set_hosts(
        "42",
        vec![
            HostEntry { ip: ip.clone(), names: vec!["head0".into(), "head0.42.zoe".into()] },
            HostEntry { ip: "10.88.1.5".into(), names: vec!["worker1".into(), "worker1.42.zoe".into()] },
        ],
    );
    let client = bridged(
        "client",
        &[
            "sh",
            "-c",
            "cat /etc/hosts; wget -q -O- http://head0.42.zoe:8080/index.html && wget -q -O- http://head0:8080/",
        ],
        vec![],
    );
    let client = ContainerSpec {
        owner: zoe_agent::Ownership { instance_name: "client0".into(), ..client.owner.clone() },
        ..client
    };
    let exit = env.run(&client).await;
    let log = env.log("client").await;
    assert!(exit.success(), "{exit:?}: {log}");
    assert!(log.contains("hello-from-head"), "{log}");
    assert!(log.contains("10.88.1.5\tworker1 worker1.42.zoe"), "{log}");
    assert!(log.contains("client0 client0.42.zoe"), "{log}");

    // Elastic instances come and go: the running container's file changes.
    let hosts_file = net.paths("head0").hosts;
    net.set_hosts("42", vec![HostEntry { ip: "10.88.1.9".into(), names: vec!["worker2".into()] }]);
    let text = std::fs::read_to_string(&hosts_file).unwrap();
    assert!(text.contains("10.88.1.9\tworker2") && !text.contains("worker1"), "{text}");
    assert!(text.contains(&format!("{ip}\thead0 head0.42.zoe")), "{text}");
    net.check("head0").await.expect("CNI CHECK");

    env.rt.stop("head0", Duration::ZERO).await.expect("stop head0");
    env.rt.stop("client", Duration::ZERO).await.expect("remove client");
    assert_eq!(leftovers(lan, &env.ns, &data), Vec::<String>::new());

    // 50 start/stop cycles with a published port: nothing accumulates.
    for i in 0..50 {
        let id = format!("cycle-{i}");
        let s = bridged(
            &id,
            &["sleep", "60"],
            vec![PortMapping { host_port: 21000, container_port: 80, protocol: "tcp".into() }],
        );
        if let Err(e) = env.rt.spawn(&s).await {
            assert!(e.is_retryable(), "cycle {i}: {e}");
            env.rt.stop(&id, Duration::ZERO).await.ok();
            continue;
        }
        assert!(net.ip_of(&id).is_some());
        env.rt.stop(&id, Duration::ZERO).await.expect("stop");
    }
    assert_eq!(leftovers(lan, &env.ns, &data), Vec::<String>::new());
    assert!(net.attached().is_empty());

    // What a killed agent leaves is reclaimed by the next one.
    let who = Identity { execution_id: "43".into(), names: vec!["leak0".into()] };
    net.attach("leak-1", who, &[PortMapping { host_port: 21001, container_port: 80, protocol: "tcp".into() }])
        .await
        .expect("attach without a container");
    assert_eq!(leftovers(lan, &env.ns, &data).len(), 4, "namespace, lease, veth, portmap chain");
    env.rt.shutdown().await;
    let again = Runtime::connect(support::config(&env.ns, env.dir.path())).await.expect("reconnect");
    assert_eq!(leftovers(lan, &env.ns, &data), Vec::<String>::new());
    assert!(again.network().attached().is_empty());
    let alive: HashSet<String> = HashSet::new();
    again.network().reclaim(&alive).await;
    drop(again);
    env.cleanup().await;
}
