use super::*;
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
