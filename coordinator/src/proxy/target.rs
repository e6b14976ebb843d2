//! Which service a proxy path names, and where to reach it: pure functions
//! of the replicated state, so every coordinator answers the same.

use crate::state::{Execution, ExecutionId, Service, ServiceStatus, State};
use std::fmt;

/// `/{execution}/{service}/{port}/...`: the part of a path the proxy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub execution: ExecutionId,
    /// The instance's name, e.g. `jupyter0`.
    pub service: String,
    pub port: u16,
}

impl Route {
    /// The route of a request path; `None` when it does not start with
    /// three segments of that shape.
    pub fn parse(path: &str) -> Option<Route> {
        let mut it = path.strip_prefix('/')?.splitn(4, '/');
        let execution = it.next()?.parse().ok()?;
        let service = it.next()?;
        let port = it.next()?.parse().ok()?;
        let name_ok =
            !service.is_empty() && service.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        name_ok.then(|| Route { execution, service: service.to_string(), port })
    }

    /// The path prefix the service sees its pages under (no trailing slash).
    pub fn prefix(&self) -> String {
        proxy_path(self.execution, &self.service, self.port)
    }
}

pub use zoe_common::zapp::template::proxy_path;

/// Why a route has nowhere to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreachable {
    /// No such execution (or the caller may not see it: the same answer).
    NoExecution,
    NoService,
    NoPort,
    /// The service is not running now.
    NotRunning {
        execution: String,
        service_status: String,
    },
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::NoExecution => f.write_str("no such execution"),
            Unreachable::NoService => f.write_str("the execution has no service of that name"),
            Unreachable::NoPort => f.write_str("the service exposes no such TCP port"),
            Unreachable::NotRunning { execution, service_status } => {
                write!(f, "the service is {service_status} (execution {execution}), not running")
            }
        }
    }
}

/// The execution and service a route names, if they exist.
pub fn find<'a>(st: &'a State, r: &Route) -> Result<(&'a Execution, &'a Service), Unreachable> {
    let e = st.executions.get(&r.execution).ok_or(Unreachable::NoExecution)?;
    let s = st.services_of(e.id).find(|s| s.name == r.service).ok_or(Unreachable::NoService)?;
    Ok((e, s))
}

/// Where the proxy connects for `r`: the port as published on its node
/// (reachable from every coordinator that reaches the node), else the
/// container's own address (bridge networks routed to the coordinator).
pub fn upstream(e: &Execution, s: &Service, r: &Route) -> Result<String, Unreachable> {
    let group = e.description.services.get(s.group_index).ok_or(Unreachable::NoService)?;
    let declared = group.proxied_ports().any(|p| p == r.port);
    if !declared {
        return Err(Unreachable::NoPort);
    }
    if s.status != ServiceStatus::Active {
        return Err(Unreachable::NotRunning {
            execution: e.status.as_str().to_string(),
            service_status: s.status.as_str().to_string(),
        });
    }
    let published = s.ports.iter().find(|p| p.port_number == r.port && p.host_port != 0 && !p.host_ip.is_empty());
    match (published, &s.ip_address) {
        (Some(p), _) => Ok(host_port(&p.host_ip, p.host_port)),
        (None, Some(ip)) => Ok(host_port(ip, r.port)),
        (None, None) => Err(Unreachable::NotRunning {
            execution: e.status.as_str().to_string(),
            service_status: "running without a known address".into(),
        }),
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_three_segments_and_keep_the_rest_for_the_service() {
        let r = Route::parse("/12/jupyter0/8888/tree/x?y").unwrap();
        assert_eq!(r, Route { execution: 12, service: "jupyter0".into(), port: 8888 });
        assert_eq!(r.prefix(), "/12/jupyter0/8888");
        assert_eq!(Route::parse("/12/jupyter0/8888"), Some(r.clone()));
        for bad in
            ["/", "/12", "/12/jupyter0", "/x/jupyter0/80/", "/12/jup%2F/80/", "/12//80/", "/12/a/99999/", "12/a/80"]
        {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
    }
}
