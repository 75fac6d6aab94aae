use super::*;

fn text(a: Attribute, op: Op, v: &str) -> UserFilter {
    UserFilter::Compare(a, op, Operand::Text(v.into()))
}

#[test]
fn values_are_bound_never_spliced() {
    let f = text(Attribute::Email, Op::Co, "x'; DROP TABLE t; --%_");
    let c = condition(&f, 2).unwrap();
    assert!(!c.sql.contains("DROP"), "{}", c.sql);
    assert_eq!(
        c.params,
        vec![Param::Text("%x'; DROP TABLE t; --\\%\\_%".into())]
    );
    assert!(
        c.sql
            .contains("roster.fold(email) LIKE roster.fold($2::text)"),
        "{}",
        c.sql
    );
}

#[test]
fn placeholders_count_from_first_and_lossy_columns_are_not_translated() {
    let f = UserFilter::And(
        Box::new(text(Attribute::Key, Op::Eq, "a")),
        Box::new(UserFilter::Not(Box::new(text(
            Attribute::Custom("badge".into()),
            Op::Ne,
            "7",
        )))),
    );
    let c = condition(&f, 2).unwrap();
    assert!(c.sql.contains("$2") && c.sql.contains("$3") && c.sql.contains("$4"));
    assert_eq!(c.params.len(), 3);
    assert!(condition(&text(Attribute::Field("sex"), Op::Eq, "M"), 2).is_none());
    assert!(condition(&text(Attribute::Field("start_date"), Op::Eq, "x"), 2).is_none());
    let groups = condition(&text(Attribute::Field("groups"), Op::Sw, "x"), 2).unwrap();
    assert!(groups.sql.contains("unnest(groups)"), "{}", groups.sql);
    let email = condition(&text(Attribute::Email, Op::Eq, "Ann@X.example"), 2).unwrap();
    assert!(
        email.sql.contains("(email = roster.fold($2::text))"),
        "{}",
        email.sql
    );
    let groups = condition(&text(Attribute::Field("groups"), Op::Eq, "x"), 2).unwrap();
    assert!(
        groups.sql.contains("lower_items(groups) @>"),
        "{}",
        groups.sql
    );
}
