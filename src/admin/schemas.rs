//! The fixed SCIM discovery documents (RFC 7643 §5–§7): ServiceProviderConfig, ResourceTypes
//! and Schemas, describing what Roster's read-only User endpoint offers.
//!
//! Nothing enters but the base URL used in `meta.location`; the documents leave as JSON.

use serde_json::{json, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RT_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Most resources one page returns (`count` is clamped to this).
pub const MAX_RESULTS: usize = 1000;

pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/roster/roster/blob/main/docs/operators.md",
        "patch": {"supported": false},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "The tenant's SCIM token in Authorization: Bearer <token>; Roster stores only its SHA-256 (scim_token_sha256).",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig")
        }
    })
}

pub fn user_resource_type(base: &str) -> Value {
    json!({
        "schemas": [RT_SCHEMA],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "A person in the tenant's directory, synced from its HR file (read-only).",
        "schema": USER_SCHEMA,
        "schemaExtensions": [{"schema": ENTERPRISE_SCHEMA, "required": false}],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}
    })
}

fn attr(name: &str, kind: &str, multi: bool, case_exact: bool, desc: &str) -> Value {
    json!({
        "name": name,
        "type": kind,
        "multiValued": multi,
        "description": desc,
        "required": false,
        "caseExact": case_exact,
        "mutability": "readOnly",
        "returned": "default",
        "uniqueness": if name == "userName" { "server" } else { "none" }
    })
}

/// A string attribute a filter can name, at `path` (`emails.value`): its `caseExact` is the
/// filter's own rule for it (`filter::case_exact`), so the two cannot disagree (the groups'
/// `value` and `display` were once advertised case-exact while filters ignored case).
fn filtered(path: &str, desc: &str) -> Value {
    let name = path.rsplit('.').next().unwrap_or(path);
    let case_exact = super::filter::case_exact(path).unwrap_or(true);
    attr(name, "string", false, case_exact, desc)
}

fn complex(name: &str, multi: bool, desc: &str, subs: Vec<Value>) -> Value {
    let mut v = attr(name, "complex", multi, false, desc);
    v["subAttributes"] = Value::Array(subs);
    v
}

pub fn user_schema(base: &str) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": USER_SCHEMA,
        "name": "User",
        "description": "User Account (read-only in Roster)",
        "attributes": [
            filtered("userName", "username if mapped, else the email, else the match key"),
            complex("name", false, "The user's name", vec![
                filtered("name.formatted", "Given and family name"),
                filtered("name.givenName", "first_name"),
                filtered("name.familyName", "last_name"),
            ]),
            filtered("displayName", "Given and family name"),
            filtered("title", "job_title"),
            filtered("preferredLanguage", "language"),
            filtered("timezone", "timezone"),
            attr("active", "boolean", false, false, "false for deactivated users; deleted users are not listed"),
            complex("emails", true, "The user's email", vec![
                filtered("emails.value", "email"),
                filtered("emails.type", "always work"),
                attr("primary", "boolean", false, false, "always true"),
            ]),
            complex("phoneNumbers", true, "The user's phone", vec![
                filtered("phoneNumbers.value", "phone"),
                filtered("phoneNumbers.type", "always work"),
            ]),
            complex("groups", true, "The groups the user is in (the groups field)", vec![
                filtered("groups.value", "the group's id (its name)"),
                attr("$ref", "reference", false, true, "the group's URI"),
                filtered("groups.display", "the group's name"),
            ]),
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{USER_SCHEMA}")}
    })
}

pub fn enterprise_schema(base: &str) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": ENTERPRISE_SCHEMA,
        "name": "EnterpriseUser",
        "description": "Enterprise User (read-only in Roster)",
        "attributes": [
            filtered("employeeNumber", "mapping_code"),
            filtered("department", "org_unit"),
            complex("manager", false, "The user's manager", vec![
                attr("value", "string", false, true, "the manager's id, when the manager is a user of the tenant"),
                attr("$ref", "reference", false, true, "the manager's URI"),
                filtered("manager.displayName", "manager_email"),
            ]),
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{ENTERPRISE_SCHEMA}")}
    })
}

pub fn group_resource_type(base: &str) -> Value {
    json!({
        "schemas": [RT_SCHEMA],
        "id": "Group",
        "name": "Group",
        "endpoint": "/Groups",
        "description": "A group named in the users' groups field (read-only; id = displayName = the name).",
        "schema": GROUP_SCHEMA,
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")}
    })
}

pub fn group_schema(base: &str) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": GROUP_SCHEMA,
        "name": "Group",
        "description": "Group (read-only in Roster: built from the users' groups field)",
        "attributes": [
            attr("displayName", "string", false, true, "the group's name, as in the groups field"),
            complex("members", true, "users that are not deleted and list the group", vec![
                attr("value", "string", false, true, "the member's id"),
                attr("$ref", "reference", false, true, "the member's URI"),
                attr("display", "string", false, false, "the member's displayName"),
                attr("type", "string", false, true, "always User"),
            ]),
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{GROUP_SCHEMA}")}
    })
}

/// A ListResponse of `resources` (all of them; discovery lists are not paged).
pub fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": resources.len(),
        "itemsPerPage": resources.len(),
        "startIndex": 1,
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::filter;

    /// The string attributes of `schema` (sub-attributes as `parent.name`) with their
    /// advertised `caseExact`.
    fn strings(schema: &Value) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for a in schema["attributes"].as_array().into_iter().flatten() {
            let name = a["name"].as_str().unwrap_or_default();
            let subs = a["subAttributes"].as_array().cloned().unwrap_or_default();
            if subs.is_empty() && a["type"] == "string" {
                out.push((name.to_string(), a["caseExact"].clone()));
            }
            for s in subs.iter().filter(|s| s["type"] == "string") {
                let sub = s["name"].as_str().unwrap_or_default();
                out.push((format!("{name}.{sub}"), s["caseExact"].clone()));
            }
        }
        out
    }

    /// Every string attribute the User schemas advertise and a filter takes says `caseExact`
    /// as the filter compares it (review finding 3: `groups.value`/`display` said true).
    #[test]
    fn advertised_case_exactness_is_the_filters_rule() {
        let mut checked = Vec::new();
        for (urn, schema) in [
            (USER_SCHEMA, user_schema("http://h")),
            (ENTERPRISE_SCHEMA, enterprise_schema("http://h")),
        ] {
            for (path, advertised) in strings(&schema) {
                if let Some(rule) = filter::case_exact(&format!("{urn}:{path}")) {
                    assert_eq!(advertised, rule, "{path}");
                    checked.push(path);
                }
            }
        }
        for path in [
            "groups.value",
            "groups.display",
            "userName",
            "employeeNumber",
        ] {
            assert!(checked.iter().any(|p| p == path), "{path}: {checked:?}");
        }
        assert_eq!(filter::case_exact("groups.value"), Some(false));
    }
}
