//! Differential test of the two stores: the same sequence of user files, imported into a sled
//! store and into a PostgreSQL store (a throwaway cluster, tests/support/postgres.rs), must give
//! the same results after every step. PostgreSQL has its own code paths (the first import into
//! an empty tenant, the merge of later imports, group counts kept in SQL, the change log
//! numbered in SQL), so a backend that deactivates the wrong user or loses an update shows here.
//!
//! Each sequence is generated from a fixed seed by a small inline generator: a pool of people
//! whose fields are edited (case, whitespace, emptied cells, new emails, groups, dates), who
//! leave (a few, or enough to hold the run by `max_missing_percent`) and come back, with
//! invalid rows mixed in (bad email, no last name, a key twice, an email taken, a short row),
//! the same bytes sent again, a file that fails as a whole, held runs approved on both stores
//! (each with its own import id) and operator restores. Three tenant profiles: keyed by email
//! (`deactivate`), by mapping code (`delete`, `empty_cells = "clear"`, an `active` column) and by
//! username (`keep`, passwords, `activate = "with_password"`, `name_case = "capitalize"`).
//!
//! After every step both stores must agree on: the step's outcome (status, counts, messages and
//! failure report, import ids replaced by the step that made them), the import history, the
//! held plans, the tenant's version and last applied file, every user as readers see it and
//! every stored record (status, flags, fields, whether deleted_at is set; no timestamps), the
//! groups and status counts, and the change-log and event-log entries the step added (seq,
//! kind, key, field old → new). A mismatch fails with the profile, seed, step, what the step
//! did, a diff of the sections that differ and the file.
//!
//! Reproduce one seed (the failure message names the command): `ROSTER_PARITY_SEED=3 cargo test
//! --test import_store_parity code_keyed`; more seeds (a soak): `ROSTER_PARITY_SEED=5-200 cargo
//! test --test import_store_parity`. The default seeds are [`SEEDS`].

#[path = "support/postgres.rs"]
#[allow(dead_code)]
mod test_postgres;

#[path = "import_store_parity/generator.rs"]
mod generator;
#[path = "import_store_parity/snapshot.rs"]
mod snapshot;

use generator::{next_file, tenant_of, Action, Profile, World, BY_CODE, BY_EMAIL, BY_USERNAME};
use roster::import::ImportStatus;
use roster::store::Store;
use snapshot::{compare, snapshot, Side, Snapshot};
use test_postgres::TestPostgres;

/// The seeds run by default; `ROSTER_PARITY_SEED` picks others.
const SEEDS: [u64; 4] = [1, 2, 3, 4];

// --- sequences ---

/// The seeds to run: `ROSTER_PARITY_SEED` as `N` or `A-B`, else [`SEEDS`].
fn seeds() -> Vec<u64> {
    let Ok(text) = std::env::var("ROSTER_PARITY_SEED") else {
        return SEEDS.to_vec();
    };
    let number = |s: &str| -> u64 {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("ROSTER_PARITY_SEED={text:?} is not N or A-B"))
    };
    match text.split_once('-') {
        Some((from, to)) => (number(from)..=number(to)).collect(),
        None => vec![number(&text)],
    }
}

/// What a step came to on the sled store, for the coverage check: the run's status,
/// `approved` for an approve that applied a held run, `restored` for a restore that worked.
fn step_kind(action: &Action, side: &Side, outcome: &[String]) -> &'static str {
    match (action, side.last_status) {
        (Action::Approve, Some(_)) => "approved",
        (Action::Restore(_), _) if outcome[0].starts_with("restored") => "restored",
        (_, Some(status)) => status.as_str(),
        _ => "nothing done",
    }
}

/// Runs the sequence of `seed` for `profile` on both sides, comparing after every step;
/// returns what each step came to ([`step_kind`]).
fn run_sequence(profile: &Profile, seed: u64, sides: &mut [Side; 2]) -> Vec<&'static str> {
    let mut tenant = tenant_of(profile);
    tenant.id = format!("{}-s{seed}", profile.id);
    let mut world = World::new(seed);
    let steps = 15 + world.rng.below(11);
    let mut kinds = Vec::new();
    for step in 1..=steps {
        let reference = sides[0].store.users(&tenant.id, None).unwrap();
        let last_held = sides[0].last_status == Some(ImportStatus::Held);
        let action = world.next_action(profile, last_held, &reference);
        let mut snapshots = Vec::new();
        for side in sides.iter_mut() {
            let outcome = side.perform(&tenant, &action, step);
            snapshots.push(snapshot(side, &tenant.id, outcome));
        }
        let result = compare(
            (sides[0].name, &snapshots[0]),
            (sides[1].name, &snapshots[1]),
        );
        if let Err(diff) = result {
            let file = match &action {
                Action::Import(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => String::new(),
            };
            panic!(
                "profile {}, seed {seed}, step {step} of {steps} ({}): the stores differ\n{diff}\n\
                 reproduce: ROSTER_PARITY_SEED={seed} cargo test --test import_store_parity \
                 {}_keyed\nthe step's file:\n{file}",
                profile.id,
                action.describe(),
                profile.id
            );
        }
        kinds.push(step_kind(&action, &sides[0], &snapshots[0][0].1));
    }
    kinds
}

/// Every seed of `profile` against a fresh sled store and a fresh PostgreSQL database.
fn run_profile(profile: &Profile) {
    let pg = TestPostgres::start();
    let target = roster::store::postgres::parse_url(&pg.create_database("roster")).unwrap();
    let postgres = Store::open_postgres(&target, "parity").unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(dir.path()).unwrap();
    let mut kinds = Vec::new();
    for seed in seeds() {
        let mut sides = [Side::new("sled", &sled), Side::new("postgres", &postgres)];
        kinds.extend(run_sequence(profile, seed, &mut sides));
    }
    // The default seeds must keep reaching what the profile is there to exercise (a change
    // to the generator could quietly stop holding runs, say).
    if std::env::var_os("ROSTER_PARITY_SEED").is_none() {
        for want in profile.covers {
            assert!(
                kinds.contains(want),
                "profile {}: no step of the default seeds came to {want:?}: {kinds:?}",
                profile.id
            );
        }
    }
}

#[test]
fn email_keyed_imports_match_on_sled_and_postgres() {
    run_profile(&BY_EMAIL);
}

#[test]
fn code_keyed_imports_match_on_sled_and_postgres() {
    run_profile(&BY_CODE);
}

#[test]
fn username_keyed_imports_match_on_sled_and_postgres() {
    run_profile(&BY_USERNAME);
}

/// The comparison can fail: two sled stores given the same files, one of them a file more,
/// differ in the sections that file changed.
#[test]
fn the_comparison_reports_a_store_that_got_a_file_more() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        Store::open(dir_a.path()).unwrap(),
        Store::open(dir_b.path()).unwrap(),
    );
    let mut sides = [Side::new("a", &a), Side::new("b", &b)];
    let tenant = tenant_of(&BY_CODE);
    let mut world = World::new(7);
    let first = next_file(&mut world.rng, &BY_CODE, &world.people);
    for p in world.people.iter_mut().filter(|p| p.listed).take(3) {
        p.title = "Changed".into();
    }
    let extra = next_file(&mut world.rng, &BY_CODE, &world.people);
    sides[0].perform(&tenant, &Action::Import(first.clone()), 1);
    sides[1].perform(&tenant, &Action::Import(first), 1);
    sides[1].perform(&tenant, &Action::Import(extra), 2);
    let snapshots: Vec<Snapshot> = sides
        .iter_mut()
        .map(|side| snapshot(side, &tenant.id, Vec::new()))
        .collect();
    let diff = compare(
        (sides[0].name, &snapshots[0]),
        (sides[1].name, &snapshots[1]),
    )
    .expect_err("a store with a file more differs");
    for section in ["history", "tenant state", "users", "stored records"] {
        assert!(diff.contains(&format!("  {section}:\n")), "{diff}");
    }
    assert!(diff.contains("\"Changed\""), "{diff}");
}
