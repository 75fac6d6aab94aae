//! A whole directory written into a store in one commit, below the import engine: each user's
//! packed record into its bucket, every bucket staged, one commit. For tests that compare what
//! two stores answer about the same users.
//!
//! Include it with `#[path = "support/directory.rs"] mod directory;`.

use roster::model::bucket::bucket_of;
use roster::model::packed::{bucket_push, UserRec};
use roster::store::{Commit, Store};
use std::collections::BTreeMap;

/// Writes `users` (key → record) as tenant `tenant`'s directory: the tenant's first commit.
pub fn put_all(store: &Store, tenant: &str, users: &BTreeMap<String, UserRec>) {
    let mut buckets: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    for (k, rec) in users {
        let mut enc = Vec::new();
        rec.encode_into(&mut enc);
        bucket_push(
            buckets.entry(bucket_of(k.as_bytes())).or_default(),
            k.as_bytes(),
            &enc,
        );
    }
    let staged: Vec<(u16, u64)> = buckets
        .iter()
        .map(|(b, packed)| (*b, store.stage_bucket(tenant, *b, packed).unwrap()))
        .collect();
    store
        .commit(&Commit {
            tenant: tenant.into(),
            expected_version: 0,
            buckets: staged,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
}
