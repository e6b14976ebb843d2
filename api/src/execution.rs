//! Executions and their services.

use crate::error::Detail;
use serde_json::Value;
use zoe_model::state::{Execution, PublishedPort, Service};

crate::api_type! {
    /// `POST /executions`.
    pub struct StartExecution {
        pub name: String,
        /// A ZApp (format 3, docs/zapp.md).
        pub application: Value,
    }
}

crate::api_type! {
    /// `POST /executions/{id}/terminate`.
    #[derive(Default)]
    pub struct TerminateExecution {
        pub reason: Option<String>,
    }
}

crate::api_type! {
    /// `POST /executions/{id}/resubmit`: the same ZApp, under `name` or the old name.
    #[derive(Default)]
    pub struct ResubmitExecution {
        pub name: Option<String>,
    }
}

crate::api_type! {
    /// A submission taken: the new execution and what the validator noticed.
    pub struct ExecutionCreated {
        pub id: u64,
        pub warnings: Vec<Detail>,
    }
}

crate::api_type! {
    pub struct ExecutionResubmitted {
        pub id: u64,
        pub resubmitted_from: u64,
    }
}

crate::api_type! {
    /// `POST /zapp/validate`.
    pub struct ZAppValid {
        pub valid: bool,
        pub warnings: Vec<Detail>,
    }
}

crate::api_type! {
    /// `POST /zapp/plan`: what a submission now would meet (a dry run:
    /// nothing is submitted).
    pub struct ExecutionPlan {
        /// The next pass would admit it.
        pub fits_now: bool,
        /// No schedulable node could ever hold one of its essential instances.
        pub never_fits: bool,
        /// Where its instances would go (`instance@node`), when it fits now.
        pub placements: Vec<String>,
        /// Its place in the pending queue (1 = next) and the queue's length with it.
        pub queue_position: u64,
        pub queue_length: u64,
        /// Why it would wait.
        pub reason: Option<String>,
        /// Seconds until it would start, from a short simulation of the
        /// queue; none when the running executions' ends are unknown.
        pub start_in_s: Option<f64>,
        /// How the estimate was made, or why there is none.
        pub estimate: String,
    }
}

crate::api_type! {
    /// A termination asked for (202): where the execution stands now.
    pub struct TerminationAccepted {
        pub id: u64,
        pub status: Option<String>,
    }
}

crate::api_type! {
    /// An execution; `service_details` and `kill_at` only when it is read
    /// by id.
    pub struct ExecutionView {
        pub id: u64,
        pub name: String,
        pub owner: String,
        pub status: String,
        pub zapp: String,
        pub size: f64,
        /// Epoch milliseconds.
        pub time_submit: u64,
        pub time_start: Option<u64>,
        pub time_end: Option<u64>,
        pub error_message: Option<String>,
        pub services: Vec<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub service_details: Option<Vec<ServiceView>>,
        /// When the runtime limit of the owner's quota ends it (epoch ms), if running.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub kill_at: Option<u64>,
    }
}

impl ExecutionView {
    /// The list form (no service details).
    pub fn of(e: &Execution) -> ExecutionView {
        ExecutionView {
            id: e.id,
            name: e.name.clone(),
            owner: e.owner.clone(),
            status: e.status.as_str().to_string(),
            zapp: e.description.name.clone(),
            size: e.size,
            time_submit: e.time_submit,
            time_start: e.time_start,
            time_end: e.time_end,
            error_message: e.error_message.clone(),
            services: e.services.clone(),
            service_details: None,
            kill_at: None,
        }
    }
}

crate::api_type! {
    /// `GET /executions`: one page, newest first.
    pub struct ExecutionPage {
        pub executions: Vec<ExecutionView>,
        /// Pass as `cursor` for the next page; absent on the last page.
        pub next_cursor: Option<u64>,
    }
}

crate::api_type! {
    /// One instance of a service group.
    pub struct ServiceView {
        pub id: u64,
        pub execution_id: u64,
        pub name: String,
        pub group: String,
        pub essential: bool,
        pub status: String,
        pub backend_status: String,
        pub node: Option<String>,
        pub container_id: Option<String>,
        pub ip_address: Option<String>,
        pub ports: Vec<PortView>,
        pub dns_name: String,
        pub restart_count: u32,
        pub cores_allocated: Option<f64>,
        pub last_exit_code: Option<i32>,
        pub last_exit_reason: Option<String>,
        pub error_message: Option<String>,
        pub time_start: Option<u64>,
        pub time_end: Option<u64>,
    }
}

impl ServiceView {
    pub fn of(s: &Service) -> ServiceView {
        ServiceView {
            id: s.id,
            execution_id: s.execution_id,
            name: s.name.clone(),
            group: s.group.clone(),
            essential: s.essential,
            status: s.status.as_str().to_string(),
            backend_status: s.backend_status.as_str().to_string(),
            node: s.node.clone(),
            container_id: s.container_id.clone(),
            ip_address: s.ip_address.clone(),
            ports: s.ports.iter().map(PortView::of).collect(),
            dns_name: zoe_common::zapp::template::dns_name(&s.name, s.execution_id),
            restart_count: s.restart_count,
            cores_allocated: s.cores_allocated.map(|c| c.as_cores()),
            last_exit_code: s.last_exit_code,
            last_exit_reason: s.last_exit_reason.clone(),
            error_message: s.error_message.clone(),
            time_start: s.time_start,
            time_end: s.time_end,
        }
    }
}

crate::api_type! {
    /// A container port published on its node.
    pub struct PortView {
        pub port_number: u16,
        /// `tcp` or `udp`.
        pub protocol: String,
        /// Address users reach it at (the node's address).
        pub host_ip: String,
        pub host_port: u16,
    }
}

impl PortView {
    pub fn of(p: &PublishedPort) -> PortView {
        PortView {
            port_number: p.port_number,
            protocol: p.protocol.as_str().to_string(),
            host_ip: p.host_ip.clone(),
            host_port: p.host_port,
        }
    }
}

crate::api_type! {
    /// A URL filled from a port's `url_template`.
    pub struct Endpoint {
        pub service: String,
        pub port: String,
        pub protocol: String,
        pub url: String,
        /// The same port through the coordinators' service proxy (TCP
        /// ports, when `[api.proxy]` is on): login with the UI, or a token.
        pub proxy_url: Option<String>,
    }
}

crate::api_type! {
    /// `GET /executions/{id}/endpoints`.
    pub struct Endpoints {
        pub execution_id: u64,
        pub status: String,
        pub endpoints: Vec<Endpoint>,
    }
}

crate::api_type! {
    /// `GET /discovery/{id}/{group}`: the names in the containers' /etc/hosts.
    pub struct Discovery {
        pub service_type: String,
        pub execution_id: u64,
        pub dns_names: Vec<String>,
        pub hosts: Vec<DiscoveredHost>,
    }
}

crate::api_type! {
    pub struct DiscoveredHost {
        pub name: String,
        pub dns_name: String,
        /// None while the instance is not running.
        pub ip_address: Option<String>,
    }
}

/// A ZApp body or answer (format 3): validated by zoe-common's validator,
/// whose errors carry JSON pointers, rather than described field by field.
impl crate::schema::Doc for zoe_common::zapp::ZApp {
    fn doc(_: &mut crate::schema::Schemas) -> Option<Value> {
        Some(serde_json::json!({ "type": "object", "description": "a ZApp (format 3), see docs/zapp.md" }))
    }
}
