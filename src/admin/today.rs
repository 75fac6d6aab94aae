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

/// One file of today waiting in a tenant's root.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct WaitingFile {
    pub name: String,
    pub bytes: u64,
    pub modified_at: DateTime<Utc>,
}

/// Today's file of a tenant (`GET /api/tenants/{t}/today`, the console's today page and
/// overview): what waits in its root for today, and which of `recent` (its newest runs, newest
/// first) imported a file today.
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
    let imported: Vec<ImportRecord> = recent
        .into_iter()
        .filter(|r| r.status != ImportStatus::Missing && is_today(r.received_at))
        .collect();
    TodayFile {
        tenant: t.id.clone(),
        date: today.to_string(),
        timezone: calendar.zone.name().to_string(),
        pattern: t.import.file.clone(),
        expected: pattern.has_date().then(|| pattern.name_for(today)),
        present: !waiting.is_empty() || !imported.is_empty(),
        waiting,
        imported,
    }
}
