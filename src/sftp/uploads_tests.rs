//! The upload registry and its markers: finishing, breaking, refusing a second writer, and
//! the start-up sweep, also with several nodes whose device numbers for the folder differ.

use super::*;

/// A real file in `dir` and an `open` closure for it, as an OPEN would give.
fn file(dir: &Path, name: &str) -> FileId {
    let p = dir.join(name);
    std::fs::write(&p, b"x").unwrap();
    FileId::of(&std::fs::metadata(&p).unwrap())
}

fn open(up: &InProgress, id: FileId) {
    up.open_for_write("/f.csv", || Ok(((), id)), |_| Ok(()))
        .unwrap();
}

#[test]
fn a_clean_close_after_writing_finishes_and_a_close_without_writing_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let up = InProgress::new(&dir.path().join("data"), "acme");
    let id = file(dir.path(), "a.csv");
    open(&up, id);
    assert!(up.is_unfinished(id));
    assert!(up.handle_ended(id, HandleEnd::Closed { wrote: true }));
    assert!(!up.is_unfinished(id));
    // Opened and closed without a write: nothing happened to the file.
    open(&up, id);
    assert!(!up.handle_ended(id, HandleEnd::Closed { wrote: false }));
    assert!(!up.is_unfinished(id));
}

#[test]
fn a_broken_upload_stays_unfinished_until_an_upload_of_it_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = InProgress::new(&data, "acme");
    let id = file(dir.path(), "a.csv");
    open(&up, id);
    assert!(!up.handle_ended(id, HandleEnd::Dropped { wrote: true }));
    // Also for a process started later (nothing live, the marker on disk).
    assert!(InProgress::new(&data, "acme").is_unfinished(id));
    assert!(up.take_if_finished(id, || ()).is_none());
    // A resume that only reads the size and closes: still unfinished (review of
    // 2026-11-30, scenario A).
    open(&up, id);
    assert!(!up.handle_ended(id, HandleEnd::Closed { wrote: false }));
    assert!(up.is_unfinished(id));
    // A resume that writes the rest and closes: finished.
    open(&up, id);
    assert!(up.handle_ended(id, HandleEnd::Closed { wrote: true }));
    assert!(!up.is_unfinished(id));
    assert_eq!(up.take_if_finished(id, || 7), Some(7));
}

#[test]
fn a_second_write_open_is_refused_while_a_handle_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let up = InProgress::new(&dir.path().join("data"), "acme");
    let id = file(dir.path(), "a.csv");
    open(&up, id);
    // A second upload of the file is refused, and its truncation never runs.
    let mut truncated = false;
    let second = up.open_for_write(
        "/f.csv",
        || Ok(((), id)),
        |_| {
            truncated = true;
            Ok(())
        },
    );
    assert!(matches!(second, Err(WriteOpenError::BeingWritten(x)) if x == id));
    assert!(!truncated);
    assert!(up.is_unfinished(id));
    assert!(
        up.take_if_finished(id, || ()).is_none(),
        "not claimed while written"
    );
    // The first finishes: now it is finished, and the file may be written again.
    assert!(up.handle_ended(id, HandleEnd::Closed { wrote: true }));
    assert!(!up.is_unfinished(id));
    open(&up, id);
    assert!(!up.handle_ended(id, HandleEnd::Closed { wrote: false }));
}

#[test]
fn a_write_open_whose_start_fails_leaves_no_marker_and_no_writer() {
    let dir = tempfile::tempdir().unwrap();
    let up = InProgress::new(&dir.path().join("data"), "acme");
    let id = file(dir.path(), "a.csv");
    let failed = up.open_for_write(
        "/f.csv",
        || Ok(((), id)),
        |_| Err(std::io::Error::from_raw_os_error(libc::EIO)),
    );
    assert!(matches!(failed, Err(WriteOpenError::Io(_))));
    assert!(!up.is_unfinished(id));
    open(&up, id);
    assert!(up.handle_ended(id, HandleEnd::Closed { wrote: true }));
}

#[test]
fn the_truncation_runs_with_the_registry_unlocked_and_the_file_registered() {
    let dir = tempfile::tempdir().unwrap();
    let up = InProgress::new(&dir.path().join("data"), "acme");
    let id = file(dir.path(), "a.csv");
    // Another thread asks while `start` runs: it gets its answer at once (before the review
    // of 2026-12-03 `start`, a truncate of a possibly large file, ran with the registry
    // locked, and every other upload and claim of every tenant waited for it), and the file
    // is unfinished and not writable by a second handle already.
    let seen_while_starting = |up: &InProgress| {
        let (tx, rx) = std::sync::mpsc::channel();
        let other = up.clone();
        std::thread::spawn(move || {
            let second = other.open_for_write("/f.csv", || Ok(((), id)), |_| Ok(()));
            let refused = matches!(second, Err(WriteOpenError::BeingWritten(x)) if x == id);
            let _ = tx.send((other.is_unfinished(id), refused));
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
    };
    let mut seen = None;
    up.open_for_write(
        "/f.csv",
        || Ok(((), id)),
        |_| {
            seen = Some(seen_while_starting(&up));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(seen, Some(Ok((true, true))), "(unfinished, refused)");
    assert!(up.handle_ended(id, HandleEnd::Closed { wrote: true }));
    assert!(!up.is_unfinished(id));
    // A failed start after a broken upload keeps that upload's marker.
    open(&up, id);
    assert!(!up.handle_ended(id, HandleEnd::Dropped { wrote: true }));
    let eio = || std::io::Error::from_raw_os_error(libc::EIO);
    let failed = up.open_for_write("/f.csv", || Ok(((), id)), |_| Err(eio()));
    assert!(matches!(failed, Err(WriteOpenError::Io(_))));
    assert!(up.is_unfinished(id), "the broken upload stays unfinished");
    open(&up, id);
    assert!(up.handle_ended(id, HandleEnd::Closed { wrote: true }));
}

#[test]
fn a_removed_file_leaves_no_marker() {
    let dir = tempfile::tempdir().unwrap();
    let up = InProgress::new(&dir.path().join("data"), "acme");
    let id = file(dir.path(), "a.csv");
    open(&up, id);
    up.removed(id);
    assert!(!up.handle_ended(id, HandleEnd::Closed { wrote: true }));
    assert!(!up.is_unfinished(id));
    open(&up, id);
    assert!(!up.handle_ended(id, HandleEnd::Dropped { wrote: true }));
    up.removed(id);
    assert!(!up.is_unfinished(id));
}

#[test]
fn the_sweep_drops_markers_of_gone_files_and_carries_over_path_markers() {
    let dir = tempfile::tempdir().unwrap();
    let (data, home) = (dir.path().join("data"), dir.path().join("home"));
    std::fs::create_dir_all(home.join("sub")).unwrap();
    let up = InProgress::new(&data, "acme");
    let kept = file(&home, "kept.csv");
    let gone = file(&home, "gone.csv");
    for id in [kept, gone] {
        open(&up, id);
        up.handle_ended(id, HandleEnd::Dropped { wrote: true });
    }
    // A marker of the previous version, named after the path /sub/old%.csv.
    let old = file(&home.join("sub"), "old%.csv");
    std::fs::remove_file(home.join("gone.csv")).unwrap();
    let markers = data.join("uploading").join("acme");
    std::fs::write(markers.join("sub%2Fold%25.csv"), b"").unwrap();
    up.sweep(&home, 100);
    assert!(up.is_unfinished(kept));
    assert!(!markers.join(up.marker_name(gone)).exists());
    assert!(up.is_unfinished(old), "the path marker now names its file");
    assert!(!markers.join("sub%2Fold%25.csv").exists());
}

/// The same data folder as another host sees it: the same inodes under another device.
fn on_host(data: &Path, dev: u64) -> InProgress {
    InProgress {
        dev: Some(dev),
        ..InProgress::new(data, "acme")
    }
}

#[test]
fn a_marker_is_seen_by_a_node_whose_device_number_for_the_folder_differs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (a, b) = (on_host(&data, 1000), on_host(&data, 2000));
    // Node A's upload of inode 42 breaks (or is still going); node B sees the same file
    // under its own device number (NFS, CephFS).
    let on_a = FileId { dev: 1000, ino: 42 };
    open(&a, on_a);
    assert!(!a.handle_ended(on_a, HandleEnd::Dropped { wrote: true }));
    let on_b = FileId { dev: 2000, ino: 42 };
    assert!(b.is_unfinished(on_b));
    assert!(b.take_if_finished(on_b, || ()).is_none(), "not claimed");
    // A marker of the previous version on this host (`<dev>-<ino>`) still counts.
    std::fs::write(data.join("uploading/acme/2000-43"), b"/f.csv").unwrap();
    assert!(b.is_unfinished(FileId { dev: 2000, ino: 43 }));
}

#[test]
fn the_sweep_keeps_other_nodes_markers_and_carries_over_old_names() {
    let dir = tempfile::tempdir().unwrap();
    let (data, home) = (dir.path().join("data"), dir.path().join("home"));
    std::fs::create_dir_all(&home).unwrap();
    let here = InProgress::new(&data, "acme");
    let live = file(&home, "live.csv");
    // Another node, whose device number differs, is uploading live.csv right now.
    let other = on_host(&data, live.dev + 1);
    let on_other = FileId {
        dev: live.dev + 1,
        ..live
    };
    open(&other, on_other);
    // Markers of the previous version: one of this host, one of another host, both of
    // present files, and one of another host whose file is gone.
    let (mine, theirs) = (file(&home, "mine.csv"), file(&home, "theirs.csv"));
    let gone = file(&home, "gone.csv");
    std::fs::remove_file(home.join("gone.csv")).unwrap();
    let markers = data.join("uploading").join("acme");
    let old = |dev: u64, id: FileId| markers.join(format!("{dev}-{}", id.ino));
    for m in [old(mine.dev, mine), old(mine.dev + 1, theirs), old(1, gone)] {
        std::fs::write(m, b"/x.csv").unwrap();
    }
    here.sweep(&home, 100);
    assert!(
        markers.join(live.ino.to_string()).exists(),
        "the live upload's marker stays"
    );
    assert!(here.is_unfinished(live));
    for id in [mine, theirs] {
        assert!(markers.join(id.ino.to_string()).exists(), "carried over");
        assert!(here.is_unfinished(id));
    }
    let left: Vec<_> = std::fs::read_dir(&markers).unwrap().flatten().collect();
    assert_eq!(
        left.len(),
        3,
        "old names and the gone file's marker are removed"
    );
    assert!(other.handle_ended(on_other, HandleEnd::Closed { wrote: true }));
    assert!(!here.is_unfinished(live));
}

/// Makes this thread's file-system uid `nobody`, so the kernel checks folder modes for it as
/// for an ordinary user; true if it took. `setfsuid` changes only the calling thread, and a
/// change from 0 drops the capabilities (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) that let root
/// read a folder of mode 000.
fn as_nobody() -> bool {
    const NOBODY: libc::uid_t = 65534;
    // SAFETY: plain system calls on this thread's credentials; each returns the previous
    // file-system uid, so the second says whether the first took.
    unsafe {
        libc::setfsuid(NOBODY);
        libc::setfsuid(NOBODY) as libc::uid_t == NOBODY
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A broken upload in a folder of mode 000, then the sweep: whether the upload's marker is
/// kept; None when the folder could be read anyway.
fn sweep_past_an_unreadable_folder() -> Option<bool> {
    let dir = tempfile::tempdir().unwrap();
    let (data, home) = (dir.path().join("data"), dir.path().join("home"));
    let sub = home.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let up = InProgress::new(&data, "acme");
    let id = file(&sub, "users.csv");
    open(&up, id);
    assert!(!up.handle_ended(id, HandleEnd::Dropped { wrote: true }));
    set_mode(&sub, 0o000);
    let unreadable = std::fs::read_dir(&sub).is_err();
    if unreadable {
        up.sweep(&home, 100);
    }
    let kept = up.is_unfinished(id);
    set_mode(&sub, 0o755);
    unreadable.then_some(kept)
}

#[test]
fn the_sweep_removes_no_marker_when_a_folder_cannot_be_read() {
    // Run as root (as in the CI container), the folder's mode would not keep the walk out:
    // the test then runs on a thread of its own as `nobody` (file-system uid only). Where that
    // cannot be had, there is nothing to check, and the test says so.
    let kept = std::thread::spawn(|| {
        // SAFETY: geteuid only reads this process's effective uid.
        let root = unsafe { libc::geteuid() } == 0;
        if root && !as_nobody() {
            return None;
        }
        sweep_past_an_unreadable_folder()
    })
    .join()
    .unwrap();
    match kept {
        // Before the review of 2026-12-03 the folder counted as empty, and the marker of the
        // half-written users.csv in it was removed: it would have been imported as it was.
        Some(kept) => assert!(kept, "the unfinished upload lost its marker"),
        None => eprintln!("skipped: a folder of mode 000 was readable (root without setfsuid)"),
    }
}
