//! The process's file descriptors: the soft limit raised to the hard one at start, and the
//! share of it SFTP may use, so that the listeners, the admin API, the store, the intake, the
//! folder watchers and mail always keep [`DESCRIPTOR_RESERVE`]. `serve` sizes SFTP's budget
//! with it and the admin listener its connection ceiling; nothing enters but the limit.

/// Descriptors kept out of the SFTP budget, for the listeners, the admin API, the store, the
/// intake, the folder watchers and mail.
pub const DESCRIPTOR_RESERVE: u64 = 1024;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(
            "cannot read the descriptor limit: {}",
            std::io::Error::last_os_error()
        );
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                from = lim.rlim_cur,
                to = lim.rlim_max,
                "raised the descriptor limit"
            );
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(
                "cannot raise the descriptor limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    lim.rlim_cur
}

/// Descriptors SFTP may use (connections and open handles) under a soft limit of `descriptors`:
/// the limit minus the reserve, or a quarter of the limit when the limit is small.
pub fn descriptor_budget(descriptors: u64) -> usize {
    let budget = descriptors
        .saturating_sub(DESCRIPTOR_RESERVE)
        .max(descriptors / 4);
    usize::try_from(budget).unwrap_or(usize::MAX)
}
