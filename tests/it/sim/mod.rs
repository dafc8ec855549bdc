//! The seeded convergence test: random interleavings of both sides' edits,
//! Google faults, worker crashes, a second replica and disconnects must end,
//! once things go quiet, with the two sides equal (see [`check`]).
//!
//! - `cargo test --test it sim::` runs the CI set: [`CI_SEEDS`] plus the
//!   regression seeds, [`CI_STEPS`] operations each, and asserts that across
//!   the set every operation kind ran, every fault fired (as the emulator's
//!   request log shows) and kills landed on claimed jobs.
//! - `PLANSYNC_SIM_SEED=<n>` replays one seed (same operations; the timing of
//!   kills and of the second replica is the machine's).
//! - `PLANSYNC_SIM_SEEDS=<n>` soaks: `n` seeds from `PLANSYNC_SIM_FIRST_SEED`
//!   (default: drawn from the clock and printed). `PLANSYNC_SIM_STEPS` sets the
//!   operations per seed, `PLANSYNC_SIM_JOBS` how many seeds run at once,
//!   `PLANSYNC_SIM_VERBOSE=1` prints every seed's operation log.
//!
//! A failure prints the seed, the violations and the operation log.

mod check;
mod history;
mod model;
mod ops;

use std::sync::{Arc, Mutex};

use futures::StreamExt;

use history::{Sim, Stats};

/// The CI set. Seeds 8, 14 and 16 found that a push sent a zone-less end in
/// the start's zone (fixed in `google::mapping`).
const CI_SEEDS: std::ops::RangeInclusive<u64> = 1..=20;
/// Seeds outside [`CI_SEEDS`] that once found a divergence, kept with its
/// fix: (seed, operations).
/// - 3011 (150): a pull listing across a `disconnect` overwrote a host edit
///   made after it (fixed in `sync::pull`; its own test in `pull/local_edits.rs`).
const REGRESSION_SEEDS: &[(u64, usize)] = &[(3011, 150)];
const CI_STEPS: usize = 100;
/// Seeds in flight at once (each has its own database, emulator, workers).
const DEFAULT_JOBS: usize = 4;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// What one seed did: its counts, or its failure report.
async fn run_seed(seed: u64, steps: usize) -> Result<Stats, String> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let task_log = log.clone();
    // Not spawned (sqlx's borrowed executors make the future non-`Send`):
    // polled here, with a panic caught so the op log still prints.
    let task = std::panic::AssertUnwindSafe(async move {
        let mut rng = history::rng(seed);
        let mut sim = Sim::start(seed, &mut rng, task_log).await;
        let today = chrono::Utc::now().date_naive();
        let ops = ops::draw(&mut rng, steps, today);
        for (i, op) in ops.iter().enumerate() {
            sim.step(i, op).await;
        }
        sim.settle().await;
        let violations = check::check(&mut sim).await;
        (violations, sim.stats.clone())
    });
    // A history that hangs (a pass that never returns) fails with its log
    // instead of holding up the suite.
    let limit = std::time::Duration::from_secs(60 + steps as u64 / 2);
    let outcome = tokio::time::timeout(limit, futures::FutureExt::catch_unwind(task)).await;
    let log = log.lock().unwrap().join("\n");
    if std::env::var_os("PLANSYNC_SIM_VERBOSE").is_some() {
        eprintln!("--- seed {seed}\n{log}");
    }
    match outcome {
        Err(_) => Err(format!(
            "seed {seed} did not finish within {limit:?} (replay: PLANSYNC_SIM_SEED={seed} \
             PLANSYNC_SIM_STEPS={steps} cargo test --test it sim::)\n--- operations\n{log}"
        )),
        Ok(Ok((violations, stats))) if violations.is_empty() => Ok(stats),
        Ok(Ok((violations, _))) => Err(format!(
            "seed {seed} diverged (replay: PLANSYNC_SIM_SEED={seed} PLANSYNC_SIM_STEPS={steps} \
             cargo test --test it sim::)\n--- violations\n{}\n--- operations\n{log}",
            violations.join("\n")
        )),
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!(
                "seed {seed} failed to run (replay: PLANSYNC_SIM_SEED={seed} PLANSYNC_SIM_STEPS={steps} \
                 cargo test --test it sim::): {message}\n--- operations\n{log}"
            ))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_histories_converge() {
    let steps = env_number("PLANSYNC_SIM_STEPS").map_or(CI_STEPS, |n| n as usize);
    let jobs = env_number("PLANSYNC_SIM_JOBS").map_or(DEFAULT_JOBS, |n| n.max(1) as usize);
    let (seeds, ci): (Vec<(u64, usize)>, bool) = if let Some(seed) = env_number("PLANSYNC_SIM_SEED")
    {
        (vec![(seed, steps)], false)
    } else if let Some(n) = env_number("PLANSYNC_SIM_SEEDS") {
        let first = env_number("PLANSYNC_SIM_FIRST_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                % 1_000_000
                * 1000
        });
        eprintln!("soak: {n} seeds from {first}, {steps} operations each");
        ((first..first + n).map(|s| (s, steps)).collect(), false)
    } else {
        (
            CI_SEEDS
                .map(|s| (s, steps))
                .chain(REGRESSION_SEEDS.iter().copied())
                .collect(),
            true,
        )
    };

    let started = std::time::Instant::now();
    let results: Vec<(u64, Result<Stats, String>)> = futures::stream::iter(seeds)
        .map(|(seed, steps)| async move { (seed, run_seed(seed, steps).await) })
        .buffer_unordered(jobs)
        .collect()
        .await;
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for (seed, result) in &results {
        match result {
            Ok(stats) => total.add(stats),
            Err(report) => failures.push((*seed, report.clone())),
        }
    }
    eprintln!(
        "convergence: {} seeds x {steps} operations in {:.1?}: {total:?}",
        results.len(),
        started.elapsed()
    );
    if !failures.is_empty() {
        failures.sort_by_key(|(seed, _)| *seed);
        let seeds: Vec<u64> = failures.iter().map(|(s, _)| *s).collect();
        for (_, report) in &failures {
            eprintln!("{report}\n");
        }
        panic!("{} seeds diverged: {seeds:?} (reports above)", seeds.len());
    }

    if ci {
        // The CI set must have exercised everything it promises to.
        for kind in ops::OP_KINDS {
            assert!(
                total.ops.get(kind).copied().unwrap_or(0) > 0,
                "no {kind} ran across the CI set: {total:?}"
            );
        }
        for fault in [
            "lost_insert",
            "lost_patch",
            "list_5xx",
            "rate_limited_429",
            "sync_token_410",
        ] {
            assert!(
                total.faults_fired.get(fault).copied().unwrap_or(0) > 0,
                "the {fault} fault never fired across the CI set: {total:?}"
            );
        }
        assert!(
            total.kills_landed > 0,
            "no kill landed on a claimed job: {total:?}"
        );
        assert!(
            total.disconnected_predictions > 0,
            "no host edit made while disconnected was checked: {total:?}"
        );
    }
}
