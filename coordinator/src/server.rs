//! A whole coordinator in one value: Raft, the agent listener, the leader
//! loop over it and the REST API. `zoe coordinator` and `zoe dev` both run
//! this, so the two cannot drift apart in how the parts are wired.

use crate::agents::{AgentBackend, AgentLive};
use crate::api::live::LiveSource;
use crate::api::{ApiServer, ServeError};
use crate::config::CoordinatorConfig;
use crate::leader::Leader;
use crate::raft::Coordinator;
use crate::relay::{Relay, RelayServer};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Raft(#[from] crate::raft::node::StartError),
    #[error(transparent)]
    Agents(#[from] crate::agents::StartError),
    #[error("REST API: {0}")]
    Api(#[from] ServeError),
}

/// A running coordinator with all its parts.
pub struct Server {
    coord: Coordinator,
    agents: Arc<AgentBackend>,
    stop_leader: watch::Sender<bool>,
    leader: JoinHandle<()>,
    backups: JoinHandle<()>,
    gc: JoinHandle<()>,
    /// Workflows' `volume_size` triggers (`volumes.rs`).
    volumes: JoinHandle<()>,
    api: Option<ApiServer>,
}

impl Server {
    /// Starts Raft, then the agent listener (every coordinator has one:
    /// followers redirect agents to the leader), the leader loop (idle while
    /// a follower) and the API. A part that fails to start stops the ones
    /// already running.
    pub async fn start(config: CoordinatorConfig) -> Result<Server, ServerError> {
        let agents_cfg = config.agents.clone();
        let leader_cfg = config.leader.clone();
        let backup_cfg = config.backup.clone();
        let gc_cfg = config.gc.clone();
        let coord = Coordinator::start(config).await?;
        let agents = match AgentBackend::start(coord.clone(), agents_cfg).await {
            Ok(a) => a,
            Err(e) => {
                coord.shutdown().await;
                return Err(e.into());
            }
        };
        let (stop_leader, leader_stopped) = watch::channel(false);
        let backups_stopped = leader_stopped.clone();
        let gc_stopped = leader_stopped.clone();
        let volumes_stopped = leader_stopped.clone();
        let leader = tokio::spawn(Leader::new(coord.clone(), agents.clone(), leader_cfg).run(leader_stopped));
        let backups = tokio::spawn(crate::backup::scheduled(coord.clone(), backup_cfg, backups_stopped));
        let gc = tokio::spawn(crate::gc::scheduled(coord.clone(), gc_cfg, gc_stopped));
        let volumes = tokio::spawn(crate::volumes::scheduled(coord.clone(), agents.clone(), volumes_stopped));
        // Every coordinator serves the live routes: a follower relays them
        // to the leader, whose relay server answers from its agents.
        coord.set_relay(Arc::new(RelayServer(AgentLive(agents.clone()))));
        let live: Arc<dyn LiveSource> = Arc::new(Relay::new(coord.clone(), AgentLive(agents.clone())));
        let api = match ApiServer::start(coord.clone(), Some(live)).await {
            Ok(a) => Some(a),
            Err(e @ ServeError::Listen { .. }) if coord.config().api.listen.is_none() => {
                tracing::warn!("{e}; running without the REST API (set [api] listen to choose another address)");
                None
            }
            Err(e) => {
                let _ = stop_leader.send(true);
                let _ = leader.await;
                let _ = backups.await;
                let _ = gc.await;
                let _ = volumes.await;
                agents.shutdown().await;
                coord.shutdown().await;
                return Err(e.into());
            }
        };
        Ok(Server { coord, agents, stop_leader, leader, backups, gc, volumes, api })
    }

    pub fn coordinator(&self) -> &Coordinator {
        &self.coord
    }

    pub fn agents(&self) -> &Arc<AgentBackend> {
        &self.agents
    }

    /// The API's base URL (`http://127.0.0.1:5001`), when it serves.
    pub fn api_url(&self) -> Option<String> {
        self.api.as_ref().map(|a| a.url())
    }

    /// The service proxy's base URL as browsers reach it, when it serves.
    pub fn proxy_url(&self) -> Option<String> {
        self.api.as_ref().and_then(|a| a.proxy_url())
    }

    /// Hands leadership over if this member leads (meanwhile the API goes
    /// on serving; once writes stop here they answer a retryable 503
    /// `shutting_down`, which clients retry on another member), then stops
    /// the parts in the reverse order of their start.
    pub async fn shutdown(self) {
        self.coord.hand_off().await;
        let _ = self.stop_leader.send(true);
        let _ = self.leader.await;
        let _ = self.backups.await;
        let _ = self.gc.await;
        let _ = self.volumes.await;
        if let Some(api) = self.api {
            api.shutdown().await;
        }
        self.agents.shutdown().await;
        self.coord.shutdown().await;
    }
}
