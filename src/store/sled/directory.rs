//! The [`Directory`] seam on sled: tenant state, staged and committed bucket generations, the
//! one multi-tree transaction of a run (which publishes the run's staged changes and its events,
//! see `changes`, adds its change to the group member counts, see `groups`, and makes its
//! staged user lists current, see `lists`), and rewriting one user (see the key layout in `sled`).

use super::{bucket_key, seal, staged_key, state_key, tkey, SledStore};
use crate::model::bucket::{bucket_of, BUCKETS};
use crate::model::changelog::{between, PendingChange};
use crate::model::packed::{bucket_entries, bucket_push, UserRec};
use crate::store::{Backend, Commit, Directory, TenantState};
use anyhow::{anyhow, Context, Result};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

/// For a commit of an intake run (a ledger entry, not an `approve`): the `claims` key of the
/// claim running that file, and the stamp to write for it.
fn claim_keys(c: &Commit) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let (Some(entry), None) = (&c.ledger, &c.remove_plan) else {
        return Ok(None);
    };
    let Some(import_id) = entry.import_id.clone() else {
        return Ok(None);
    };
    let stamp = serde_json::to_vec(&super::runs::ClaimStamp {
        file: entry.file.clone(),
        import_id,
    })?;
    Ok(Some((
        super::runs::running_key(&c.tenant, &entry.file),
        stamp,
    )))
}

impl Directory for SledStore {
    /// The tenant's directory state (empty for a new tenant).
    fn tenant_state(&self, tenant: &str) -> Result<TenantState> {
        let mut st: TenantState = match self.inner.users.get(state_key(tenant))? {
            Some(v) => serde_json::from_slice(&v)
                .with_context(|| format!("the stored state of tenant {tenant} is damaged"))?,
            None => TenantState::default(),
        };
        st.gens.resize(BUCKETS, 0);
        Ok(st)
    }

    fn fingerprint_key(&self) -> &[u8; 32] {
        &self.inner.secret
    }

    /// Reads a bucket (decompressed) of the given generation; None for generation 0 (empty).
    fn bucket(&self, tenant: &str, bucket: u16, gen: u64) -> Result<Option<Vec<u8>>> {
        if gen == 0 {
            return Ok(None);
        }
        let v = self.inner.users.get(bucket_key(tenant, bucket, gen))?;
        match v {
            Some(v) => seal::unseal_bucket(&v)
                .map(Some)
                .with_context(|| format!("bucket {bucket} of tenant {tenant} cannot be read")),
            None => Err(anyhow::Error::new(super::Replaced).context(format!(
                "bucket {bucket} of tenant {tenant} is missing from the store"
            ))),
        }
    }

    fn stage_bucket(&self, tenant: &str, bucket: u16, blob: &[u8]) -> Result<u64> {
        let gen = self.inner.db.generate_id()? + 1;
        // The marker goes first, so a staged bucket is never left unmarked by a crash.
        self.inner
            .users
            .insert(staged_key(tenant, bucket, gen), &[][..])
            .context("cannot write to the store")?;
        self.inner
            .users
            .insert(bucket_key(tenant, bucket, gen), seal::seal_bucket(blob))
            .context("cannot write to the store")?;
        Ok(gen)
    }

    fn stage_changes(
        &self,
        tenant: &str,
        bucket: u16,
        gen: u64,
        changes: &[PendingChange],
    ) -> Result<()> {
        self.stage_chunk(tenant, bucket, gen, changes)
    }

    /// Removes staged buckets (and their staged changes) of an abandoned plan. A generation the
    /// tenant's state names is current, not abandoned, and stays: a caller that took a commit
    /// for failed when it had landed must not delete the directory it made.
    fn discard_staged(&self, tenant: &str, staged: &[(u16, u64)]) -> Result<()> {
        let st = self.tenant_state(tenant)?;
        for &(b, g) in staged {
            if g != 0 && st.gen(b as usize) != g {
                self.discard_chunk(tenant, b, g)?;
                self.inner.users.remove(bucket_key(tenant, b, g))?;
                self.inner.users.remove(staged_key(tenant, b, g))?;
            }
        }
        Ok(())
    }

    /// Applies one import atomically: new bucket generations, history, ledger, plans. Fails
    /// without changing anything if another commit changed the tenant since the plan was made.
    fn commit(&self, c: &Commit) -> Result<TenantState> {
        let i = &self.inner;
        let skey = state_key(&c.tenant);
        let record_json = c
            .record
            .as_ref()
            .map(|r| serde_json::to_vec(r).map(|j| (tkey(&c.tenant, r.id.as_bytes()), j)))
            .transpose()?;
        let ledger_json = c
            .ledger
            .as_ref()
            .map(|l| serde_json::to_vec(l).map(|j| (tkey(&c.tenant, l.file.as_bytes()), j)))
            .transpose()?;
        let claim_keys = claim_keys(c)?;
        let mail = c.mail.as_ref().map(|m| self.outbox_entry(m)).transpose()?;
        let at = chrono::Utc::now();
        let derived = self.derive(c)?;
        let trees = (
            &i.users, &i.history, &i.plans, &i.ledger, &i.claims, &i.changes, &i.groups, &i.outbox,
        );
        let result = trees.transaction(
            |(users, history, plans, ledger, claims, changes, groups, outbox)| {
                let mut st: TenantState = match users.get(&skey)? {
                    Some(v) => serde_json::from_slice(&v).map_err(|e| {
                        ConflictableTransactionError::Abort(anyhow!(
                            "the stored state of tenant {} is damaged: {e}",
                            c.tenant
                        ))
                    })?,
                    None => TenantState::default(),
                };
                st.gens.resize(BUCKETS, 0);
                if st.version != c.expected_version {
                    return Err(ConflictableTransactionError::Abort(anyhow!(
                        "the directory of tenant {} changed while this import was planned; run it again",
                        c.tenant
                    )));
                }
                if st.version != derived.version {
                    return Err(ConflictableTransactionError::Abort(anyhow!(
                        "the directory of tenant {} changed during its commit; run it again",
                        c.tenant
                    )));
                }
                super::groups::add_deltas(groups, &c.tenant, &derived.groups)?;
                if !c.buckets.is_empty() {
                    st.version += 1;
                }
                for &(b, g) in &c.buckets {
                    if g != 0 {
                        users.remove(staged_key(&c.tenant, b, g))?;
                    }
                    let old = st.gen(b as usize);
                    if old != 0 && old != g {
                        users.remove(bucket_key(&c.tenant, b, old))?;
                    }
                    if let Some(slot) = st.gens.get_mut(b as usize) {
                        *slot = g;
                    }
                }
                super::lists::swap_in(users, &c.tenant, &derived.lists)?;
                if derived.lists_stale {
                    super::lookup::mark_stale(users, &c.tenant)?;
                }
                if let Some(sha) = &c.last_applied_sha256 {
                    st.last_applied_sha256 = Some(sha.clone());
                }
                let json = serde_json::to_vec(&st)
                    .map_err(|e| ConflictableTransactionError::Abort(anyhow!(e)))?;
                users.insert(skey.as_slice(), json)?;
                if let Some((k, v)) = &record_json {
                    history.insert(k.as_slice(), v.as_slice())?;
                }
                if let Some((k, v)) = &ledger_json {
                    ledger.insert(k.as_slice(), v.as_slice())?;
                }
                if let Some((running, stamp)) = &claim_keys {
                    if let Some(claim) = claims.remove(running.as_slice())? {
                        let claim = String::from_utf8_lossy(&claim).to_string();
                        claims.insert(super::runs::stamp_key(&c.tenant, &claim), stamp.as_slice())?;
                    }
                }
                if let Some((k, v)) = &mail {
                    outbox.insert(k, v.as_slice())?;
                }
                if let Some((id, bytes)) = &c.put_plan {
                    plans.insert(tkey(&c.tenant, id.as_bytes()), bytes.as_slice())?;
                }
                for id in c.remove_plan.iter().chain(&c.set_aside_plans) {
                    plans.remove(tkey(&c.tenant, id.as_bytes()))?;
                }
                super::changes::publish(changes, &c.tenant, &c.buckets, c.record.as_ref(), at)?;
                Ok(st)
            },
        );
        let st = match result {
            Ok(st) => st,
            Err(e) => {
                self.discard_staged(&c.tenant, &super::lists::staged_slots(&derived.lists))?;
                return Err(match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => {
                        anyhow!(e).context("cannot commit the import to the store")
                    }
                });
            }
        };
        // The transaction has landed: from here on the run is applied, whatever the flush says.
        // An error here would make the caller discard what it staged, which is now the
        // directory. sled flushes again on its own; a crash before that loses the run whole
        // (the claim is not stamped either), and the intake runs the file again.
        if let Err(e) = self.flush() {
            tracing::error!(tenant = %c.tenant, error = %format!("{e:#}"),
                "the import is committed but the store could not flush it to disk yet");
        }
        if derived.lists_stale {
            self.rebuild_lists_later(&c.tenant);
        }
        Ok(st)
    }

    fn update_user(
        &self,
        tenant: &str,
        key: &str,
        change: &mut dyn FnMut(&mut UserRec) -> Result<()>,
    ) -> Result<Option<UserRec>> {
        let st = self.tenant_state(tenant)?;
        let b = bucket_of(key.as_bytes());
        let Some(blob) = self.bucket(tenant, b, st.gen(b as usize))? else {
            return Ok(None);
        };
        let entries = bucket_entries(&blob)?;
        let mut out = Vec::with_capacity(blob.len() + 16);
        let mut changed = None;
        let mut logged = Vec::new();
        for (k, v) in entries {
            if k != key.as_bytes() {
                bucket_push(&mut out, k, v);
                continue;
            }
            let mut rec = UserRec::decode(v)?;
            let before = rec.clone();
            change(&mut rec)?;
            logged.extend(between(key, Some(&before), Some(&rec)));
            let mut enc = Vec::new();
            rec.encode_into(&mut enc);
            bucket_push(&mut out, k, &enc);
            changed = Some(rec);
        }
        if changed.is_none() {
            return Ok(None);
        }
        let gen = self.stage_bucket(tenant, b, &out)?;
        if let Err(e) = self.stage_chunk(tenant, b, gen, &logged) {
            self.discard_staged(tenant, &[(b, gen)])?;
            return Err(e);
        }
        let commit = Commit {
            tenant: tenant.to_string(),
            expected_version: st.version,
            buckets: vec![(b, gen)],
            ..Default::default()
        };
        if let Err(e) = self.commit(&commit) {
            self.discard_staged(tenant, &[(b, gen)])?;
            return Err(e);
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller that took a landed commit for failed (a flush error used to say so) discards
    /// what it staged: the generation the tenant's state names must survive that.
    #[test]
    fn discarding_a_committed_generation_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let (kept, abandoned) = (3u16, 4u16);
        let mut blob = Vec::new();
        let mut rec = Vec::new();
        UserRec::default().encode_into(&mut rec);
        bucket_push(&mut blob, b"ann", &rec);
        let gen = store.stage_bucket("t", kept, &blob).unwrap();
        let spare = store.stage_bucket("t", abandoned, &blob).unwrap();
        let commit = Commit {
            tenant: "t".to_string(),
            buckets: vec![(kept, gen)],
            ..Default::default()
        };
        store.commit(&commit).unwrap();
        store
            .discard_staged("t", &[(kept, gen), (abandoned, spare)])
            .unwrap();
        assert_eq!(store.tenant_state("t").unwrap().gen(kept as usize), gen);
        assert_eq!(
            store.bucket("t", kept, gen).unwrap().as_deref(),
            Some(&blob[..])
        );
        let gone = store.inner.users.get(bucket_key("t", abandoned, spare));
        assert_eq!(gone.unwrap(), None);
    }
}
