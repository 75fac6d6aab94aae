//! Waiting for import runs to be recorded and filed by a running server.

#![allow(dead_code)]

use super::sftp::eventually;
use roster::store::Store;

/// Waits up to `secs` until `tenant` has at least `n` runs in its history, each also filed
/// away: a run's record is committed complete (naming where it will be filed) together with its
/// claim's stamp, and the stamp is dropped only after the file and report are filed, so no stamp
/// left means every recorded run is filed (`missing` runs have no file and no claim). True if so.
pub async fn wait_filed(store: &Store, tenant: &str, n: usize, secs: u64) -> bool {
    eventually(secs, || {
        let store = store.clone();
        let t = tenant.to_string();
        async move {
            let recorded = store.history(&t, 100).map(|h| h.len() >= n);
            let filed = store.claims_stamped(&t).map(|c| c.is_empty());
            matches!((recorded, filed), (Ok(true), Ok(true)))
        }
    })
    .await
}
