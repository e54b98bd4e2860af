//! A simulated day of Cost Explorer publications at the demo's scales, for `bench/run --costs`
//! (ignored by `cargo test`: at 1,500 accounts it wants a release build). The demo's simulated
//! AWS replays one day (`demo_replay`: new usage at 02:00, 10:00 and 18:00 UTC, yesterday
//! turning final, a late credit), and one clock read by the simulator and the exporter steps
//! through it; the simulator counts every billed request.
//!
//! Each integration of `bench/run --costs` (a plain integration's defaults) is replayed twice:
//! "before", a full refresh every 6 hours (`check_interval: off`); and "after", change
//! detection as `auto` schedules it (every hour for an organization, whose plan takes more than
//! 5 requests; every `refresh_interval` for a standalone account). The printed lines are the
//! figures of the README's cost table: requests a day, and the hours at which the full plan was
//! bought, from which the worst delay behind AWS follows.
//!
//! `AWS_COST_EXPORTER_REPLAY_SCALES` (default `40,455,1500`) chooses the organizations' sizes.

mod common;

use std::time::Duration;

use aws_cost_exporter::Exporter;
use aws_cost_simulator::{Publications, Simulator, demo_replay};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::*;

fn at(day: NaiveDate, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(h, m, s).unwrap())
}

/// `bench/run --costs`'s integrations, with the schedule under test.
fn config(sim: &Simulator, name: &str, schedule: &str) -> String {
    let e = sim.endpoint();
    let integration = match name {
        "workload" => format!(
            "  - name: workload\n    account_id: \"222222222222\"\n    assumed_role_name: CostExporter\n    external_id: demo-external-id\n    access_key_id: AKIAI44QH8DHBEXAMPLE\n    secret_access_key: je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY\n    endpoint_url: {e}\n    sts_endpoint_url: {e}\n"
        ),
        _ => format!(
            "  - name: payer\n    account_id: \"111111111111\"\n    access_key_id: AKIAIOSFODNN7EXAMPLE\n    secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n    endpoint_url: {e}\n"
        ),
    };
    format!("{schedule}integrations:\n{integration}")
}

/// One replay: the requests of the day and the hours at which more than a check was bought.
struct Day {
    requests: usize,
    /// The first refresh's requests (the full plan, with the first check when there is one).
    first: usize,
    plans_at: Vec<u32>,
}

/// Runs `name` from 00:00:30 through the day, the clock stepping `step` hours at a time; at
/// each step the exporter's schedule is due (the configured intervals are shorter than a step
/// and the clock stands still in between), so it checks, or refreshes, once.
async fn replay(day: NaiveDate, scale: usize, name: &str, schedule: &str, step: u32) -> Day {
    let clock = TestClock::at(at(day, 0, 0, 30));
    let sim = demo_replay(day, scale, Publications::default(), clock.clock())
        .start()
        .await
        .expect("simulator starts");
    let exporter = start_on_clock(&config(&sim, name, schedule), &clock).await;
    checked_at(&exporter, name, at(day, 0, 0, 30)).await;
    let first = sim.billed_requests();
    let mut last = first;
    let mut plans_at = Vec::new();
    for hour in (step..24).step_by(step as usize) {
        let now = at(day, hour, 0, 0);
        clock.set(now);
        checked_at(&exporter, name, now).await;
        let billed = sim.billed_requests();
        if billed - last > 1 {
            plans_at.push(hour);
        }
        last = billed;
    }
    exporter.shutdown().await;
    Day {
        requests: last,
        first,
        plans_at,
    }
}

/// Waits until the exporter's last check (or full refresh) of `name` happened at `now` and
/// the refresh is over (its success recorded).
async fn checked_at(exporter: &Exporter, name: &str, now: DateTime<Utc>) {
    for _ in 0..1200 {
        let samples = parse_exposition(&get(exporter.local_addr(), "/metrics").await.text());
        let of = |metric: &str| value_of(&samples, metric, &[("integration", name)]);
        if of("aws_cost_data_last_checked_timestamp_seconds") == Some(now.timestamp() as f64)
            && of("aws_cost_refresh_success") == Some(1.0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name}: no check at {now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bench/run --costs runs it, in a release build"]
async fn a_day_of_publications_at_the_demo_scales() {
    let day = date(2026, 11, 23);
    let scales =
        std::env::var("AWS_COST_EXPORTER_REPLAY_SCALES").unwrap_or_else(|_| "40,455,1500".into());
    let before = "refresh_interval: 300ms\ncheck_interval: off\n";
    let after = "refresh_interval: 6h\ncheck_interval: 300ms\n";
    // The standalone account is the same at every scale.
    let mut runs = vec![(0, "workload", 6)];
    for scale in scales.split(',') {
        let scale: usize = scale.trim().parse().expect("a number of accounts");
        runs.push((scale, "payer", 1));
    }
    for (scale, name, step) in runs {
        let sim_scale = scale.max(40);
        let old = replay(day, sim_scale, name, before, 6).await;
        let new = replay(day, sim_scale, name, after, step).await;
        // Without checks, each of the four refreshes buys the whole plan.
        assert_eq!(old.plans_at, [6, 12, 18], "{name} at {scale}: before");
        assert_eq!(old.requests, 4 * old.first, "{name} at {scale}: before");
        println!(
            "replay accounts={scale} integration={name} plan={} before_requests={} after_requests={} after_step_hours={step} after_plans_at={}",
            old.first,
            old.requests,
            new.requests,
            new.plans_at
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
    }
}
