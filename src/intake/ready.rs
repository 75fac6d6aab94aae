//! Which files of a tenant's root are ready to import now: directly in the root, matching the
//! tenant's `file` pattern, not a temp name, and not marked by the SFTP server as an upload
//! still under way.
//!
//! Data enters as the config, a tenant and (for [`qualifies`]) one file name; it leaves as
//! file names, oldest first, or the qualifying file's modification time. Read by the intake's
//! queue before each run and by the admin API's "today" view.

use super::pattern::FilePattern;
use crate::config::Tenant;
use crate::sftp::{is_temp_name, FileId, InProgress};

/// Files of `tenant` in its root that qualify for import now, oldest first.
pub fn candidates(config: &crate::config::Config, tenant: &Tenant) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(config.tenant_home(&tenant.id)) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let modified = qualifies(config, tenant, &name)?;
            Some((modified, name))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

/// Whether `name` in the tenant root qualifies for import now (see the module doc); if so,
/// its modification time.
pub(super) fn qualifies(
    config: &crate::config::Config,
    tenant: &Tenant,
    name: &str,
) -> Option<std::time::SystemTime> {
    if is_temp_name(name) || FilePattern::new(&tenant.import).matches(name).is_none() {
        return None;
    }
    let meta = config
        .tenant_home(&tenant.id)
        .join(name)
        .symlink_metadata()
        .ok()?;
    let uploads = InProgress::new(&config.server.data_dir, &tenant.id);
    if !meta.is_file() || uploads.is_unfinished(FileId::of(&meta)) {
        return None;
    }
    Some(meta.modified().unwrap_or(std::time::UNIX_EPOCH))
}
