//! One tenant's worker: takes the tenant's requests off its queue one at a time (a file, the
//! claims to finish, a look at the folder, a schedule's tick, `run-now`, `approve`,
//! `restore`) and runs each under the tenant's lease on a blocking thread, within the
//! intake's import permits. A request that imports first finishes the claims left behind
//! (`recover_first`), so an older file never lands after a newer one.
//!
//! Requests enter from the queue `Intake::queue` made for the tenant; they leave as import
//! runs (`run::run_claimed`), history records, and answers on the requests' reply channels. A
//! file another node's lease holds is asked for again later (`lease::retry_after`).

use super::*;

/// The least time between two looks at a tenant's folder: files a look asks for that stay
/// (a claim that fails, a lease held elsewhere) must not make looks follow each other with
/// nothing between them (review s25).
const LOOK_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// One tenant's worker: runs its requests one at a time.
pub(super) async fn worker(
    intake: Intake,
    tenant: String,
    mut rx: mpsc::UnboundedReceiver<Request>,
    waiting: Arc<Mutex<HashSet<String>>>,
) {
    let mut last_look: Option<tokio::time::Instant> = None;
    while let Some(req) = rx.recv().await {
        if intake.stopping() {
            break;
        }
        let key = match &req {
            Request::File(name) => Some(name.as_str()),
            Request::Recover => Some(RECOVER_KEY),
            Request::Look => Some(LOOK_KEY),
            _ => None,
        };
        if let Some(key) = key {
            lock(&waiting).remove(key);
        }
        if let Request::Look = req {
            if let Some(at) = last_look {
                tokio::time::sleep_until(at + LOOK_PAUSE).await;
            }
            last_look = Some(tokio::time::Instant::now());
            look_at_folder(&intake, &tenant);
            continue;
        }
        if !store_answers(&intake, &tenant).await {
            break;
        }
        let config = intake.shared.config.current();
        let Some(t) = config.tenant(&tenant).cloned() else {
            tracing::warn!(%tenant, "tenant is no longer configured; request dropped");
            continue;
        };
        // An explicit request waits for the tenant's lease before it takes an import permit.
        let held = match waits_for_lease(&req) {
            false => None,
            true => {
                let stopping = || intake.stopping();
                let wait = lease::LEASE_WAIT;
                match lease::wait_take(&intake.shared.store, &tenant, wait, stopping).await {
                    None => break,
                    Some(Ok(held)) => Some(held),
                    Some(Err(e)) => {
                        refuse(req, &tenant, &e);
                        continue;
                    }
                }
            }
        };
        let permit = match intake.shared.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        intake.shared.running.send_modify(|n| *n += 1);
        let shared = intake.shared.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            handle(&shared, &t, req, held)
        })
        .await;
        intake
            .shared
            .running
            .send_modify(|n| *n = n.saturating_sub(1));
        match result {
            Ok(Handled::Done) => {}
            Ok(Handled::Later(name)) => ask_again_later(&intake, &tenant, &waiting, name),
            Ok(Handled::TickLater(tick)) => tick_again_later(&intake, &tenant, tick),
            Err(e) => {
                // A panic: the run is not running any more, whatever its progress said. Its
                // claim folder stays, for the next start to finish.
                set_progress(&intake.shared.progress, &tenant, None);
                tracing::error!(%tenant, "an import task failed: {e}; its claim is finished at the next start");
            }
        }
    }
}

/// Asks for each file the tenant's folder holds now ([`Request::Look`]).
fn look_at_folder(intake: &Intake, tenant: &str) {
    let config = intake.shared.config.current();
    if let Some(t) = config.tenant(tenant) {
        for name in ready::candidates(&config, t) {
            intake.request_file(tenant, &name);
        }
    }
}

/// Another node holds the tenant's lease (or the store is unreachable): the file stays where
/// it is and is asked for again after `lease::retry_after`. Its name stays waiting meanwhile,
/// so a look at the folder does not ask for it again at once.
fn ask_again_later(
    intake: &Intake,
    tenant: &str,
    waiting: &Arc<Mutex<HashSet<String>>>,
    name: String,
) {
    lock(waiting).insert(name.clone());
    let (again, tenant, waiting) = (intake.clone(), tenant.to_string(), waiting.clone());
    let after = lease::retry_after(&intake.shared);
    intake.spawn(async move {
        tokio::time::sleep(after).await;
        lock(&waiting).remove(&name);
        again.request_file(&tenant, &name);
    });
}

/// Whether `req` waits for the tenant's lease (up to [`lease::LEASE_WAIT`]) instead of being
/// asked for again later: the explicit requests, which someone waits for or which happen once.
fn waits_for_lease(req: &Request) -> bool {
    matches!(
        req,
        Request::Scheduled(_) | Request::Now(_) | Request::Approve(..) | Request::Restore(..)
    )
}

/// Answers a request of [`waits_for_lease`] whose lease could not be had.
fn refuse(req: Request, tenant: &str, e: &anyhow::Error) {
    match req {
        Request::Scheduled(_) => {
            tracing::error!(%tenant, "the scheduled run did not run: {e:#}");
        }
        Request::Now(reply) => {
            let why = format!("run-now did not run for tenant {tenant}: {e:#}");
            tracing::warn!(%tenant, "{why}");
            let _ = reply.send(Err(why));
        }
        Request::Approve(_, reply) => {
            let _ = reply.send(Err(passed_on(e)));
        }
        Request::Restore(_, reply) => {
            let _ = reply.send(Err(passed_on(e)));
        }
        Request::File(_) | Request::Recover | Request::Look => {}
    }
}

/// A copy of `e` for a reply, still marked [`Unavailable`](crate::store::Unavailable) when it
/// was, so the admin API answers a store outage 503 (s29: the copy lost the mark, and a
/// refused approve or restore was answered 409).
fn passed_on(e: &anyhow::Error) -> anyhow::Error {
    if !crate::store::is_unavailable(e) {
        return anyhow::anyhow!("{e:#}");
    }
    let mark = crate::store::Unavailable.to_string();
    let said: Vec<String> = (e.chain().map(|c| c.to_string()))
        .filter(|s| *s != mark)
        .collect();
    anyhow::anyhow!("{}", said.join(": ")).context(crate::store::Unavailable)
}

/// How long a schedule tick that found an upload under way waits for it, all told, before it
/// reports the file missing ([`ready::upload_under_way`]).
const TICK_WAITS_AT_MOST: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// How soon such a tick looks again.
const TICK_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// A schedule tick that found an upload under way is asked for again after
/// [`TICK_AGAIN_AFTER`]: it runs the file once the upload is done, or reports it missing once
/// [`TICK_WAITS_AT_MOST`] has passed since the tick.
fn tick_again_later(intake: &Intake, tenant: &str, tick: chrono::DateTime<chrono::Utc>) {
    let (again, tenant) = (intake.clone(), tenant.to_string());
    intake.spawn(async move {
        tokio::time::sleep(TICK_AGAIN_AFTER).await;
        again.request(&tenant, Request::Scheduled(tick));
    });
}

/// What became of a request.
enum Handled {
    Done,
    /// Ask for this file again later: another node holds the tenant's lease.
    Later(String),
    /// Run this schedule tick again later: it found an upload under way.
    TickLater(chrono::DateTime<chrono::Utc>),
}

/// Runs one request on a blocking thread, under the tenant's lease. `_held` is the lease the
/// worker took for a request of [`waits_for_lease`] (None for the others, which take it here
/// or ask again later); it is kept until the request is handled.
fn handle(
    shared: &Shared,
    tenant: &Tenant,
    req: Request,
    _held: Option<lease::TenantLease>,
) -> Handled {
    let config = shared.config.current();
    let home = config.tenant_home(&tenant.id);
    match req {
        Request::File(name) => {
            if qualifies(&config, tenant, &name).is_none() {
                tracing::debug!(tenant = %tenant.id, file = %name, "nothing to import (already taken, removed, or unfinished)");
                return Handled::Done;
            }
            let _lease = match lease::try_take(&shared.store, &tenant.id) {
                Ok(l) => l,
                Err(lease::NotLeased::Elsewhere) => {
                    tracing::debug!(tenant = %tenant.id, file = %name, "another node is importing for this tenant; asking again later");
                    return Handled::Later(name);
                }
                Err(lease::NotLeased::Failed(e)) => {
                    tracing::warn!(tenant = %tenant.id, file = %name, "cannot take the tenant's lease; the file waits and is asked for again: {e:#}");
                    return Handled::Later(name);
                }
            };
            // Claims left behind come first: they hold older files (see `recover_first`).
            if !recover_first(shared, tenant) {
                return Handled::Later(name);
            }
            // Another node may have taken the file while this one waited for the lease.
            if qualifies(&config, tenant, &name).is_some() {
                claim_and_run(shared, tenant, &home, &name);
            }
        }
        Request::Look => {} // the worker looks at the folder itself
        Request::Recover => match lease::try_take(&shared.store, &tenant.id) {
            Ok(_lease) => {
                lease::recover_claims(shared, tenant);
            }
            Err(lease::NotLeased::Elsewhere) => {
                tracing::debug!(tenant = %tenant.id, "another node holds the tenant's lease; its claims are left to it")
            }
            Err(lease::NotLeased::Failed(e)) => {
                tracing::warn!(tenant = %tenant.id, "cannot take the tenant's lease to finish its claims (tried again later): {e:#}")
            }
        },
        Request::Scheduled(tick) => {
            if !recover_first(shared, tenant) {
                return Handled::Done;
            }
            let files = candidates(&config, tenant);
            if files.is_empty() && !schedules::ran_since_last_tick(shared, tenant, tick) {
                let waited = chrono::Utc::now() - tick;
                if ready::upload_under_way(&config, tenant) && waited < TICK_WAITS_AT_MOST {
                    tracing::info!(tenant = %tenant.id, "the schedule fired while a file is being uploaded; the tick looks again in {} s", TICK_AGAIN_AFTER.as_secs());
                    return Handled::TickLater(tick);
                }
                record_missing(shared, tenant, tick);
            }
            for name in files {
                claim_and_run(shared, tenant, &home, &name);
            }
        }
        Request::Now(reply) => {
            let answer = run_now(shared, tenant, &config, &home);
            if let Err(why) = &answer {
                tracing::warn!(tenant = %tenant.id, "{why}");
            }
            let _ = reply.send(answer);
        }
        Request::Approve(id, reply) => {
            let result = match recover_first(shared, tenant) {
                true => run::approve_held(shared, tenant, &id),
                false => Err(lease::lost(&tenant.id)),
            };
            let _ = reply.send(result);
        }
        Request::Restore(key, reply) => {
            let _ = reply.send(crate::import::restore(&*shared.store, tenant, &key));
        }
    }
    Handled::Done
}

/// Right after a request that imports took the tenant's lease: finishes the claims left
/// behind (by a node that died, a process that stopped), oldest first, before anything newer
/// is applied. A claim holds a file that arrived before anything still in the tenant folder;
/// run after a newer file, it would overwrite it (review of 2026-12-02). Claims this process
/// made or gave up on are not retried here; a newer run makes them superseded at recovery
/// (`superseded`). False when another node took the lease meanwhile: the request imports
/// nothing.
fn recover_first(shared: &Shared, tenant: &Tenant) -> bool {
    lease::foreign_claims(shared, &tenant.id).is_empty() || lease::recover_claims(shared, tenant)
}

/// `run-now`: the records of the files waiting now, run under the tenant's lease (taken by
/// the worker); why nothing ran when files were waiting and none of their runs finished
/// (claimed by another node meanwhile, or failed and left to be retried).
fn run_now(
    shared: &Shared,
    tenant: &Tenant,
    config: &crate::config::Config,
    home: &std::path::Path,
) -> Result<Vec<ImportRecord>, String> {
    let t = &tenant.id;
    if !recover_first(shared, tenant) {
        return Err(format!("run-now did not run for tenant {t}: another node took the tenant's lease while this one finished the claims left behind; try again"));
    }
    let waiting = candidates(config, tenant);
    let records: Vec<ImportRecord> = (waiting.iter())
        .filter_map(|name| claim_and_run(shared, tenant, home, name))
        .collect();
    if records.is_empty() && !waiting.is_empty() {
        return Err(format!(
            "run-now found {} waiting for tenant {t} but no run finished: another node may have taken it, or the run failed and is retried; see the history and the server log",
            waiting.join(", ")
        ));
    }
    Ok(records)
}

fn claim_and_run(
    shared: &Shared,
    tenant: &Tenant,
    home: &std::path::Path,
    name: &str,
) -> Option<ImportRecord> {
    let span = tracing::info_span!(
        "run",
        tenant = %tenant.id,
        file = %name,
        import_id = tracing::field::Empty
    );
    let _enter = span.enter();
    let settle = std::time::Duration::from_millis(shared.config.current().server.settle_ms);
    if !super::ready::wait_until_quiet(&home.join(name), settle) {
        tracing::warn!("the file is gone, or still changing after {} s; left for its next event, rescan or tick",
            super::ready::WAIT_AT_MOST.as_secs());
        return None;
    }
    let work = run::work_dir(shared, &tenant.id);
    let uploads = InProgress::new(&shared.config.current().server.data_dir, &tenant.id);
    let claimed = match claim::claim(&work, home, name, &uploads) {
        Ok(Some(c)) => c,
        Ok(None) => {
            tracing::debug!("the file was taken or removed before it could be claimed");
            return None;
        }
        Err(e) => {
            tracing::warn!("cannot claim the file: {e:#}");
            return None;
        }
    };
    lease::settle(shared, &claimed.id);
    let dir = claimed.dir().to_path_buf();
    let mut out = None;
    let mut first = true;
    let done = with_retries(shared, &tenant.id, name, || {
        // After a failed attempt the run may have committed; recovery knows from the claim's
        // stamp in the store.
        out = if std::mem::take(&mut first) {
            Some(run::run_claimed(shared, tenant, &claimed)?)
        } else {
            // The lease may have expired meanwhile, and another node taken over this claim.
            lease::renew(&shared.store, &tenant.id)?;
            run::recover_claim(shared, tenant, &dir)?
        };
        Ok(())
    });
    if done {
        // Finished: its folder is gone, nothing to keep recovery away from.
        lease::unsettle(shared, &claimed.id);
    }
    out
}

/// The `missing` record of the schedule's tick at `tick`: the file expected is the one of the
/// tenant's date at the tick, even when the tick runs late (after midnight, say).
fn record_missing(shared: &Shared, tenant: &Tenant, tick: chrono::DateTime<chrono::Utc>) {
    let pattern = FilePattern::new(&tenant.import);
    let today = pattern::TenantCalendar::of(&tenant.import).date_of(tick);
    let expected = if pattern.has_date() {
        pattern.name_for(today)
    } else {
        tenant.import.file.clone()
    };
    let msg = format!(
        "The schedule fired but no file matching {:?} was there (expected {expected}). Check that the HR export ran and uploaded.",
        tenant.import.file
    );
    let made = run::own_record(
        shared,
        &tenant.id,
        &expected,
        ImportStatus::Missing,
        msg,
        0,
        chrono::Utc::now(),
    )
    .and_then(|r| {
        // The mail is queued with the record, so a crash between them cannot lose it
        // (review s18 crash F2).
        let mail = run_mail::own_record_mail(shared, tenant, &r);
        let lease = lease::lease_name(&tenant.id);
        (shared.store.record_leased(&r, mail.as_ref(), &lease)).map(|_| r)
    });
    match made {
        Ok(r) => {
            tracing::warn!(tenant = %tenant.id, import_id = %r.id, expected = %expected, "scheduled run found no file");
            shared.mail_wake.notify_one();
        }
        Err(e) => tracing::error!(tenant = %tenant.id, "cannot record a missing run: {e:#}"),
    }
}
