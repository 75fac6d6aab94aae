//! One run of a tenant: its counts, messages, encoding and delimiter, the skipped rows with
//! their reasons (read from its failure report), and downloads of the report and of the
//! archived file.
//!
//! `GET /tenants/{t}/runs/{id}?page=N`, `GET /tenants/{t}/runs/{id}/report` and
//! `GET /tenants/{t}/runs/{id}/file`: an operator any tenant's, a tenant its own (404
//! otherwise). The record comes from the store's run log. The skipped rows are read from the
//! report CSV (`record.report`) one record at a time, [`ROWS_PER_PAGE`] per page, each cell cut
//! to [`CELL_SHOWN`] characters, so a page costs bounded memory whatever the report's size.
//! Files are found only through the record (never a path from the URL) and served only if
//! the path, with every link resolved, is inside that tenant's folder ([`tenant_file`]); they
//! leave streamed in chunks.

use super::{blocking, page, Chrome, PageError, Viewer};
use crate::admin::AppState;
use crate::model::{ImportRecord, ImportStatus};
use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::io::BufRead;
use std::path::{Path as FsPath, PathBuf};

/// Skipped rows per page.
const ROWS_PER_PAGE: usize = 50;
/// The last page shown (10,000 rows); the download has the rest. A page is read from the start
/// of the report, so a page number without a bound made one request parse a whole report
/// (review s21: a tenant's 39 MB report, read 48 times at once, slowed other tenants' SCIM
/// clients from 10 ms to 3.5 s).
const MAX_PAGE: usize = 200;
/// Characters of a report cell shown (the download has them whole).
const CELL_SHOWN: usize = 200;
/// Report cells of a row shown beside its reason.
const CELLS_SHOWN: usize = 8;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants/{tenant}/runs/{id}", get(run_page))
        .route("/tenants/{tenant}/runs/{id}/report", get(download_report))
        .route("/tenants/{tenant}/runs/{id}/file", get(download_file))
}

#[derive(Deserialize, Default)]
struct PageQuery {
    #[serde(default)]
    page: Option<String>,
}

/// One skipped row of the failure report.
struct SkippedRow {
    /// The row number in the file (blank for a file-level problem).
    row: String,
    reason: String,
    /// `header: value` of the row's first cells.
    cells: String,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    chrome: Chrome,
    tenant: String,
    record: ImportRecord,
    /// Held and still waiting for approval.
    held: bool,
    /// Held, then set aside by a newer file: it can no longer be approved.
    set_aside: bool,
    skipped: Vec<SkippedRow>,
    /// The report exists in the tenant's folder.
    has_report: bool,
    has_file: bool,
    page: usize,
    has_next: bool,
    /// More rows follow the last page shown: they are in the report download.
    more_in_download: bool,
}

/// The run `id` of a tenant the viewer may see, or the 404 of a run that does not exist.
pub(super) async fn find_run(
    st: &AppState,
    viewer: &Viewer,
    tenant: &str,
    id: &str,
) -> Result<(crate::config::Tenant, ImportRecord), PageError> {
    let config = st.config.current();
    let t = viewer.tenant(&config, tenant)?.clone();
    let store = st.store.clone();
    let (tid, iid) = (t.id.clone(), id.to_string());
    let record = blocking("cannot read the import history", move || {
        store.import_record(&tid, &iid)
    })
    .await?
    .ok_or_else(|| PageError::not_found(format!("tenant {tenant} has no run {id:?}")))?;
    Ok((t, record))
}

async fn run_page(
    State(st): State<AppState>,
    viewer: Viewer,
    Path((tenant, id)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<Response, PageError> {
    let (t, record) = find_run(&st, &viewer, &tenant, &id).await?;
    let home = st.config.current().tenant_home(&t.id);
    let page_no = super::history::page_number(query.page.as_deref()).clamp(1, MAX_PAGE);
    let (report_rel, file_rel) = (record.report.clone(), record.archived_as.clone());
    let delimiter = delimiter_byte(&record.delimiter);
    let was_held = record.status == ImportStatus::Held;
    let (store, tid, rid) = (st.store.clone(), t.id.clone(), record.id.clone());
    // Reading a report shares the turns of directory listings, a share per tenant.
    let Some(_turn) = st.heavy.turn(&t.id).await else {
        return Err(PageError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many listings are running or waiting; reload the page in a second",
        ));
    };
    let (skipped, more, has_report, has_file, waiting) =
        blocking("cannot read the failure report", move || {
            let waiting = was_held && store.held_plans(&tid)?.contains(&rid);
            // Opened as the downloads open files: never through a link (review s26).
            let report = report_rel
                .as_deref()
                .and_then(|r| open_tenant_file(&home, r));
            let has_file = file_rel
                .as_deref()
                .and_then(|r| open_tenant_file(&home, r))
                .is_some();
            let has_report = report.is_some();
            let (rows, more) = match report {
                Some(file) => skipped_rows(file, delimiter, page_no)?,
                None => (Vec::new(), false),
            };
            Ok((rows, more, has_report, has_file, waiting))
        })
        .await?;
    page(&RunPage {
        chrome: Chrome::new(
            &viewer,
            format!("Run {} of {}", record.id, t.id),
            Some(&t.id),
        ),
        tenant: t.id.clone(),
        record,
        held: waiting,
        set_aside: was_held && !waiting,
        skipped,
        has_report,
        has_file,
        page: page_no,
        has_next: more && page_no < MAX_PAGE,
        more_in_download: more && page_no == MAX_PAGE,
    })
}

/// The delimiter byte of a record's `delimiter` (`;`, `\t` or a literal tab); `,` when empty.
fn delimiter_byte(d: &str) -> u8 {
    match d {
        "\\t" | "\t" | "tab" => b'\t',
        s if s.len() == 1 => s.as_bytes()[0],
        _ => b',',
    }
}

/// The skipped rows of page `page_no` of a failure report (`row`, the file's columns,
/// `reason`; UTF-8 with BOM), and whether more follow. Reads one record at a time. The
/// delimiter is the one after `row` in the header (the report of a run that failed as a whole
/// has the file's delimiter when its run found one, else `,`), else `delimiter`.
fn skipped_rows(
    file: std::fs::File,
    delimiter: u8,
    page_no: usize,
) -> anyhow::Result<(Vec<SkippedRow>, bool)> {
    let mut file = std::io::BufReader::new(file);
    let head = file.fill_buf()?;
    let bom = if head.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let delimiter = match head.get(bom..bom + 4) {
        Some([b'r', b'o', b'w', d]) if !d.is_ascii_alphanumeric() => *d,
        _ => delimiter,
    };
    file.consume(bom);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(false)
        .from_reader(file);
    let mut records = reader.byte_records();
    let header: Vec<String> = match records.next() {
        Some(h) => h?.iter().map(shown).collect(),
        None => return Ok((Vec::new(), false)),
    };
    let skip = (page_no - 1).saturating_mul(ROWS_PER_PAGE);
    let mut rows = Vec::with_capacity(ROWS_PER_PAGE);
    for (i, rec) in records.enumerate() {
        let rec = rec?;
        if i < skip {
            continue;
        }
        if rows.len() == ROWS_PER_PAGE {
            return Ok((rows, true));
        }
        rows.push(skipped_row(&header, &rec));
    }
    Ok((rows, false))
}

/// One report record as shown: its first cell (the row), its last (the reason), and the
/// cells between as `header: value` (`(extra): value` for the cells of a row with more cells
/// than the header, which the report keeps before the reason).
fn skipped_row(header: &[String], rec: &csv::ByteRecord) -> SkippedRow {
    let n = rec.len();
    let cell = |i: usize| rec.get(i).map(shown).unwrap_or_default();
    // The header's last cell names the reason, not a column of the file.
    let columns = header.len().saturating_sub(1);
    let cells = (1..n.saturating_sub(1))
        .filter(|&i| !rec.get(i).unwrap_or_default().is_empty())
        .take(CELLS_SHOWN)
        .map(|i| {
            let name = match header.get(i) {
                Some(h) if i < columns => h.as_str(),
                _ => "(extra)",
            };
            format!("{name}: {}", cell(i))
        })
        .collect::<Vec<_>>()
        .join(" · ");
    SkippedRow {
        row: cell(0),
        reason: if n > 1 { cell(n - 1) } else { String::new() },
        cells,
    }
}

/// A cell as text, cut to [`CELL_SHOWN`] characters.
fn shown(c: &[u8]) -> String {
    let s = String::from_utf8_lossy(c);
    match s.char_indices().nth(CELL_SHOWN) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.into_owned(),
    }
}

/// Opens the regular file `home/rel` for reading, one folder entry at a time from a handle on
/// `home`, never following a link (`intake::nofollow`); None if any step is missing, a link,
/// `.` or `..`, or the last is not a regular file. What was checked is what is read: a link
/// swapped in after a check by path (a tenant's `sftp-server` session can make links, and
/// move them where they point outside its folder) is never opened (review s25).
pub(super) fn open_tenant_file(home: &FsPath, rel: &str) -> Option<std::fs::File> {
    use crate::intake::nofollow;
    use std::os::fd::AsFd;
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let (last, folders) = parts.split_last()?;
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return None;
    }
    let mut dir = nofollow::open_dir(home).ok()?;
    for name in folders {
        dir = nofollow::open_subdir(dir.as_fd(), name, false).ok()?;
    }
    let file = nofollow::open_file(dir.as_fd(), last).ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// Streams the file `home/rel` (opened by [`open_tenant_file`]) as a CSV download named after
/// its last path part (chunked: a waiting file may still change size while it is read).
pub(super) async fn send_file(home: PathBuf, rel: String) -> Result<Response, PageError> {
    let missing =
        || PageError::not_found("that file is no longer there (retention may have removed it)");
    let name_of = rel.clone();
    let file = blocking("cannot open the file", move || {
        Ok(open_tenant_file(&home, &rel))
    })
    .await?
    .ok_or_else(missing)?;
    let name: String = name_of
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let file = tokio::fs::File::from_std(file);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

async fn download_report(
    State(st): State<AppState>,
    viewer: Viewer,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let (t, record) = find_run(&st, &viewer, &tenant, &id).await?;
    let rel = record
        .report
        .ok_or_else(|| PageError::not_found(format!("run {id} has no failure report")))?;
    send_file(st.config.current().tenant_home(&t.id), rel).await
}

async fn download_file(
    State(st): State<AppState>,
    viewer: Viewer,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let (t, record) = find_run(&st, &viewer, &tenant, &id).await?;
    let rel = record
        .archived_as
        .ok_or_else(|| PageError::not_found(format!("run {id} has no archived file")))?;
    send_file(st.config.current().tenant_home(&t.id), rel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_leaving_the_tenant_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("tenants/acme");
        std::fs::create_dir_all(home.join("errors")).unwrap();
        std::fs::write(home.join("errors/a.report.csv"), "row,reason\n").unwrap();
        std::fs::create_dir_all(dir.path().join("tenants/beta")).unwrap();
        std::fs::write(dir.path().join("tenants/beta/secret.csv"), "x").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("tenants/beta/secret.csv"),
            home.join("errors/link.csv"),
        )
        .unwrap();
        // What a download opens: no link at all, even one that stays inside (review s25).
        let read = |rel: &str| {
            open_tenant_file(&home, rel).map(|mut f| {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut f, &mut s).unwrap();
                s
            })
        };
        assert_eq!(read("errors/a.report.csv").as_deref(), Some("row,reason\n"));
        std::os::unix::fs::symlink(home.join("errors/a.report.csv"), home.join("inner.csv"))
            .unwrap();
        std::os::unix::fs::symlink(home.join("errors"), home.join("folder")).unwrap();
        for refused in [
            "errors/link.csv",
            "inner.csv",
            "folder/a.report.csv",
            "../beta/secret.csv",
            "errors/../errors/a.report.csv",
            "errors",
            "errors/none.csv",
            "/etc/passwd",
            "",
        ] {
            assert_eq!(read(refused), None, "{refused}");
        }
    }

    #[test]
    fn report_pages_are_read_with_their_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut text = String::from("\u{feff}row;email;first_name;reason\r\n");
        for i in 0..120 {
            text.push_str(&format!("{};bad{i};F{i};not an email address\r\n", i + 2));
        }
        std::fs::write(&path, text).unwrap();
        let (first, more) = skipped_rows(std::fs::File::open(&path).unwrap(), b';', 1).unwrap();
        assert_eq!(first.len(), ROWS_PER_PAGE);
        assert!(more);
        assert_eq!(first[0].row, "2");
        assert_eq!(first[0].reason, "not an email address");
        assert_eq!(first[0].cells, "email: bad0 · first_name: F0");
        let (last, more) = skipped_rows(std::fs::File::open(&path).unwrap(), b';', 3).unwrap();
        assert_eq!(last.len(), 20);
        assert!(!more);
        assert_eq!(last[19].row, "121");
    }

    /// A row with more cells than the header keeps them in the report (review s14, finding
    /// 11): they are not shown under the header's `reason`.
    #[test]
    fn cells_past_the_header_are_shown_as_extra() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let text = "\u{feff}row;email;first_name;reason\r\n2;a@x.example;A;x;y;has 4 cells\r\n";
        std::fs::write(&path, text).unwrap();
        let (rows, _) = skipped_rows(std::fs::File::open(&path).unwrap(), b';', 1).unwrap();
        assert_eq!(rows[0].reason, "has 4 cells");
        assert_eq!(
            rows[0].cells,
            "email: a@x.example · first_name: A · (extra): x · (extra): y"
        );
    }

    #[test]
    fn the_report_of_a_failed_run_is_read_whatever_the_files_delimiter() {
        let at = chrono::Utc::now();
        let mut record =
            ImportRecord::begun("r".into(), "acme", "users.csv", ImportStatus::Error, at, at);
        record.messages = vec![
            "the file is empty".into(),
            "second; with a semicolon".into(),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(&path, crate::import::failed_run_report(&record).unwrap()).unwrap();
        let (rows, more) = skipped_rows(std::fs::File::open(&path).unwrap(), b';', 1).unwrap();
        assert!(!more);
        let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, ["the file is empty", "second; with a semicolon"]);
        assert_eq!(rows[0].row, "");
    }
}
