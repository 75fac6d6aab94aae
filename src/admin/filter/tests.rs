//! Unit tests of the SCIM filter parser (`admin::filter`).

use super::*;
use Attribute as A;

fn text(a: Attribute, op: Op, v: &str) -> UserFilter {
    UserFilter::Compare(a, op, Operand::Text(v.into()))
}

#[test]
fn comparisons_and_attribute_names() {
    assert_eq!(
        parse(r#"userName eq "Ana@X.example""#).unwrap(),
        text(A::UserName, Op::Eq, "Ana@X.example")
    );
    assert_eq!(
        parse(r#"urn:ietf:params:scim:schemas:core:2.0:User:externalId sw "00""#).unwrap(),
        text(A::MappingCode, Op::Sw, "00")
    );
    assert_eq!(
        parse(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department ne "HQ""#)
            .unwrap(),
        text(A::Field("org_unit"), Op::Ne, "HQ")
    );
    assert_eq!(
        parse("title pr").unwrap(),
        UserFilter::Present(A::Field("job_title"))
    );
    assert!(matches!(
        parse(r#"meta.lastModified gt "2026-11-01T00:00:00Z""#).unwrap(),
        UserFilter::Compare(A::Modified, Op::Gt, Operand::Time(_))
    ));
    // A quote inside a JSON string is data.
    assert_eq!(
        parse(r#"userName eq "x\" or \"1\" eq \"1""#).unwrap(),
        text(A::UserName, Op::Eq, r#"x" or "1" eq "1"#)
    );
}

#[test]
fn precedence_not_and_or_and_groups() {
    let a = || text(A::FirstName, Op::Eq, "a");
    let b = || text(A::LastName, Op::Eq, "b");
    let c = || UserFilter::Compare(A::Active, Op::Eq, Operand::Bool(true));
    let and = |x, y| UserFilter::And(Box::new(x), Box::new(y));
    let or = |x, y| UserFilter::Or(Box::new(x), Box::new(y));
    let f = r#"name.givenName eq "a" or name.familyName eq "b" and active eq true"#;
    assert_eq!(parse(f).unwrap(), or(a(), and(b(), c())));
    let f = r#"(name.givenName eq "a" or name.familyName eq "b") and active eq true"#;
    assert_eq!(parse(f).unwrap(), and(or(a(), b()), c()));
    let f = r#"not (name.givenName eq "a") AND active eq TRUE"#;
    assert_eq!(parse(f).unwrap(), and(UserFilter::Not(Box::new(a())), c()));
}

#[test]
fn value_paths_resolve_sub_attributes() {
    let f = r#"emails[type eq "work" and value co "@acme"]"#;
    assert_eq!(
        parse(f).unwrap(),
        UserFilter::And(
            Box::new(UserFilter::Present(A::Email)),
            Box::new(text(A::Email, Op::Co, "@acme"))
        )
    );
    let f = r#"emails[type eq "home"]"#;
    assert_eq!(
        parse(f).unwrap(),
        UserFilter::Not(Box::new(UserFilter::Everyone))
    );
    assert_eq!(
        parse("emails[primary eq true]").unwrap(),
        UserFilter::Present(A::Email)
    );
}

/// Review 2026-11-30 SCIM F6: a value path needs a value of its attribute.
#[test]
fn value_paths_need_a_value_of_their_attribute() {
    let has_email = || Box::new(UserFilter::Present(A::Email));
    assert_eq!(
        parse(r#"emails[value ne "x@y"]"#).unwrap(),
        UserFilter::And(has_email(), Box::new(text(A::Email, Op::Ne, "x@y")))
    );
    assert_eq!(
        parse(r#"emails[not (value eq "x@y")]"#).unwrap(),
        UserFilter::And(
            has_email(),
            Box::new(UserFilter::Not(Box::new(text(A::Email, Op::Eq, "x@y"))))
        )
    );
    // Where the inner filter needs a value anyway, it stays as it is.
    assert_eq!(
        parse(r#"emails[value eq "x@y"]"#).unwrap(),
        text(A::Email, Op::Eq, "x@y")
    );
    let groups = parse(r#"groups[not (value eq "Ops")]"#).unwrap();
    assert!(
        matches!(&groups, UserFilter::And(p, _) if **p == UserFilter::Present(A::Field("groups"))),
        "{groups:?}"
    );
}

/// Review 2026-11-30 SCIM F3: no stored value holds NUL; PostgreSQL cannot even be asked.
#[test]
fn a_nul_in_a_value_is_refused() {
    for f in [
        r#"userName eq "a\u0000b""#,
        r#"id eq "\u0000""#,
        r#"groups[value eq "x\u0000"]"#,
    ] {
        let e = parse(f).unwrap_err();
        assert!(e.contains("NUL"), "{f}: {e}");
    }
    assert!(equality(r#"displayName eq "a\u0000""#)
        .unwrap_err()
        .contains("NUL"));
}

/// Review 2026-11-30 SCIM F10: any spacing RFC 7644's tokens allow.
#[test]
fn one_equality_is_read_whatever_its_spacing() {
    let want = Some(("displayName".to_string(), "Sales".to_string()));
    for f in [
        r#"displayName eq "Sales""#,
        r#"displayName  eq "Sales""#,
        r#"displayName eq"Sales""#,
        "displayName\teq \"Sales\" ",
        r#"(displayName EQ "Sales")"#,
    ] {
        assert_eq!(equality(f).unwrap(), want, "{f}");
    }
    for f in [
        r#"displayName co "Sales""#,
        r#"displayName eq "a" or displayName eq "b""#,
        "displayName eq Sales",
        "",
    ] {
        assert_eq!(equality(f).unwrap(), None, "{f}");
    }
    assert!(equality(r#"displayName eq "Sales"#).is_err());
}

#[test]
fn bad_filters_say_why() {
    for (f, needle) in [
        ("", "empty"),
        (r#"userName zz "a""#, "not a filter operator"),
        (r#"userName eq "a"; DROP TABLE users"#, "unexpected"),
        (r#"userName eq "a"#, "not closed"),
        ("userName eq a", "double quotes"),
        (r#"password eq "x""#, "not supported"),
        (r#"(userName eq "a""#, "not closed"),
        (r#"not userName eq "a""#, "parenthesised"),
        ("active eq \"true\"", "without quotes"),
        ("active gt true", "only \"eq\" and \"ne\""),
        (r#"meta.created co "2026""#, "compare with eq"),
        (r#"meta.created gt "yesterday""#, "RFC 3339"),
        ("userName eq", "expected a value"),
        (r#"userName eq "a" and"#, "ends where"),
        (r#"userName eq "\x""#, "JSON"),
        (r#"emails[value[x eq "a"]]"#, "value path"),
    ] {
        let e = parse(f).unwrap_err();
        assert!(e.contains(needle), "{f:?}: {e}");
    }
    assert!(parse(&"a".repeat(5000)).unwrap_err().contains("at most"));
    let deep = format!("{}userName pr{}", "(".repeat(40), ")".repeat(40));
    assert!(parse(&deep).unwrap_err().contains("nests"));
}

#[test]
fn null_is_absent() {
    let title = A::Field("job_title");
    assert_eq!(
        parse("title eq null").unwrap(),
        UserFilter::Not(Box::new(UserFilter::Present(title.clone())))
    );
    assert_eq!(parse("title NE Null").unwrap(), UserFilter::Present(title));
    // emails.type is served as "work" whenever there is an email: null means "no email".
    assert_eq!(
        parse("emails.type eq null").unwrap(),
        UserFilter::Not(Box::new(UserFilter::Present(A::Email)))
    );
    let e = parse("title co null").unwrap_err();
    assert!(e.contains("null compares only with"), "{e}");
    // A string "null" is a value like any other.
    assert_eq!(
        parse(r#"title eq "null""#).unwrap(),
        text(A::Field("job_title"), Op::Eq, "null")
    );
}

/// Review finding 2: `emails.primary` is a boolean (RFC 7644 §3.4.2.2: `gt`/`ge`/`lt`/`le`
/// on a boolean are an `invalidFilter`), compared with `true`/`false` unquoted as `active` is.
#[test]
fn emails_primary_is_a_boolean() {
    for (f, needle) in [
        ("emails.primary gt false", "only \"eq\" and \"ne\""),
        ("emails[primary le true]", "only \"eq\" and \"ne\""),
        (r#"emails.primary eq "true""#, "without quotes"),
        (r#"emails.primary co "t""#, "without quotes"),
        (r#"emails.type eq work"#, "double quotes"),
    ] {
        let e = parse(f).unwrap_err();
        assert!(e.contains(needle), "{f:?}: {e}");
    }
    assert_eq!(
        parse("emails.primary EQ TRUE").unwrap(),
        UserFilter::Present(A::Email)
    );
}

/// Review finding 2: a fixed sub-attribute of a missing email follows the rule of every
/// comparison on a missing value (true for `ne` only), as `emails.value` does.
#[test]
fn fixed_sub_attributes_of_a_missing_value_match_ne_as_values_do() {
    use crate::model::{User, UserStatus};
    let user = |email: Option<&str>| User {
        key: "k".into(),
        status: UserStatus::Active,
        email: email.map(str::to_string),
        username: None,
        mapping_code: None,
        first_name: None,
        last_name: None,
        fields: Default::default(),
        attributes: Default::default(),
        has_password: false,
        managed: true,
        created_at: chrono::DateTime::UNIX_EPOCH,
        updated_at: chrono::DateTime::UNIX_EPOCH,
        deleted_at: None,
    };
    let (with, without) = (user(Some("a@x.example")), user(None));
    let value_ne = parse(r#"emails.value ne "x""#).unwrap();
    assert!(value_ne.matches(&with) && value_ne.matches(&without));
    for (f, with_email, without_email) in [
        (r#"emails.type ne "home""#, true, true),
        (r#"emails.type ne "WORK""#, false, true),
        (r#"emails.type eq "work""#, true, false),
        (r#"emails.type eq "home""#, false, false),
        ("emails.primary ne false", true, true),
        ("emails.primary ne true", false, true),
        ("emails.primary eq false", false, false),
        // In a value path, a user without an email has no value to match.
        (r#"emails[type ne "home"]"#, true, false),
        (r#"emails[primary ne true]"#, false, false),
    ] {
        let filter = parse(f).unwrap();
        assert_eq!(
            (filter.matches(&with), filter.matches(&without)),
            (with_email, without_email),
            "{f}"
        );
    }
}

/// Review finding 6: `pr` on a complex attribute is true when it has a non-empty
/// sub-attribute (RFC 7644 §3.4.2.2): `name` by the given or family name, the enterprise
/// `manager` by the manager field; other operators name the problem.
#[test]
fn pr_on_a_complex_attribute() {
    let name = UserFilter::Or(
        Box::new(UserFilter::Present(A::FirstName)),
        Box::new(UserFilter::Present(A::LastName)),
    );
    let manager = UserFilter::Present(A::Field("manager_email"));
    assert_eq!(parse("name pr").unwrap(), name);
    assert_eq!(
        parse("urn:ietf:params:scim:schemas:core:2.0:User:Name PR").unwrap(),
        name
    );
    assert_eq!(
        parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager pr").unwrap(),
        manager
    );
    assert_eq!(parse("manager pr and name pr").unwrap(), {
        UserFilter::And(Box::new(manager.clone()), Box::new(name.clone()))
    });
    assert_eq!(
        parse("name eq null").unwrap(),
        UserFilter::Not(Box::new(name))
    );
    assert_eq!(parse("manager ne null").unwrap(), manager);
    for f in [r#"name eq "Ann""#, r#"manager co "x""#, "name", "name zz"] {
        let e = parse(f).unwrap_err();
        assert!(e.contains("complex attribute"), "{f}: {e}");
    }
}
