//! `roster login-blocks [--lift SCOPE SUBJECT] [--json]`: the login blocks in force, from
//! `GET /api/login-blocks`; `--lift address 203.0.113.9` or `--lift tenant acme` lifts one
//! (`POST /api/login-blocks/{scope}/{subject}/lift`).
//!
//! Data enters as those routes' JSON; it leaves as a table (scope, subject, failures, until,
//! where) or one sentence saying what `--lift` did. Subjects are [`table::clean`]ed.

use super::client::{seg, Client};
use super::table::{self, clean};
use serde_json::Value;

/// Lists the blocks, or lifts `lift` = [scope, subject].
pub(super) fn run(c: &Client, lift: Option<&[String]>) -> anyhow::Result<Value> {
    match lift {
        Some([scope, subject]) => c.post(
            &format!("/api/login-blocks/{}/{}/lift", seg(scope), seg(subject)),
            None,
        ),
        Some(_) => anyhow::bail!("--lift takes a scope (address or tenant) and a subject"),
        None => c.get("/api/login-blocks"),
    }
}

/// The blocks as a table.
pub(super) fn blocks_text(v: &Value) -> anyhow::Result<String> {
    let list = v["blocks"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return Ok("no login is blocked\n".to_string());
    }
    let text = |b: &Value, k: &str| b[k].as_str().map(clean).unwrap_or_default();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                text(b, "scope"),
                text(b, "subject"),
                b["failures"].as_u64().unwrap_or(0).to_string(),
                table::local_str(b["blocked_until"].as_str().unwrap_or("")),
                text(b, "source"),
            ]
        })
        .collect();
    let cols = [
        table::Col("SCOPE", false),
        table::Col("SUBJECT", false),
        table::Col("FAILURES", true),
        table::Col("BLOCKED UNTIL", false),
        table::Col("WHERE", false),
    ];
    Ok(table::table(&cols, &rows))
}

/// What `--lift` did, in one sentence.
pub(super) fn lifted_text(v: &Value) -> anyhow::Result<String> {
    let (scope, subject) = (
        clean(v["scope"].as_str().unwrap_or("")),
        clean(v["subject"].as_str().unwrap_or("")),
    );
    Ok(if v["lifted"].as_bool() == Some(true) {
        format!("lifted the block on {scope} {subject}; its failed logins are forgotten on every node\n")
    } else {
        format!(
            "{scope} {subject} was not blocked; its failed logins are forgotten on every node\n"
        )
    })
}
