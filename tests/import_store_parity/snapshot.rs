//! One store's side of the parity test, what is read of it after each step (a [`Snapshot`] of
//! sections of lines), and the comparison of two sides.

use super::generator::Action;
use chrono::{DateTime, TimeZone, Utc};
use roster::config::Tenant;
use roster::import::{approve, restore, run_bytes, ImportOutcome, ImportStatus, RunOptions};
use roster::model::packed::{bucket_entries, UserRec};
use roster::model::User;
use roster::store::Store;
use std::collections::HashMap;

// --- one store's side of the comparison ---

/// One store and what the test remembers of it: its import ids by the step that made them,
/// the run it last held, and how far its change and event logs were read.
pub struct Side<'a> {
    pub name: &'static str,
    pub store: &'a Store,
    labels: HashMap<String, String>,
    last_held: Option<String>,
    /// The status of the run the last step made, if it made one.
    pub last_status: Option<ImportStatus>,
    change_seq: u64,
    event_seq: u64,
}

impl<'a> Side<'a> {
    pub fn new(name: &'static str, store: &'a Store) -> Side<'a> {
        Side {
            name,
            store,
            labels: HashMap::new(),
            last_held: None,
            last_status: None,
            change_seq: 0,
            event_seq: 0,
        }
    }

    /// `text` with every import id of this store replaced by the step that made it, and
    /// clock times (an approved run says when it was applied) masked.
    fn normalise(&self, text: &str) -> String {
        let mut out = mask_times(text);
        for (id, label) in &self.labels {
            out = out.replace(id.as_str(), label);
        }
        out
    }

    fn label(&self, id: Option<&str>) -> String {
        id.map_or("-".into(), |id| {
            self.labels
                .get(id)
                .cloned()
                .unwrap_or(format!("unknown id {id}"))
        })
    }

    /// Does `action` (step `step`) and describes what came of it.
    pub fn perform(&mut self, tenant: &Tenant, action: &Action, step: usize) -> Vec<String> {
        self.last_status = None;
        let received_at: DateTime<Utc> = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let opts = RunOptions {
            received_at,
            ..Default::default()
        };
        let run = match action {
            Action::Import(bytes) => run_bytes(self.store, tenant, "users.csv", bytes, &opts),
            Action::Approve => match self.last_held.clone() {
                Some(id) => approve(self.store, tenant, &id),
                None => return vec!["nothing was held".into()],
            },
            Action::Restore(key) => {
                return vec![match restore(&**self.store, tenant, key) {
                    Ok(user) => format!("restored {}", user_line(&user)),
                    Err(e) => format!("refused: {}", self.normalise(&format!("{e:#}"))),
                }];
            }
        };
        match run {
            Ok(outcome) => self.outcome_lines(&outcome, step),
            Err(e) => vec![format!("failed: {}", self.normalise(&format!("{e:#}")))],
        }
    }

    fn outcome_lines(&mut self, outcome: &ImportOutcome, step: usize) -> Vec<String> {
        let id = outcome.record.id.clone();
        self.labels
            .entry(id.clone())
            .or_insert_with(|| format!("<run of step {step}>"));
        self.last_status = Some(outcome.record.status);
        if outcome.record.status == ImportStatus::Held {
            self.last_held = Some(id);
        }
        let mut lines = vec![self.record_line(&outcome.record)];
        if let Some(report) = &outcome.report_csv {
            let report = String::from_utf8_lossy(report);
            lines.extend(
                report
                    .lines()
                    .map(|l| format!("report: {}", self.normalise(l))),
            );
        }
        lines
    }

    fn record_line(&self, r: &roster::import::ImportRecord) -> String {
        let messages: Vec<String> = r.messages.iter().map(|m| self.normalise(m)).collect();
        format!(
            "{} {} {:?} file={} sha256={} bytes={} encoding={} delimiter={:?} messages={messages:?}",
            self.label(Some(&r.id)),
            r.status,
            r.counts,
            r.file,
            r.sha256,
            r.bytes,
            r.encoding,
            r.delimiter
        )
    }
}

// --- what is compared ---

/// `text` with each RFC 3339 time (`2026-12-01T05:45:08.5+00:00`) replaced by `<time>`.
fn mask_times(text: &str) -> String {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let bytes = text.as_bytes();
    let starts_time = |at: usize| {
        bytes.len() >= at + SHAPE.len()
            && SHAPE.iter().zip(&bytes[at..]).all(|(&s, &b)| {
                if s == b'd' {
                    b.is_ascii_digit()
                } else {
                    b == s
                }
            })
    };
    let (mut out, mut at) = (String::new(), 0);
    while at < bytes.len() {
        if starts_time(at) {
            out.push_str("<time>");
            while at < bytes.len() && !b" \",;)".contains(&bytes[at]) {
                at += 1;
            }
            continue;
        }
        let c = text[at..].chars().next().unwrap();
        out.push(c);
        at += c.len_utf8();
    }
    out
}

/// Named sections of lines, compared section by section.
pub type Snapshot = Vec<(&'static str, Vec<String>)>;

fn user_line(u: &User) -> String {
    format!(
        "{} {:?} email={:?} username={:?} code={:?} first={:?} last={:?} fields={} \
         attributes={:?} has_password={} managed={} deleted_at_set={}",
        u.key,
        u.status,
        u.email,
        u.username,
        u.mapping_code,
        u.first_name,
        u.last_name,
        serde_json::to_string(&u.fields).unwrap(),
        u.attributes,
        u.has_password,
        u.managed,
        u.deleted_at.is_some()
    )
}

/// A stored record without its timestamps and password hash (salted: only whether there is
/// one). The password fingerprint is keyed by a per-store secret, and so is the row digest of
/// a row that gave a password: the digest is compared only while no fingerprint is stored.
fn record_line(key: &str, r: &UserRec) -> String {
    let no_fingerprint = r.pw_fp == [0; 16];
    let digest = if no_fingerprint {
        hex::encode(r.row_digest)
    } else {
        "(keyed)".into()
    };
    format!(
        "{key} status={} flags={} deleted_at_set={} has_hash={} fingerprint={} digest={digest} \
         fields={:?}",
        r.status,
        r.flags,
        r.deleted_at != 0,
        !r.pw_hash.is_empty(),
        !no_fingerprint,
        r.fields
    )
}

/// Every stored record of the tenant, read bucket by bucket through the import's own seam.
fn stored_records(store: &Store, tenant: &str) -> Vec<String> {
    let state = store.tenant_state(tenant).unwrap();
    let mut lines = Vec::new();
    for (bucket, &gen) in state.gens.iter().enumerate() {
        if gen == 0 {
            continue;
        }
        let packed = store.bucket(tenant, bucket as u16, gen).unwrap();
        for (key, rec) in bucket_entries(packed.as_deref().unwrap_or_default()).unwrap() {
            let key = String::from_utf8_lossy(key);
            lines.push(record_line(&key, &UserRec::decode(rec).unwrap()));
        }
    }
    lines.sort();
    lines
}

fn directory_sections(side: &Side, tenant: &str) -> Snapshot {
    let store = side.store;
    let state = store.tenant_state(tenant).unwrap();
    let state_line = format!(
        "version={} last_applied={:?}",
        state.version, state.last_applied_sha256
    );
    let users = store.users(tenant, None).unwrap();
    let groups = store.groups_page(tenant, None, 0, 10_000).unwrap();
    let mut group_lines = vec![format!(
        "user counts {:?}",
        store.user_counts(tenant).unwrap()
    )];
    group_lines.push(format!("groups total {}", groups.total));
    group_lines.extend(
        groups
            .groups
            .iter()
            .map(|g| format!("{:?}: {}", g.name, g.members)),
    );
    vec![
        ("tenant state", vec![state_line]),
        ("users", users.iter().map(user_line).collect()),
        ("stored records", stored_records(store, tenant)),
        ("groups and counts", group_lines),
    ]
}

fn run_log_sections(side: &Side, tenant: &str) -> Snapshot {
    let store = side.store;
    let history = store.history(tenant, 1000).unwrap();
    let held = store.held_plans(tenant).unwrap();
    vec![
        (
            "history",
            history.iter().map(|r| side.record_line(r)).collect(),
        ),
        (
            "held plans",
            held.iter().map(|id| side.label(Some(id))).collect(),
        ),
    ]
}

/// The change-log and event-log entries added since the last read, and moves past them. Their
/// `seq` is compared too: both stores number a tenant's entries from 1 without gaps, in the
/// commit's bucket order and then the order staged (`store::sled::changes`,
/// `store::postgres::changes`), so equal runs give equal numbers.
fn log_sections(side: &mut Side, tenant: &str) -> Snapshot {
    let changes = side
        .store
        .changes(tenant, side.change_seq, 100_000)
        .unwrap();
    let events = side.store.events(tenant, side.event_seq, 100_000).unwrap();
    side.change_seq = changes.last().map_or(side.change_seq, |c| c.seq);
    side.event_seq = events.last().map_or(side.event_seq, |e| e.seq);
    let change_lines = changes
        .iter()
        .map(|c| {
            let fields: Vec<String> = c
                .fields
                .iter()
                .map(|f| format!("{}: {:?} -> {:?}", f.field, f.old, f.new))
                .collect();
            let import = side.label(c.import_id.as_deref());
            format!("seq={} {import} {:?} {} {fields:?}", c.seq, c.kind, c.key)
        })
        .collect();
    let event_lines = events
        .iter()
        .map(|e| {
            let import = side.label(e.import_id.as_deref());
            format!(
                "seq={} {:?} {import} changes={:?}",
                e.seq, e.kind, e.changes
            )
        })
        .collect();
    vec![
        ("change log (this step)", change_lines),
        ("event log (this step)", event_lines),
    ]
}

pub fn snapshot(side: &mut Side, tenant: &str, outcome: Vec<String>) -> Snapshot {
    let mut all = vec![("outcome", outcome)];
    all.extend(run_log_sections(side, tenant));
    all.extend(directory_sections(side, tenant));
    all.extend(log_sections(side, tenant));
    all
}

/// The lines of `a` not matched by a line of `b` (as multisets).
fn only_in<'s>(a: &'s [String], b: &[String]) -> Vec<&'s String> {
    let mut left: HashMap<&str, usize> = HashMap::new();
    for line in b {
        *left.entry(line.as_str()).or_default() += 1;
    }
    a.iter()
        .filter(|line| match left.get_mut(line.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

fn show(lines: &[&String]) -> String {
    let mut out: Vec<String> = lines
        .iter()
        .take(40)
        .map(|l| format!("      {l}\n"))
        .collect();
    if lines.len() > 40 {
        out.push(format!("      … {} more\n", lines.len() - 40));
    }
    out.concat()
}

/// Ok when both snapshots are equal; else a readable diff of the sections that differ.
pub fn compare(a: (&str, &Snapshot), b: (&str, &Snapshot)) -> Result<(), String> {
    let mut diff = String::new();
    for ((name, left), (_, right)) in a.1.iter().zip(b.1) {
        if left == right {
            continue;
        }
        let (only_a, only_b) = (only_in(left, right), only_in(right, left));
        diff.push_str(&format!("  {name}:\n"));
        if only_a.is_empty() && only_b.is_empty() {
            diff.push_str("    the same lines in another order\n");
            let (la, lb): (Vec<&String>, Vec<&String>) =
                (left.iter().collect(), right.iter().collect());
            diff.push_str(&format!(
                "    {}:\n{}    {}:\n{}",
                a.0,
                show(&la),
                b.0,
                show(&lb)
            ));
            continue;
        }
        diff.push_str(&format!("    only on {}:\n{}", a.0, show(&only_a)));
        diff.push_str(&format!("    only on {}:\n{}", b.0, show(&only_b)));
    }
    if diff.is_empty() {
        Ok(())
    } else {
        Err(diff)
    }
}
