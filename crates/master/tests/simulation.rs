//! Deterministic simulation of the master state and many workers over a
//! faulty network (see `sim/mod.rs`).
//!
//! * `cargo test -p berth-master --test simulation` runs seeds 0..2000
//!   (`BERTH_SIM_SEEDS=N` for another count, `BERTH_SIM_FIRST=K` to start
//!   elsewhere).
//! * `BERTH_SIM_SEED=N` replays one seed; a failure prints the seed, this
//!   command, and the last events (`BERTH_SIM_VERBOSE=1` prints every
//!   message and, after each engine step, the live attempts;
//!   `BERTH_SIM_WATCH=ID` adds attempt ID once it has ended).
//! * `BERTH_SIM_KEEP_GOING=1` runs every seed and lists all failures.

mod sim;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn simulated_cluster_keeps_its_invariants_under_faults() {
    let seeds: Vec<u64> = match env_u64("BERTH_SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let first = env_u64("BERTH_SIM_FIRST").unwrap_or(0);
            let n = env_u64("BERTH_SIM_SEEDS").unwrap_or(2_000);
            (first..first + n).collect()
        }
    };
    let t0 = std::time::Instant::now();
    let mut total = sim::Stats::default();
    // BERTH_SIM_KEEP_GOING: run every seed, then list the failures.
    let keep_going = std::env::var("BERTH_SIM_KEEP_GOING").is_ok();
    let mut failures = Vec::new();
    for seed in &seeds {
        match sim::World::new(*seed).run() {
            Ok(s) => {
                total.steps += s.steps;
                total.submitted += s.submitted;
                total.messages += s.messages;
                total.dropped += s.dropped;
                total.master_crashes += s.master_crashes;
                total.agent_crashes += s.agent_crashes;
                total.machine_crashes += s.machine_crashes;
                total.partitions += s.partitions;
                total.audits += s.audits;
                total.stopped_before_start += s.stopped_before_start;
                total.agreement_checks += s.agreement_checks;
                total.commit_failures += s.commit_failures;
                total.batches += s.batches;
                total.master_stalls += s.master_stalls;
                total.clock_steps += s.clock_steps;
                total.capacity_lowered += s.capacity_lowered;
            }
            Err(e) if keep_going => failures.push(e.lines().next().unwrap_or("").to_string()),
            Err(e) => panic!("{e}"),
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} seeds failed:\n{}",
            failures.len(),
            seeds.len(),
            failures.join("\n")
        );
    }
    println!(
        "{} seeds in {:.1}s: {total:?}",
        seeds.len(),
        t0.elapsed().as_secs_f64()
    );
}
