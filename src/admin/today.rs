//! Today's file of a tenant, as the admin API (`GET /api/tenants/{t}/today`) and the console's
//! today page and overview show it.
//!
//! Enters: the config, a tenant and its newest runs (from the store, read by the caller).
//! Leaves: a [`TodayFile`]: what waits in the tenant's root for today (read from the folder), and
//! which runs imported a file today.

use crate::config::{Config, Tenant};
use crate::intake::pattern::{FilePattern, TenantCalendar};
use crate::model::{ImportRecord, ImportStatus};
use chrono::{DateTime, Utc};
use std::collections::HashSet;

/// One file of today waiting in a tenant's root.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct WaitingFile {
    pub name: String,
    pub bytes: u64,
    pub modified_at: DateTime<Utc>,
}

/// A file or folder in a tenant's root that no import takes as it is, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct NotImported {
    pub name: String,
    pub bytes: u64,
    pub modified_at: DateTime<Utc>,
    pub reason: String,
}

/// At most this many [`NotImported`] are listed (the newest).
const NOT_IMPORTED_LISTED: usize = 20;

/// Today's file of a tenant (`GET /api/tenants/{t}/today`, the console's today page and
/// overview): what waits in its root for today, which of `recent` (its newest runs, newest
/// first) imported today's file, and what lies in its root that no import takes.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct TodayFile {
    pub tenant: String,
    pub date: String,
    pub timezone: String,
    pub pattern: String,
    pub expected: Option<String>,
    pub present: bool,
    pub waiting: Vec<WaitingFile>,
    pub imported: Vec<ImportRecord>,
    /// Newest first, at most [`NOT_IMPORTED_LISTED`]; `not_imported_total` counts them all.
    pub not_imported: Vec<NotImported>,
    pub not_imported_total: usize,
}

/// [`TodayFile`] of `t`, from its root folder and its newest runs `recent`.
pub(crate) fn today_file(config: &Config, t: &Tenant, recent: Vec<ImportRecord>) -> TodayFile {
    let calendar = TenantCalendar::of(&t.import);
    let today = calendar.today();
    let pattern = FilePattern::new(&t.import);
    let is_today = |time: DateTime<Utc>| calendar.date_of(time) == today;
    let home = config.tenant_home(&t.id);
    let mut waiting = Vec::new();
    for name in crate::intake::candidates(config, t) {
        let Ok(meta) = std::fs::metadata(home.join(&name)) else {
            continue;
        };
        let modified: DateTime<Utc> = meta.modified().map(Into::into).unwrap_or_default();
        let dated_today = pattern.matches(&name).and_then(|m| m.date) == Some(today);
        if dated_today || (!pattern.has_date() && is_today(modified)) {
            waiting.push(WaitingFile {
                name,
                bytes: meta.len(),
                modified_at: modified,
            });
        }
    }
    // With a `{date}` pattern, today's file is the one dated today, whenever it came; a
    // file dated yesterday that arrives today is not it (review s18 clients F4).
    let imported: Vec<ImportRecord> = recent
        .into_iter()
        .filter(|r| r.status != ImportStatus::Missing && is_today(r.received_at))
        .filter(|r| {
            !pattern.has_date() || pattern.matches(&r.file).and_then(|m| m.date) == Some(today)
        })
        .collect();
    let (not_imported, not_imported_total) = not_imported(config, t, &waiting);
    TodayFile {
        tenant: t.id.clone(),
        date: today.to_string(),
        timezone: calendar.zone.name().to_string(),
        pattern: t.import.file.clone(),
        expected: pattern.has_date().then(|| pattern.name_for(today)),
        present: !waiting.is_empty() || !imported.is_empty(),
        waiting,
        imported,
        not_imported,
        not_imported_total,
    }
}

/// The newest [`NOT_IMPORTED_LISTED`] of what lies in the root of `t` that no import takes as
/// it is, newest first, and how many there are in all: files whose names do not match (or are
/// temporary upload names), uploads not finished (interrupted, or still being written), and
/// folders other than the archive folders (review s18 clients F3, F4).
///
/// Decision (review s29): a root may hold up to `max_tenant_entries` (100,000) entries; only
/// the listed ones are kept ([`Newest`]) and the waiting names are a set, so the work is one
/// pass and the memory is the 20 listed, not a sorted list of every entry and a comparison
/// of each with each waiting file.
fn not_imported(config: &Config, t: &Tenant, waiting: &[WaitingFile]) -> (Vec<NotImported>, usize) {
    let Ok(entries) = std::fs::read_dir(config.tenant_home(&t.id)) else {
        return (Vec::new(), 0);
    };
    let waiting: HashSet<&str> = waiting.iter().map(|w| w.name.as_str()).collect();
    let unfinished = crate::sftp::InProgress::new(&config.server.data_dir, &t.id);
    let mut found = Newest::new(NOT_IMPORTED_LISTED);
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        let archive = matches!(name.as_str(), "processed" | "errors" | "bak");
        if archive || waiting.contains(name.as_str()) {
            continue;
        }
        let reason = if meta.is_dir() {
            Some("a folder: only files directly in the tenant folder are imported".to_string())
        } else if !meta.is_file() {
            None
        } else if let Some(why) = crate::intake::pattern::why_not_imported(&t.import, &name) {
            Some(why)
        } else if unfinished.is_unfinished(crate::sftp::FileId::of(&meta)) {
            Some("upload unfinished: a client is still writing it or was cut off; it is imported once an upload of it finishes".to_string())
        } else {
            None
        };
        if let Some(reason) = reason {
            found.push(NotImported {
                name,
                bytes: if meta.is_file() { meta.len() } else { 0 },
                modified_at: meta.modified().map(Into::into).unwrap_or_default(),
                reason,
            });
        }
    }
    found.finish()
}

/// The newest `keep` of a stream of [`NotImported`] (by modification time, then name), and
/// how many went by: at most `2 * keep` are held at once.
struct Newest {
    keep: usize,
    held: Vec<NotImported>,
    total: usize,
}

impl Newest {
    fn new(keep: usize) -> Newest {
        Newest {
            keep,
            held: Vec::with_capacity(2 * keep + 1),
            total: 0,
        }
    }

    /// Newest first; equal times by name.
    fn order(a: &NotImported, b: &NotImported) -> std::cmp::Ordering {
        (b.modified_at.cmp(&a.modified_at)).then_with(|| a.name.cmp(&b.name))
    }

    fn push(&mut self, item: NotImported) {
        self.total += 1;
        self.held.push(item);
        if self.held.len() > 2 * self.keep {
            // Keep the newest `keep`: a linear selection, once per `keep` pushes.
            self.held.select_nth_unstable_by(self.keep, Self::order);
            self.held.truncate(self.keep);
        }
    }

    /// The newest `keep`, newest first, and the count of all pushed.
    fn finish(mut self) -> (Vec<NotImported>, usize) {
        self.held.sort_by(Self::order);
        self.held.truncate(self.keep);
        (self.held, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// Review s29 console F3: every entry of the root was kept and sorted to list 20; now the
    /// newest 20 are kept as the folder is read, and the total still counts every one.
    #[test]
    fn not_imported_keeps_the_newest_and_counts_all() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::admin::test_state::config(dir.path());
        let t = config.tenant("acme").unwrap_or_else(|| panic!("no acme"));
        let home = config.tenant_home("acme");
        std::fs::create_dir_all(&home).unwrap();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // Written in an order that is neither oldest nor newest first.
        let n = 500u64;
        for i in (0..n).map(|i| (i * 7919) % n) {
            let path = home.join(format!("junk-{i:03}.txt"));
            let f = std::fs::File::create(&path).unwrap();
            f.set_modified(start + Duration::from_secs(i)).unwrap();
        }
        let waiting = [WaitingFile {
            name: "junk-499.txt".into(),
            bytes: 0,
            modified_at: Utc::now(),
        }];
        let (listed, total) = not_imported(&config, t, &waiting);
        assert_eq!(total, 499, "every entry but the waiting one is counted");
        let names: Vec<String> = listed.iter().map(|f| f.name.clone()).collect();
        let newest: Vec<String> = (479..499)
            .rev()
            .map(|i| format!("junk-{i:03}.txt"))
            .collect();
        assert_eq!(names, newest);
    }
}
