//! An update by PUT (a provider whose ServiceProviderConfig says PATCH is unsupported): the
//! application's own user with Roster's attributes written over it, sent with `If-Match`.
//!
//! A PUT replaces the whole resource (RFC 7644 §3.5.1), so a body of Roster's attributes alone
//! wiped what the application keeps on its user (roles, entitlements, certificates, its own
//! extensions, attributes Roster does not map) on every update. Data enters as the
//! application's user read by `GET /Users/{id}` with its version (`ETag`, else `meta.version`),
//! Roster's body (`resource::resource`, manager set) and the paths of the fields the pushed
//! changes emptied (`resource::cleared_paths`); it leaves as the body of `PUT /Users/{id}`,
//! sent with `If-Match` when the application gave a version. A 412 (the user changed between
//! the read and the write) reads it again, at most [`PUT_ATTEMPTS`] times in all; a 404 on the
//! read is the provider's error as it came, as for a PATCH of a user gone from the application.
//! The read must be the user asked for (its `id` the requested one, [`check_read`]): another
//! user, a ListResponse or no `id` fails that user with nothing sent.
//!
//! [`merged`] is pure. Its rules:
//! - `meta` and `groups` are dropped (read-only; a user's groups change through the Group
//!   resource, RFC 7643 §4.1.2), as in `resource::deactivated`; the application's `id` stays;
//! - `schemas` is the union, the application's first;
//! - a complex attribute (`name`, an extension) is merged member by member, Roster's members
//!   replacing the application's, as a PATCH `replace` does (RFC 7644 §3.5.2.3); a complex value
//!   with a `value` member (the enterprise `manager`) is a reference and replaced whole;
//! - a multi-valued attribute (`emails`, `phoneNumbers`): Roster's items replace the
//!   application's items of the same `type` (Roster sends `work`) and those with the same
//!   `value` (case-insensitive); the application's items of other types stay, less their
//!   `primary` when Roster's item is primary (one primary per attribute, RFC 7643 §2.4);
//! - any other attribute Roster sends replaces the application's value; what Roster does not
//!   send stays;
//! - a cleared path is removed: a single-valued one (`title`, `name.givenName`, an extension's
//!   attribute) as it is; a multi-valued one only its items of the type Roster sends (`work`),
//!   the attribute itself once no item is left.

use super::Pusher;
use crate::deliver::scim_push::client::{id_of, ScimError, Scope};
use crate::deliver::scim_push::resource::{item_type, split_urn};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// PUTs tried per update when the application answers 412 Precondition Failed.
pub(super) const PUT_ATTEMPTS: usize = 3;
/// The `type` of the items Roster sends in its multi-valued attributes.
const OWNED_TYPE: &str = "work";

impl Pusher {
    /// Writes `ours` (Roster's body for `PUT /Users/{id}`) over the application's user `id`
    /// and removes the `remove` paths from it ([`merged`]), with `If-Match` when the
    /// application versions its users; a 412 reads the user again ([`PUT_ATTEMPTS`] in all).
    pub(super) fn put_merged(
        &self,
        id: &str,
        ours: &Value,
        remove: &[String],
    ) -> Result<(), ScimError> {
        for _ in 0..PUT_ATTEMPTS {
            let (app, version) = self.client.get(id)?;
            check_read(id, &app)?;
            let body = merged(&app, ours, remove);
            match self.client.replace_if(id, &body, version.as_deref()) {
                Err(e) if e.status == Some(412) && version.is_some() => continue,
                other => return other,
            }
        }
        Err(ScimError {
            scope: Scope::User,
            ..ScimError::new(
                Some(412),
                format!(
                    "the application's user {id} changed between each read and write ({PUT_ATTEMPTS} PUTs with If-Match answered 412 Precondition Failed): nothing was written, the user is retried later"
                ),
            )
        })
    }
}

/// Checks that `app`, the answer to `GET /Users/{id}`, is that user: a JSON object whose `id`
/// (a string or a number, as `client::id_of` reads it) is `id`. A provider or proxy answering
/// with another user, or a ListResponse, would otherwise have that user's attributes written
/// into user `id` by the PUT.
fn check_read(id: &str, app: &Value) -> Result<(), ScimError> {
    let problem = if !app.is_object() {
        "answered no JSON object".to_string()
    } else {
        match id_of(app) {
            Some(got) if got == id => return Ok(()),
            Some(got) => format!("answered another user (id {got:?})"),
            None => "answered an object with no usable `id` (a string or a number)".to_string(),
        }
    };
    Err(ScimError {
        scope: Scope::User,
        ..ScimError::new(None, format!("GET /Users/{id} {problem}: nothing was sent"))
    })
}

/// The body of `PUT /Users/{id}`: the application's user `app` with Roster's `ours` written over
/// it and the `remove` paths removed (the rules are in the module's doc).
pub fn merged(app: &Value, ours: &Value, remove: &[String]) -> Value {
    let mut body = match app {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    body.remove("meta");
    body.remove("groups");
    let mut schemas: Vec<Value> = match body.remove("schemas") {
        Some(Value::Array(s)) => s,
        _ => Vec::new(),
    };
    if let Some(Value::Array(s)) = ours.get("schemas") {
        for schema in s {
            if !schemas.contains(schema) {
                schemas.push(schema.clone());
            }
        }
    }
    if let Value::Object(o) = ours {
        merge_into(&mut body, o);
    }
    for path in remove {
        remove_path(&mut body, path);
    }
    body.insert("schemas".into(), Value::Array(schemas));
    Value::Object(body)
}

/// Writes `ours` over `app`, member by member (`schemas` is left to the caller).
fn merge_into(app: &mut Map<String, Value>, ours: &Map<String, Value>) {
    for (k, v) in ours {
        if k == "schemas" || (k == "id" && app.contains_key("id")) {
            continue;
        }
        match (app.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(o)) if !o.contains_key("value") => {
                merge_into(a, o)
            }
            (Some(Value::Array(a)), Value::Array(o)) => merge_items(a, o),
            _ => {
                app.insert(k.clone(), v.clone());
            }
        }
    }
}

/// An item's `value` as text, lower-cased.
fn item_value(item: &Value) -> Option<String> {
    item.get("value")
        .and_then(Value::as_str)
        .map(str::to_lowercase)
}

/// The application's items `app` of a multi-valued attribute with Roster's `ours`: Roster's
/// first, then the application's of other types and values.
fn merge_items(app: &mut Vec<Value>, ours: &[Value]) {
    let types: BTreeSet<String> = ours.iter().map(item_type).collect();
    let values: BTreeSet<String> = ours.iter().filter_map(item_value).collect();
    let primary = ours
        .iter()
        .any(|i| i.get("primary") == Some(&Value::Bool(true)));
    app.retain(|i| {
        !types.contains(&item_type(i)) && item_value(i).is_none_or(|v| !values.contains(&v))
    });
    if primary {
        for item in app.iter_mut().filter_map(Value::as_object_mut) {
            item.remove("primary");
        }
    }
    let kept = std::mem::replace(app, ours.to_vec());
    app.extend(kept);
}

/// Removes `path` (`attr`, `attr.sub`, `urn:...:attr`) from `r`; of a multi-valued attribute
/// only the items of [`OWNED_TYPE`].
fn remove_path(r: &mut Map<String, Value>, path: &str) {
    let (urn, rest) = split_urn(path);
    let mut obj = r;
    if let Some(urn) = urn {
        obj = match obj.get_mut(urn) {
            Some(Value::Object(o)) => o,
            _ => return,
        };
    }
    let parts: Vec<&str> = rest.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    for part in parents {
        obj = match obj.get_mut(*part) {
            Some(Value::Object(o)) => o,
            _ => return,
        };
    }
    if let Some(Value::Array(items)) = obj.get_mut(*last) {
        items.retain(|i| item_type(i) != OWNED_TYPE);
        if !items.is_empty() {
            return;
        }
    }
    obj.remove(*last);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::scim_push::resource::{ENTERPRISE_SCHEMA, USER_SCHEMA};
    use serde_json::json;

    const ROLES: &str = "urn:acme:params:scim:schemas:extension:roles:2.0:User";

    fn app() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ROLES],
            "id": "a-1",
            "externalId": "ann",
            "userName": "ann@acme.example",
            "nickName": "Annie",
            "title": "Clerk",
            "name": {"givenName": "Ann", "familyName": "Lee", "middleName": "Q"},
            "emails": [
                {"value": "ann@acme.example", "type": "work", "primary": true},
                {"value": "ann@home.example", "type": "home", "primary": false},
            ],
            "phoneNumbers": [{"value": "+1 555", "type": "work"}],
            "addresses": [{"type": "home", "locality": "Lyon"}],
            ROLES: {"roles": ["admin"]},
            "groups": [{"value": "g-1"}],
            "meta": {"resourceType": "User", "version": "W/\"3\""},
        })
    }

    #[test]
    fn roster_s_attributes_replace_the_application_s_and_the_rest_stays() {
        let ours = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
            "id": "a-1",
            "externalId": "ann",
            "userName": "anne@acme.example",
            "active": true,
            "name": {"givenName": "Anne", "familyName": "Lee"},
            "emails": [{"value": "anne@acme.example", "type": "work", "primary": true}],
            ENTERPRISE_SCHEMA: {"department": "HQ", "manager": {"value": "m-2"}},
        });
        let remove = ["title".to_string(), "phoneNumbers".into(), "x.y".into()];
        let body = merged(&app(), &ours, &remove);
        assert_eq!(
            body,
            json!({
                "schemas": [USER_SCHEMA, ROLES, ENTERPRISE_SCHEMA],
                "id": "a-1",
                "externalId": "ann",
                "userName": "anne@acme.example",
                "active": true,
                "nickName": "Annie",
                "name": {"givenName": "Anne", "familyName": "Lee", "middleName": "Q"},
                "emails": [
                    {"value": "anne@acme.example", "type": "work", "primary": true},
                    {"value": "ann@home.example", "type": "home"},
                ],
                "addresses": [{"type": "home", "locality": "Lyon"}],
                ROLES: {"roles": ["admin"]},
                ENTERPRISE_SCHEMA: {"department": "HQ", "manager": {"value": "m-2"}},
            })
        );
    }

    #[test]
    fn a_cleared_attribute_is_removed_and_an_extension_member_too() {
        let mut app = app();
        app[ENTERPRISE_SCHEMA] =
            json!({"department": "HQ", "manager": {"value": "m-1", "displayName": "Bo"}});
        let ours = json!({"schemas": [USER_SCHEMA], "id": "a-1", "userName": "ann@acme.example"});
        let remove = [
            "emails".to_string(),
            "name.middleName".into(),
            format!("{ENTERPRISE_SCHEMA}:department"),
        ];
        let body = merged(&app, &ours, &remove);
        assert_eq!(
            body["emails"],
            json!([{"value": "ann@home.example", "type": "home", "primary": false}]),
            "only Roster's (work) email is removed"
        );
        assert_eq!(
            body["name"],
            json!({"givenName": "Ann", "familyName": "Lee"})
        );
        assert_eq!(
            body[ENTERPRISE_SCHEMA],
            json!({"manager": {"value": "m-1", "displayName": "Bo"}})
        );
        assert_eq!(
            body["phoneNumbers"],
            json!([{"value": "+1 555", "type": "work"}])
        );
        assert_eq!(body["schemas"], json!([USER_SCHEMA, ROLES]));
        assert!(body.get("meta").is_none() && body.get("groups").is_none());
        // The same value under another type is Roster's now, not a duplicate.
        let ours = json!({"emails": [{"value": "ANN@home.example", "type": "work"}]});
        let emails = &merged(&app, &ours, &[])["emails"];
        assert_eq!(
            emails,
            &json!([{"value": "ANN@home.example", "type": "work"}])
        );
        // Not an object (an empty body): Roster's attributes alone.
        assert_eq!(
            merged(&Value::Null, &json!({"userName": "u"}), &[]),
            json!({"userName": "u", "schemas": []})
        );
    }
}
