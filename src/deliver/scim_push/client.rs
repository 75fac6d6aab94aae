//! The HTTP side of SCIM push: one application's SCIM 2.0 API (RFC 7644), spoken with `ureq`
//! on the calling (blocking) thread.
//!
//! Requests leave as JSON bodies built by `resource`; answers enter as JSON, read with a size
//! limit ([`MAX_BODY`]) and a timeout per request, so a slow or hostile application cannot grow
//! Roster's memory or hold a thread for ever. A failed request becomes a [`ScimError`] carrying
//! the HTTP status, the provider's `detail` (RFC 7644 §3.12, cut to [`MAX_DETAIL`] characters),
//! and its `Retry-After`, and says whether trying again later may help ([`ScimError::transient`]).
//! Redirects are not followed: a 3xx is a failure that names its `Location`.

use serde_json::Value;
use std::time::Duration;

/// Largest answer body read (a list page of 100 users fits many times over).
pub const MAX_BODY: u64 = 4 * 1024 * 1024;
/// Longest provider detail kept.
pub const MAX_DETAIL: usize = 500;
/// Longest a request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Users per page when listing (`--reconcile`).
pub const PAGE: usize = 100;

/// A request the application did not accept, or could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// The HTTP status; None when no answer came (connection, timeout, unreadable body).
    pub status: Option<u16>,
    /// The provider's `detail`, or what went wrong.
    pub detail: String,
    /// The provider's `Retry-After` (429, 503).
    pub retry_after: Option<Duration>,
    /// Whom the failure is about, when that is not what the status says.
    pub scope: Scope,
}

/// Whom a [`ScimError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// As the status says ([`ScimError::transient`]).
    #[default]
    ByStatus,
    /// The whole push (the `url` or the provider is wrong: every user would fail alike): the
    /// push waits, whatever the status.
    Push,
    /// This one user (e.g. the application's user has no `id`): kept as its failure.
    User,
}

impl ScimError {
    /// An error with no `Retry-After`, judged by its status.
    pub fn new(status: Option<u16>, detail: impl Into<String>) -> ScimError {
        ScimError {
            status,
            detail: detail.into(),
            retry_after: None,
            scope: Scope::ByStatus,
        }
    }

    fn transport(e: impl std::fmt::Display) -> ScimError {
        ScimError::new(None, cut(&e.to_string()))
    }

    /// No answer, a redirect (the `url` is wrong: every user would fail alike), 401/403 (the
    /// token, likewise), 408, 429 or 5xx other than 501: the same request may succeed later, so
    /// the push waits instead of skipping the user. 501 Not Implemented is the provider saying
    /// it will never take that request: kept as the user's failure, as a 4xx is. A [`Scope`]
    /// other than `ByStatus` decides instead of the status.
    pub fn transient(&self) -> bool {
        match (self.scope, self.status) {
            (Scope::Push, _) => true,
            (Scope::User, _) => false,
            (_, None) => true,
            (_, Some(501)) => false,
            (_, Some(s)) => {
                (300..400).contains(&s) || matches!(s, 401 | 403 | 408 | 429) || s >= 500
            }
        }
    }

    /// A 404, 405 or 415 from the collection (`GET /Users?filter=`, `POST /Users`) says the
    /// `url` is not a SCIM endpoint that takes these requests (a wrong path, a proxy), not
    /// that this user is refused: every user would get it, so the push waits (audit: a wrong
    /// base URL moved the cursor past the whole backlog).
    fn of_collection(self, method: &str) -> ScimError {
        match self.status {
            Some(s @ (404 | 405 | 415)) => ScimError {
                detail: cut(&format!(
                    "{method} /Users answered {s}: `url` in [tenants.scim_push] does not point at the application's SCIM endpoint (the push waits until it does): {}",
                    self.detail
                )),
                scope: Scope::Push,
                ..self
            },
            _ => self,
        }
    }
}

impl std::fmt::Display for ScimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "HTTP {s}: {}", self.detail),
            None => write!(f, "{}", self.detail),
        }
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_DETAIL {
        return s.to_string();
    }
    s.chars().take(MAX_DETAIL).collect::<String>() + "…"
}

/// `Retry-After` in seconds (an HTTP date is not honoured; the backoff applies instead),
/// capped at an hour (also when the number does not fit in u64).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    let value = value?.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = value.parse().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs.min(3600)))
}

/// A value as a SCIM filter string literal, which is a JSON string (RFC 7644 §3.4.2.2): `"`
/// and `\` escaped, and control characters too (a raw newline made a provider answer 400
/// invalidFilter; audit F14).
fn quoted(v: &str) -> String {
    Value::String(v.to_string()).to_string()
}

/// Most bytes of an error answer read for its `detail`.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// The text of an error answer's body: at most [`MAX_ERROR_BODY`] bytes, invalid UTF-8
/// replaced, and what was read before a read error; never an error itself.
fn error_body(body: impl std::io::Read) -> String {
    use std::io::Read;
    let mut bytes = Vec::new();
    // On an error, what was read so far is in `bytes` (Read::read_to_end): keep it.
    let _read = body.take(MAX_ERROR_BODY).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A client of one application's SCIM API.
pub struct ScimClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl ScimClient {
    /// A client of the SCIM API at `base` (its `/Users` is `base + "/Users"`).
    pub fn new(base: &str, token: Option<String>) -> ScimClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            // A redirect would turn a write into a GET and drop the token (ureq does both):
            // a 3xx comes back as it is and is a failure naming its Location.
            .max_redirects(0)
            .max_idle_connections_per_host(8)
            .build();
        ScimClient {
            base: base.trim().trim_end_matches('/').to_string(),
            token,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends one request; the answer's JSON (Null for an empty body) when it is a 2xx.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ScimError> {
        self.send(method, path, body, None).map(|a| a.json)
    }

    /// As [`call`](Self::call), with `If-Match: if_match` when given, and the answer's body
    /// size and `ETag`.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, ScimError> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/scim+json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(v) = if_match {
            req = req.header("If-Match", v);
        }
        let sent = match body {
            Some(b) => {
                let bytes = serde_json::to_vec(b).map_err(ScimError::transport)?;
                let req = req
                    .header("Content-Type", "application/scim+json")
                    .body(bytes)
                    .map_err(ScimError::transport)?;
                self.agent.run(req)
            }
            None => {
                let req = req.body(()).map_err(ScimError::transport)?;
                self.agent.run(req)
            }
        };
        let mut resp = sent.map_err(ScimError::transport)?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry = retry_after(header("retry-after").as_deref());
        let location = header("location");
        let etag = header("etag").filter(|t| !t.is_empty());
        if (200..300).contains(&status) {
            let text = (resp.body_mut().with_config().limit(MAX_BODY))
                .read_to_string()
                .map_err(ScimError::transport)?;
            let json: Option<Value> = serde_json::from_str(&text).ok();
            let (json, bytes) = (json.unwrap_or(Value::Null), text.len());
            return Ok(Answer { json, bytes, etag });
        }
        // Past here the status decides: a body that cannot be read whole (too long, not UTF-8,
        // cut off) must not turn the answer into "no answer" (audit F2).
        let json: Option<Value> =
            serde_json::from_str(&error_body(resp.body_mut().with_config().reader())).ok();
        if (300..400).contains(&status) {
            return Err(ScimError::new(
                Some(status),
                cut(&format!(
                    "{method} {path} was redirected to {}: fix `url` in [tenants.scim_push] (redirects are not followed)",
                    location.as_deref().unwrap_or("(no Location)")
                )),
            ));
        }
        let detail = json
            .as_ref()
            .and_then(|v| v.get("detail"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{method} {path} answered without a SCIM detail"));
        Err(ScimError {
            retry_after: retry,
            ..ScimError::new(Some(status), cut(&detail))
        })
    }

    /// Whether the provider supports PATCH (`/ServiceProviderConfig`); true when it does not say.
    pub fn patch_supported(&self) -> Result<bool, ScimError> {
        let v = match self.call("GET", "/ServiceProviderConfig", None) {
            Ok(v) => v,
            // A provider without the endpoint (404, 501) says nothing against PATCH, which
            // every provider of RFC 7644 is expected to take; updates then fail or succeed
            // on their own, per user.
            Err(e) if matches!(e.status, Some(404 | 501)) => return Ok(true),
            Err(e) => return Err(e),
        };
        Ok(v.pointer("/patch/supported")
            .and_then(Value::as_bool)
            .unwrap_or(true))
    }

    /// The application's users matching `filter` (at most `count`), as `GET /Users?filter=`.
    fn search(&self, filter: &str, count: usize) -> Result<Vec<Value>, ScimError> {
        let path = format!(
            "/Users?count={count}&filter={}",
            percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC)
        );
        let v = (self.call("GET", &path, None)).map_err(|e| e.of_collection("GET"))?;
        Ok(match v.get("Resources") {
            Some(Value::Array(users)) => users.clone(),
            _ => Vec::new(),
        })
    }

    /// The application's user for Roster user `key`: the one whose `externalId` is `key`, else
    /// one whose `userName` is `user_name` (case-insensitive) and carries no other externalId.
    /// Err(Conflict) names a user that has `user_name` but another externalId.
    ///
    /// Two single-attribute `eq` filters, one after the other (the second only when the first
    /// finds nobody), rather than one `or`: that is what Entra and Okta send, so every provider
    /// answers it, and providers index such lookups (scim2-server scans every user for an `or`).
    pub fn find(&self, key: &str, user_name: &str) -> Result<Found, ScimError> {
        let ext = |u: &Value| {
            u.get("externalId")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let by_key = self.search(&format!("externalId eq {}", quoted(key)), 10)?;
        if let Some(u) = by_key.iter().find(|u| ext(u).as_deref() == Some(key)) {
            return Ok(Found::Ours(u.clone()));
        }
        let by_name = self.search(&format!("userName eq {}", quoted(user_name)), 10)?;
        let same_name = |u: &&Value| {
            u.get("userName")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
        };
        match by_name.iter().find(same_name) {
            None => Ok(Found::Nobody),
            Some(u) => match ext(u) {
                Some(other) if !other.is_empty() => Ok(Found::Taken(other)),
                _ => Ok(Found::Adoptable(u.clone())),
            },
        }
    }

    /// The id of the application's user whose `userName`, else whose email, is `email`, if one
    /// is (two single-attribute filters, as in [`find`](Self::find)).
    pub fn id_by_email(&self, email: &str) -> Result<Option<String>, ScimError> {
        let by_name = self.search(&format!("userName eq {}", quoted(email)), 2)?;
        if let Some(found) = id_matching(&by_name, email) {
            return Ok(Some(found));
        }
        let by_email = self.search(&format!("emails.value eq {}", quoted(email)), 2)?;
        Ok(id_matching(&by_email, email))
    }

    /// `POST /Users`.
    pub fn create(&self, resource: &Value) -> Result<Value, ScimError> {
        (self.call("POST", "/Users", Some(resource))).map_err(|e| e.of_collection("POST"))
    }

    /// `PUT /Users/{id}`.
    pub fn replace(&self, id: &str, resource: &Value) -> Result<(), ScimError> {
        self.replace_if(id, resource, None)
    }

    /// `PUT /Users/{id}` with `If-Match: version` when given (a 412 says the user changed).
    pub fn replace_if(
        &self,
        id: &str,
        resource: &Value,
        version: Option<&str>,
    ) -> Result<(), ScimError> {
        (self.send("PUT", &user_path(id)?, Some(resource), version)).map(|_| ())
    }

    /// `GET /Users/{id}` (body read up to [`MAX_BODY`]): the application's user and its
    /// version, the `ETag` else `meta.version`. A 404 is the provider's error as it came, as
    /// for a PATCH of a user gone from the application.
    pub fn get(&self, id: &str) -> Result<(Value, Option<String>), ScimError> {
        let a = self.send("GET", &user_path(id)?, None, None)?;
        let meta = a.json.pointer("/meta/version").and_then(Value::as_str);
        let version = a
            .etag
            .or_else(|| meta.filter(|v| !v.is_empty()).map(str::to_string));
        Ok((a.json, version))
    }

    /// `PATCH /Users/{id}`.
    pub fn patch(&self, id: &str, ops: &Value) -> Result<(), ScimError> {
        self.call("PATCH", &user_path(id)?, Some(ops)).map(|_| ())
    }

    /// `DELETE /Users/{id}`; a user already gone (404) is not an error.
    pub fn delete(&self, id: &str) -> Result<(), ScimError> {
        match self.call("DELETE", &user_path(id)?, None) {
            Err(e) if e.status == Some(404) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// One page of the application's users from `start` (1-based).
    pub fn list(&self, start: usize) -> Result<ListPage, ScimError> {
        let page = format!("/Users?startIndex={start}&count={PAGE}");
        let Answer { json: v, bytes, .. } = self.send("GET", &page, None, None)?;
        let number = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|t| usize::try_from(t).ok())
        };
        let (total, start_index) = (number("totalResults").unwrap_or(0), number("startIndex"));
        let users = match v {
            Value::Object(mut o) => match o.remove("Resources") {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        Ok(ListPage {
            users,
            total,
            start_index,
            bytes,
        })
    }
}

/// A 2xx answer: its JSON (Null for an empty or unreadable body), body size and `ETag`.
struct Answer {
    json: Value,
    bytes: usize,
    etag: Option<String>,
}

/// One page of `GET /Users` (see [`ScimClient::list`]).
pub struct ListPage {
    pub users: Vec<Value>,
    /// `totalResults` (0 when missing).
    pub total: usize,
    /// The `startIndex` the provider says this page starts at, if it says.
    pub start_index: Option<usize>,
    /// Bytes of the answer's body.
    pub bytes: usize,
}

/// `/Users/{id}`; an empty id is refused ([`no_id`]), never sent as `/Users/`.
fn user_path(id: &str) -> Result<String, ScimError> {
    if id.is_empty() {
        return Err(no_id());
    }
    Ok(format!(
        "/Users/{}",
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
    ))
}

/// The application's user `find` matched.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Carries our externalId.
    Ours(Value),
    /// Same userName, no externalId: ours to adopt.
    Adoptable(Value),
    /// Same userName, but another externalId (named): not ours.
    Taken(String),
    Nobody,
}

/// The `id` of an application's user: a non-empty string, or a number some providers send
/// (`123` is the id "123"); None for anything else.
pub fn id_of(u: &Value) -> Option<String> {
    match u.get("id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The id of the first of `users` whose `userName`, or one of whose `emails[].value`, is
/// `email` (case-insensitive). What a provider answered is checked, not trusted: one that
/// ignores the filter and lists every user made the first of them every report's manager
/// (audit F10).
fn id_matching(users: &[Value], email: &str) -> Option<String> {
    let email = email.to_lowercase();
    let same = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|s| s.to_lowercase() == email)
    };
    let matches = |u: &&Value| {
        same(u.get("userName"))
            || (u.get("emails").and_then(Value::as_array))
                .is_some_and(|es| es.iter().any(|e| same(e.get("value"))))
    };
    users.iter().find(matches).and_then(id_of)
}

/// The failure of a user whose application user has no usable `id`: kept as that user's
/// failure; no request is sent (an empty id would address `/Users`, the collection).
pub fn no_id() -> ScimError {
    ScimError {
        scope: Scope::User,
        ..ScimError::new(
            None,
            "the application's user has no usable `id` (a string or a number): nothing was sent",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_after_and_transient() {
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("99999")), Some(Duration::from_secs(3600)));
        let huge = Some("999999999999999999999");
        assert_eq!(retry_after(huge), Some(Duration::from_secs(3600)));
        assert_eq!(retry_after(Some("-1")), None);
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        let e = |s| ScimError::new(s, "");
        assert!(e(None).transient() && e(Some(429)).transient() && e(Some(503)).transient());
        assert!(e(Some(401)).transient() && e(Some(301)).transient());
        assert!(!e(Some(400)).transient() && !e(Some(409)).transient());
        // The collection's 404/405/415 wait; a user's own 404 (PATCH /Users/{id}) does not.
        for s in [404, 405, 415] {
            assert!(e(Some(s)).of_collection("GET").transient(), "{s}");
            assert!(!e(Some(s)).transient(), "{s}");
        }
        assert!(!e(Some(400)).of_collection("POST").transient());
        let user = ScimError {
            scope: Scope::User,
            ..e(None)
        };
        assert!(!user.transient());
    }

    #[test]
    fn a_manager_is_only_a_user_whose_user_name_or_email_is_that_email() {
        let everyone = [
            json!({"id": "1", "userName": "first@acme.example"}),
            json!({"id": "2", "userName": "x", "emails": [{"value": "a@b"}, {"value": "Boss@Acme.example"}]}),
            json!({"id": "3", "userName": "BOSS@acme.example"}),
        ];
        assert_eq!(
            id_matching(&everyone, "boss@acme.example").as_deref(),
            Some("2")
        );
        assert_eq!(
            id_matching(&everyone[2..], "boss@acme.example").as_deref(),
            Some("3")
        );
        assert_eq!(id_matching(&everyone[..1], "boss@acme.example"), None);
        assert_eq!(
            id_matching(&[json!({"id": "9"})], "boss@acme.example"),
            None
        );
    }

    #[test]
    fn an_error_body_is_read_capped_and_lossily_whatever_it_holds() {
        let detail = br#"{"detail": "caf\u00e9 \xff"}"#;
        assert_eq!(error_body(&detail[..]), String::from_utf8_lossy(detail));
        let bad = [b'{', 0xff, 0xfe, b'}'];
        assert_eq!(error_body(&bad[..]), "{\u{fffd}\u{fffd}}");
        let huge = vec![b'x'; 10 * MAX_ERROR_BODY as usize];
        assert_eq!(error_body(&huge[..]).len(), MAX_ERROR_BODY as usize);
        struct Cut(bool);
        impl std::io::Read for Cut {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    return Err(std::io::Error::other("connection reset"));
                }
                buf[..4].copy_from_slice(b"part");
                Ok(4)
            }
        }
        assert_eq!(error_body(Cut(false)), "part");
    }

    #[test]
    fn an_id_is_a_string_or_a_number_and_an_empty_one_is_never_sent() {
        assert_eq!(
            id_of(&serde_json::json!({"id": "a1"})).as_deref(),
            Some("a1")
        );
        assert_eq!(
            id_of(&serde_json::json!({"id": 123})).as_deref(),
            Some("123")
        );
        for no in [
            json!({}),
            json!({"id": ""}),
            json!({"id": null}),
            json!({"id": [1]}),
        ] {
            assert_eq!(id_of(&no), None, "{no}");
        }
        let c = ScimClient::new("http://127.0.0.1:9", None);
        for e in [
            c.delete("").unwrap_err(),
            c.patch("", &json!({})).unwrap_err(),
            c.replace("", &json!({})).unwrap_err(),
            c.get("").unwrap_err(),
        ] {
            assert_eq!(
                e,
                no_id(),
                "refused before any request (port 9 would not answer)"
            );
            assert!(!e.transient());
        }
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quoted("a\nb\tc\u{1}d ü"), r#""a\nb\tc\u0001d ü""#);
    }
}
