use super::*;
use crate::config::ScimOnMissing;
use crate::model::FieldChange;

fn change(seq: u64, key: &str, kind: ChangeKind, fields: &[(&str, Option<&str>)]) -> LoggedChange {
    LoggedChange {
        seq,
        at: Utc::now(),
        import_id: None,
        key: key.into(),
        kind,
        fields: fields
            .iter()
            .map(|(f, n)| FieldChange {
                field: f.to_string(),
                old: Some("x".into()),
                new: n.map(str::to_string),
            })
            .collect(),
    }
}

#[test]
fn a_batch_groups_by_user_in_order_and_tracks_cleared_fields() {
    let c = [
        change(1, "a", ChangeKind::Created, &[]),
        change(2, "b", ChangeKind::Updated, &[("job_title", None)]),
        change(3, "a", ChangeKind::Updated, &[("phone", None)]),
        change(4, "b", ChangeKind::Updated, &[("job_title", Some("Boss"))]),
    ];
    let g = group(&c);
    assert_eq!(g.len(), 2);
    assert_eq!((g[0].key.as_str(), g[0].first_seq), ("a", 1));
    assert_eq!(g[0].kind, ChangeKind::Updated);
    assert!(g[0].cleared.contains("phone"));
    assert!(g[1].cleared.is_empty());
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(4), Duration::from_secs(8));
    assert_eq!(backoff(40), MAX_BACKOFF);
}

fn pusher(tenant: &str) -> Pusher {
    let cfg = ScimPushConfig {
        url: "http://127.0.0.1:9/scim".into(),
        token: None,
        token_env: None,
        on_missing: ScimOnMissing::Deactivate,
        attributes: BTreeMap::new(),
    };
    Pusher::new(tenant, &cfg).unwrap()
}

fn works(n: u64) -> Vec<UserWork> {
    let c: Vec<LoggedChange> = (1..=n)
        .map(|i| change(i, &format!("u{i}"), ChangeKind::Created, &[]))
        .collect();
    group(&c)
}

fn refused(status: u16) -> Option<PushResult> {
    Some(Err(ScimError::new(Some(status), "refused")))
}

#[test]
fn a_batch_refused_alike_with_nothing_through_holds_the_cursor() {
    let p = pusher("t-unit-breaker");
    let work = works(6);
    let all_400 = (0..6).map(|_| refused(400)).collect();
    let t = p.tally(&work, all_400, Utc::now());
    assert_eq!(
        (t.failed, t.hold_seq),
        (0, Some(1)),
        "held before the first user"
    );
    let e = t.hold_err.map(|(_, e)| e).unwrap();
    assert!(e.transient() && e.status == Some(400), "{e:?}");
    assert!(p.status().failing.is_empty());
    assert!(p
        .status()
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("400"));
    // Mixed statuses, too few refusals, or one success: each user's own refusal.
    let mut mixed: Vec<_> = (0..5).map(|_| refused(400)).collect();
    mixed.push(refused(409));
    assert_eq!(p.tally(&work, mixed, Utc::now()).failed, 6);
    let p = pusher("t-unit-breaker-2");
    let few = (0..4).map(|_| refused(400)).collect();
    assert_eq!(p.tally(&work[..4], few, Utc::now()).failed, 4);
    let mut one_ok: Vec<_> = (0..5).map(|_| refused(400)).collect();
    one_ok.push(Some(Ok(Action::Created)));
    let t = p.tally(&work, one_ok, Utc::now());
    assert_eq!((t.failed, t.pushed, t.hold_seq), (5, 1, None));
}

#[test]
fn a_full_failing_list_holds_the_cursor_instead_of_dropping_users() {
    let p = pusher("t-unit-full");
    let now = Utc::now();
    for i in 0..MAX_FAILING {
        let kept = p.status().fail(Failure {
            key: format!("old{i}"),
            kind: "created".into(),
            status: Some(409),
            detail: "taken".into(),
            at: now,
            attempts: 1,
            next_attempt: now,
            cleared: BTreeSet::new(),
        });
        assert!(kept);
    }
    let work = works(2);
    let t = p.tally(&work, vec![Some(Ok(Action::Created)), refused(409)], now);
    assert_eq!((t.pushed, t.failed, t.hold_seq), (1, 0, Some(2)));
    let st = p.status();
    assert_eq!(st.failing.len(), MAX_FAILING);
    assert!(st.failing.contains_key("old0"), "nobody was dropped");
    assert!(st
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("failing already"));
}

#[test]
fn a_retry_after_shorter_than_the_backoff_waits_the_backoff() {
    let after = |secs| ScimError {
        retry_after: Some(Duration::from_secs(secs)),
        ..ScimError::new(Some(429), "slow down")
    };
    assert_eq!(wait_after(&after(0), 1), Duration::from_secs(1));
    assert_eq!(wait_after(&after(0), 4), Duration::from_secs(8));
    assert_eq!(wait_after(&after(1), 3), Duration::from_secs(4));
    assert_eq!(wait_after(&after(30), 2), Duration::from_secs(30));
    let none = ScimError::new(Some(503), "down");
    assert_eq!(wait_after(&none, 3), Duration::from_secs(4));
}

#[test]
fn a_user_failing_transiently_while_others_go_through_is_kept_as_failing_at_the_fifth_batch() {
    let p = pusher("t-unit-strikes");
    let work = works(3);
    let batch = |first: u16| {
        vec![
            Some(Err(ScimError::new(Some(first), "boom"))),
            Some(Ok(Action::Created)),
            Some(Ok(Action::Updated)),
        ]
    };
    let nothing_through = || vec![Some(Err(ScimError::new(Some(500), "boom"))), None, None];
    for _ in 1..tally::MAX_STRIKES {
        let t = p.tally(&work, batch(500), Utc::now());
        assert_eq!((t.failed, t.hold_seq), (0, Some(1)));
        // A batch in which nothing went through, or a 429, says nothing about the user.
        assert_eq!(p.tally(&work, nothing_through(), Utc::now()).failed, 0);
        assert_eq!(p.tally(&work, batch(429), Utc::now()).hold_seq, Some(1));
    }
    let t = p.tally(&work, batch(500), Utc::now());
    assert_eq!(
        (t.pushed, t.failed, t.hold_seq),
        (2, 1, None),
        "the cursor goes on"
    );
    let st = p.status();
    let f = st.failing.get("u1").expect("kept as failing");
    assert_eq!(f.status, Some(500));
    assert!(
        f.detail.contains("in a row") && f.detail.contains("boom"),
        "{f:?}"
    );
}

/// A change log in memory, its cursor kept in a cell.
struct MemSource {
    changes: Vec<LoggedChange>,
    cursor: Mutex<Cursor>,
}

impl ChangeSource for MemSource {
    fn changes(&self, after: u64, limit: usize) -> Result<Vec<LoggedChange>> {
        let after = self.changes.iter().filter(|c| c.seq > after);
        Ok(after.take(limit).cloned().collect())
    }
    fn user(&self, _key: &str) -> Result<Option<User>> {
        Ok(None)
    }
    fn cursor(&self) -> Result<Cursor> {
        Ok(self.cursor.lock().unwrap().clone())
    }
    fn save_cursor(&self, cursor: &Cursor) -> Result<()> {
        *self.cursor.lock().unwrap() = cursor.clone();
        Ok(())
    }
}

/// Review s27: a node that froze past its lease (another node took over the tenant's push)
/// must not push stale changes when it wakes. Past the deadline no user is started and the
/// cursor waits where it was, with no failure counted; before it, the same batch is tried
/// (here against a port where nothing listens, so it fails and says so).
#[test]
fn no_user_is_started_once_the_lease_time_is_up() {
    let src = MemSource {
        changes: (1..=3)
            .map(|i| change(i, &format!("u{i}"), ChangeKind::Created, &[]))
            .collect(),
        cursor: Mutex::new(Cursor::default()),
    };
    let p = pusher("t-unit-lease");
    p.hold_until(Instant::now() - Duration::from_millis(1));
    let batch = p.run_batch(&src, Utc::now()).unwrap();
    assert!(
        matches!(
            batch,
            Batch::Pushed {
                pushed: 0,
                failed: 0,
                position: 0
            }
        ),
        "{batch:?}"
    );
    let c = src.cursor().unwrap();
    assert_eq!((c.position, c.attempts, c.last_error.clone()), (0, 0, None));

    p.hold_until(Instant::now() + Duration::from_secs(60));
    p.run_batch(&src, Utc::now()).unwrap();
    let c = src.cursor().unwrap();
    assert_eq!(c.position, 0);
    assert!(c.last_error.is_some() && c.attempts == 1, "{c:?}");
}
