//! Time-driven import requests: each tenant's cron schedule (croner, in the tenant's time
//! zone; one firing per tick across the nodes sharing a store, a tick missed while no node
//! ran fired once at start, and a tick whose node died before running it fired again,
//! `tick_watch`) and the daily retention sweep of the archive folders.
//!
//! Both run as tasks the intake's start (`triggers::start`) spawns; a schedule's tick leaves
//! as a queue request ([`Request`]), the sweep as removed files and a log line.

use super::tick_watch::TickWatch;
use super::{Intake, Request, Shared};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// Fires each tenant's cron schedule in its time zone; checks twice a second and follows
/// config reloads (a changed schedule takes effect from its next occurrence). At start, a tick
/// missed while no node ran (see [`missed_tick`]) is fired once.
pub(super) async fn schedules(intake: Intake) {
    let mut next: HashMap<String, (String, DateTime<Utc>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut at_start = true;
    let mut clock = StoreClock::default();
    let mut watch = TickWatch::default();
    loop {
        tick.tick().await;
        let first_pass = std::mem::take(&mut at_start);
        if intake.stopping() {
            return;
        }
        let config = intake.shared.config.current();
        let now = clock.now(&intake).await;
        let lease_secs = config.cluster.lease_secs;
        next.retain(|id, _| config.tenant(id).is_some());
        watch.retain(|id| config.tenant(id).is_some());
        for t in &config.tenants {
            let p = &t.import;
            let Some(expr) = p
                .schedule
                .as_ref()
                .filter(|_| p.trigger != crate::config::Trigger::Upload)
            else {
                next.remove(&t.id);
                watch.forget(&t.id);
                continue;
            };
            let key = format!("{expr}|{}", p.timezone);
            let due = match next.get(&t.id) {
                Some((k, at)) if *k == key => *at,
                _ => {
                    if let Some(at) = next_fire(expr, &p.timezone, now) {
                        tracing::info!(tenant = %t.id, schedule = %expr, timezone = %p.timezone, next = %at, "schedule set");
                        next.insert(t.id.clone(), (key, at));
                    }
                    if let Some(missed) = missed_tick(&intake, t, first_pass, now).await {
                        tracing::warn!(tenant = %t.id, schedule = %expr, tick = %missed, "running the schedule tick missed while Roster was stopped");
                        intake.request(&t.id, Request::Scheduled(missed));
                    }
                    continue;
                }
            };
            if now >= due {
                if fires_here(&intake, &t.id, due).await {
                    tracing::info!(tenant = %t.id, schedule = %expr, "schedule fired");
                    watch.forget(&t.id);
                    intake.request(&t.id, Request::Scheduled(due));
                } else {
                    watch.watch(&t.id, due, lease_secs, std::time::Instant::now());
                }
                match next_fire(expr, &p.timezone, now) {
                    Some(at) => {
                        next.insert(t.id.clone(), (key, at));
                    }
                    None => {
                        next.remove(&t.id);
                    }
                }
            }
        }
        for (tenant, tick) in watch.due(lease_secs, std::time::Instant::now()) {
            if asked_again(&intake, &tenant, tick).await {
                tracing::warn!(%tenant, %tick, "schedule fired on a second ask: the node that fired the tick is no longer alive (or the store could not be asked at the tick)");
                watch.forget(&tenant);
                intake.request(&tenant, Request::Scheduled(tick));
            }
        }
    }
}

/// One more ask for a watched tick (`tick_watch`): true when this node now fires it.
async fn asked_again(intake: &Intake, tenant: &str, tick: DateTime<Utc>) -> bool {
    let store = intake.shared.store.clone();
    let id = tenant.to_string();
    match tokio::task::spawn_blocking(move || store.fire_tick(&id, tick)).await {
        Ok(Ok(fires)) => fires,
        Ok(Err(e)) => {
            tracing::debug!(%tenant, %tick, "cannot ask the store about a watched schedule tick (asked again later): {e:#}");
            false
        }
        Err(_) => false,
    }
}

/// How often the store's clock is read again (between reads, this machine's clock plus the
/// last offset found).
const CLOCK_READ_EVERY: Duration = Duration::from_secs(60);

/// The store's clock as the schedules read it: this machine's clock corrected by the offset
/// to the store's (`Cluster::clock`), measured every [`CLOCK_READ_EVERY`]. Decision (review
/// s26): nodes fired ticks by their own clocks, so one running two minutes fast fired 07:30
/// for the whole cluster at 07:28, reported the file missing and left the 07:29 upload for
/// the next day. A store that cannot be read keeps the last offset.
#[derive(Default)]
struct StoreClock {
    offset: chrono::Duration,
    read_at: Option<tokio::time::Instant>,
}

impl StoreClock {
    async fn now(&mut self, intake: &Intake) -> DateTime<Utc> {
        let stale = self
            .read_at
            .is_none_or(|at| at.elapsed() >= CLOCK_READ_EVERY);
        if stale {
            self.read_at = Some(tokio::time::Instant::now());
            let store = intake.shared.store.clone();
            let read = tokio::task::spawn_blocking(move || {
                let before = Utc::now();
                let theirs = store.clock();
                (before, theirs, Utc::now())
            })
            .await;
            match read {
                Ok((before, Ok(theirs), after)) => self.offset = offset_of(before, theirs, after),
                Ok((_, Err(e), _)) => {
                    tracing::debug!(
                        "cannot read the store's clock; schedules keep the last offset: {e:#}"
                    )
                }
                Err(_) => {}
            }
        }
        Utc::now() + self.offset
    }
}

/// The store's clock minus this machine's, from a read of it made between `before` and
/// `after` (taken as read half-way).
fn offset_of(
    before: DateTime<Utc>,
    theirs: DateTime<Utc>,
    after: DateTime<Utc>,
) -> chrono::Duration {
    let midway = before + (after - before) / 2;
    theirs - midway
}

/// Whether this node fires the tenant's tick `due`: the store says yes to one node per tick
/// across the cluster (always, with sled), and yes again to that node if it asks twice. A
/// failed ask is tried again a few times (its answer may have been lost after the store
/// recorded this node's tick: skipping then ran the tick on no node; review of 2026-11-30,
/// PostgreSQL F4); when the store still cannot be asked, the tick is skipped and logged:
/// firing anyway could run it on every node. False either way; the schedules then watch the
/// tick and ask again (`tick_watch`).
async fn fires_here(intake: &Intake, tenant: &str, due: DateTime<Utc>) -> bool {
    let store = intake.shared.store.clone();
    let id = tenant.to_string();
    let asked = tokio::task::spawn_blocking(move || {
        let mut answer = store.fire_tick(&id, due);
        for _ in 0..TICK_ASKS {
            if answer.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
            answer = store.fire_tick(&id, due);
        }
        answer
    });
    match asked.await {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) => {
            tracing::info!(%tenant, tick = %due, "schedule fired on another node");
            false
        }
        Ok(Err(e)) => {
            tracing::error!(%tenant, tick = %due, "the schedule tick is skipped for now (asked again for a while): cannot record it in the store: {e:#}");
            false
        }
        Err(e) => {
            tracing::error!(%tenant, tick = %due, "the schedule tick is skipped: {e}");
            false
        }
    }
}

/// How far back a tick missed while Roster was stopped is still run at start.
const CATCH_UP: Duration = Duration::from_secs(6 * 3600);
/// Runs of the history looked at for a run since a tick.
const RECENT_RUNS: usize = 50;

/// At start (`first_pass`), the tenant's last tick before `now` if no node ran it: it is at
/// most [`CATCH_UP`] old, the history has a record before it (the schedule was in use; a fresh
/// install does not fire) and none since it (a tick that fired records an import or
/// `missing`), and no node fired it (`fire_tick`). Decision (review s15): a deploy or a
/// restart across 07:30 silently skipped the day's scheduled import, and with `only_today` a
/// `{date}` file never qualified again; only the last tick is run, once, and only within six
/// hours, so a schedule added with a restart does not fire for a tick long past.
async fn missed_tick(
    intake: &Intake,
    t: &crate::config::Tenant,
    first_pass: bool,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !first_pass {
        return None;
    }
    let expr = t.import.schedule.as_deref()?;
    let missed = previous_fire(expr, &t.import.timezone, now)?;
    if (now - missed).to_std().ok()? > CATCH_UP {
        return None;
    }
    // A tick of another day would look for today's file (`{date}`, `only_today`) and report
    // it missing: such a tick is left (re-read of s15).
    let calendar = super::pattern::TenantCalendar::of(&t.import);
    if calendar.date_of(missed) != calendar.today() {
        return None;
    }
    let store = intake.shared.store.clone();
    let id = t.id.clone();
    let ran = tokio::task::spawn_blocking(move || {
        let recent = store.history(&id, RECENT_RUNS)?;
        let before = recent.iter().any(|r| r.started_at < missed);
        let since = recent.iter().any(|r| r.started_at >= missed);
        anyhow::Ok(since || !before)
    })
    .await;
    match ran {
        Ok(Ok(false)) => {}
        Ok(Ok(true)) => return None,
        Ok(Err(e)) => {
            tracing::warn!(tenant = %t.id, "cannot read the history to find a missed schedule tick: {e:#}");
            return None;
        }
        Err(_) => return None,
    }
    fires_here(intake, &t.id, missed).await.then_some(missed)
}

/// True when the tenant's history has a run (not a `missing`) of a file that arrived after
/// `since` (`received_at`, the file's modification time). The file a tick itself ran arrived
/// before that tick, so it does not count for the next one: a day without a file after a day
/// with one is reported (the re-read of s15 found the first version, by `started_at`, silent
/// then).
fn file_came_since(
    store: &crate::store::Store,
    tenant: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let recent = store.history(tenant, RECENT_RUNS)?;
    Ok(recent
        .iter()
        .any(|r| r.received_at > since && r.status != crate::model::ImportStatus::Missing))
}

/// True when a file of the tenant came after the tick before `tick` and was run (uploaded and
/// imported between two ticks with `trigger = "both"`, or by `run-now`): the tick then finds
/// nothing and must not report the file missing (review s15: a false "missing" mail every day).
/// A client that keeps the source's modification time (`sftp -p`), older than that tick, is
/// still reported missing, as before.
pub(super) fn ran_since_last_tick(
    shared: &Shared,
    tenant: &crate::config::Tenant,
    tick: DateTime<Utc>,
) -> bool {
    let p = &tenant.import;
    let since = (p.schedule.as_deref())
        .and_then(|expr| previous_fire(expr, &p.timezone, tick))
        .unwrap_or(tick - chrono::Duration::days(1));
    match file_came_since(&shared.store, &tenant.id, since) {
        Ok(ran) => {
            if ran {
                tracing::info!(tenant = %tenant.id, %tick, "schedule tick found no file: one came and was run since the tick before");
            }
            ran
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant.id, "cannot read the history; the tick is reported as missing: {e:#}");
            false
        }
    }
}

/// How many more times a failed tick is asked for (2 s apart).
const TICK_ASKS: usize = 3;

/// The next time `expr` fires after `after`, in time zone `tz`.
pub fn next_fire(expr: &str, tz: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = croner::Cron::from_str(expr).ok()?;
    let tz: chrono_tz::Tz = tz.parse().ok()?;
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The last time `expr` fired before `before`, in time zone `tz`.
pub fn previous_fire(expr: &str, tz: &str, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = croner::Cron::from_str(expr).ok()?;
    let tz: chrono_tz::Tz = tz.parse().ok()?;
    cron.find_previous_occurrence(&before.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Deletes old archived files and reports, and change-log entries, import records and
/// file-ledger entries older than the tenant's `retention_days`, at start and then daily.
pub(super) async fn retention(intake: Intake) {
    let mut tick = tokio::time::interval(Duration::from_secs(86_400));
    loop {
        tick.tick().await;
        let config = intake.shared.config.current();
        for t in &config.tenants {
            let home = config.tenant_home(&t.id);
            let days = t.import.retention_days;
            let (store, id) = (intake.shared.store.clone(), t.id.clone());
            let removed = tokio::task::spawn_blocking(move || {
                match super::run::held_files(&store, &id) {
                    Ok(held) => super::archive::sweep(&home, days, &held),
                    Err(e) => {
                        tracing::warn!(tenant = %id, "retention: archived files not swept this time: cannot read the held runs: {e:#}");
                        0
                    }
                }
            })
            .await
            .unwrap_or(0);
            if removed > 0 {
                tracing::info!(tenant = %t.id, removed, days, "retention: old archived files deleted");
            }
            // Never panics: validation bounds `days`, and a date before the calendar trims nothing.
            let before = chrono::Duration::try_days(i64::from(days))
                .and_then(|d| Utc::now().checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
            // issue 12: change-log and event entries older than retention_days go too; and
            // so do import records (review s18 longrun F1: the history grew for good).
            let store = intake.shared.store.clone();
            let id = t.id.clone();
            let trimmed = tokio::task::spawn_blocking(move || {
                (
                    store.trim_changes(&id, before),
                    store.trim_history(&id, before),
                )
            })
            .await;
            let (changes, records) = match trimmed {
                Ok(both) => both,
                Err(e) => {
                    tracing::warn!(tenant = %t.id, "retention: the trim task failed: {e}");
                    continue;
                }
            };
            log_trim(&t.id, days, "change-log entries", changes);
            log_trim(&t.id, days, "import records", records);
        }
        sweep_outbox_files(&config).await;
    }
}

/// Deletes the `.eml` files (written without `[mail]`) older than the longest `retention_days`
/// of any tenant (review s18 longrun F3).
async fn sweep_outbox_files(config: &crate::config::Config) {
    let Some(days) = config.tenants.iter().map(|t| t.import.retention_days).max() else {
        return;
    };
    let outbox = config.server.data_dir.join("outbox");
    let dir = outbox.clone();
    let removed = tokio::task::spawn_blocking(move || crate::mail::remove_old_eml(&dir, days))
        .await
        .unwrap_or(0);
    if removed > 0 {
        tracing::info!(removed, days, folder = %outbox.display(), "retention: old .eml files deleted from the outbox folder");
    }
}

/// Logs what one retention trim of `tenant` removed, or why it could not.
fn log_trim(tenant: &str, days: u32, what: &str, result: anyhow::Result<u64>) {
    match result {
        Ok(0) => {}
        Ok(trimmed) => tracing::info!(tenant, trimmed, days, "retention: old {what} removed"),
        Err(e) => tracing::warn!(tenant, "retention: cannot trim the old {what}: {e:#}"),
    }
}

#[cfg(test)]
mod tests {

    /// A store clock two minutes ahead of this machine gives an offset of two minutes, whatever
    /// the read took (the store is taken as read half-way).
    #[test]
    fn the_store_clock_offset_is_measured_half_way() {
        let before = Utc::now();
        let after = before + chrono::Duration::milliseconds(400);
        let theirs = before + chrono::Duration::milliseconds(200) + chrono::Duration::minutes(2);
        assert_eq!(
            offset_of(before, theirs, after),
            chrono::Duration::minutes(2)
        );
        let behind = before + chrono::Duration::milliseconds(200) - chrono::Duration::seconds(5);
        assert_eq!(
            offset_of(before, behind, after),
            -chrono::Duration::seconds(5)
        );
    }
    use super::*;

    #[test]
    fn cron_in_a_time_zone() {
        let after = DateTime::parse_from_rfc3339("2026-11-21T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // 07:30 in Zagreb (UTC+1 in November) is 06:30 UTC.
        let at = next_fire("30 7 * * *", "Europe/Zagreb", after).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-21T06:30:00+00:00");
        let every5 = next_fire("*/5 * * * *", "UTC", after).unwrap();
        assert_eq!(every5.to_rfc3339(), "2026-11-21T05:05:00+00:00");
    }
}
