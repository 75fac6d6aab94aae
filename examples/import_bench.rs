//! Runs the import engine on a local file, for the benchmark (bench/import.sh).
//!
//! Usage: `import_bench STORE_DIR CSV [--store-url postgres://...]`. Prints one line with the
//! status, counts, wall time, rows/s and peak RSS (VmHWM) of this process. With `--store-url`
//! the store is the PostgreSQL database at that URL (migrated on open, node id `bench`) and
//! STORE_DIR is not used. With `ROSTER_BENCH_GROUPS=1` the file's `groups` column is imported too.

use roster::config::{MatchBy, OnMissing, Reference, Tenant};
use roster::import::{run_file, RunOptions};
use roster::store::Store;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// Counts live heap bytes, so the benchmark can tell memory the program holds from memory the
/// allocator keeps (RSS). Set `ROSTER_BENCH_TRACE=1` for a timeline on stderr (the count
/// starts there, so allocations made before it are not in it).
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Counting costs an atomic add per allocation, so it is on only for the timeline.
static COUNT: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNT.load(Ordering::Relaxed) {
            LIVE.fetch_add(l.size(), Ordering::Relaxed);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if COUNT.load(Ordering::Relaxed) {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        }
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNT.load(Ordering::Relaxed) {
            LIVE.fetch_add(n, Ordering::Relaxed);
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A `/proc/self/status` memory line (`VmRSS`, `VmHWM`) in MB.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(csv)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: import_bench STORE_DIR CSV [--store-url postgres://...]");
    };
    let store_url = match args.iter().position(|a| a == "--store-url") {
        Some(i) => match args.get(i + 1) {
            Some(url) => Some(url.clone()),
            None => anyhow::bail!("--store-url needs a postgres:// URL"),
        },
        None => None,
    };
    let mut columns = vec![
        ("mapping_code", "id"),
        ("first_name", "first_name"),
        ("last_name", "last_name"),
        ("email", "email"),
        ("date_of_birth", "date_of_birth"),
        ("sex", "sex"),
        ("language", "language"),
        ("org_unit", "org_unit"),
        ("location", "location"),
        ("job_title", "job_title"),
    ];
    // bench/scim_read.sh on sled: a file with a `groups` column (h-scimspeed).
    if std::env::var_os("ROSTER_BENCH_GROUPS").is_some() {
        columns.push(("groups", "groups"));
    }
    let mut tenant = Tenant::for_import(
        "bench",
        MatchBy::MappingCode,
        OnMissing::Deactivate,
        &columns,
    );
    tenant.reference = Reference {
        org_units: (0..50).map(|i| format!("OU{i}")).collect(),
        locations: (0..20).map(|i| format!("LOC{i}")).collect(),
        workplaces: vec![],
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    COUNT.store(
        std::env::var_os("ROSTER_BENCH_TRACE").is_some(),
        Ordering::Relaxed,
    );
    let t0 = Instant::now();
    let store = match &store_url {
        Some(url) => {
            let target = roster::store::postgres::parse_url(url).map_err(anyhow::Error::msg)?;
            Store::open_postgres(&target, "bench")?
        }
        None => Store::open(Path::new(dir))?,
    };
    let opened = t0.elapsed();
    if std::env::var_os("ROSTER_BENCH_RSS").is_some() {
        eprintln!("after open: peak RSS {:.0} MB", peak_rss_mb());
    }
    let t1 = Instant::now();
    if std::env::var_os("ROSTER_BENCH_TRACE").is_some() {
        std::thread::spawn(move || loop {
            eprintln!(
                "{:6.2} s  live {:4.0} MB  rss {:4.0} MB",
                t1.elapsed().as_secs_f64(),
                LIVE.load(Ordering::Relaxed) as f64 / 1048576.0,
                rss_mb()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        });
    }
    let out = run_file(&store, &tenant, Path::new(csv), &RunOptions::default())?;
    let secs = t1.elapsed().as_secs_f64();
    // What the commit left running (sled: the user lists of a large import, rebuilt after it).
    store.settle();
    let settled = t1.elapsed().as_secs_f64() - secs;
    let r = &out.record;
    println!(
        "status={} rows={} inserted={} updated={} unchanged={} deactivated={} skipped={} | import {:.2} s, {:.0} rows/s, store open {:.2} s, settled {:.2} s later, peak RSS {:.0} MB",
        r.status,
        r.counts.rows,
        r.counts.inserted,
        r.counts.updated,
        r.counts.unchanged,
        r.counts.deactivated,
        r.counts.skipped,
        secs,
        r.counts.rows as f64 / secs,
        opened.as_secs_f64(),
        settled,
        peak_rss_mb()
    );
    for m in r.messages.iter().take(3) {
        println!("  {m}");
    }
    Ok(())
}
