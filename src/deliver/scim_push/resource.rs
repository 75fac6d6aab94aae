//! A Roster [`User`] as a SCIM 2.0 User resource of the application (RFC 7643), and the PATCH
//! operations that bring an application's user to it.
//!
//! Data enters as a user read from the directory, the change-log fields of the changes being
//! pushed, and the tenant's `[tenants.scim_push.attributes]` table; it leaves as JSON bodies for
//! `POST`/`PUT`/`PATCH` (RFC 7644 §3.3, §3.5). Pure: no I/O.
//!
//! Built-in mapping: `externalId` = key; `userName` = username, else email, else key;
//! `name.givenName`/`familyName` and `displayName`; `emails` (work, primary); `active`;
//! `phoneNumbers` (work); `title` = job_title; `preferredLanguage` = language; `timezone`; the
//! enterprise extension's `employeeNumber` = mapping_code and `department` = org_unit. The
//! attributes table adds paths or overrides these. The enterprise `manager.value` is the
//! application's id of the user whose email is `manager_email`, set by [`with_manager`] once
//! the pusher has found it, and removed ([`Manager`]) when `manager_email` is emptied or names
//! somebody the application does not have.

use crate::model::fields::{custom_name, EMAIL, FIRST_NAME, LAST_NAME, MAPPING_CODE, USERNAME};
use crate::model::{User, UserStatus};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The enterprise `manager`, removed when `manager_email` is emptied (see [`Manager`]).
pub const MANAGER_PATH: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
/// The Roster field naming a user's manager by email.
pub const MANAGER_EMAIL: &str = "manager_email";

/// What a push does with the application's enterprise `manager` of a user (decided by
/// `managers::resolve` from `manager_email` and the application's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manager {
    /// Set `manager.value` to this application id.
    Set(String),
    /// Remove the application's `manager`: the directory names a manager the application does
    /// not have (yet). Keeping the old one would send approvals to the previous manager.
    Remove,
    /// Leave it as the application has it: no `manager_email` (an emptied one is removed
    /// through [`cleared_paths`]), or the lookup failed, which says nothing about who it is.
    Keep,
}

/// The built-in attributes: (SCIM path, Roster field), single-valued strings.
const SIMPLE: &[(&str, &str)] = &[
    ("name.givenName", FIRST_NAME),
    ("name.familyName", LAST_NAME),
    ("title", "job_title"),
    ("preferredLanguage", "language"),
    ("timezone", "timezone"),
    (
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        MAPPING_CODE,
    ),
    (
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        "org_unit",
    ),
];

/// The value of a Roster field of `u` as text (a list joined with ", ").
pub fn field_value(u: &User, name: &str) -> Option<String> {
    let member = match name {
        EMAIL => &u.email,
        USERNAME => &u.username,
        MAPPING_CODE => &u.mapping_code,
        FIRST_NAME => &u.first_name,
        LAST_NAME => &u.last_name,
        _ => {
            if let Some(c) = custom_name(name) {
                return u.attributes.get(c).cloned();
            }
            return match u.fields.get(name)? {
                Value::String(s) => Some(s.clone()),
                Value::Array(items) => Some(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                other => Some(other.to_string()),
            };
        }
    };
    member.clone().filter(|v| !v.is_empty())
}

/// The application's `userName` for `u`: username, else email, else the key.
pub fn user_name(u: &User) -> &str {
    u.username
        .as_deref()
        .or(u.email.as_deref())
        .unwrap_or(&u.key)
}

/// Splits `urn:...:User:attr.sub` into (`urn:...:User`, `attr.sub`); a core path has no URN.
pub(super) fn split_urn(path: &str) -> (Option<&str>, &str) {
    if path.starts_with("urn:") {
        if let Some(i) = path.rfind(':') {
            return (Some(&path[..i]), &path[i + 1..]);
        }
    }
    (None, path)
}

/// Sets `path` in `r` to `value`, creating the objects on the way.
fn set_path(r: &mut Map<String, Value>, path: &str, value: Value) {
    let (urn, rest) = split_urn(path);
    let mut obj = r;
    if let Some(urn) = urn {
        let slot = obj.entry(urn.to_string()).or_insert_with(|| json!({}));
        if !slot.is_object() {
            *slot = json!({});
        }
        let Some(o) = slot.as_object_mut() else {
            return;
        };
        obj = o;
    }
    let mut parts = rest.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            obj.insert(part.to_string(), value);
            return;
        }
        let slot = obj.entry(part.to_string()).or_insert_with(|| json!({}));
        if !slot.is_object() {
            *slot = json!({});
        }
        let Some(o) = slot.as_object_mut() else {
            return;
        };
        obj = o;
    }
}

/// Every (SCIM path, Roster field) of the mapping: built-ins, then the tenant's table, which
/// overrides a built-in of the same path.
pub fn mapping(extra: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = SIMPLE
        .iter()
        .filter(|(p, _)| !extra.contains_key(*p))
        .map(|(p, f)| (p.to_string(), f.to_string()))
        .collect();
    out.extend(extra.iter().map(|(p, f)| (p.clone(), f.clone())));
    out
}

/// The top-level attributes [`attributes`] can set: all that `--reconcile` needs to keep of an
/// application's user to compare it.
pub fn compared_keys(extra: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = [
        "externalId",
        "userName",
        "active",
        "displayName",
        "emails",
        "phoneNumbers",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    for (path, _) in mapping(extra) {
        let (urn, rest) = split_urn(&path);
        let top = urn.unwrap_or_else(|| rest.split('.').next().unwrap_or(rest));
        keys.insert(top.to_string());
    }
    keys
}

/// The attributes of `u` the application should hold (no `schemas`, no `id`).
pub fn attributes(u: &User, extra: &BTreeMap<String, String>) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("externalId".into(), json!(u.key));
    r.insert("userName".into(), json!(user_name(u)));
    r.insert("active".into(), json!(u.status == UserStatus::Active));
    let given = u.first_name.clone().unwrap_or_default();
    let family = u.last_name.clone().unwrap_or_default();
    let display = format!("{given} {family}").trim().to_string();
    if !display.is_empty() {
        r.insert("displayName".into(), json!(display));
    }
    if let Some(email) = u.email.as_deref().filter(|e| !e.is_empty()) {
        r.insert(
            "emails".into(),
            json!([{"value": email, "type": "work", "primary": true}]),
        );
    }
    if let Some(phone) = field_value(u, "phone") {
        r.insert(
            "phoneNumbers".into(),
            json!([{"value": phone, "type": "work"}]),
        );
    }
    for (path, field) in mapping(extra) {
        if let Some(v) = field_value(u, &field) {
            set_path(&mut r, &path, json!(v));
        }
    }
    r
}

/// The schemas a resource of `attrs` declares: core, plus each extension URN it carries.
fn schemas(attrs: &Map<String, Value>) -> Value {
    let mut s = vec![json!(USER_SCHEMA)];
    s.extend(
        attrs
            .keys()
            .filter(|k| k.starts_with("urn:"))
            .map(|k| json!(k)),
    );
    Value::Array(s)
}

/// The body of `POST /Users` (and, with the application's `id`, Roster's part of a
/// `PUT /Users/{id}`, written over the application's own user by `push::merge`).
pub fn resource(u: &User, extra: &BTreeMap<String, String>, id: Option<&str>) -> Value {
    let mut attrs = attributes(u, extra);
    let mut r = Map::new();
    r.insert("schemas".into(), schemas(&attrs));
    if let Some(id) = id {
        r.insert("id".into(), json!(id));
    }
    r.append(&mut attrs);
    Value::Object(r)
}

/// The SCIM paths whose Roster fields were cleared by the changes being pushed (`cleared` are
/// the field names whose new value is empty), to `remove` from the application's user.
pub fn cleared_paths(cleared: &BTreeSet<String>, extra: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    if cleared.contains(EMAIL) {
        out.push("emails".to_string());
    }
    if cleared.contains("phone") {
        out.push("phoneNumbers".to_string());
    }
    if cleared.contains(MANAGER_EMAIL) {
        out.push(MANAGER_PATH.to_string());
    }
    for (path, field) in mapping(extra) {
        if cleared.contains(&field) {
            out.push(path);
        }
    }
    out
}

/// Whether Roster field `field` of `u` is empty (absent, or an empty text or list): a cleared
/// field that is filled again by the time it is pushed is not removed.
pub fn field_is_empty(u: &User, field: &str) -> bool {
    let text = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    match field {
        "email" => text(&u.email),
        "username" => text(&u.username),
        "mapping_code" => text(&u.mapping_code),
        "first_name" => text(&u.first_name),
        "last_name" => text(&u.last_name),
        f => match f.strip_prefix("custom.") {
            Some(name) => u.attributes.get(name).is_none_or(String::is_empty),
            None => match u.fields.get(f) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(_) => false,
            },
        },
    }
}

/// The body of `PATCH /Users/{id}`: one `replace` of every attribute `u` has, then a `remove`
/// for each path in `remove`.
pub fn patch(u: &User, extra: &BTreeMap<String, String>, remove: &[String]) -> Value {
    let mut ops = vec![json!({"op": "replace", "value": Value::Object(attributes(u, extra))})];
    ops.extend(remove.iter().map(|p| json!({"op": "remove", "path": p})));
    json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
}

/// `remove` (paths to remove from the application's user) with the enterprise `manager` when
/// `m` is [`Manager::Remove`].
pub fn with_manager_removed(m: &Manager, remove: &mut Vec<String>) {
    if *m == Manager::Remove && !remove.iter().any(|p| p == MANAGER_PATH) {
        remove.push(MANAGER_PATH.to_string());
    }
}

/// Sets the enterprise `manager` (`value` = the application's id of the manager) in a body made
/// by [`resource`] (top level) or [`patch`] (the `replace` operation's value), when `m` is
/// [`Manager::Set`] (a removal goes with the removed paths, [`with_manager_removed`]).
pub fn with_manager(body: &mut Value, m: &Manager) {
    let Manager::Set(manager_id) = m else {
        return;
    };
    let is_patch = body.get("Operations").is_some();
    if let Some(Value::Array(s)) = body.get_mut("schemas") {
        if !is_patch && !s.contains(&json!(ENTERPRISE_SCHEMA)) {
            s.push(json!(ENTERPRISE_SCHEMA));
        }
    }
    let target = match body.get_mut("Operations") {
        Some(ops) => ops.get_mut(0).and_then(|op| op.get_mut("value")),
        None => Some(body),
    };
    if let Some(Value::Object(attrs)) = target {
        set_path(
            attrs,
            &format!("{ENTERPRISE_SCHEMA}:manager.value"),
            json!(manager_id),
        );
    }
}

/// The body of a PATCH that sets only `active`.
pub fn patch_active(active: bool) -> Value {
    json!({
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "replace", "path": "active", "value": active}],
    })
}

/// The application's own representation `app` of a user with `active` set to false and its
/// read-only `meta` and `groups` left out (RFC 7643 §4.1.2: a user's groups are changed
/// through the Group resource; a provider that checks mutability refuses them in a PUT): the
/// body of a PUT that deactivates without PATCH.
pub fn deactivated(app: &Value) -> Value {
    let mut body = app.clone();
    if let Value::Object(m) = &mut body {
        m.remove("meta");
        m.remove("groups");
        m.insert("active".into(), Value::Bool(false));
    }
    body
}

/// The `type` of an item of a multi-valued attribute, lower-cased ("" when it has none).
pub(super) fn item_type(item: &Value) -> String {
    (item.get("type").and_then(Value::as_str))
        .unwrap_or_default()
        .to_lowercase()
}

/// True when every attribute of `want` is in `have` with the same value (objects compared
/// member by member, multi-valued attributes by the `value`s of their items of the types
/// `want` has); used by `--reconcile`.
pub fn covers(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| covers(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            // Roster owns the items of the types it sends (`push::merge`): the application's
            // items of other types (a `home` email) are not drift.
            let types: BTreeSet<String> = w.iter().map(item_type).collect();
            let values = |a: &Vec<Value>| -> Vec<String> {
                let mut v: Vec<String> = (a.iter())
                    .filter(|i| types.contains(&item_type(i)))
                    .map(|i| i.get("value").unwrap_or(i).to_string())
                    .collect();
                v.sort();
                v
            };
            values(h) == values(w)
        }
        (Value::String(h), Value::String(w)) => h == w,
        _ => have == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    pub(crate) fn user(key: &str) -> User {
        User {
            key: key.into(),
            status: UserStatus::Active,
            email: Some(format!("{key}@x.example")),
            username: None,
            mapping_code: Some("E1".into()),
            first_name: Some("Ann".into()),
            last_name: Some("Lee".into()),
            fields: [("job_title".to_string(), json!("Boss"))].into(),
            attributes: [("cc".to_string(), "42".to_string())].into(),
            has_password: false,
            managed: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            deleted_at: None,
        }
    }

    #[test]
    fn a_deactivating_put_keeps_the_application_s_user_but_its_read_only_parts() {
        let app = json!({
            "schemas": [USER_SCHEMA],
            "id": "a-1",
            "userName": "ana",
            "active": true,
            "emails": [{"value": "ana@acme.example", "primary": true}],
            "groups": [{"value": "g-1", "display": "Sales"}],
            "meta": {"resourceType": "User", "version": "W/\"3\""},
        });
        let body = deactivated(&app);
        assert_eq!(
            body,
            json!({
                "schemas": [USER_SCHEMA],
                "id": "a-1",
                "userName": "ana",
                "active": false,
                "emails": [{"value": "ana@acme.example", "primary": true}],
            })
        );
    }

    #[test]
    fn a_user_maps_to_core_and_enterprise_attributes() {
        let extra: BTreeMap<String, String> = [
            ("title".to_string(), "custom.cc".to_string()),
            (
                format!("{ENTERPRISE_SCHEMA}:costCenter"),
                "custom.cc".into(),
            ),
        ]
        .into();
        let r = resource(&user("k1"), &extra, None);
        assert_eq!(r["externalId"], "k1");
        assert_eq!(r["userName"], "k1@x.example");
        assert_eq!(r["name"]["givenName"], "Ann");
        assert_eq!(r["emails"][0]["value"], "k1@x.example");
        assert_eq!(r["title"], "42", "the table overrides a built-in");
        assert_eq!(r[ENTERPRISE_SCHEMA]["employeeNumber"], "E1");
        assert_eq!(r[ENTERPRISE_SCHEMA]["costCenter"], "42");
        assert_eq!(r["schemas"], json!([USER_SCHEMA, ENTERPRISE_SCHEMA]));
        let have = json!({"id": "x", "meta": {}, "extra": 1})
            .as_object()
            .cloned()
            .unwrap();
        let mut have = have;
        have.extend(r.as_object().cloned().unwrap());
        assert!(covers(&Value::Object(have.clone()), &r));
        let mut home = have.clone();
        home["emails"]
            .as_array_mut()
            .unwrap()
            .push(json!({"value": "k1@home.example", "type": "home"}));
        assert!(covers(&Value::Object(home.clone()), &r), "not Roster's");
        home["emails"][0]["value"] = json!("old@x.example");
        assert!(!covers(&Value::Object(home), &r));
        have.insert("title".into(), json!("other"));
        assert!(!covers(&Value::Object(have), &r));
        let cleared: BTreeSet<String> = ["email".to_string(), "org_unit".into()].into();
        let paths = cleared_paths(&cleared, &extra);
        assert_eq!(
            paths,
            ["emails", &format!("{ENTERPRISE_SCHEMA}:department")]
        );
    }

    #[test]
    fn an_emptied_or_unknown_manager_is_removed_and_a_found_one_set() {
        let cleared: BTreeSet<String> = [MANAGER_EMAIL.to_string()].into();
        let mut remove = cleared_paths(&cleared, &BTreeMap::new());
        assert_eq!(remove, [MANAGER_PATH]);
        with_manager_removed(&Manager::Remove, &mut remove);
        assert_eq!(remove, [MANAGER_PATH], "once");
        let mut remove = Vec::new();
        with_manager_removed(&Manager::Keep, &mut remove);
        with_manager_removed(&Manager::Set("m-1".into()), &mut remove);
        assert!(remove.is_empty());
        with_manager_removed(&Manager::Remove, &mut remove);
        let body = patch(&user("k1"), &BTreeMap::new(), &remove);
        assert_eq!(
            body["Operations"][1],
            json!({"op": "remove", "path": MANAGER_PATH})
        );
        let mut body = resource(&user("k1"), &BTreeMap::new(), None);
        with_manager(&mut body, &Manager::Remove);
        assert!(body[ENTERPRISE_SCHEMA].get("manager").is_none());
        with_manager(&mut body, &Manager::Set("m-1".into()));
        assert_eq!(body[ENTERPRISE_SCHEMA]["manager"]["value"], "m-1");
    }
}
