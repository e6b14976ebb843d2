//! From a placed service instance to the [`ServiceSpec`] an agent runs:
//! environment templates rendered, Zoe's injected variables added, the
//! command split, volumes and the user's workspace mounted.

use crate::state::{Execution, Service, State};
use std::collections::BTreeMap;
use zoe_common::image::ImageRef;
use zoe_common::service::{Identity, Mount, NETWORK_BRIDGE, NETWORK_HOST, PortSpec, ServiceSpec, labels};
use zoe_common::zapp::WORKSPACE_MOUNT;
use zoe_common::zapp::command::split_command;
use zoe_common::zapp::template::{EnvContext, Template};

/// The cluster settings a spec depends on (the coordinator's `[leader]`).
#[derive(Debug, Clone, Copy)]
pub struct SpecSettings<'a> {
    /// Zoe's deployment name: in `DEPLOY_NAME` and container labels.
    pub deployment: &'a str,
    /// Host directory holding one workspace per user; none when unset.
    pub workspace_base: Option<&'a str>,
    pub fs_gid: u32,
    /// `ZOE_UID` (and the container root's host uid) for owners with no
    /// user record.
    pub default_fs_uid: u32,
}

/// Builds the spec of a service that has been placed (it has a container id).
pub fn service_spec(st: &State, e: &Execution, s: &Service, cfg: &SpecSettings) -> ServiceSpec {
    let g = &e.description.services[s.group_index];
    let user = st.user_by_name(&e.owner);
    let role = user.and_then(|u| st.roles.get(&u.role_id));
    let fs_uid = user.map(|u| u.fs_uid).unwrap_or(cfg.default_fs_uid);
    let ctx = EnvContext {
        user_name: &e.owner,
        execution_id: e.id,
        execution_name: &e.name,
        deployment_name: cfg.deployment,
        instance: &s.name,
        proxy_port: g.proxy_port(),
    };
    // Zoe's injected variables first, so a ZApp can read them; ZApp values
    // with the same name win, as a later `-e` does in Docker.
    let mut env: Vec<(String, String)> = vec![
        ("EXECUTION_ID".into(), e.id.to_string()),
        ("DEPLOY_NAME".into(), cfg.deployment.to_string()),
        ("ZOE_UID".into(), fs_uid.to_string()),
        ("ZOE_GID".into(), cfg.fs_gid.to_string()),
        ("ZOE_USER".into(), e.owner.clone()),
        ("SERVICE_NAME".into(), s.name.clone()),
    ];
    let mut mounts = Vec::new();
    if let Some(base) = cfg.workspace_base {
        env.push(("ZOE_WORKSPACE".into(), WORKSPACE_MOUNT.into()));
        mounts.push(Mount {
            source: format!("{}/{}", base.trim_end_matches('/'), e.owner),
            target: WORKSPACE_MOUNT.into(),
            read_only: false,
            host_volume: None,
        });
    }
    for v in &g.environment {
        // Validated at submit: the template parses.
        let value = Template::parse(&v.1).map(|t| t.render(|p| ctx.value(p))).unwrap_or_else(|_| v.1.clone());
        env.retain(|(k, _)| k != &v.0);
        env.push((v.0.clone(), value));
    }
    for v in &g.volumes {
        mounts.push(Mount {
            source: v.path.clone().unwrap_or_default(),
            target: format!("/mnt/{}", v.name),
            read_only: v.read_only,
            host_volume: v.host_volume.clone(),
        });
    }
    let mut label_map = BTreeMap::new();
    label_map.insert(labels::EXECUTION_ID.to_string(), e.id.to_string());
    label_map.insert(labels::SERVICE_ID.to_string(), s.id.to_string());
    label_map.insert(labels::INSTANCE.to_string(), s.name.clone());
    label_map.insert(labels::OWNER.to_string(), e.owner.clone());
    label_map.insert(labels::DEPLOYMENT.to_string(), cfg.deployment.to_string());
    ServiceSpec {
        service_id: s.id,
        execution_id: e.id,
        container_id: s.container_id.clone().unwrap_or_else(|| s.container_name()),
        instance: s.name.clone(),
        image: ImageRef::parse(&g.image).map(|r| r.canonical()).unwrap_or_else(|_| g.image.clone()),
        // Validated at submit: the command splits.
        command: g.command.as_deref().map(|c| split_command(c).unwrap_or_else(|_| vec![c.to_string()])),
        env,
        working_dir: g.work_dir.clone(),
        hostname: s.name.clone(),
        mounts,
        labels: label_map,
        cores: s.cores_allocated.unwrap_or_else(|| g.cores_min()),
        cores_min: g.cores_min(),
        memory_limit: g.memory_limit(),
        shm: g.resources.shm,
        ports: g
            .ports
            .iter()
            .map(|p| PortSpec {
                port_number: p.port_number,
                protocol: p.protocol,
                // Allocated when the plan was applied.
                host_port: s
                    .ports
                    .iter()
                    .find(|x| x.port_number == p.port_number && x.protocol == p.protocol)
                    .map_or(0, |x| x.host_port),
            })
            .collect(),
        // Resolved here, so that agents never apply a default of their own.
        network: Some(if st.network.uses_host(g.network.as_deref()) { NETWORK_HOST } else { NETWORK_BRIDGE }.into()),
        identity: Identity {
            user: e.owner.clone(),
            role: role.map(|r| r.name.clone()).unwrap_or_default(),
            fs_uid,
            fs_gid: cfg.fs_gid,
            host_root: role.is_some_and(|r| r.capabilities.can_run_as_host_root),
        },
    }
}
