//! Configuration files (the agent's and the coordinator's TOML): reading,
//! paths relative to the file, and the one error a check gives.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A setting whose value cannot work, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct Invalid {
    /// The key as written in the file (`raft.heartbeat_ms`), or the
    /// section and entry (`host_volume "data"`).
    pub key: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid { key: key.into(), reason: reason.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        #[source]
        source: Invalid,
    },
}

/// A configuration file's contents.
pub trait Settings: DeserializeOwned {
    /// The paths in it, taken relative to the file's directory when
    /// relative, so a config and its certificates can move together.
    fn paths(&mut self) -> Vec<&mut PathBuf>;

    /// Whether the values can work together.
    fn validate(&self) -> Result<(), Invalid>;
}

/// Reads, parses, rebases and checks the configuration at `path`.
pub fn load<T: Settings>(path: &Path) -> Result<T, ConfigError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
    let mut cfg: T = toml::from_str(&text).map_err(|source| ConfigError::Parse { path: p.clone(), source })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for f in cfg.paths() {
        if f.is_relative() {
            *f = base.join(&*f);
        }
    }
    cfg.validate().map_err(|source| ConfigError::Invalid { path: p, source })?;
    Ok(cfg)
}
