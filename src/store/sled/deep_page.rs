//! Listings on the embedded store that test every stored record (`co`, `ew`, `ne`, `not`, an
//! attribute no user list holds, the console's searches): the buckets read in parallel, and
//! the page of the matches in key order found with memory bounded by the page, however deep it
//! is.
//!
//! A shallow page (its end within [`KEEP_KEYS_UP_TO`] matches) keeps the smallest keys seen in
//! one pass (`FirstKeys`). A deeper one would keep every key before it, so it takes two passes
//! over the same generations of the buckets instead:
//!
//! 1. the key space is cut into ranges at keys drawn from a few buckets (a user's bucket is a
//!    hash of its key, so any bucket is a fair sample of the tenant's keys) and the first pass
//!    counts the matches in each range ([`KeyRanges`]);
//! 2. the counts say which ranges hold the page, and the second pass keeps the smallest
//!    matching keys of those ranges only.
//!
//! Memory: the ranges' cuts (at most [`SAMPLE_KEYS`] / [`KEYS_PER_CUT`] keys) and their counts,
//! then the matches of the page's ranges (each about 1 / [`SAMPLE_KEYS`] × [`KEYS_PER_CUT`] of
//! the tenant) and the page. Time: the second pass reads every bucket again but tests only the
//! records of the page's ranges.
//!
//! Data enters as a test of a stored record (key, encoded record) and the tenant's generations
//! (`TenantState`), and leaves as the number of matches and the page's keys, sorted.

use super::SledStore;
use crate::model::bucket::BUCKETS;
use crate::model::packed::bucket_entries;
use crate::store::{Directory, FirstKeys, TenantState};
use anyhow::Result;

/// A test of one stored record (key, encoded record), made from several threads at once.
pub(super) type KeepRecord<'a> = dyn Fn(&[u8], &[u8]) -> Result<bool> + Sync + 'a;

/// A page that ends within this many matches is found in one pass keeping their keys.
#[cfg(not(test))]
pub(super) const KEEP_KEYS_UP_TO: usize = 50_000;
/// Small in unit tests, so that their few users page deep.
#[cfg(test)]
pub(super) const KEEP_KEYS_UP_TO: usize = 6;

/// At most this many threads read the buckets of one listing.
const LISTING_THREADS: usize = 4;

/// The buckets the key sample is drawn from.
#[cfg(not(test))]
const SAMPLE_BUCKETS: usize = 4;
/// Every bucket in unit tests, whose few users leave most buckets empty.
#[cfg(test)]
const SAMPLE_BUCKETS: usize = BUCKETS;
/// At most this many keys are drawn.
const SAMPLE_KEYS: usize = 4096;
/// One cut per this many keys of the sample: about 256 ranges on a large tenant.
#[cfg(not(test))]
const KEYS_PER_CUT: usize = 16;
#[cfg(test)]
const KEYS_PER_CUT: usize = 1;

/// Ranges of a tenant's key space, each holding about as many of its users: range `i` holds
/// the keys at or above cut `i - 1` and below cut `i`.
struct KeyRanges {
    cuts: Vec<Vec<u8>>,
}

impl KeyRanges {
    /// Cuts at every [`KEYS_PER_CUT`]-th key of `sample`.
    fn from_sample(mut sample: Vec<Vec<u8>>) -> KeyRanges {
        sample.sort_unstable();
        sample.dedup();
        let cuts = sample
            .into_iter()
            .skip(KEYS_PER_CUT)
            .step_by(KEYS_PER_CUT)
            .collect();
        KeyRanges { cuts }
    }

    fn count(&self) -> usize {
        self.cuts.len() + 1
    }

    /// The range that holds `key`.
    fn of(&self, key: &[u8]) -> usize {
        self.cuts.partition_point(|c| c.as_slice() <= key)
    }

    /// True when `key` lies in ranges `first..=last`.
    fn holds(&self, first: usize, last: usize, key: &[u8]) -> bool {
        let above = first == 0 || self.cuts[first - 1].as_slice() <= key;
        let below = self.cuts.get(last).is_none_or(|c| key < c.as_slice());
        above && below
    }
}

/// Where the matches `skip..skip + take` in key order lie, from the number of matches in each
/// range: the first and last range holding them and the number of matches before the first.
/// None when there are no more than `skip` matches.
fn locate(counts: &[u64], skip: u64, take: u64) -> Option<(usize, usize, u64)> {
    let mut before = 0;
    let mut first = None;
    for (i, &n) in counts.iter().enumerate() {
        match first {
            None if before + n > skip => first = Some((i, before)),
            None => before += n,
            Some(_) => {}
        }
        if let Some((f, at)) = first {
            let through = at + counts[f..=i].iter().sum::<u64>();
            if through >= skip.saturating_add(take) || i + 1 == counts.len() {
                return Some((f, i, at));
            }
        }
    }
    None
}

impl SledStore {
    /// The number of stored records of the tenant's generations `st` that `keep` passes, and
    /// the keys of the matches `skip..skip + take` in key order (see the module doc).
    pub(super) fn matching_keys(
        &self,
        tenant: &str,
        st: &TenantState,
        keep: &KeepRecord<'_>,
        skip: usize,
        take: usize,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        if skip.saturating_add(take) <= KEEP_KEYS_UP_TO {
            let mut first = FirstKeys::new(skip, take);
            for part in self.each_record(
                tenant,
                st,
                || FirstKeys::new(skip, take),
                |f, k, v| {
                    if keep(k, v)? {
                        f.offer(k);
                    }
                    Ok(())
                },
            )? {
                first.absorb(part);
            }
            return Ok(first.page());
        }
        let ranges = KeyRanges::from_sample(self.key_sample(tenant, st)?);
        let mut counts = vec![0u64; ranges.count()];
        let parts = self.each_record(
            tenant,
            st,
            || vec![0u64; ranges.count()],
            |c, k, v| {
                if keep(k, v)? {
                    c[ranges.of(k)] += 1;
                }
                Ok(())
            },
        )?;
        for part in parts {
            counts.iter_mut().zip(part).for_each(|(n, m)| *n += m);
        }
        let total = counts.iter().sum();
        let Some((first, last, before)) = locate(&counts, skip as u64, take as u64) else {
            return Ok((total, Vec::new()));
        };
        let within = usize::try_from(skip as u64 - before).unwrap_or(usize::MAX);
        let mut found = FirstKeys::new(within, take);
        let parts = self.each_record(
            tenant,
            st,
            || FirstKeys::new(within, take),
            |f, k, v| {
                if ranges.holds(first, last, k) && keep(k, v)? {
                    f.offer(k);
                }
                Ok(())
            },
        )?;
        for part in parts {
            found.absorb(part);
        }
        Ok((total, found.page().1))
    }

    /// Runs `visit` on every stored record of the generations `st`, the buckets split between
    /// up to [`LISTING_THREADS`] threads (one per core), each with its own `T` made by
    /// `start`; returns each thread's `T`. Memory: one bucket per thread.
    fn each_record<T: Send>(
        &self,
        tenant: &str,
        st: &TenantState,
        start: impl Fn() -> T + Sync,
        visit: impl Fn(&mut T, &[u8], &[u8]) -> Result<()> + Sync,
    ) -> Result<Vec<T>> {
        let threads = crate::store::cores().clamp(1, LISTING_THREADS);
        let share = BUCKETS.div_ceil(threads);
        let scan = |part: usize| -> Result<T> {
            let mut acc = start();
            for b in part * share..((part + 1) * share).min(BUCKETS) {
                let Some(blob) = self.bucket(tenant, b as u16, st.gen(b))? else {
                    continue;
                };
                for (k, v) in bucket_entries(&blob)? {
                    visit(&mut acc, k, v)?;
                }
            }
            Ok(acc)
        };
        crate::store::on_threads(threads, scan)
            .into_iter()
            .collect()
    }

    /// Keys drawn evenly from [`SAMPLE_BUCKETS`] buckets spread over the tenant, at most
    /// [`SAMPLE_KEYS`] of them.
    fn key_sample(&self, tenant: &str, st: &TenantState) -> Result<Vec<Vec<u8>>> {
        let mut sample = Vec::new();
        for i in 0..SAMPLE_BUCKETS {
            let b = i * (BUCKETS / SAMPLE_BUCKETS);
            let Some(blob) = self.bucket(tenant, b as u16, st.gen(b))? else {
                continue;
            };
            let entries = bucket_entries(&blob)?;
            let step = (entries.len() * SAMPLE_BUCKETS)
                .div_ceil(SAMPLE_KEYS)
                .max(1);
            sample.extend(entries.iter().step_by(step).map(|(k, _)| k.to_vec()));
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bucket::bucket_of;
    use crate::model::packed::{bucket_push, UserRec};
    use crate::store::Commit;
    use std::collections::BTreeMap;

    #[test]
    fn locate_finds_the_ranges_that_hold_a_page() {
        let counts = [3, 0, 2, 5, 1];
        assert_eq!(locate(&counts, 0, 2), Some((0, 0, 0)));
        assert_eq!(locate(&counts, 2, 2), Some((0, 2, 0)));
        assert_eq!(locate(&counts, 3, 1), Some((2, 2, 3)));
        assert_eq!(locate(&counts, 4, 100), Some((2, 4, 3)));
        assert_eq!(locate(&counts, 10, 1), Some((4, 4, 10)));
        assert_eq!(locate(&counts, 11, 1), None);
        assert_eq!(locate(&[], 0, 1), None);
    }

    #[test]
    fn key_ranges_place_every_key_in_one_range() {
        let r = KeyRanges::from_sample(["d", "b", "f", "b"].map(|s| s.as_bytes().to_vec()).into());
        assert_eq!(r.count(), 3); // cuts "d" and "f" (the first sampled key opens no range)
        for (key, range) in [("a", 0), ("c", 0), ("d", 1), ("e", 1), ("f", 2), ("z", 2)] {
            assert_eq!(r.of(key.as_bytes()), range, "{key}");
            assert!(r.holds(range, range, key.as_bytes()));
            assert!(r.holds(0, 2, key.as_bytes()));
        }
        assert!(!r.holds(1, 1, b"c") && !r.holds(1, 1, b"f") && !r.holds(0, 0, b"d"));
    }

    /// Commits users `0000`..`n` (odd ones with a marked email) in one commit.
    fn store_of(n: usize) -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut buckets: BTreeMap<u16, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for i in 0..n {
            let key = format!("{i:04}");
            let mut rec = UserRec::default();
            let mark = if i % 2 == 1 { "odd" } else { "even" };
            rec.set("email", Some(&format!("{mark}{i}@x.example")));
            let mut enc = Vec::new();
            rec.encode_into(&mut enc);
            buckets
                .entry(bucket_of(key.as_bytes()))
                .or_default()
                .push((key, enc));
        }
        let mut staged = Vec::new();
        for (b, mut users) in buckets {
            users.sort();
            let mut blob = Vec::new();
            for (k, v) in &users {
                bucket_push(&mut blob, k.as_bytes(), v);
            }
            staged.push((b, store.stage_bucket("t", b, &blob).unwrap()));
        }
        let commit = Commit {
            tenant: "t".into(),
            expected_version: 0,
            buckets: staged,
            ..Default::default()
        };
        store.commit(&commit).unwrap();
        (dir, store)
    }

    #[test]
    fn pages_at_every_depth_are_those_of_the_sorted_matches() {
        let (_dir, store) = store_of(300);
        let st = store.tenant_state("t").unwrap();
        let odd = |_: &[u8], v: &[u8]| Ok(v.windows(3).any(|w| w == b"odd"));
        let none = |_: &[u8], _: &[u8]| Ok(false);
        let want: Vec<Vec<u8>> = (0..300)
            .filter(|i| i % 2 == 1)
            .map(|i| format!("{i:04}").into_bytes())
            .collect();
        for take in [1, 3, 7, 200] {
            for skip in 0..=152 {
                let (total, page) = store.matching_keys("t", &st, &odd, skip, take).unwrap();
                assert_eq!(total, 150);
                let expected: Vec<_> = want.iter().skip(skip).take(take).cloned().collect();
                assert_eq!(page, expected, "skip {skip} take {take}");
            }
        }
        assert_eq!(
            store.matching_keys("t", &st, &none, 40, 5).unwrap(),
            (0, Vec::new())
        );
    }
}
