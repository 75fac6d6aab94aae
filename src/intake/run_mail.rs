//! The report mail of a run (design.md §7): whether the tenant's `report` setting and the
//! run's status want one, and composing it for the tenant's `notify` addresses.
//!
//! Data enters as a run's record and failure report CSV; it leaves as an [`OutboxMail`] for
//! the store to queue in the same write as the record ([`for_commit`], [`own_record_mail`]),
//! or, for a claim an earlier version left, queued at filing ([`queue_now`]). `run.rs` owns
//! when each is used.

use super::Shared;
use crate::config::{ReportWhen, Tenant};
use crate::import;
use crate::mail::{compose_report, CsvAttachment, RunSummary};
use crate::model::{ImportRecord, ImportStatus};
use crate::store::OutboxMail;

fn wants_mail(when: ReportWhen, status: ImportStatus) -> bool {
    match status {
        ImportStatus::Held | ImportStatus::Missing => true,
        ImportStatus::Partial | ImportStatus::Error => when != ReportWhen::Never,
        ImportStatus::Success | ImportStatus::Duplicate => when == ReportWhen::Always,
    }
}

/// The mail of a run of `tenant`, composed from its record and failure report when `report`
/// (and the run's status) want one, for the commit to queue with the record.
pub(super) fn for_commit(shared: &Shared, tenant: &Tenant) -> import::MailFor {
    let (from, tenant) = (sender(shared), tenant.clone());
    std::sync::Arc::new(move |record: &ImportRecord, report: Option<&[u8]>| {
        if !wants_mail(tenant.import.report, record.status) {
            return None;
        }
        compose(&from, &tenant, record, report, record.report.as_deref())
    })
}

/// Composes the run's report mail (as [`for_commit`] would) and puts it in the durable outbox
/// now: the mail of a claim an earlier version left, which queued it after the record.
pub(super) fn queue_now(
    shared: &Shared,
    tenant: &Tenant,
    record: &ImportRecord,
    report: Option<&[u8]>,
) {
    let Some(mail) = for_commit(shared, tenant)(record, report) else {
        return;
    };
    match shared.store.outbox_push(&mail.recipients, &mail.message) {
        Ok(_) => shared.mail_wake.notify_one(),
        Err(e) => {
            tracing::error!(tenant = %tenant.id, import_id = %record.id, "cannot queue the report mail: {e:#}")
        }
    }
}

/// The mail a record Roster writes itself (a `missing` run) owes the tenant's contacts, to be
/// queued with the record in one write; None when `report` or the contacts want none.
pub fn own_record_mail(
    shared: &Shared,
    tenant: &Tenant,
    record: &ImportRecord,
) -> Option<OutboxMail> {
    if !wants_mail(tenant.import.report, record.status) {
        return None;
    }
    compose(&sender(shared), tenant, record, None, None)
}

/// The `From` of report mails.
pub(super) fn sender(shared: &Shared) -> String {
    let config = shared.config.current();
    config
        .mail
        .as_ref()
        .map(|m| m.from.clone())
        .unwrap_or_else(|| crate::mail::DEFAULT_FROM.to_string())
}

/// The report mail of `record` for the tenant's `notify` addresses; None (logged) when it has
/// none or the mail cannot be composed.
pub(super) fn compose(
    from: &str,
    tenant: &Tenant,
    record: &ImportRecord,
    report: Option<&[u8]>,
    report_name: Option<&str>,
) -> Option<OutboxMail> {
    if tenant.notify.is_empty() {
        tracing::warn!(tenant = %tenant.id, import_id = %record.id, "no notify addresses: the report mail is not sent");
        return None;
    }
    let summary = RunSummary {
        tenant: tenant.id.clone(),
        file: record.file.clone(),
        status: record.status.as_str().to_string(),
        import_id: Some(record.id.clone()),
        counts: record.counts,
        messages: record.messages.clone(),
        attachment: report.map(|bytes| {
            let name = report_name
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("report.csv");
            CsvAttachment::new(name.to_string(), bytes)
        }),
        archived_as: record.archived_as.clone(),
    };
    match compose_report(from, &tenant.notify, &summary) {
        Ok(mail) => Some(OutboxMail {
            recipients: mail.to,
            message: mail.bytes,
        }),
        Err(e) => {
            tracing::error!(tenant = %tenant.id, import_id = %record.id, "cannot compose the report mail: {e:#}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_policy() {
        use ImportStatus::*;
        assert!(wants_mail(ReportWhen::Never, Held));
        assert!(wants_mail(ReportWhen::Never, Missing));
        assert!(!wants_mail(ReportWhen::Never, Error));
        assert!(wants_mail(ReportWhen::Failures, Partial));
        assert!(!wants_mail(ReportWhen::Failures, Success));
        assert!(!wants_mail(ReportWhen::Failures, Duplicate));
        assert!(wants_mail(ReportWhen::Always, Success));
    }
}
