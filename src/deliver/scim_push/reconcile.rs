//! `roster scim-push TENANT --reconcile [--dry-run]`: compares the application's users with the
//! directory and fixes the drift.
//!
//! The application's users enter page by page ([`client::PAGE`](super::client::PAGE) at a time)
//! and are indexed by `externalId` and `userName`; the directory's users enter as the list the
//! caller read. Leaves as a [`Drift`] report: users created (missing in the application), updated
//! (an attribute differs), deactivated or deleted (active in the application but inactive,
//! deleted or gone in the directory). Only application users whose `externalId` is the key of
//! a user of the tenant's directory (deleted users included) are Roster's to deactivate or
//! delete; one carrying any other externalId is listed as `foreign` and left alone, as are
//! users without one. Without `dry_run` each fix is made as the pusher makes it.
//!
//! Bounded: of each application user only its `id` and the attributes compared are kept; the
//! listing stops with an error past [`MAX_APP_USERS`] users or [`MAX_APP_BYTES`] read, and when
//! the provider's paging does not move on (a page that starts elsewhere than asked, or brings
//! no new `id`), rather than reading the same page for ever.

use super::client::{id_of, ScimError, PAGE};
use super::push::Pusher;
use super::resource;
use crate::config::ScimOnMissing;
use crate::model::fields::EMAIL;
use crate::model::{User, UserStatus};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Most keys listed per kind of fix in the report (the counts are always complete).
pub const MAX_LISTED: usize = 1000;
/// Most application users read (a bound on memory).
pub const MAX_APP_USERS: usize = 2_000_000;
/// Most bytes of listing answers read in one reconcile (a bound on time and memory).
pub const MAX_APP_BYTES: usize = 2 * 1024 * 1024 * 1024;

/// One kind of fix: how many, and the first keys.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Fixes {
    pub count: usize,
    pub keys: Vec<String>,
}

impl Fixes {
    fn add(&mut self, key: &str) {
        self.count += 1;
        if self.keys.len() < MAX_LISTED {
            self.keys.push(key.to_string());
        }
    }
}

/// What `--reconcile` found (and, without `dry_run`, fixed).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Drift {
    pub dry_run: bool,
    /// Users the application holds.
    pub application_users: usize,
    pub create: Fixes,
    pub update: Fixes,
    pub deactivate: Fixes,
    pub delete: Fixes,
    /// Users the application holds under an externalId that is no key of this tenant's
    /// directory (another provisioning source's): left alone.
    #[serde(default)]
    pub foreign: Fixes,
    /// Fixes the application refused: "key: detail".
    pub errors: Vec<String>,
}

/// Every user of the application, page by page, each cut to its `id` and the attributes
/// compared (`keep`).
fn application_users(p: &Pusher) -> Result<Vec<Value>, ScimError> {
    let keep = resource::compared_keys(p.extra());
    let fail = |detail: String| ScimError::new(None, detail);
    let mut out = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut bytes = 0usize;
    loop {
        let start = out.len() + 1;
        let page = p.client().list(start)?;
        bytes = bytes.saturating_add(page.bytes);
        if page.users.is_empty() {
            return Ok(out);
        }
        if page.start_index.is_some_and(|s| s != start) {
            return Err(fail(format!(
                "the provider answered startIndex {} when asked for {start}: its paging is broken, reconcile stops",
                page.start_index.unwrap_or_default()
            )));
        }
        let (mut new, listed) = (0, page.users.len());
        for mut u in page.users {
            if id_of(&u).is_some_and(|id| ids.insert(id)) {
                new += 1;
                if let Some(o) = u.as_object_mut() {
                    o.retain(|k, _| k == "id" || keep.contains(k));
                }
                out.push(u);
            }
        }
        if new == 0 {
            return Err(fail(format!(
                "the provider repeated users already listed on the page from {start}: its paging is broken, reconcile stops"
            )));
        }
        // The end: totalResults reached by a short page. A full page goes on even past
        // totalResults (some providers under-report it) until a page comes back empty.
        if out.len() >= page.total && listed < PAGE {
            return Ok(out);
        }
        if out.len() >= MAX_APP_USERS || bytes >= MAX_APP_BYTES {
            return Err(fail(format!(
                "the application lists more than {} users or {} MiB; reconcile stops (nothing was changed)",
                MAX_APP_USERS,
                MAX_APP_BYTES >> 20
            )));
        }
    }
}

fn text<'a>(u: &'a Value, name: &str) -> Option<&'a str> {
    u.get(name).and_then(Value::as_str)
}

/// Reads one user of the tenant's directory as it is now (None: not there).
pub type ReadUser<'a> = &'a dyn Fn(&str) -> anyhow::Result<Option<User>>;

/// Compares and (unless `dry_run`) fixes; `directory` is every user of the tenant as read when
/// the reconcile began, `now` reads one as it is at the moment of its fix.
///
/// A fix pushes the user as the directory holds it at that moment, not the copy `directory`
/// holds: listing a large application takes minutes, and an import meanwhile may have changed
/// the user, the worker already pushing the change and moving its cursor on; pushing the old
/// copy would have undone it (a deactivated employee active again). Reviewer s28.
pub fn reconcile(
    p: &Pusher,
    directory: &[User],
    now: ReadUser<'_>,
    on_missing: ScimOnMissing,
    dry_run: bool,
) -> Result<Drift, ScimError> {
    let app = application_users(p)?;
    let mut drift = Drift {
        dry_run,
        application_users: app.len(),
        ..Drift::default()
    };
    let mut by_ext: HashMap<&str, &Value> = HashMap::new();
    let mut by_name: HashMap<String, &Value> = HashMap::new();
    for u in &app {
        if let Some(e) = text(u, "externalId").filter(|e| !e.is_empty()) {
            by_ext.insert(e, u);
        } else if let Some(n) = text(u, "userName") {
            by_name.insert(n.to_lowercase(), u);
        }
    }
    let mut live: HashSet<&str> = HashSet::new();
    for u in directory.iter().filter(|u| u.status != UserStatus::Deleted) {
        live.insert(&u.key);
        let matched = by_ext
            .get(u.key.as_str())
            .or_else(|| by_name.get(&resource::user_name(u).to_lowercase()))
            .copied();
        let want = resource::resource(u, p.extra(), None);
        let stale = matched.map(|have| stale_fields(u, have, p.extra()));
        let stale = stale.unwrap_or_default();
        let fix = match matched {
            None if u.status == UserStatus::Active => &mut drift.create,
            None => continue,
            Some(have) if resource::covers(have, &without_schemas(&want)) && stale.is_empty() => {
                continue
            }
            Some(_) if u.status == UserStatus::Active => &mut drift.update,
            Some(_) => &mut drift.deactivate,
        };
        fix.add(&u.key);
        if !dry_run {
            if let Err(e) = fix_now(p, &u.key, now, &stale) {
                drift.errors.push(format!("{}: {e}", u.key));
            }
        }
    }
    let known: HashSet<&str> = directory.iter().map(|u| u.key.as_str()).collect();
    for (ext, have) in &by_ext {
        if live.contains(ext) {
            continue;
        }
        if !known.contains(ext) {
            drift.foreign.add(ext);
            continue;
        }
        let fix = match on_missing {
            ScimOnMissing::Delete => &mut drift.delete,
            ScimOnMissing::Deactivate if have.get("active") == Some(&Value::Bool(false)) => {
                continue
            }
            ScimOnMissing::Deactivate => &mut drift.deactivate,
        };
        fix.add(ext);
        if !dry_run && id_of(have).is_some() {
            if let Err(e) = fix_now(p, ext, now, &BTreeSet::new()) {
                drift.errors.push(format!("{ext}: {e}"));
            }
        }
    }
    drift.errors.truncate(MAX_LISTED);
    Ok(drift)
}

/// Pushes `key` as the directory holds it now (gone, deleted, inactive or active), as the
/// push worker does for a change; `cleared` fields still empty then are removed from the
/// application's user.
fn fix_now(
    p: &Pusher,
    key: &str,
    now: ReadUser<'_>,
    cleared: &BTreeSet<String>,
) -> Result<(), ScimError> {
    let user = now(key)
        .map_err(|e| ScimError::new(None, format!("cannot read the user from the store: {e:#}")))?;
    p.sync_user(key, user.as_ref(), cleared).map(|_| ())
}

/// The Roster fields `u` has empty whose SCIM attribute the application's user `have` still
/// holds: a change that emptied them was never pushed (trimmed by retention before the push
/// read it, the gap `roster scim-push --reconcile` is the remedy for; reviewer s28: reconcile
/// compared only what Roster sends and left such a `title` in place).
fn stale_fields(u: &User, have: &Value, extra: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut paths: Vec<(String, String)> = vec![
        ("emails".into(), EMAIL.into()),
        ("phoneNumbers".into(), "phone".into()),
        (
            resource::MANAGER_PATH.into(),
            resource::MANAGER_EMAIL.into(),
        ),
    ];
    paths.extend(resource::mapping(extra));
    (paths.into_iter())
        .filter(|(path, field)| resource::field_is_empty(u, field) && holds(have, path))
        .map(|(_, field)| field)
        .collect()
}

/// Whether `have` has a value at `path` (`a.b`, `urn:…:a.b`); of `emails` and `phoneNumbers`,
/// only the `work` items count (the ones Roster owns).
fn holds(have: &Value, path: &str) -> bool {
    let (urn, rest) = resource::split_urn(path);
    let mut at = match urn {
        Some(urn) => have.get(urn),
        None => Some(have),
    };
    for part in rest.split('.') {
        at = at.and_then(|v| v.get(part));
    }
    match at {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) if matches!(path, "emails" | "phoneNumbers") => {
            items.iter().any(|i| resource::item_type(i) == "work")
        }
        Some(Value::Array(items)) => !items.is_empty(),
        Some(_) => true,
    }
}

fn without_schemas(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("schemas");
    }
    v
}
