//! `[tenants.scim_push]`: where and how a tenant's directory is pushed to an application's SCIM
//! 2.0 API (docs/delivery.md, "SCIM push"; the client is `deliver::scim_push`).
//!
//! Data enters as the table parsed with the tenant and leaves as a [`ScimPushConfig`] that the
//! push worker and `roster scim-push` read; [`ScimPushConfig::problems`] names every bad key.
//! The bearer token is given inline (`token`) or by the name of an environment variable
//! (`token_env`), read when a pusher is built ([`ScimPushConfig::bearer`]).

use crate::model::fields::is_known_field;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a user who left the directory becomes in the application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScimOnMissing {
    /// PATCH `active=false` (the user stays in the application).
    #[default]
    Deactivate,
    /// DELETE the application's user.
    Delete,
}

/// `[tenants.scim_push]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScimPushConfig {
    /// The application's SCIM 2.0 base URL (`/Users` is appended).
    pub url: String,
    /// The bearer token, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The name of an environment variable holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(default)]
    pub on_missing: ScimOnMissing,
    /// Extra or overriding attributes: SCIM path (`title`, `name.givenName`,
    /// `urn:...:enterprise:2.0:User:costCenter`) = Roster field name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl ScimPushConfig {
    /// Every problem, each as `scim_push.KEY message` (the caller prefixes the tenant).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut say = |key: &str, msg: String| out.push((format!("scim_push.{key}"), msg));
        let url = self.url.trim();
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.len() <= "https://".len() {
            say(
                "url",
                format!(
                    "{:?} must be an http:// or https:// URL",
                    super::webhooks::shown_url(&self.url)
                ),
            );
        }
        match (&self.token, &self.token_env) {
            (Some(_), Some(_)) => say(
                "token",
                "and token_env are both set; set one of them".into(),
            ),
            (Some(t), None) if t.trim().is_empty() => say("token", "is empty".into()),
            (None, Some(e)) if e.trim().is_empty() => say("token_env", "is empty".into()),
            _ => {}
        }
        for (path, field) in &self.attributes {
            if is_reserved(path) {
                say(
                    "attributes",
                    format!("{path:?} is Roster's own (id, externalId, userName, emails, active, schemas, meta: it finds and keeps the application's users by them) and cannot be mapped"),
                );
            }
            if !is_scim_path(path) {
                say(
                    "attributes",
                    format!("{path:?} is not a SCIM attribute path such as \"title\" or \"name.givenName\""),
                );
            }
            if !is_known_field(field) {
                say(
                    "attributes",
                    format!("{path:?} names {field:?}, which is not a Roster field"),
                );
            }
        }
        out
    }

    /// The bearer token, if any: `token`, or the value of the variable `token_env`.
    pub fn bearer(&self) -> Result<Option<String>, String> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()));
        }
        match &self.token_env {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_string())),
                _ => Err(format!(
                    "scim_push.token_env names {var:?}, which is not set in the environment"
                )),
            },
        }
    }
}

/// Whether `path` is an attribute Roster itself sets and relies on to find and keep the
/// application's users (reviewer s28: `"externalId" = "custom.emp_no"` made every push miss
/// its user and create it again). SCIM attribute names are case-insensitive.
fn is_reserved(path: &str) -> bool {
    const RESERVED: [&str; 7] = [
        "id",
        "externalid",
        "username",
        "emails",
        "active",
        "schemas",
        "meta",
    ];
    let core = path
        .strip_prefix("urn:ietf:params:scim:schemas:core:2.0:User:")
        .unwrap_or(path);
    let top = core.split('.').next().unwrap_or(core).to_ascii_lowercase();
    !core.starts_with("urn:") && RESERVED.contains(&top.as_str())
}

/// The application a SCIM base URL names, for comparing two tenants': scheme and host in
/// lower case, no trailing `/`.
pub fn same_application(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let host_end = rest.find('/').unwrap_or(rest.len());
            format!(
                "{}://{}{}",
                url[..i].to_ascii_lowercase(),
                rest[..host_end].to_ascii_lowercase(),
                &rest[host_end..]
            )
        }
        None => url.to_string(),
    }
}

/// `attr`, `attr.sub`, or `urn:...:attr[.sub]`: letters, digits, `.`, `:`, `_`, `-`, `$`.
fn is_scim_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('.')
        && !path.ends_with(['.', ':'])
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '_' | '-' | '$'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roster_s_own_attributes_cannot_be_mapped() {
        for path in [
            "externalId",
            "userName",
            "emails.value",
            "ACTIVE",
            "urn:ietf:params:scim:schemas:core:2.0:User:id",
        ] {
            let c: ScimPushConfig = toml::from_str(&format!(
                "url = \"https://app.example/scim/v2\"\ntoken = \"t\"\n[attributes]\n\"{path}\" = \"custom.x\"\n"
            ))
            .unwrap();
            let p = c.problems();
            assert!(
                p.iter().any(|(_, m)| m.contains("is Roster's own")),
                "{path}: {p:?}"
            );
        }
        let ok: ScimPushConfig = toml::from_str("url = \"https://app.example/scim/v2\"\ntoken = \"t\"\n[attributes]\n\"nickName\" = \"custom.x\"\n\"name.givenName\" = \"first_name\"\n").unwrap();
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        assert_eq!(
            same_application(" HTTPS://App.Example/scim/v2/ "),
            same_application("https://app.example/scim/v2")
        );
        assert_ne!(
            same_application("https://app.example/scim/v2"),
            same_application("https://app.example/scim/V2")
        );
    }

    #[test]
    fn problems_name_the_key() {
        let c: ScimPushConfig = toml::from_str(
            "url = \"ftp://x\"\ntoken = \"a\"\ntoken_env = \"B\"\n[attributes]\n\"title\" = \"nope\"\n\"a b\" = \"email\"\n",
        )
        .unwrap();
        let p = c.problems();
        let keys: Vec<_> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "scim_push.url",
                "scim_push.token",
                "scim_push.attributes",
                "scim_push.attributes"
            ]
        );
        let ok: ScimPushConfig =
            toml::from_str("url = \"https://app.example/scim/v2\"\ntoken = \"t\"\non_missing = \"delete\"\n[attributes]\n\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter\" = \"custom.cc\"\n").unwrap();
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        assert_eq!(ok.on_missing, ScimOnMissing::Delete);
        assert!(toml::from_str::<ScimPushConfig>("url = \"x\"\nonmissing = 1\n").is_err());
    }
}
