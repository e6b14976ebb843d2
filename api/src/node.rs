//! Nodes, their eligibility and drains, and images.

use zoe_common::service::HostVolume;
use zoe_model::state::Drain;

crate::api_type! {
    /// `POST /nodes/{name}/eligibility`.
    pub struct SetEligibility {
        pub eligible: bool,
    }
}

crate::api_type! {
    /// `POST /nodes/{name}/drain`: start or update (`enable: true`, with
    /// `deadline_s` and `force`) or cancel (`enable: false`, with
    /// `keep_ineligible`).
    pub struct SetDrain {
        pub enable: bool,
        pub deadline_s: Option<u64>,
        pub force: Option<bool>,
        pub keep_ineligible: Option<bool>,
    }
}

crate::api_type! {
    /// `POST /images/preload`: pull on `nodes`, or on every connected node.
    pub struct PreloadImage {
        pub image: String,
        pub nodes: Option<Vec<String>>,
    }
}

crate::api_type! {
    /// What the eligibility and drain calls answer.
    pub struct NodeChanged {
        pub node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub eligible: Option<bool>,
        /// The drain now in force (`null`: none, after a cancel).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub drain: Option<Option<DrainView>>,
    }
}

crate::api_type! {
    /// A drain in progress, as the admin asked for it.
    pub struct DrainView {
        pub requested_by: String,
        /// Epoch milliseconds.
        pub requested_at: u64,
        /// After this, work that would end on its own is stopped too.
        pub deadline: Option<u64>,
        /// Stop everything now.
        pub force: bool,
        /// Instances this drain has moved off the node so far.
        pub moved: Vec<u64>,
    }
}

impl DrainView {
    pub fn of(d: &Drain) -> DrainView {
        DrainView {
            requested_by: d.requested_by.clone(),
            requested_at: d.requested_at,
            deadline: d.deadline,
            force: d.force,
            moved: d.moved.clone(),
        }
    }
}

crate::api_type! {
    /// What the node's agent reports now.
    pub struct NodeLoad {
        pub connected: bool,
        pub cores_in_use: f64,
        pub memory_in_use: u64,
        pub container_count: u32,
    }
}

crate::api_type! {
    pub struct NodeView {
        pub name: String,
        pub addresses: Vec<String>,
        pub status: String,
        pub eligible: bool,
        pub schedulable: bool,
        pub drain: Option<DrainView>,
        pub labels: Vec<String>,
        /// What the node offers ZApps by name, and to whom.
        pub host_volumes: Vec<HostVolume>,
        pub cores: f64,
        pub memory: u64,
        /// Σ `min` of the instances placed here that may hold a container.
        pub reserved_cores: f64,
        pub reserved_memory: u64,
        pub services: usize,
        pub containerd_version: String,
        pub cgroup_mode: String,
        pub image_count: usize,
        pub first_registration: u64,
        pub last_registration: u64,
        /// `null` when no live source is wired (a follower without relay).
        pub live: Option<NodeLoad>,
    }
}

impl crate::schema::Schema for HostVolume {
    fn schema(s: &mut crate::schema::Schemas) -> serde_json::Value {
        s.named("HostVolume", |s| {
            crate::schema::object(vec![
                ("name", String::schema(s), false),
                ("path", String::schema(s), false),
                ("read_only", bool::schema(s), true),
                ("roles", Vec::<String>::schema(s), true),
                ("users", Vec::<String>::schema(s), true),
            ])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written schema of a type of zoe-common lists its fields.
    #[test]
    fn host_volume_schema_names_every_field() {
        let mut s = crate::schema::Schemas::default();
        <HostVolume as crate::schema::Schema>::schema(&mut s);
        let m = s.into_map();
        let props: Vec<&String> = m["HostVolume"]["properties"].as_object().unwrap().keys().collect();
        let v = serde_json::to_value(HostVolume {
            name: "n".into(),
            path: "/p".into(),
            read_only: true,
            roles: vec![],
            users: vec![],
        })
        .unwrap();
        assert_eq!(props, v.as_object().unwrap().keys().collect::<Vec<_>>());
    }
}

crate::api_type! {
    /// `GET /nodes/{name}/images`.
    pub struct NodeImages {
        pub node: String,
        /// Canonical references.
        pub images: Vec<String>,
    }
}

crate::api_type! {
    /// The outcome of an image load on one node.
    pub struct ImageLoaded {
        pub node: String,
        /// Why the node did not import the archive; `null` when it did.
        pub error: Option<String>,
    }
}

crate::api_type! {
    /// `POST /images/load`.
    pub struct ImagesLoaded {
        /// Every node imported the archive.
        pub ok: bool,
        pub nodes: Vec<ImageLoaded>,
    }
}

crate::api_type! {
    /// One instance a drain moved, and where it is now.
    pub struct MovedView {
        pub service: u64,
        /// `<execution id>/<instance name>`.
        pub instance: String,
        /// `null`: not placed yet, or ended.
        pub node: Option<String>,
        pub status: String,
    }
}

crate::api_type! {
    /// What is left of a drain.
    pub struct DrainProgressView {
        /// Instances zoe still has on the node.
        pub remaining: Vec<String>,
        /// Instances moved off the node (stopped there, waiting for or placed on another).
        pub moving: Vec<String>,
        pub moved: Vec<MovedView>,
        /// Executions left to finish on their own until the deadline.
        pub waiting_to_finish: Vec<u64>,
        pub deadline_in_ms: Option<i64>,
        /// zoe containers the agent last reported on the node; `null` while
        /// it is not connected.
        pub containers_reported: Option<u32>,
    }
}

impl DrainProgressView {
    pub fn of(p: &zoe_model::drain::DrainProgress) -> DrainProgressView {
        DrainProgressView {
            remaining: p.remaining.clone(),
            moving: p.moving.clone(),
            moved: p
                .moved
                .iter()
                .map(|m| MovedView {
                    service: m.service,
                    instance: m.instance.clone(),
                    node: m.node.clone(),
                    status: m.status.as_str().to_string(),
                })
                .collect(),
            waiting_to_finish: p.waiting_to_finish.clone(),
            deadline_in_ms: p.deadline_in_ms,
            containers_reported: p.containers_reported,
        }
    }
}

crate::api_type! {
    /// `GET /nodes/{name}/drain`.
    pub struct DrainStatus {
        pub node: String,
        pub draining: bool,
        pub eligible: bool,
        pub status: String,
        pub drain: Option<DrainView>,
        /// `null` when nothing is draining.
        pub progress: Option<DrainProgressView>,
        pub last_drain: Option<DrainView>,
        /// When the last drain completed (epoch ms).
        pub completed_at: Option<u64>,
    }
}
