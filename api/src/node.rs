//! Nodes, their eligibility and drains, and images.

use zoe_common::service::HostVolume;
use zoe_model::drain::{DrainProgress, Moved};
use zoe_model::state::{Drain, ServiceStatus};

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
        pub drain: Option<Option<Drain>>,
    }
}

crate::model_schema!(Drain { requested_by: String, requested_at: u64, deadline: Option<u64>, force: bool, moved: Vec<u64> });

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
        pub drain: Option<Drain>,
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
                ("report_size", bool::schema(s), true),
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
            report_size: false,
        })
        .unwrap();
        assert_eq!(props, v.as_object().unwrap().keys().collect::<Vec<_>>());
    }

    /// The model's drain types, served as they are: each schema names
    /// exactly the keys the type serializes to, and a status is one of the
    /// statuses' serde names.
    #[test]
    fn drain_schemas_name_what_the_model_serializes() {
        let moved = Moved { service: 1, instance: "1/w0".into(), node: None, status: ServiceStatus::Inactive };
        let progress = DrainProgress { moved: vec![moved.clone()], ..DrainProgress::default() };
        let drain = Drain { requested_by: "a".into(), requested_at: 1, deadline: None, force: false, moved: vec![] };
        let mut s = crate::schema::Schemas::default();
        <DrainProgress as crate::schema::Schema>::schema(&mut s);
        <Drain as crate::schema::Schema>::schema(&mut s);
        let m = s.into_map();
        let values = [
            ("DrainProgress", serde_json::to_value(&progress).unwrap()),
            ("Moved", serde_json::to_value(&moved).unwrap()),
            ("Drain", serde_json::to_value(&drain).unwrap()),
        ];
        for (name, v) in &values {
            let mut props: Vec<&String> = m[*name]["properties"].as_object().unwrap().keys().collect();
            let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            props.sort();
            keys.sort();
            assert_eq!(props, keys, "{name}");
        }
        let statuses = m["Moved"]["properties"]["status"]["enum"].as_array().unwrap();
        for st in ServiceStatus::ALL {
            assert!(statuses.contains(&serde_json::to_value(st).unwrap()), "{st:?}");
        }
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

crate::model_schema!(Moved { service: u64, instance: String, node: Option<String>, status: ServiceStatus });

crate::model_schema!(DrainProgress {
    remaining: Vec<String>,
    moving: Vec<String>,
    moved: Vec<Moved>,
    waiting_to_finish: Vec<u64>,
    deadline_in_ms: Option<i64>,
    containers_reported: Option<u32>,
});

impl crate::schema::Schema for ServiceStatus {
    fn schema(_: &mut crate::schema::Schemas) -> serde_json::Value {
        serde_json::json!({ "type": "string", "enum": ServiceStatus::ALL.map(ServiceStatus::as_str) })
    }
}

crate::api_type! {
    /// `GET /nodes/{name}/drain`.
    pub struct DrainStatus {
        pub node: String,
        pub draining: bool,
        pub eligible: bool,
        pub status: String,
        pub drain: Option<Drain>,
        /// `null` when nothing is draining.
        pub progress: Option<DrainProgress>,
        pub last_drain: Option<Drain>,
        /// When the last drain completed (epoch ms).
        pub completed_at: Option<u64>,
    }
}
