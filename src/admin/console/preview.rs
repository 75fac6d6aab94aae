//! Preview (operators): upload a CSV and see what importing it would do, changing nothing.
//!
//! `GET /tenants/{tenant}/preview` shows the form (a file input and "Preview");
//! `POST /tenants/{tenant}/preview` takes it as `multipart/form-data` (the CSRF token checked
//! before the file part is read, the file bounded by `server.max_upload_bytes`; see `upload`)
//! and runs `import::preview_bytes`, the admin API's dry run: the same plan a run would make,
//! nothing written or recorded. One preview runs at a time (`AppState::previews`, shared with
//! the API: each holds a whole file). The answer lists the counts, the run's messages, and the
//! changes by kind: inserts, updates and restores (field: old → new), deactivations and
//! deletions, each list cut to [`SHOWN_PER_KIND`] (the counts are always complete).

use super::upload::read_upload;
use super::{page, Chrome, PageError, Viewer};
use crate::admin::AppState;
use crate::model::{Change, Counts, FieldChange};
use askama::Template;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

/// Changes of one kind listed on the page.
const SHOWN_PER_KIND: usize = 200;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(
        "/tenants/{tenant}/preview",
        get(form).post(run).layer(DefaultBodyLimit::disable()),
    )
}

/// Changes of one kind: the ones shown and how many there are.
struct Section<T> {
    shown: Vec<T>,
    total: usize,
}

impl<T> Default for Section<T> {
    fn default() -> Self {
        Section {
            shown: Vec::new(),
            total: 0,
        }
    }
}

impl<T> Section<T> {
    fn push(&mut self, item: T) {
        self.total += 1;
        if self.shown.len() < SHOWN_PER_KIND {
            self.shown.push(item);
        }
    }
    fn hidden(&self) -> usize {
        self.total - self.shown.len()
    }
}

/// An insert: the key and its fields as `name = value`.
struct Inserted {
    key: String,
    fields: String,
}

/// An update or restore: the key and each `field: old → new`.
struct Updated {
    key: String,
    changes: Vec<(String, String, String)>,
}

fn field_changes(changes: &[FieldChange]) -> Vec<(String, String, String)> {
    let shown = |v: &Option<String>| {
        v.as_deref()
            .map(|s| s.replace('\u{1f}', ", "))
            .unwrap_or_else(|| "(none)".into())
    };
    changes
        .iter()
        .map(|c| (c.field.clone(), shown(&c.old), shown(&c.new)))
        .collect()
}

/// What a preview found.
struct Outcome {
    file: String,
    status: String,
    counts: Counts,
    messages: Vec<String>,
    inserts: Section<Inserted>,
    updates: Section<Updated>,
    restores: Section<Updated>,
    deactivations: Section<String>,
    deletions: Section<String>,
    /// More changes than the preview lists at all (`import::PREVIEW_LIMIT`).
    truncated: bool,
}

#[derive(Template)]
#[template(path = "preview.html")]
struct PreviewPage {
    chrome: Chrome,
    tenant: String,
    max_bytes: u64,
    outcome: Option<Outcome>,
}

async fn form(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(tenant): Path<String>,
) -> Result<Response, PageError> {
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?;
    viewer.operator_only()?;
    preview_page(&viewer, &t.id, config.server.max_upload_bytes, None)
}

/// The preview page of `tenant`: the form, and the outcome of the file just sent if any.
fn preview_page(
    viewer: &Viewer,
    tenant: &str,
    max_bytes: u64,
    outcome: Option<Outcome>,
) -> Result<Response, PageError> {
    page(&PreviewPage {
        chrome: Chrome::new(
            viewer,
            format!("Preview an import for {tenant}"),
            Some(tenant),
        ),
        tenant: tenant.to_string(),
        max_bytes,
        outcome,
    })
}

async fn run(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(tenant): Path<String>,
    upload: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, PageError> {
    let config = st.config.current();
    let t = viewer.tenant(&config, &tenant)?.clone();
    viewer.operator_only()?;
    let Ok(upload) = upload else {
        // Not a multipart form at all: it cannot carry the CSRF token either.
        viewer.check_csrf("")?;
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "send the preview form",
        ));
    };
    let Some(_file_turn) = st.preview_file_turn().await else {
        return Err(PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::admin::PREVIEW_FILE_BUSY,
        ));
    };
    let file = read_upload(&viewer, upload, config.server.max_upload_bytes).await?;
    let _permit = st
        .previews
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| PageError::internal("cannot start the preview", anyhow::anyhow!("{e}")))?;
    let name = if file.file_name.trim().is_empty() {
        "preview.csv".to_string()
    } else {
        file.file_name.clone()
    };
    let store = st.store.clone();
    let (profile, shown_name) = (t.clone(), name.clone());
    let preview = tokio::task::spawn_blocking(move || {
        crate::import::preview_bytes(&store, &profile, &name, &file.bytes)
    })
    .await
    .map_err(|e| PageError::internal("cannot preview the file", anyhow::anyhow!("{e}")))?;
    let preview = match preview {
        Ok(p) => p,
        Err(e) if crate::store::is_unavailable(&e) => {
            return Err(PageError::internal("cannot preview the file", e))
        }
        Err(e) => {
            return Err(PageError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot preview {shown_name}: {e:#}"),
            ))
        }
    };
    let outcome = outcome_of(shown_name, preview);
    preview_page(
        &viewer,
        &t.id,
        config.server.max_upload_bytes,
        Some(outcome),
    )
}

/// Sorts a preview's changes into the page's sections.
fn outcome_of(file: String, p: crate::import::Preview) -> Outcome {
    let mut o = Outcome {
        file,
        status: p.record.status.to_string(),
        counts: p.record.counts,
        messages: p.record.messages.clone(),
        inserts: Section::default(),
        updates: Section::default(),
        restores: Section::default(),
        deactivations: Section::default(),
        deletions: Section::default(),
        truncated: p.truncated,
    };
    for c in p.changes {
        match c {
            Change::Insert { key, fields } => {
                let fields = fields
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", v.replace('\u{1f}', ", ")))
                    .collect::<Vec<_>>()
                    .join("; ");
                o.inserts.push(Inserted { key, fields });
            }
            Change::Update { key, changes } => o.updates.push(Updated {
                key,
                changes: field_changes(&changes),
            }),
            Change::Restore { key, changes } => o.restores.push(Updated {
                key,
                changes: field_changes(&changes),
            }),
            Change::Deactivate { key } => o.deactivations.push(key),
            Change::Delete { key } => o.deletions.push(key),
        }
    }
    o
}
