//! What the admin API reads from a request besides its route: path segments, query
//! parameters (numbers clamped to a range) and bodies (bounded in bytes, JSON objects).
//!
//! Data enters as axum's extractor results and the raw body; it leaves as plain values or an
//! [`ApiError`] (400 for what cannot be read, 413 for a body over its limit). The JSON API,
//! SCIM and the webhooks routes share these.

use super::ApiError;
use axum::body::{Body, HttpBody};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::Value;
use std::collections::HashMap;

/// The query string as axum extracts it (a rejection is turned into a 400 by [`params`]).
pub(crate) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Largest JSON body a POST accepts.
const MAX_JSON_BODY: u64 = 64 * 1024;

pub(crate) fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(format!("the path is not valid: {}", e.body_text())))
}

pub(crate) fn params(q: Params) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m).map_err(|e| {
        ApiError::bad_request(format!("the query string is not valid: {}", e.body_text()))
    })
}

/// A numeric query parameter, clamped to `min..=max`; absent → `default`.
pub(crate) fn number_param(
    m: &HashMap<String, String>,
    name: &str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ApiError> {
    // An empty value (`limit=`) is the default, as an empty `after=` is 0.
    let raw = m.get(name).map_or("", |r| r.trim());
    if raw.is_empty() {
        return Ok(default);
    }
    if let Ok(n) = raw.parse::<i128>() {
        return Ok(n.clamp(min as i128, max as i128) as usize);
    }
    // Digits too long for i128 are absurdly large, not malformed.
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(max);
    }
    Err(ApiError::bad_request(format!(
        "{name} must be a whole number, not {raw:?}"
    )))
}

/// Reads a request body of at most `limit` bytes; 413 beyond (checked on Content-Length first,
/// then while reading, so an oversized body is never held whole).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(e)) => {
                return Err(ApiError::bad_request(format!(
                    "the request body could not be read: {e}"
                )))
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if out.len() as u64 + data.len() as u64 > limit {
                        return Err(too_large());
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(out)
}

/// An optional JSON body: empty is fine; anything else must be a JSON object.
pub(crate) async fn optional_json(
    headers: &HeaderMap,
    body: Body,
) -> Result<Option<Value>, ApiError> {
    let bytes = read_body(headers, body, MAX_JSON_BODY).await?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object (or empty)",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}
