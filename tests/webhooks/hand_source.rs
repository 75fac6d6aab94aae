//! The webhook tests' event source: events, changes and import records built by hand; cursors
//! and leases in a real sled store. The lease can be made to pass to "another node" after a
//! number of asks (`lease_asks_left`), or pass and come back under a new fencing number
//! (`lease_back_after`), to show what a node that lost it does.

use chrono::Utc;
use roster::config::WebhookConfig;
use roster::deliver::webhook::{consumer_id, send, EndpointDelivery, EventSource, PassOutcome};
use roster::model::changelog::{ChangeKind, Cursor, Event, EventType, LoggedChange};
use roster::model::{ImportRecord, ImportStatus};
use roster::store::Store;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

use super::webhooks::SECRET;

pub const TENANT: &str = "acme";

/// Events, changes and records by hand; cursors and leases in a real sled store.
pub struct HandSource {
    pub store: Store,
    /// Asks of the lease still answered yes; None: every ask (the sled store's answer).
    pub lease_asks_left: Mutex<Option<usize>>,
    /// Asks answered under fencing number 1; after them, the lease went to another node (2)
    /// and came back (3). None: always 1.
    pub lease_back_after: Mutex<Option<usize>>,
    pub events: Mutex<Vec<Event>>,
    pub changes: Mutex<Vec<LoggedChange>>,
    pub records: Mutex<Vec<ImportRecord>>,
    _dir: tempfile::TempDir,
}

impl HandSource {
    pub fn new() -> HandSource {
        let dir = tempfile::tempdir().unwrap();
        HandSource {
            store: Store::open(&dir.path().join("store")).unwrap(),
            lease_asks_left: Mutex::new(None),
            lease_back_after: Mutex::new(None),
            events: Mutex::new(Vec::new()),
            changes: Mutex::new(Vec::new()),
            records: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    /// An import of `keys`: its changes, a directory.changed event, then import.finished.
    pub fn import(&self, id: &str, keys: &[&str]) {
        let mut changes = self.changes.lock().unwrap();
        let first = changes.len() as u64 + 1;
        for key in keys {
            let seq = changes.len() as u64 + 1;
            changes.push(LoggedChange {
                seq,
                at: Utc::now(),
                import_id: Some(id.into()),
                key: key.to_string(),
                kind: ChangeKind::Created,
                fields: Vec::new(),
            });
        }
        let last = changes.len() as u64;
        self.push(EventType::DirectoryChanged, Some(id), Some((first, last)));
        let record = ImportRecord::begun(
            id.into(),
            TENANT,
            "users.csv",
            ImportStatus::Success,
            Utc::now(),
            Utc::now(),
        );
        self.records.lock().unwrap().push(record);
        self.push(EventType::ImportFinished, Some(id), None);
    }

    pub fn push(&self, kind: EventType, import_id: Option<&str>, changes: Option<(u64, u64)>) {
        let mut events = self.events.lock().unwrap();
        let seq = events.len() as u64 + 1;
        events.push(Event {
            seq,
            at: Utc::now(),
            kind,
            import_id: import_id.map(str::to_string),
            changes,
        });
    }
}

impl HandSource {
    /// The lease's fencing number now.
    fn fencing(&self) -> u64 {
        match *self.lease_back_after.lock().unwrap() {
            Some(0) => 3,
            _ => 1,
        }
    }
}

impl EventSource for HandSource {
    fn events(&self, _t: &str, after: u64, limit: usize) -> anyhow::Result<Vec<Event>> {
        let events = self.events.lock().unwrap();
        Ok(events
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }
    fn changes(&self, _t: &str, after: u64, limit: usize) -> anyhow::Result<Vec<LoggedChange>> {
        let changes = self.changes.lock().unwrap();
        Ok(changes
            .iter()
            .filter(|c| c.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }
    fn import_record(&self, _t: &str, id: &str) -> anyhow::Result<Option<ImportRecord>> {
        Ok(self
            .records
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .cloned())
    }
    fn cursor(&self, tenant: &str, consumer: &str) -> anyhow::Result<Cursor> {
        self.store.cursor(tenant, consumer)
    }
    fn save_cursor(&self, tenant: &str, consumer: &str, c: &Cursor) -> anyhow::Result<()> {
        self.store.save_cursor(tenant, consumer, c)
    }
    fn save_cursor_leased(
        &self,
        tenant: &str,
        consumer: &str,
        c: &Cursor,
        (_lease, fencing): (&str, u64),
    ) -> anyhow::Result<bool> {
        if *self.lease_asks_left.lock().unwrap() == Some(0) || fencing != self.fencing() {
            return Ok(false);
        }
        self.store.save_cursor(tenant, consumer, c)?;
        Ok(true)
    }
    fn take_lease(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let mut left = self.lease_asks_left.lock().unwrap();
        match left.as_mut() {
            Some(0) => return Ok(None),
            Some(n) => *n -= 1,
            None => {}
        }
        let fencing = self.fencing();
        if let Some(n) = self.lease_back_after.lock().unwrap().as_mut() {
            *n = n.saturating_sub(1);
        }
        EventSource::take_lease(&self.store, name)?;
        Ok(Some(fencing))
    }
    fn release_lease(&self, name: &str) -> anyhow::Result<()> {
        EventSource::release_lease(&self.store, name)
    }
}

pub fn endpoint(url: &str, events: Option<&[&str]>) -> EndpointDelivery {
    endpoint_with(url, events, send::TIMEOUT)
}

pub fn endpoint_with(url: &str, events: Option<&[&str]>, timeout: Duration) -> EndpointDelivery {
    let hook = WebhookConfig {
        url: url.into(),
        secret: SECRET.into(),
        previous_secret: None,
        events: events.map(|e| e.iter().map(|s| s.to_string()).collect()),
    };
    EndpointDelivery::new(TENANT, hook, send::agent(timeout)).unwrap()
}

pub fn pass(d: &EndpointDelivery, s: &HandSource) -> PassOutcome {
    d.pass(s, &AtomicBool::new(false)).unwrap()
}

pub fn cursor(s: &HandSource, url: &str) -> Cursor {
    s.store.cursor(TENANT, &consumer_id(url)).unwrap()
}

/// Passes until caught up (or `limit` passes), sleeping through retry waits.
pub fn drain(d: &EndpointDelivery, s: &HandSource, limit: usize) -> PassOutcome {
    let mut last = PassOutcome::CaughtUp;
    for _ in 0..limit {
        last = pass(d, s);
        match &last {
            PassOutcome::More => continue,
            PassOutcome::WaitUntil(at) => {
                std::thread::sleep((*at - Utc::now()).to_std().unwrap_or_default());
            }
            _ => return last,
        }
    }
    last
}
