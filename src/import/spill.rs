//! The packed rows of a run, kept by bucket between the row pass and the bucket passes: in
//! memory up to a budget, the rest in an anonymous temporary file. This is what lets a run
//! stream a file of any size: the rows are never all in memory at once.
//!
//! Data enters as byte parts of a bucket ([`BucketRows::add`]: a worker's arena for that
//! bucket, or the survey's compacted rows) and leaves as all the parts of one bucket
//! ([`BucketRows::take`]), read back from the file where they were spilled. The file is created
//! and unlinked at once (mode 0600), so a crash leaves nothing behind; password cells inside
//! packed rows are already sealed by the row pass (see `record::RowSeal`), so no plaintext password
//! reaches the disk.

use anyhow::{Context, Result};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Default bytes of packed rows a run keeps in memory (`RunOptions::row_memory`).
pub const DEFAULT_BUDGET: usize = 64 << 20;

/// Bytes of packed rows one bucket may hold (`bounds`-style limit, see [`BucketFull`]). Keys
/// spread over the 1,024 buckets by their hash: ten million users of 2 KB each make 20 MB a
/// bucket. A bucket's rows are merged in memory, so without a limit one key given on millions
/// of rows (or keys made to share a bucket) would hold the whole file there (review s25).
pub const MAX_BUCKET_BYTES: usize = 64 << 20;

/// The error of a bucket past [`MAX_BUCKET_BYTES`]: a file-level problem, not a fault.
#[derive(Debug)]
pub struct BucketFull;

impl std::fmt::Display for BucketFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "more than {} MiB of rows share one of the directory's 1,024 buckets (a key given on \
             very many rows, or keys that fall together): nothing is applied; check the file's \
             key column",
            MAX_BUCKET_BYTES >> 20
        )
    }
}

impl std::error::Error for BucketFull {}

/// Where one part of a bucket is.
enum Part {
    Mem(Vec<u8>),
    Disk { at: u64, len: usize },
}

/// Packed rows by bucket (see the module doc). Shared by the pass threads.
pub struct BucketRows {
    buckets: Vec<Mutex<Vec<Part>>>,
    /// Bytes each bucket holds (added, back to 0 when taken).
    sizes: Vec<AtomicUsize>,
    in_memory: AtomicUsize,
    budget: usize,
    file: Mutex<Option<Arc<File>>>,
    /// Next free offset of the file.
    end: AtomicU64,
}

impl BucketRows {
    pub fn new(buckets: usize, budget: usize) -> BucketRows {
        BucketRows {
            buckets: (0..buckets).map(|_| Mutex::new(Vec::new())).collect(),
            sizes: (0..buckets).map(|_| AtomicUsize::new(0)).collect(),
            in_memory: AtomicUsize::new(0),
            budget,
            file: Mutex::new(None),
            end: AtomicU64::new(0),
        }
    }

    /// Adds a part to bucket `b`: kept in memory while the budget allows, else written out;
    /// [`BucketFull`] past [`MAX_BUCKET_BYTES`] in the bucket.
    pub fn add(&self, b: usize, bytes: Vec<u8>) -> Result<()> {
        let slot = self.slot(b)?;
        if bytes.is_empty() {
            return Ok(());
        }
        let len = bytes.len();
        if let Some(size) = self.sizes.get(b) {
            if size.fetch_add(len, Ordering::Relaxed) + len > MAX_BUCKET_BYTES {
                return Err(anyhow::Error::new(BucketFull));
            }
        }
        let part = if self.in_memory.fetch_add(len, Ordering::Relaxed) + len <= self.budget {
            Part::Mem(bytes)
        } else {
            self.in_memory.fetch_sub(len, Ordering::Relaxed);
            let at = self.end.fetch_add(len as u64, Ordering::Relaxed);
            self.spill_file()?
                .write_all_at(&bytes, at)
                .context("cannot write rows to the temporary file")?;
            Part::Disk { at, len }
        };
        slot.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(part);
        Ok(())
    }

    /// Every part of bucket `b`, moved out (spilled parts read back).
    pub fn take(&self, b: usize) -> Result<Vec<Vec<u8>>> {
        let parts =
            std::mem::take(&mut *self.slot(b)?.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some(size) = self.sizes.get(b) {
            size.store(0, Ordering::Relaxed);
        }
        parts
            .into_iter()
            .map(|p| match p {
                Part::Mem(v) => {
                    self.in_memory.fetch_sub(v.len(), Ordering::Relaxed);
                    Ok(v)
                }
                Part::Disk { at, len } => self.read_back(at, len),
            })
            .collect()
    }

    /// Every part of bucket `b`, copied (for messages; the bucket keeps its rows).
    pub fn read(&self, b: usize) -> Result<Vec<Vec<u8>>> {
        let slot = self.slot(b)?.lock().unwrap_or_else(PoisonError::into_inner);
        slot.iter()
            .map(|p| match p {
                Part::Mem(v) => Ok(v.clone()),
                Part::Disk { at, len } => self.read_back(*at, *len),
            })
            .collect()
    }

    /// Bytes written to the temporary file so far.
    pub fn spilled(&self) -> u64 {
        self.end.load(Ordering::Relaxed)
    }

    fn slot(&self, b: usize) -> Result<&Mutex<Vec<Part>>> {
        self.buckets
            .get(b)
            .with_context(|| format!("bucket {b} is out of range"))
    }

    fn read_back(&self, at: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.spill_file()?
            .read_exact_at(&mut v, at)
            .context("cannot read rows back from the temporary file")?;
        Ok(v)
    }

    /// The temporary file, created (and unlinked) on first use.
    fn spill_file(&self) -> Result<Arc<File>> {
        let mut f = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = f.as_ref() {
            return Ok(file.clone());
        }
        let file = Arc::new(anonymous_file()?);
        *f = Some(file.clone());
        Ok(file)
    }
}

/// A new file in the system's temporary folder, already unlinked.
fn anonymous_file() -> Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "roster-rows-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u64>()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    std::fs::remove_file(&path)
        .with_context(|| format!("cannot unlink the temporary file {}", path.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_past_the_budget_go_to_disk_and_come_back() {
        let rows = BucketRows::new(4, 11);
        rows.add(1, b"12345678".to_vec()).unwrap();
        rows.add(1, b"abcdef".to_vec()).unwrap(); // over budget: spilled
        rows.add(2, b"xyz".to_vec()).unwrap();
        assert_eq!(rows.spilled(), 6);
        assert_eq!(
            rows.read(1).unwrap(),
            vec![b"12345678".to_vec(), b"abcdef".to_vec()]
        );
        assert_eq!(
            rows.take(1).unwrap(),
            vec![b"12345678".to_vec(), b"abcdef".to_vec()]
        );
        assert!(rows.take(1).unwrap().is_empty());
        assert_eq!(rows.read(2).unwrap(), vec![b"xyz".to_vec()]);
        // Taking freed the memory part: the next one fits again.
        rows.add(3, b"1234567".to_vec()).unwrap();
        assert_eq!(rows.spilled(), 6);
        assert_eq!(rows.take(3).unwrap(), vec![b"1234567".to_vec()]);
        assert!(rows.take(3).unwrap().is_empty());
        assert!(rows.add(9, b"x".to_vec()).is_err(), "no such bucket");
    }

    #[test]
    fn a_bucket_past_its_limit_is_refused_until_taken() {
        let rows = BucketRows::new(2, 0);
        let half = MAX_BUCKET_BYTES / 2;
        rows.add(0, vec![0; half]).unwrap();
        rows.add(0, vec![0; half]).unwrap();
        let full = rows.add(0, vec![0]).unwrap_err();
        assert!(full.is::<BucketFull>(), "{full:#}");
        rows.add(1, vec![0; half]).unwrap();
        // Taken (a survey puts back what it keeps): counted again from nothing.
        let parts = rows.take(0).unwrap();
        for p in parts {
            rows.add(0, p).unwrap();
        }
    }
}
