//! `roster scim-push TENANT [--reconcile [--dry-run]] [--json]`: the client side of the admin
//! routes in `admin::scim_push`.
//!
//! Without `--reconcile` it prints the push's status (cursor, backlog, last success, failing
//! users with the provider's detail); with it, the drift between the application and the
//! directory, fixed unless `--dry-run`. Enters as the API's JSON, leaves as text on stdout (or
//! that JSON with `--json`). Every value shown as text is [`clean`]ed: the provider's detail
//! and error come from a third party and must not drive the operator's terminal.

use super::client::{seg, Client};
use super::table::clean;
use serde_json::Value;

/// Runs the command; returns the text to print.
pub fn run(
    c: &Client,
    tenant: &str,
    reconcile: bool,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<String> {
    let v = if reconcile {
        c.post(
            &format!(
                "/api/tenants/{}/scim-push/reconcile?dry_run={dry_run}",
                seg(tenant)
            ),
            None,
        )?
    } else {
        c.get(&format!("/api/tenants/{}/scim-push", seg(tenant)))?
    };
    if json {
        return Ok(super::table::json_text(&v, true)? + "\n");
    }
    Ok(if reconcile {
        drift_text(tenant, &v)
    } else {
        status_text(tenant, &v)
    })
}

/// The value of `k` as text for the terminal (`-` when absent), cleaned.
fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(x)) => clean(x),
        Some(other) => clean(&other.to_string()),
    }
}

fn status_text(tenant: &str, v: &Value) -> String {
    let more = if v["backlog_more"] == Value::Bool(true) {
        "+"
    } else {
        ""
    };
    let mut out = format!(
        "SCIM push of {tenant} to {}\n  position {}  backlog {}{more}  pushed {}\n  last success {}\n  last error {}\n",
        s(v, "url"),
        s(v, "position"),
        s(v, "backlog"),
        s(v, "pushed"),
        s(v, "last_success"),
        s(v, "last_error"),
    );
    if let Some(gap) = v["gap"]["note"].as_str() {
        out.push_str(&format!("  {}\n", clean(gap)));
    }
    let failing = v["failing"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("  failing users: {}\n", failing.len()));
    for f in failing {
        out.push_str(&format!(
            "    {}  {}  HTTP {}  {}\n",
            s(&f, "key"),
            s(&f, "kind"),
            s(&f, "status"),
            s(&f, "detail")
        ));
    }
    out
}

fn drift_text(tenant: &str, v: &Value) -> String {
    let dry = v["dry_run"] == Value::Bool(true);
    let mut out = format!(
        "{} of {tenant}: the application holds {} user(s)\n",
        if dry {
            "drift (dry run, nothing changed)"
        } else {
            "drift fixed"
        },
        s(v, "application_users")
    );
    for kind in ["create", "update", "deactivate", "delete", "foreign"] {
        let count = v[kind]["count"].as_u64().unwrap_or(0);
        out.push_str(&format!("  {kind}: {count}\n"));
        for k in v[kind]["keys"].as_array().into_iter().flatten() {
            out.push_str(&format!("    {}\n", clean(k.as_str().unwrap_or_default())));
        }
    }
    let errors = v["errors"].as_array().cloned().unwrap_or_default();
    if !errors.is_empty() {
        out.push_str(&format!("  errors: {}\n", errors.len()));
        for e in errors {
            out.push_str(&format!("    {}\n", clean(e.as_str().unwrap_or_default())));
        }
    }
    out
}
