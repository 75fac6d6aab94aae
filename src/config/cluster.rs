//! `[cluster]`: how this node takes part when several `roster serve` nodes share one PostgreSQL
//! store (issue 11; docs/postgres.md). Ignored with the embedded sled store, which serves one
//! node.
//!
//! Data enters as the `[cluster]` table of the config file and leaves as [`ClusterConfig`]:
//! the node's id (default: the host name and the SFTP listen port, or the process id when that
//! port is 0) and the lease length.

use serde::{Deserialize, Serialize};

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id; default `HOSTNAME:PORT` (the SFTP listen port; `HOSTNAME:pid-PID` when
    /// that port is 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// How long a node may go without a heartbeat before the others treat it as dead.
    pub lease_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            node_id: None,
            lease_secs: 30,
        }
    }
}

impl ClusterConfig {
    /// True when the table is absent or says what the defaults say.
    pub fn is_default(&self) -> bool {
        *self == ClusterConfig::default()
    }

    /// The node id: `node_id`, else `HOSTNAME:PORT` with the port of `listen`. A listen port of
    /// 0 (the system picks one) says nothing about the node, so two such nodes on one host
    /// would share an id and take each other's leases: then the id is `HOSTNAME:pid-PID`.
    pub fn node_id(&self, listen: &str) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        match listen.rsplit(':').next() {
            Some(port) if !port.is_empty() && port != "0" => format!("{}:{port}", host_name()),
            _ => format!("{}:pid-{}", host_name(), std::process::id()),
        }
    }

    /// Every problem with `[cluster]`, each naming the key.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.lease_secs < 3 {
            out.push("[cluster] lease_secs must be at least 3".to_string());
        }
        if let Some(id) = &self.node_id {
            let ok = !id.is_empty() && id.len() <= 200 && id.chars().all(|c| c.is_ascii_graphic());
            if !ok {
                out.push("[cluster] node_id must be 1 to 200 visible ASCII characters".to_string());
            }
        }
        out
    }
}

/// This machine's host name (`localhost` when it cannot be read).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if !s.is_empty() => s.to_string(),
        _ => "localhost".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::ClusterConfig;

    #[test]
    fn the_default_id_names_the_port_or_the_process_when_the_port_is_picked_by_the_system() {
        let c = ClusterConfig::default();
        assert!(c.node_id("0.0.0.0:2222").ends_with(":2222"));
        assert!(c.node_id("[::1]:2222").ends_with(":2222"));
        let pid = format!(":pid-{}", std::process::id());
        assert!(c.node_id("127.0.0.1:0").ends_with(&pid));
        assert!(c.node_id("[::]:0").ends_with(&pid));
        let set = ClusterConfig {
            node_id: Some("sftp-1".into()),
            ..ClusterConfig::default()
        };
        assert_eq!(set.node_id("127.0.0.1:0"), "sftp-1");
    }
}
