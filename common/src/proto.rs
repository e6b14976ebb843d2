//! The agent protocol: what agents and coordinators say to each other over
//! mutual-TLS QUIC (ALPN [`ALPN`]), as `zoe_net::frame` frames (u32 length +
//! bincode 2 in a versioned envelope).
//!
//! Streams on one agent connection:
//!
//! * the **session** stream, opened by the agent: first [`SessionOpen`]
//!   (registration with the full container inventory), answered by one
//!   [`SessionReply`]; after `Accepted` the agent sends [`AgentMessage`]s
//!   (heartbeats with live stats, events) and the coordinator sends
//!   [`LeaderMessage`]s (heartbeat acknowledgements, "I am no longer leader");
//! * one **command** stream per command, opened by the leader: one
//!   [`CommandRequest`], answered by one or more [`CommandReply`] frames, the
//!   last one final ([`CommandReply::is_final`]);
//! * **client** streams, opened by operators' tools with a `client`
//!   certificate: one [`ClientRequest`], one [`ClientReply`].
//!
//! Identity is never a field here: the node name is the name in the agent's
//! verified certificate. Resource amounts are plain integers (millicores,
//! bytes): `Millicores`' serde form is Zoe's JSON number, which a
//! non-self-describing format such as bincode cannot read back.

use crate::service::{ImageSummary, ServiceSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// ALPN of the agent protocol; bumped with incompatible changes.
pub const ALPN: &[u8] = b"zoe-agent/4";

/// Largest frame on an agent connection (a registration of a node with
/// thousands of containers and images stays far below it).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// Largest log chunk in one [`CommandReply::Log`] frame.
pub const LOG_CHUNK: usize = 64 * 1024;
/// Size of the pieces an image archive travels in to an agent: well
/// inside [`MAX_FRAME`], big enough that a round trip per piece is cheap.
pub const IMAGE_CHUNK: usize = 1024 * 1024;

/// Whether an upload name is safe as a file name on the agent.
pub fn valid_upload_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What an agent says about its node when it (re)connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Addresses users and other services reach the node at.
    pub addresses: Vec<String>,
    /// Capacity after the agent's reserve.
    pub cores_millis: u32,
    pub memory_bytes: u64,
    pub labels: BTreeSet<String>,
    /// The host volumes the node offers.
    pub host_volumes: Vec<crate::service::HostVolume>,
    pub containerd_version: String,
    /// `v1`, `v2` or `hybrid`.
    pub cgroup_mode: String,
    pub images: Vec<ImageSummary>,
    /// Every container in the agent's namespace, zoe's and others.
    pub containers: Vec<ContainerInfo>,
    pub agent_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Starting,
    Running,
    Exited { exit_code: Option<i32>, oom_killed: bool },
}

impl ContainerState {
    pub fn is_running(self) -> bool {
        !matches!(self, ContainerState::Exited { .. })
    }
}

/// One container as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub container_id: String,
    /// From the container's zoe labels; `None` for a container zoe did not
    /// create (an orphan made behind its back).
    pub service_id: Option<u64>,
    pub state: ContainerState,
    /// CPU used since the previous sample, in millicores.
    pub cores_in_use_millis: u32,
    pub memory_in_use: u64,
    /// Current limits (from the cgroup); `None` = unlimited or unknown.
    pub core_limit_millis: Option<u32>,
    pub memory_limit: Option<u64>,
}

/// Live stats of a node, sent with every heartbeat (Zoe's NodeStats, the
/// measured part).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveStats {
    pub cores_total_millis: u32,
    pub memory_total: u64,
    /// Whole-node use, measured by the agent.
    pub cores_in_use_millis: u32,
    pub memory_in_use: u64,
    pub container_count: u32,
    pub containers: Vec<ContainerInfo>,
    /// The full image list when it changed since the previous heartbeat.
    pub images: Option<Vec<ImageSummary>>,
    /// Sizes in the host volumes that report them (`report_size`), as of
    /// the last walk.
    pub volume_sizes: Vec<VolumeSize>,
}

/// The bytes under `path` (`""`: the whole volume; else an entry at its
/// top) of host volume `volume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSize {
    pub volume: String,
    pub path: String,
    pub bytes: u64,
}

/// The first frame on the session stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionOpen {
    pub registration: Registration,
    pub stats: LiveStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SessionReply {
    /// Registered with the leader.
    Accepted {
        node: String,
        heartbeat_ms: u64,
    },
    /// This coordinator is not the leader; `leader` is the leader's agent
    /// address when known (none during an election: try the next one).
    NotLeader {
        leader: Option<String>,
    },
    Refused {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    Heartbeat { seq: u64, stats: LiveStats },
    Event(AgentEvent),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentEvent {
    /// A container ended without being asked to (or before the leader saw
    /// its stop through).
    Exited {
        service_id: u64,
        container_id: String,
        exit_code: Option<i32>,
        oom_killed: bool,
        reason: String,
        time_ms: u64,
    },
    /// Image pull progress (also sent as command replies to the asker).
    ImageProgress(ImageProgress),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageProgress {
    pub image: String,
    pub phase: String,
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeaderMessage {
    HeartbeatAck {
        seq: u64,
    },
    /// Leadership moved: reconnect (to `leader` when known).
    NotLeader {
        leader: Option<String>,
    },
}

/// A command from the leader; `id` is unique per leader process and is
/// echoed in logs. Idempotence is by container id, not by command id: a new
/// leader repeats what the old one may have asked.
///
/// `term` is the Raft term the leader decided the command in (0: not a
/// decision, e.g. a log read). An agent that has obeyed a command of a
/// newer term refuses the commands that change containers (spawn,
/// terminate, update) of an older one with [`CommandReply::StaleTerm`]:
/// a deposed leader's late request must not repeat or undo the new
/// leader's work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub id: u64,
    pub term: u64,
    pub command: AgentCommand,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentCommand {
    Spawn(WireSpec),
    Terminate {
        container_id: String,
        grace_ms: u64,
    },
    Update {
        container_id: String,
        cores_millis: Option<u32>,
        memory: Option<u64>,
    },
    ListImages,
    Preload {
        reference: String,
    },
    Logs {
        container_id: String,
        from: u64,
        follow: bool,
    },
    /// One piece of an image archive (`zoe image load`), in order: the
    /// agent appends `data` at `offset` to the upload's file (offset 0
    /// starts it afresh), and on the `last` piece imports the archive,
    /// answering with progress and then `Done` or `Failed`. Every other
    /// piece is answered with `Done` once written.
    ImageChunk {
        /// Names the upload: [a-z0-9-], at most 64 characters.
        upload: String,
        offset: u64,
        data: Vec<u8>,
        last: bool,
    },
    /// Round-trip probe.
    Ping,
    /// The node's place in the cluster network: sent after registration
    /// and whenever a node (subnet, address) comes or goes. Answered `Done`
    /// once the routes are in place.
    Network(NodeNetwork),
    /// Every named instance of an execution with its address: the agent
    /// rewrites `/etc/hosts` of its containers of that execution. Sent
    /// before a spawn and whenever the list changes. Answered `Done`.
    Hosts {
        execution_id: u64,
        entries: Vec<HostEntry>,
    },
}

/// A node's cluster network as the leader holds it (replicated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNetwork {
    /// The cluster's container CIDR, e.g. `10.88.0.0/16`: traffic leaving
    /// it is masqueraded, traffic inside it is routed as is.
    pub cidr: String,
    /// This node's container subnet, e.g. `10.88.3.0/24`.
    pub subnet: String,
    /// Every other node's subnet and the address to route it through
    /// (host-gateway routing: nodes share an L2 segment).
    pub peers: Vec<PeerSubnet>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerSubnet {
    pub subnet: String,
    pub address: String,
}

/// One `/etc/hosts` line: an address and its names (`head0`,
/// `head0.<execution-id>.zoe`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostEntry {
    pub ip: String,
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandReply {
    Started {
        container_id: String,
        ip_address: Option<String>,
    },
    Failed {
        retryable: bool,
        message: String,
    },
    /// The command is done (terminate, update, preload, end of a log).
    Done,
    /// Refused, nothing done: the agent already obeys a leader of term `newest`.
    StaleTerm {
        newest: u64,
    },
    Images(Vec<ImageSummary>),
    Progress(ImageProgress),
    Log {
        data: Vec<u8>,
        next: u64,
    },
    Pong,
}

impl CommandReply {
    /// The last frame of a command's answer.
    pub fn is_final(&self) -> bool {
        !matches!(self, CommandReply::Progress(_) | CommandReply::Log { .. })
    }
}

/// Operators' requests (client certificates only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// The leader's live view; answered by followers with `NotLeader`.
    ClusterStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientReply {
    /// ClusterStats as JSON (its shape is the coordinator's; see
    /// `zoe_coordinator::agents::ClusterStats`).
    ClusterStats {
        json: String,
    },
    NotLeader {
        leader: Option<String>,
    },
    Refused {
        reason: String,
    },
}

/// A [`ServiceSpec`] on the wire. The spec's `Millicores` serialise as
/// Zoe's JSON numbers (integer or float), which bincode cannot decode, so
/// the spec travels as JSON inside the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct WireSpec(pub ServiceSpec);

impl Serialize for WireSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let json = serde_json::to_vec(&self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&json)
    }
}

impl<'de> Deserialize<'de> for WireSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WireSpec, D::Error> {
        let bytes: serde_bytes_compat::ByteBuf = Deserialize::deserialize(d)?;
        serde_json::from_slice(&bytes.0).map(WireSpec).map_err(serde::de::Error::custom)
    }
}

mod serde_bytes_compat {
    //! Reads what `serialize_bytes` wrote, without the serde_bytes crate.
    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

    pub struct ByteBuf(pub Vec<u8>);

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteBuf, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = seq.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(ByteBuf(out))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Millicores;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            env: vec![("A".into(), "b".into())],
            cores: Millicores(1500),
            cores_min: Millicores(1000),
            memory_limit: Some(64 << 20),
            ..ServiceSpec::plain(7, 3, "zoe-3-w1-0", "w1", "docker.io/library/busybox:latest", &["sleep", "1"])
        }
    }

    #[test]
    fn spec_survives_bincode() {
        let cfg = bincode::config::standard();
        let cmd = CommandRequest { id: 1, term: 2, command: AgentCommand::Spawn(WireSpec(spec())) };
        let bytes = bincode::serde::encode_to_vec(&cmd, cfg).unwrap();
        let (back, _): (CommandRequest, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn network_commands_survive_bincode() {
        let cfg = bincode::config::standard();
        for command in [
            AgentCommand::Network(NodeNetwork {
                cidr: "10.88.0.0/16".into(),
                subnet: "10.88.1.0/24".into(),
                peers: vec![PeerSubnet { subnet: "10.88.0.0/24".into(), address: "192.168.1.5".into() }],
            }),
            AgentCommand::Hosts {
                execution_id: 9,
                entries: vec![HostEntry { ip: "10.88.1.2".into(), names: vec!["head0".into(), "head0.9.zoe".into()] }],
            },
        ] {
            let req = CommandRequest { id: 3, term: 1, command };
            let bytes = bincode::serde::encode_to_vec(&req, cfg).unwrap();
            let (back, _): (CommandRequest, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
            assert_eq!(back, req);
        }
        // A spec from before published ports had host ports still reads.
        let mut json = serde_json::to_value(spec()).unwrap();
        json["ports"] = serde_json::json!([{ "port_number": 80, "protocol": "tcp" }]);
        let s: ServiceSpec = serde_json::from_value(json).unwrap();
        assert_eq!(s.ports[0].host_port, 0);
    }

    #[test]
    fn heartbeat_is_small() {
        let cfg = bincode::config::standard();
        let hb = AgentMessage::Heartbeat { seq: 12, stats: LiveStats::default() };
        let bytes = bincode::serde::encode_to_vec(&hb, cfg).unwrap();
        assert!(bytes.len() < 32, "{} bytes", bytes.len());
    }
}
