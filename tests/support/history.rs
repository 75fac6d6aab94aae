//! Waiting for import runs to be recorded and filed by a running server.

#![allow(dead_code)]

use super::sftp::eventually;
use roster::model::ImportStatus;
use roster::store::Store;

/// Waits up to `secs` until `tenant` has at least `n` runs in its history, each also filed
/// away (`archived_as` is set just after the commit; `missing` runs have no file). True if so.
pub async fn wait_filed(store: &Store, tenant: &str, n: usize, secs: u64) -> bool {
    eventually(secs, || {
        let store = store.clone();
        let t = tenant.to_string();
        async move {
            store
                .history(&t, 100)
                .map(|h| {
                    h.len() >= n
                        && h.iter()
                            .all(|r| r.archived_as.is_some() || r.status == ImportStatus::Missing)
                })
                .unwrap_or(false)
        }
    })
    .await
}
