use super::{compare, Kind, KindCheck, Pages, TenantCheck};

/// `entries` paged two at a time after a seq, as a store's `changes` would page them.
fn paged(entries: Vec<(u64, &'static str)>) -> Pages<'static, (u64, &'static str), u64> {
    Pages::new(
        0,
        |e| e.0,
        move |after: &u64| {
            Ok(entries
                .iter()
                .filter(|e| e.0 > *after)
                .take(2)
                .copied()
                .collect())
        },
    )
}

fn check(kind: Kind, counts: [u64; 2], at: Option<&str>) -> KindCheck {
    KindCheck {
        kind,
        counts,
        first_difference: at.map(str::to_string),
    }
}

#[test]
fn equal_logs_over_several_pages_match() {
    let log = vec![(1, "a"), (2, "b"), (3, "c"), (5, "d"), (6, "e")];
    let got = compare(Kind::Changes, paged(log.clone()), paged(log)).unwrap();
    assert_eq!(got, check(Kind::Changes, [5, 5], None));
    assert_eq!(got.to_string(), "changes 5 = 5");
}

#[test]
fn the_first_differing_seq_is_named_and_both_sides_counted() {
    let from = vec![(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")];
    let altered = vec![(1, "a"), (2, "b"), (3, "X"), (4, "d"), (5, "e")];
    let got = compare(Kind::Changes, paged(from.clone()), paged(altered)).unwrap();
    assert_eq!(got, check(Kind::Changes, [5, 5], Some("seq 3")));
    assert!(!got.matches());

    let missing = vec![(1, "a"), (2, "b"), (3, "c"), (5, "e")];
    let got = compare(Kind::Events, paged(from.clone()), paged(missing)).unwrap();
    assert_eq!(got, check(Kind::Events, [5, 4], Some("seq 4")));
    assert_eq!(got.to_string(), "events 5 = 4 (first difference at seq 4)");

    let extra = vec![(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f")];
    let got = compare(Kind::Events, paged(from), paged(extra)).unwrap();
    assert_eq!(got, check(Kind::Events, [5, 6], Some("seq 6")));
}

#[test]
fn whole_lists_compare_by_key() {
    let a = vec![("hook-a".to_string(), 1), ("hook-b".to_string(), 2)];
    let b = vec![("hook-b".to_string(), 2)];
    let got = compare(
        Kind::Cursors,
        Pages::whole(a, |c| c.0.clone()),
        Pages::whole(b, |c| c.0.clone()),
    )
    .unwrap();
    assert_eq!(got, check(Kind::Cursors, [2, 1], Some("consumer hook-a")));
}

#[test]
fn a_check_matches_only_when_every_count_and_entry_is_equal() {
    let same = TenantCheck {
        tenant: "acme".into(),
        users: [(3, 2, 1), (3, 2, 1)],
        records: [4, 4],
        plans: [1, 1],
        entries: vec![
            check(Kind::Ledger, [2, 2], None),
            check(Kind::Changes, [7, 7], None),
        ],
    };
    assert!(same.matches());
    assert!(same.differences().is_empty());
    assert_eq!(
        same.to_string(),
        "acme: users active 3 = 3, inactive 2 = 2, deleted 1 = 1; records 4 = 4; \
         plans 1 = 1; ledger 2 = 2; changes 7 = 7: ok"
    );
    let altered = TenantCheck {
        entries: vec![
            check(Kind::Ledger, [2, 2], None),
            check(Kind::Changes, [7, 7], Some("seq 3")),
        ],
        ..same.clone()
    };
    assert_eq!(
        altered.differences(),
        vec![
            "tenant acme, the change log: the first difference is at seq 3 (7 entr(ies) \
             embedded, 7 on PostgreSQL)"
        ]
    );
    for broken in [
        TenantCheck {
            users: [(3, 2, 1), (3, 1, 1)],
            ..same.clone()
        },
        TenantCheck {
            records: [4, 3],
            ..same.clone()
        },
        TenantCheck {
            plans: [1, 0],
            ..same.clone()
        },
        altered,
    ] {
        assert!(!broken.matches(), "{broken}");
        assert!(broken.to_string().ends_with(": MISMATCH"), "{broken}");
        assert_eq!(broken.differences().len(), 1, "{broken}");
    }
}
