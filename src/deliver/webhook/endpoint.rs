//! One endpoint's delivery pass: walks the events after its cursor, in order, one POST at a
//! time, and saves the cursor after each outcome.
//!
//! Data enters through the [`EventSource`] (cursor, events, bodies) and the endpoint's config;
//! it leaves as signed POSTs ([`send`](super::send)) and the cursor saved back: 2xx advances
//! it (`last_success`), a retry keeps it (`attempts`, `last_error`, `next_attempt` by
//! [`Backoff`] or the receiver's `Retry-After`), 410 Gone sets `disabled`. An event type the
//! endpoint does not subscribe to is passed over (the cursor advances). An endpoint seen for
//! the first time starts after the newest event: it gets what happens from then on, not the
//! history. Blocking: run a pass on a blocking thread.

use super::send::{self, SendOutcome};
use super::Signer;
use super::{consumer_id, lease_name, message, part_id, status::newest_event, EventSource};
use crate::config::WebhookConfig;
use crate::model::changelog::Cursor;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Events read from the store at once; a pass ends after one batch so config changes, the
/// lease and a stop are looked at again.
pub const BATCH: usize = 100;

/// Waits between failed attempts at one event: `first` after the first failure, doubling, at
/// most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// 1 s, 2 s, 4 s, ... at most 10 min.
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(600),
    };

    /// The wait after `attempts` failed attempts (0: none).
    pub fn delay(&self, attempts: u32) -> Duration {
        if attempts == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(attempts - 1).unwrap_or(u32::MAX);
        self.first
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// How a pass ended, and so when the next one is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// Every event so far is delivered (or passed over).
    CaughtUp,
    /// A batch went out and more may wait: run again at once.
    More,
    /// An attempt failed, or the last one did and its retry is not due: wait until then.
    WaitUntil(DateTime<Utc>),
    /// The endpoint answered 410 Gone once; nothing is sent to it any more.
    Disabled,
    /// Another node holds this endpoint's lease and delivers.
    OtherNode,
    /// The stop flag was raised between two events.
    Stopped,
}

/// Delivery to one endpoint of one tenant.
pub struct EndpointDelivery {
    pub tenant: String,
    pub hook: WebhookConfig,
    pub backoff: Backoff,
    signer: Signer,
    agent: ureq::Agent,
    consumer: String,
    lease: String,
}

impl EndpointDelivery {
    /// Delivery of `tenant`'s events to `hook` with the HTTP client `agent` (see
    /// [`send::agent`]); an error says what is wrong with the secret (or the previous one).
    pub fn new(tenant: &str, hook: WebhookConfig, agent: ureq::Agent) -> Result<Self, String> {
        let signer = Signer::rotating(&hook.secret, hook.previous_secret.as_deref())?;
        Ok(EndpointDelivery {
            tenant: tenant.to_string(),
            consumer: consumer_id(&hook.url),
            lease: lease_name(tenant, &hook.url),
            hook,
            backoff: Backoff::DEFAULT,
            signer,
            agent,
        })
    }

    /// The store lease this delivery holds while it runs.
    pub fn lease(&self) -> &str {
        &self.lease
    }

    /// Delivers what is due, up to one batch; stops between events when `stop` is raised.
    pub fn pass(&self, source: &dyn EventSource, stop: &AtomicBool) -> Result<PassOutcome> {
        self.pass_gated(source, stop, &|| true, &|| Some(Box::new(())))
    }

    /// As [`pass`](Self::pass), holding what `sending` gives (a sending permit) during each
    /// POST and only then, so a slow endpoint does not keep others waiting between its messages.
    /// When `sending` has none to give now, the pass ends (`More`) without waiting, so a pass
    /// never holds a blocking thread while it waits for a permit (the caller waits for one
    /// without a thread, then passes again). `current` says whether the endpoint's config is
    /// still the one in force; it is asked before every event, passed over or sent, and the
    /// pass ends (`More`) once it says no (reviewer s28: a reload that subscribed the endpoint
    /// to more types still saw the rest of the batch passed over under the old list).
    ///
    /// The endpoint's lease is asked for at the start of the pass and again after each
    /// message, before its outcome is saved (which is also the ask before the next message): a
    /// node that lost it (frozen past `lease_secs`, its heartbeats failing) stops and saves
    /// nothing, so it neither sends the rest of its batch beside the new holder nor writes its
    /// older cursor over the new holder's (reviewer s28). Each ask compares the lease's fencing
    /// number with the one the pass began under, and each save is refused by the store unless
    /// that number still holds, in the same transaction as the write (s29): a lease that
    /// passed to another node and came back, or passed between the ask and the save, saves
    /// nothing.
    pub fn pass_gated(
        &self,
        source: &dyn EventSource,
        stop: &AtomicBool,
        current: &dyn Fn() -> bool,
        sending: &dyn Fn() -> Option<Box<dyn Send>>,
    ) -> Result<PassOutcome> {
        let Some(fencing) = source.take_lease(&self.lease)? else {
            return Ok(PassOutcome::OtherNode);
        };
        let Some(mut cursor) = self.cursor(source, fencing)? else {
            return Ok(PassOutcome::OtherNode);
        };
        if cursor.disabled {
            return Ok(PassOutcome::Disabled);
        }
        if let Some(at) = cursor.next_attempt.filter(|at| *at > Utc::now()) {
            return Ok(PassOutcome::WaitUntil(at));
        }
        let events = source.events(&self.tenant, cursor.position, BATCH)?;
        let full = events.len() == BATCH;
        let mut changed = match events.first() {
            Some(first) => self.note_gap(&mut cursor, first.seq),
            None => false,
        };
        for event in events {
            if stop.load(Ordering::Relaxed) {
                self.save_if(source, changed, &cursor, fencing)?;
                return Ok(PassOutcome::Stopped);
            }
            if !current() {
                self.save_if(source, changed, &cursor, fencing)?;
                return Ok(PassOutcome::More);
            }
            if !self.hook.wants(event.kind) {
                cursor.position = event.seq;
                changed = true;
                continue;
            }
            // A `directory.changed` event too big for one body goes in parts (`message`),
            // each sent, and saved in the cursor's `state.part`, before the next.
            loop {
                let Some(permit) = sending() else {
                    self.save_if(source, changed, &cursor, fencing)?;
                    return Ok(PassOutcome::More);
                };
                let from = part_from(&cursor, event.seq);
                let part = message::part(source, &self.tenant, &event, from)?;
                let id = part_id(&self.tenant, &event, from);
                // Signed once the permit is held, so the timestamp is the sending time.
                let headers = self.signer.headers(&id, Utc::now().timestamp(), &part.body);
                let outcome = send::post(&self.agent, &self.hook.url, &headers, &part.body);
                drop(permit);
                if source.take_lease(&self.lease)? != Some(fencing) {
                    return Ok(PassOutcome::OtherNode);
                }
                let sent = (event.seq, part.next);
                let settled = self.settle(&mut cursor, sent, &id, outcome)?;
                if !self.save(source, &cursor, fencing)? {
                    return Ok(PassOutcome::OtherNode);
                }
                if let Some(done) = settled {
                    return Ok(done);
                }
                changed = false;
                if part.next.is_none() {
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(PassOutcome::Stopped);
                }
                if !current() {
                    return Ok(PassOutcome::More);
                }
            }
        }
        self.save_if(source, changed, &cursor, fencing)?;
        Ok(if full {
            PassOutcome::More
        } else {
            PassOutcome::CaughtUp
        })
    }

    /// The endpoint's cursor; at first sight, one after the newest event (saved under the
    /// lease's `fencing`; None when it passed).
    fn cursor(&self, source: &dyn EventSource, fencing: u64) -> Result<Option<Cursor>> {
        let cursor = source.cursor(&self.tenant, &self.consumer)?;
        if cursor != Cursor::default() {
            return Ok(Some(cursor));
        }
        let fresh = Cursor {
            position: newest_event(source, &self.tenant)?,
            next_attempt: Some(Utc::now()),
            ..Cursor::default()
        };
        if !self.save(source, &fresh, fencing)? {
            return Ok(None);
        }
        tracing::info!(tenant = %self.tenant, url = %super::shown_url(&self.hook.url), after_event = fresh.position,
            "new webhook endpoint: delivering the events after the newest one");
        Ok(Some(fresh))
    }

    /// Saves `cursor` while this node holds the endpoint's lease under `fencing`; false, and
    /// nothing saved, once it passed.
    fn save(&self, source: &dyn EventSource, cursor: &Cursor, fencing: u64) -> Result<bool> {
        let lease = (self.lease.as_str(), fencing);
        source.save_cursor_leased(&self.tenant, &self.consumer, cursor, lease)
    }

    /// Saves `cursor` when `changed` (and this node still holds the lease under `fencing`).
    fn save_if(
        &self,
        source: &dyn EventSource,
        changed: bool,
        cursor: &Cursor,
        fencing: u64,
    ) -> Result<()> {
        if changed {
            self.save(source, cursor, fencing)?;
        }
        Ok(())
    }

    /// Notes in `cursor` (its `state.lost`, shown by the admin API) and in the log the events
    /// the retention sweep removed before this endpoint got them: `first_seq`, the first event
    /// read, is past the one after the cursor (the event log has no gaps of its own). True
    /// when a gap was noted. Reviewer s28: an endpoint retrying or disabled for longer than
    /// `retention_days` went on after the gap without a word.
    fn note_gap(&self, cursor: &mut Cursor, first_seq: u64) -> bool {
        let missing = first_seq.saturating_sub(cursor.position.saturating_add(1));
        if missing == 0 {
            return false;
        }
        let (tenant, url) = (&self.tenant, super::shown_url(&self.hook.url));
        let note = format!(
            "{missing} events (after {}) were removed by retention before this endpoint got them",
            cursor.position
        );
        tracing::warn!(%tenant, %url, "webhook: {note}");
        let before = (cursor.state.as_ref())
            .and_then(|s| s["lost"]["events"].as_u64())
            .unwrap_or(0);
        let lost = serde_json::json!({
            "events": before.saturating_add(missing),
            "last": { "after": cursor.position, "events": missing, "at": Utc::now(), "note": note },
        });
        cursor.set_state("lost", lost);
        true
    }

    /// Records the outcome of sending a part of event `seq` in the cursor (the caller saves
    /// it): delivered, the event is done, or, when `next_part` names the change its next part
    /// starts with, that part is noted in `state.part`. Some when the pass ends here.
    fn settle(
        &self,
        cursor: &mut Cursor,
        (seq, next_part): (u64, Option<u64>),
        id: &str,
        outcome: SendOutcome,
    ) -> Result<Option<PassOutcome>> {
        let now = Utc::now();
        let (tenant, url) = (&self.tenant, super::shown_url(&self.hook.url));
        let done = match outcome {
            SendOutcome::Delivered(status) => {
                match next_part {
                    Some(next) => set_part(cursor, seq, Some(next)),
                    None => {
                        cursor.position = seq;
                        set_part(cursor, seq, None);
                    }
                }
                cursor.last_success = Some(now);
                cursor.last_error = None;
                cursor.attempts = 0;
                cursor.next_attempt = None;
                tracing::debug!(%tenant, %url, %id, status, "webhook delivered");
                None
            }
            SendOutcome::Retry { error, retry_after } => {
                cursor.attempts = cursor.attempts.saturating_add(1);
                // A Retry-After of 0 (or a past date) still waits the first backoff step.
                let wait = retry_after.map_or_else(
                    || self.backoff.delay(cursor.attempts),
                    |w| w.max(self.backoff.first),
                );
                let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                cursor.next_attempt = Some(at);
                cursor.last_error = Some(format!("{id}: {error}"));
                tracing::warn!(%tenant, %url, %id, attempts = cursor.attempts, next_attempt = %at,
                    "webhook not delivered, will retry: {error}");
                Some(PassOutcome::WaitUntil(at))
            }
            SendOutcome::Gone(error) => {
                cursor.disabled = true;
                cursor.next_attempt = None;
                cursor.last_error = Some(format!("{id}: {error}"));
                tracing::error!(%tenant, %url, %id,
                    "webhook endpoint disabled: it answered 410 Gone; `roster webhooks TENANT --enable N` resumes it");
                Some(PassOutcome::Disabled)
            }
        };
        Ok(done)
    }
}

/// Where the part of event `seq` to send starts: the change noted in the cursor's
/// `state.part` when it is this event's (a part of it was delivered), else its first.
fn part_from(cursor: &Cursor, seq: u64) -> Option<u64> {
    let part = cursor.state.as_ref()?.get("part")?;
    (part.get("event")?.as_u64()? == seq).then(|| part.get("next")?.as_u64())?
}

/// Notes in `cursor` that event `seq` goes on with change `next`, or (None) that no event is
/// part-way.
fn set_part(cursor: &mut Cursor, seq: u64, next: Option<u64>) {
    match next {
        Some(next) => cursor.set_state("part", serde_json::json!({ "event": seq, "next": next })),
        None => cursor.clear_state("part"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_ten_minutes() {
        let b = Backoff::DEFAULT;
        let secs: Vec<u64> = (0..5).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8]);
        assert_eq!(b.delay(11).as_secs(), 600);
        assert_eq!(b.delay(40).as_secs(), 600);
    }
}
