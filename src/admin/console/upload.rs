//! A file uploaded through a console form (`multipart/form-data`): the preview and the column
//! mapping helper.
//!
//! A request body enters as multipart parts, in the order the browser sends the form's fields;
//! an [`Upload`] leaves: the file's bytes and name plus the form's small text fields. The CSRF
//! token is a text part and is checked as soon as it arrives, so the file part is never read
//! unless the token matched (a file before the token is refused with 403). Every part is
//! bounded while it is read: the file by `limit` (the config's `server.max_upload_bytes`, 413
//! beyond), each text part by [`MAX_TEXT_BYTES`], and the number of parts by [`MAX_PARTS`].
//! The routes taking an upload turn off axum's default body limit; this is the limit.

use super::{PageError, Viewer};
use axum::extract::multipart::{Field, Multipart};
use axum::http::StatusCode;

/// Bytes of one text part (a CSRF token, a tenant id).
pub(super) const MAX_TEXT_BYTES: usize = 4096;
/// Parts of one form.
pub(super) const MAX_PARTS: usize = 8;

/// A form's file and text fields.
pub(super) struct Upload {
    /// The file's name as the browser gave it (its last path segment, bounded).
    pub file_name: String,
    pub bytes: Vec<u8>,
    /// The text fields other than `csrf`, by name.
    pub fields: Vec<(String, String)>,
}

impl Upload {
    /// The text field `name` (empty when absent).
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

fn unreadable(e: impl std::fmt::Display) -> PageError {
    PageError::new(
        StatusCode::BAD_REQUEST,
        format!("the uploaded form could not be read: {e}"),
    )
}

/// Reads a form whose file part is named `file`, checking the CSRF token first.
pub(super) async fn read_upload(
    viewer: &Viewer,
    mut form: Multipart,
    limit: u64,
) -> Result<Upload, PageError> {
    let mut csrf_ok = false;
    let mut file: Option<(String, Vec<u8>)> = None;
    let mut fields = Vec::new();
    for _ in 0..MAX_PARTS {
        let Some(part) = form.next_field().await.map_err(unreadable)? else {
            break;
        };
        let name = part.name().unwrap_or("").to_string();
        if name == "file" {
            if !csrf_ok {
                viewer.check_csrf("")?;
            }
            let file_name = part
                .file_name()
                .map(|n| n.rsplit(['/', '\\']).next().unwrap_or("").to_string())
                .unwrap_or_default();
            let file_name: String = file_name.chars().take(200).collect();
            file = Some((file_name, read_part(part, limit, true).await?));
            continue;
        }
        let bytes = read_part(part, MAX_TEXT_BYTES as u64, false).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if name == "csrf" {
            viewer.check_csrf(&text)?;
            csrf_ok = true;
        } else {
            fields.push((name, text));
        }
    }
    if !csrf_ok {
        viewer.check_csrf("")?;
    }
    let Some((file_name, bytes)) = file else {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "choose a file to upload",
        ));
    };
    Ok(Upload {
        file_name,
        bytes,
        fields,
    })
}

/// The bytes of one part, at most `limit` (413 for the file, 400 for a text part beyond).
async fn read_part(mut part: Field<'_>, limit: u64, is_file: bool) -> Result<Vec<u8>, PageError> {
    let mut out = Vec::new();
    while let Some(chunk) = part.chunk().await.map_err(unreadable)? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(if is_file {
                PageError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the file is larger than the limit of {limit} bytes (server.max_upload_bytes)"),
                )
            } else {
                PageError::new(StatusCode::BAD_REQUEST, "a form field is too long")
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
