//! The check `roster migrate-store` ends with: what PostgreSQL holds once the copy is written,
//! read back through the store traits (the calls the server makes, on `&dyn Backend`), against
//! the embedded store it came from.
//!
//! Data enters as the two stores and the tenants copied. Per tenant it compares the users per
//! status and the numbers of history records and held plans (counts), and, entry by entry, the
//! file ledger (`RunLog::ledger_page`), the claim stamps (`RunLog::claims_stamped` and
//! `claim_committed`), the change log (`ChangeLog::changes`: seq, time, import, key, kind,
//! fields), the event log (`ChangeLog::events`) and the delivery cursors (`ChangeLog::cursors`).
//! Times are compared to the microsecond, what PostgreSQL's `timestamptz` keeps. The ledger and
//! the logs are read [`PAGE`] entries at a time from both stores in step, so a change log of
//! 1,000,000 entries never sits in memory whole. It leaves as one line per tenant on stdout
//! (each kind's count in both stores, the first difference if any), the outbox's line, and, on
//! any difference, an error naming the tenant, the kind and the first differing seq or key, and
//! saying not to serve from the target.

use crate::store::{Backend, LedgerEntry};
use anyhow::{bail, Result};
use chrono::{DateTime, SubsecRound, Utc};
use std::fmt::Display;

/// Entries read per call from each store.
const PAGE: usize = 1000;

/// A kind of data compared entry by entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ledger,
    Stamps,
    Changes,
    Events,
    Cursors,
}

impl Kind {
    /// Its name in the verify line.
    fn label(self) -> &'static str {
        match self {
            Kind::Ledger => "ledger",
            Kind::Stamps => "stamps",
            Kind::Changes => "changes",
            Kind::Events => "events",
            Kind::Cursors => "cursors",
        }
    }

    /// Its name in the error.
    fn noun(self) -> &'static str {
        match self {
            Kind::Ledger => "the file ledger",
            Kind::Stamps => "the claim stamps",
            Kind::Changes => "the change log",
            Kind::Events => "the event log",
            Kind::Cursors => "the delivery cursors",
        }
    }

    /// What names one entry.
    fn key_name(self) -> &'static str {
        match self {
            Kind::Ledger => "file",
            Kind::Stamps => "claim",
            Kind::Changes | Kind::Events => "seq",
            Kind::Cursors => "consumer",
        }
    }
}

/// One kind of one tenant in both stores: the entries of each, and the first that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindCheck {
    pub kind: Kind,
    /// (embedded, PostgreSQL).
    pub counts: [u64; 2],
    /// Such as `seq 17` or `file users.csv`: the first entry (in key order) that one store
    /// lacks or holds otherwise.
    pub first_difference: Option<String>,
}

impl KindCheck {
    pub fn matches(&self) -> bool {
        self.first_difference.is_none() && self.counts[0] == self.counts[1]
    }
}

impl Display for KindCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} = {}",
            self.kind.label(),
            self.counts[0],
            self.counts[1]
        )?;
        match &self.first_difference {
            Some(at) => write!(f, " (first difference at {at})"),
            None => Ok(()),
        }
    }
}

/// One tenant in both stores: (embedded, PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCheck {
    pub tenant: String,
    /// (active, inactive, deleted).
    pub users: [(u64, u64, u64); 2],
    pub records: [usize; 2],
    pub plans: [usize; 2],
    /// Ledger, stamps, changes, events and cursors, compared entry by entry.
    pub entries: Vec<KindCheck>,
}

impl TenantCheck {
    pub fn matches(&self) -> bool {
        self.users[0] == self.users[1]
            && self.records[0] == self.records[1]
            && self.plans[0] == self.plans[1]
            && self.entries.iter().all(KindCheck::matches)
    }

    /// One sentence per difference, each naming the tenant and the kind.
    pub fn differences(&self) -> Vec<String> {
        let t = &self.tenant;
        let mut out = Vec::new();
        let [(a0, i0, d0), (a1, i1, d1)] = self.users;
        if self.users[0] != self.users[1] {
            out.push(format!(
                "tenant {t}: the users differ (active {a0} embedded, {a1} on PostgreSQL; \
                 inactive {i0}, {i1}; deleted {d0}, {d1})"
            ));
        }
        for (noun, [x, y]) in [
            ("the history records", self.records),
            ("the held plans", self.plans),
        ] {
            if x != y {
                out.push(format!(
                    "tenant {t}: {noun} differ ({x} embedded, {y} on PostgreSQL)"
                ));
            }
        }
        for e in self.entries.iter().filter(|e| !e.matches()) {
            let at = e.first_difference.as_deref().unwrap_or("its count");
            out.push(format!(
                "tenant {t}, {}: the first difference is at {at} ({} entr(ies) embedded, {} \
                 on PostgreSQL)",
                e.kind.noun(),
                e.counts[0],
                e.counts[1]
            ));
        }
        out
    }
}

impl Display for TenantCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [(a0, i0, d0), (a1, i1, d1)] = self.users;
        write!(
            f,
            "{}: users active {a0} = {a1}, inactive {i0} = {i1}, deleted {d0} = {d1}; \
             records {} = {}; plans {} = {}",
            self.tenant, self.records[0], self.records[1], self.plans[0], self.plans[1],
        )?;
        for e in &self.entries {
            write!(f, "; {e}")?;
        }
        f.write_str(if self.matches() { ": ok" } else { ": MISMATCH" })
    }
}

/// Compares every tenant and the outbox of both stores, prints one line each, and fails
/// naming every difference: the target is then not to be served from.
pub fn verify(
    from: &dyn Backend,
    to: &dyn Backend,
    tenants: &[String],
) -> Result<Vec<TenantCheck>> {
    let mut checks = Vec::with_capacity(tenants.len());
    for t in tenants {
        checks.push(check_tenant(from, to, t)?);
    }
    super::say(format_args!("verify (embedded = PostgreSQL):"));
    for c in &checks {
        super::say(format_args!("  {c}"));
    }
    let (from_mail, to_mail) = (from.outbox_len()?, to.outbox_len()?);
    let mail_ok = from_mail == to_mail;
    super::say(format_args!(
        "  outbox: {from_mail} = {to_mail}: {}",
        if mail_ok { "ok" } else { "MISMATCH" }
    ));
    let mut wrong: Vec<String> = checks.iter().flat_map(TenantCheck::differences).collect();
    if !mail_ok {
        wrong.push(format!(
            "the outbox holds {from_mail} message(s) embedded, {to_mail} on PostgreSQL"
        ));
    }
    if !wrong.is_empty() {
        bail!(
            "the copy does not match: {}; do not serve from this PostgreSQL store (drop its \
             roster schema, or the database, and run migrate-store again)",
            wrong.join("; ")
        );
    }
    Ok(checks)
}

/// One tenant of both stores.
pub fn check_tenant(from: &dyn Backend, to: &dyn Backend, t: &str) -> Result<TenantCheck> {
    Ok(TenantCheck {
        tenant: t.to_string(),
        users: [from.user_counts(t)?, to.user_counts(t)?],
        records: [
            from.history(t, usize::MAX)?.len(),
            to.history(t, usize::MAX)?.len(),
        ],
        plans: [from.held_plans(t)?.len(), to.held_plans(t)?.len()],
        entries: vec![
            compare(Kind::Ledger, ledger(from, t), ledger(to, t))?,
            compare(Kind::Stamps, stamps(from, t)?, stamps(to, t)?)?,
            compare(Kind::Changes, changes(from, t), changes(to, t))?,
            compare(Kind::Events, events(from, t), events(to, t))?,
            compare(Kind::Cursors, cursors(from, t)?, cursors(to, t)?)?,
        ],
    })
}

/// A time as PostgreSQL keeps it.
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

fn ledger<'a>(store: &'a dyn Backend, t: &'a str) -> Pages<'a, LedgerEntry, String> {
    Pages::new(
        String::new(),
        |e| e.file.clone(),
        move |after: &String| {
            let page = store.ledger_page(t, after, PAGE)?;
            Ok(page
                .into_iter()
                .map(|e| LedgerEntry {
                    updated_at: micros(e.updated_at),
                    ..e
                })
                .collect())
        },
    )
}

/// (claim, import id) of every claim with a stamp, by claim.
fn stamps<'a>(store: &'a dyn Backend, t: &str) -> Result<Pages<'a, (String, String), String>> {
    let mut claims = store.claims_stamped(t)?;
    claims.sort();
    let mut out = Vec::with_capacity(claims.len());
    for claim in claims {
        if let Some(id) = store.claim_committed(t, &claim)? {
            out.push((claim, id));
        }
    }
    Ok(Pages::whole(out, |s| s.0.clone()))
}

fn changes<'a>(
    store: &'a dyn Backend,
    t: &'a str,
) -> Pages<'a, crate::model::changelog::LoggedChange, u64> {
    Pages::new(
        0,
        |c| c.seq,
        move |after: &u64| {
            let page = store.changes(t, *after, PAGE)?;
            Ok(page
                .into_iter()
                .map(|mut c| {
                    c.at = micros(c.at);
                    c
                })
                .collect())
        },
    )
}

fn events<'a>(
    store: &'a dyn Backend,
    t: &'a str,
) -> Pages<'a, crate::model::changelog::Event, u64> {
    Pages::new(
        0,
        |e| e.seq,
        move |after: &u64| {
            let page = store.events(t, *after, PAGE)?;
            Ok(page
                .into_iter()
                .map(|mut e| {
                    e.at = micros(e.at);
                    e
                })
                .collect())
        },
    )
}

type Cursors = (String, crate::model::changelog::Cursor);

fn cursors<'a>(store: &'a dyn Backend, t: &str) -> Result<Pages<'a, Cursors, String>> {
    Ok(Pages::whole(store.cursors(t)?, |c| c.0.clone()))
}

/// Reads the page of entries after a key.
type Fetch<'a, T, K> = Box<dyn FnMut(&K) -> Result<Vec<T>> + 'a>;

/// One store's entries of one kind in key order, fetched a page at a time (each page the
/// entries after the last key of the one before).
pub(crate) struct Pages<'a, T, K> {
    fetch: Fetch<'a, T, K>,
    key: fn(&T) -> K,
    after: K,
    page: std::vec::IntoIter<T>,
    done: bool,
}

impl<'a, T: 'a, K> Pages<'a, T, K> {
    fn new(after: K, key: fn(&T) -> K, fetch: impl FnMut(&K) -> Result<Vec<T>> + 'a) -> Self {
        Pages {
            fetch: Box::new(fetch),
            key,
            after,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// Entries read whole (a tenant's few stamps or cursors), as one page.
    fn whole(entries: Vec<T>, key: fn(&T) -> K) -> Self
    where
        K: Default,
    {
        let mut entries = Some(entries);
        Pages::new(K::default(), key, move |_: &K| {
            Ok(entries.take().unwrap_or_default())
        })
    }
}

impl<T, K> Pages<'_, T, K> {
    fn next(&mut self) -> Result<Option<T>> {
        if let Some(t) = self.page.next() {
            return Ok(Some(t));
        }
        if self.done {
            return Ok(None);
        }
        let page = (self.fetch)(&self.after)?;
        match page.last() {
            Some(last) => self.after = (self.key)(last),
            None => self.done = true,
        }
        self.page = page.into_iter();
        Ok(self.page.next())
    }
}

/// Walks both stores' entries of `kind` in step, counting each side's and noting the first
/// pair that differs (by the smaller key when the keys differ: the entry one side lacks).
pub(crate) fn compare<T: PartialEq, K: Ord + Display>(
    kind: Kind,
    mut from: Pages<'_, T, K>,
    mut to: Pages<'_, T, K>,
) -> Result<KindCheck> {
    let mut check = KindCheck {
        kind,
        counts: [0, 0],
        first_difference: None,
    };
    loop {
        let (a, b) = (from.next()?, to.next()?);
        if a.is_none() && b.is_none() {
            return Ok(check);
        }
        check.counts[0] += u64::from(a.is_some());
        check.counts[1] += u64::from(b.is_some());
        if check.first_difference.is_some() || a == b {
            continue;
        }
        let at = match (&a, &b) {
            (Some(x), Some(y)) => Some((from.key)(x).min((to.key)(y))),
            (Some(x), None) => Some((from.key)(x)),
            (None, Some(y)) => Some((to.key)(y)),
            (None, None) => None,
        };
        // A file name or consumer is chosen by a tenant or config: escaped for the terminal.
        check.first_difference = at.map(|k| {
            format!(
                "{} {}",
                kind.key_name(),
                crate::logs::escape(&k.to_string())
            )
        });
    }
}

#[cfg(test)]
mod tests;
