//! Running CNI plugins as the CNI specification (1.0) says: the plugin
//! binary from `CNI_PATH`, the operation and the container in `CNI_*`
//! environment variables, the network configuration as JSON on stdin, a
//! result (ADD) or an error object as JSON on stdout.

use serde_json::{Value, json};
use std::path::Path;
use tokio::io::AsyncWriteExt;

pub const CNI_VERSION: &str = "1.0.0";

/// What failed in a plugin call.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin} {command}: {msg}{}", .details.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Plugin { plugin: String, command: &'static str, code: u64, msg: String, details: Option<String> },
    #[error("CNI plugin {plugin}: {reason}")]
    Exec { plugin: String, reason: String },
}

/// One call of one plugin.
pub struct Call<'a> {
    pub command: &'static str,
    pub container_id: &'a str,
    /// Path of the namespace; empty for a DEL whose namespace is gone.
    pub netns: &'a str,
    pub ifname: &'a str,
}

/// Runs the plugin named by `conf["type"]` with `conf` on stdin; returns the
/// parsed result (ADD, and CHECK/DEL when they print one).
pub async fn exec(plugin_dir: &Path, call: &Call<'_>, conf: &Value) -> Result<Option<Value>, CniError> {
    let plugin = conf.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let exec_err = |reason: String| CniError::Exec { plugin: plugin.clone(), reason };
    if plugin.is_empty() || plugin.contains('/') {
        return Err(exec_err("the configuration names no plugin type".into()));
    }
    let bin = plugin_dir.join(&plugin);
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.env_clear()
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_PATH", plugin_dir)
        // portmap and the bridge's masquerading run iptables.
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| exec_err(format!("running {}: {e}", bin.display())))?;
    let input = serde_json::to_vec(conf).map_err(|e| exec_err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&input).await.map_err(|e| exec_err(format!("writing its configuration: {e}")))?;
    }
    let out = child.wait_with_output().await.map_err(|e| exec_err(e.to_string()))?;
    if !out.status.success() {
        // The spec's error object; a plugin that crashed prints none.
        let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let msg = err
            .get("msg")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}; stderr: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
        return Err(CniError::Plugin {
            plugin,
            command: call.command,
            code: err.get("code").and_then(Value::as_u64).unwrap_or(0),
            msg,
            details: err.get("details").and_then(Value::as_str).map(str::to_string),
        });
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| exec_err(format!("unreadable result: {e}: {}", String::from_utf8_lossy(&out.stdout))))
}

/// A plugin's configuration inside a list, as the spec has runtimes build
/// it: the list's `name` and `cniVersion`, the previous result, and the
/// runtime configuration for the capabilities the plugin declares.
pub fn plugin_conf(list_name: &str, plugin: &Value, prev: Option<&Value>, runtime: &Value) -> Value {
    let mut c = plugin.clone();
    let obj = c.as_object_mut().expect("plugin configurations are objects");
    obj.insert("name".into(), json!(list_name));
    obj.insert("cniVersion".into(), json!(CNI_VERSION));
    if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
        let mut rc = serde_json::Map::new();
        for (cap, on) in caps {
            if on.as_bool() == Some(true)
                && let Some(v) = runtime.get(cap)
            {
                rc.insert(cap.clone(), v.clone());
            }
        }
        if !rc.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    if let Some(p) = prev {
        obj.insert("prevResult".into(), p.clone());
    }
    c
}

/// The first IPv4 address of a result (`10.88.0.5/24` → `10.88.0.5`).
pub fn first_ipv4(result: &Value) -> Option<String> {
    result.get("ips")?.as_array()?.iter().find_map(|ip| {
        let a = ip.get("address")?.as_str()?;
        let addr = a.split('/').next()?;
        addr.parse::<std::net::Ipv4Addr>().ok().map(|a| a.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_conf_gets_name_version_prev_and_only_declared_capabilities() {
        let portmap = json!({ "type": "portmap", "capabilities": { "portMappings": true } });
        let rt =
            json!({ "portMappings": [{ "hostPort": 20000, "containerPort": 80, "protocol": "tcp" }], "bandwidth": {} });
        let prev = json!({ "cniVersion": "1.0.0", "ips": [{ "address": "10.88.0.7/24" }] });
        let c = plugin_conf("zoe", &portmap, Some(&prev), &rt);
        assert_eq!(c["name"], "zoe");
        assert_eq!(c["cniVersion"], CNI_VERSION);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 20000);
        assert!(c["runtimeConfig"].get("bandwidth").is_none());
        assert_eq!(first_ipv4(&c["prevResult"]).as_deref(), Some("10.88.0.7"));
        let bridge = plugin_conf("zoe", &json!({ "type": "bridge" }), None, &rt);
        assert!(bridge.get("runtimeConfig").is_none() && bridge.get("prevResult").is_none());
    }
}
