//! Change detection end to end, through the real SDK against the simulated Cost Explorer with
//! AWS's publications modelled (02:00, 10:00 and 18:00 UTC: new usage for the open days, a day
//! turning final, a late credit) and one clock read by both: an unchanged check costs exactly
//! one request and leaves every served byte as it was; a publication is served exactly at the
//! next check; the data day moving at midnight, and `max_data_age`, each force the full plan;
//! a failed check is a failed refresh with its reason, the old data kept; an organization is
//! checked with one ungrouped request.

mod common;

use std::time::Duration;

use aws_cost_exporter::config::CostBasis;
use aws_cost_exporter::metrics::NAMES;
use aws_cost_exporter::{Exporter, ExporterOptions};
use aws_cost_simulator::{Behavior, Dataset, Publications, Simulator};
use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};
use common::*;

const PAYER: &str = "111111111111";

fn today() -> NaiveDate {
    date(2026, 11, 23)
}

fn at(day: NaiveDate, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(h, m, s).unwrap())
}

async fn simulator(dataset: Dataset, clock: &TestClock, page_size: usize) -> Simulator {
    Simulator::builder()
        .account(PAYER, dataset)
        .access_key(PAYER_KEY.0, PAYER_KEY.1, PAYER)
        .page_size(page_size)
        .publications(Publications::default())
        .clock(clock.clock())
        .start()
        .await
        .unwrap()
}

fn yaml(sim: &Simulator, name: &str, checks: &str) -> String {
    format!(
        "refresh_interval: 6h\n{checks}integrations:\n  - name: {name}\n    account_id: \"{PAYER}\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {e}\n    cost_basis: [unblended, amortized]\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        e = sim.endpoint()
    )
}

async fn start(yaml: &str, clock: &TestClock) -> Exporter {
    start_stored(yaml, clock, None).await
}

async fn start_stored(
    yaml: &str,
    clock: &TestClock,
    storage: Option<&std::path::Path>,
) -> Exporter {
    let options = ExporterOptions {
        storage_path: storage.map(std::path::Path::to_path_buf),
        refresh: aws_cost_exporter::refresh::RefreshOptions {
            retry_min: Duration::from_millis(200),
            ..test_refresh_options()
        },
        ..ExporterOptions::default()
    };
    start_on_clock_with(yaml, clock, options).await
}

/// What the exporter and the simulator say at one quiet moment: two scrapes 100 ms apart with
/// the same request count and checks, and the simulator's count between them (no check was
/// under way, so each side has counted the same requests).
struct Quiet {
    samples: Vec<Sample>,
    /// The page's lines but the exporter's own: what the snapshot serves.
    served: Vec<String>,
    billed: usize,
    unchanged: f64,
}

async fn quiet(exporter: &Exporter, sim: &Simulator, name: &str) -> Quiet {
    quiet_after(exporter, sim, name, 0).await
}

/// [`quiet`], when `others` requests reached the simulator from elsewhere (an exporter before
/// a restart).
async fn quiet_after(exporter: &Exporter, sim: &Simulator, name: &str, others: usize) -> Quiet {
    let requests = |samples: &[Sample]| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == "aws_cost_api_requests_total" && s.label("integration") == name)
            .map(|s| s.value)
            .sum()
    };
    for _ in 0..200 {
        let first = get(exporter.local_addr(), "/metrics").await.text();
        let billed = sim.billed_requests();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = get(exporter.local_addr(), "/metrics").await.text();
        let (a, b) = (parse_exposition(&first), parse_exposition(&second));
        let unchanged = |s: &[Sample]| {
            value_of(
                s,
                "aws_cost_data_checks_unchanged_total",
                &[("integration", name)],
            )
        };
        if requests(&a) == requests(&b)
            && unchanged(&a) == unchanged(&b)
            && requests(&a) + others as f64 == billed as f64
            && sim.billed_requests() == billed
        {
            let served = served_lines(&second);
            return Quiet {
                unchanged: unchanged(&b).unwrap_or(0.0),
                samples: b,
                served,
                billed,
            };
        }
    }
    panic!("never a quiet moment");
}

fn served_lines(page: &str) -> Vec<String> {
    page.lines()
        .filter(|line| {
            let name = line
                .trim_start_matches("# HELP ")
                .trim_start_matches("# TYPE ")
                .split(['{', ' '])
                .next()
                .unwrap_or_default();
            !NAMES.iter().any(|own| {
                name == *own
                    || name.strip_prefix(own).is_some_and(|rest| {
                        matches!(rest, "_total" | "_created" | "_bucket" | "_count" | "_sum")
                    })
            }) && name != "aws_cost_api_requests_total"
                && name != "aws_cost_api_requests"
        })
        .map(str::to_string)
        .collect()
}

/// Waits until `done` holds of a scrape.
async fn until(exporter: &Exporter, what: &str, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    for _ in 0..300 {
        let samples = parse_exposition(&get(exporter.local_addr(), "/metrics").await.text());
        if done(&samples) {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn metric(samples: &[Sample], name: &str, integration: &str) -> f64 {
    value_of(samples, name, &[("integration", integration)]).unwrap_or(f64::NAN)
}

/// Every served cost series against the simulation's own rows as published now: the month to
/// date and the data day, per cost basis, to 1e-9; and the Estimated flags.
fn assert_exact(samples: &[Sample], sim: &Simulator, name: &str, today: NaiveDate) {
    let dataset = sim.dataset(PAYER).unwrap();
    let data_day = today - Days::new(1);
    let month_start = today.with_day(1).unwrap();
    for basis in [CostBasis::Unblended, CostBasis::Amortized] {
        let sum = |family: &str| -> f64 {
            samples
                .iter()
                .filter(|s| {
                    s.name == family
                        && s.label("integration") == name
                        && s.label("cost_basis") == basis.as_str()
                })
                .map(|s| s.value)
                .sum()
        };
        let month = dataset.total(cost_metric(basis), |r| {
            r.day >= month_start && r.day <= today
        });
        let day = dataset.total(cost_metric(basis), |r| r.day == data_day);
        assert_close(sum("aws_cost_month_to_date_usd"), month, "month to date");
        assert_close(sum("aws_cost_daily_usd"), day, "data day");
    }
    let estimated = |period: &str| {
        value_of(
            samples,
            "aws_cost_estimated",
            &[("integration", name), ("period", period)],
        )
    };
    assert_eq!(
        estimated("daily"),
        Some(f64::from(u8::from(dataset.is_estimated(data_day))))
    );
    assert_eq!(
        estimated("month_to_date"),
        Some(f64::from(u8::from(dataset.is_estimated(today))))
    );
    assert_eq!(
        metric(samples, "aws_cost_data_day_timestamp_seconds", name),
        at(data_day, 0, 0, 0).timestamp() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_check_costs_one_request_and_a_publication_is_served_at_the_next() {
    let day = today();
    let clock = TestClock::at(at(day, 12, 0, 0));
    let sim = simulator(single_dataset(PAYER, day, 5), &clock, 500).await;
    let exporter = start(&yaml(&sim, "solo", "check_interval: 1s\n"), &clock).await;
    until(&exporter, "the first refresh", |s| {
        refresh_success(s, "solo") == Some(1.0)
    })
    .await;
    let first = quiet(&exporter, &sim, "solo").await;
    // The first check, grouped by account, is the plan's discovery: then the month and the
    // data day of the one account, and the forecast of each cost basis.
    let operations: Vec<String> = sim.requests().iter().map(|r| r.operation.clone()).collect();
    assert_eq!(
        &operations[..5],
        [
            "GetCostAndUsage",
            "GetCostAndUsage",
            "GetCostAndUsage",
            "GetCostForecast",
            "GetCostForecast"
        ]
    );
    let plan = 5.0;
    assert_eq!(first.billed as f64, plan + first.unchanged);
    assert_exact(&first.samples, &sim, "solo", day);

    // Unchanged checks: one request each, and the same bytes.
    until(&exporter, "three unchanged checks", |s| {
        metric(s, "aws_cost_data_checks_unchanged_total", "solo") >= first.unchanged + 3.0
    })
    .await;
    let later = quiet(&exporter, &sim, "solo").await;
    let checks = later.unchanged - first.unchanged;
    assert!(checks >= 3.0);
    assert_eq!((later.billed - first.billed) as f64, checks);
    assert!(
        sim.requests()[first.billed..]
            .iter()
            .all(|r| r.operation == "GetCostAndUsage")
    );
    assert_eq!(
        later.served, first.served,
        "an unchanged check serves the same bytes"
    );
    assert_eq!(
        metric(
            &later.samples,
            "aws_cost_data_last_changed_timestamp_seconds",
            "solo"
        ),
        at(day, 12, 0, 0).timestamp() as f64
    );

    // 18:00: new usage for the open days, and a late credit. The next check sees it, and the
    // plan that follows costs what the first one did, the check standing in for discovery.
    let published = at(day, 18, 0, 1);
    clock.set(published);
    until(&exporter, "the change", |s| {
        metric(s, "aws_cost_data_last_changed_timestamp_seconds", "solo")
            == published.timestamp() as f64
    })
    .await;
    let changed = quiet(&exporter, &sim, "solo").await;
    assert_eq!(
        (changed.billed - later.billed) as f64,
        plan + (changed.unchanged - later.unchanged)
    );
    assert_ne!(changed.served, later.served);
    assert_exact(&changed.samples, &sim, "solo", day);
    assert_eq!(
        metric(
            &changed.samples,
            "aws_cost_data_last_checked_timestamp_seconds",
            "solo"
        ),
        published.timestamp() as f64
    );

    // Midnight: the data day moves, with nothing new published: the full plan all the same.
    let midnight = at(day + Days::new(1), 0, 0, 30);
    clock.set(midnight);
    let rolled = until(&exporter, "the new data day", |s| {
        metric(s, "aws_cost_data_day_timestamp_seconds", "solo")
            == at(day, 0, 0, 0).timestamp() as f64
    })
    .await;
    assert_eq!(refresh_success(&rolled, "solo"), Some(1.0));
    let next = quiet(&exporter, &sim, "solo").await;
    assert_eq!(
        (next.billed - changed.billed) as f64,
        plan + (next.unchanged - changed.unchanged)
    );
    assert_exact(&next.samples, &sim, "solo", day + Days::new(1));
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_data_age_forces_the_full_plan_and_a_failed_check_keeps_the_data() {
    let day = today();
    let clock = TestClock::at(at(day, 12, 0, 0));
    let sim = simulator(single_dataset(PAYER, day, 6), &clock, 500).await;
    let exporter = start(
        &yaml(&sim, "solo", "check_interval: 300ms\nmax_data_age: 10s\n"),
        &clock,
    )
    .await;
    until(&exporter, "two unchanged checks", |s| {
        metric(s, "aws_cost_data_checks_unchanged_total", "solo") >= 2.0
    })
    .await;
    let before = quiet(&exporter, &sim, "solo").await;
    assert_eq!(
        metric(&before.samples, "aws_cost_data_age_seconds", "solo"),
        0.0
    );
    let plan = before.billed as f64 - before.unchanged;

    // Ten seconds on, in the same edition: unchanged data, bought again all the same.
    clock.set(at(day, 12, 0, 10));
    let aged = until(&exporter, "the forced refresh", |s| {
        metric(s, "aws_cost_data_age_seconds", "solo") == 0.0
    })
    .await;
    assert_eq!(refresh_success(&aged, "solo"), Some(1.0));
    let after = quiet(&exporter, &sim, "solo").await;
    assert_eq!(
        (after.billed - before.billed) as f64,
        plan + (after.unchanged - before.unchanged)
    );
    assert_eq!(after.served, before.served, "the same data, bought again");
    assert_eq!(
        metric(
            &after.samples,
            "aws_cost_data_last_changed_timestamp_seconds",
            "solo"
        ),
        at(day, 12, 0, 0).timestamp() as f64,
        "AWS did not change the data"
    );

    // A check that fails: a failed refresh with its reason; the data stays.
    sim.set_behavior(PAYER, Behavior::Throttled(usize::MAX));
    let failed = until(&exporter, "the failed check", |s| {
        refresh_success(s, "solo") == Some(0.0)
    })
    .await;
    assert!(
        value_of(
            &failed,
            "aws_cost_refresh_failures_total",
            &[("integration", "solo"), ("reason", "throttled")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        value_of(
            &failed,
            "aws_cost_query_success",
            &[("integration", "solo"), ("query", "costs")]
        ),
        Some(0.0)
    );
    let page = get(exporter.local_addr(), "/metrics").await.text();
    assert_eq!(served_lines(&page), after.served);
    sim.set_behavior(PAYER, Behavior::Normal);
    until(&exporter, "the recovery", |s| {
        refresh_success(s, "solo") == Some(1.0)
    })
    .await;
    exporter.shutdown().await;
}

/// The requests of the plan alone (`check_interval: off`) for `dataset`, thirty groups a page,
/// against a simulator of its own.
async fn plan_without_checks(
    dataset: Dataset,
    clock: &TestClock,
    yaml: &dyn Fn(&Simulator, &str, &str) -> String,
) -> usize {
    let reference = simulator(dataset, clock, 30).await;
    let off = start(&yaml(&reference, "off", "check_interval: off\n"), clock).await;
    until(&off, "the plan", |s| refresh_success(s, "off") == Some(1.0)).await;
    let plan = quiet(&off, &reference, "off").await.billed;
    off.shutdown().await;
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_is_checked_with_one_ungrouped_request() {
    let day = today();
    let clock = TestClock::at(at(day, 12, 0, 0));
    // Thirty groups a page: the month's 23 days by account are several pages, their totals
    // one. The plan without change detection, for comparison, against a simulator of its own.
    let plan = plan_without_checks(org_dataset(day, 7), &clock, &yaml).await;
    let sim = simulator(org_dataset(day, 7), &clock, 30).await;

    let exporter = start(&yaml(&sim, "org", "check_interval: 300ms\n"), &clock).await;
    until(&exporter, "two unchanged checks", |s| {
        metric(s, "aws_cost_data_checks_unchanged_total", "org") >= 2.0
    })
    .await;
    let first = quiet(&exporter, &sim, "org").await;
    // The first check: a page by account (not the whole answer), then the total: two requests
    // more than the plan, once; then one request a check.
    assert!(plan > 5);
    assert_eq!(first.billed as f64, plan as f64 + 2.0 + first.unchanged);
    assert!(
        sim.requests()[plan + 2..]
            .iter()
            .all(|r| r.operation == "GetCostAndUsage")
    );
    assert_exact(&first.samples, &sim, "org", day);
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_checks_the_stored_data_instead_of_buying_it_again() {
    let day = today();
    let clock = TestClock::at(at(day, 12, 0, 0));
    let sim = simulator(single_dataset(PAYER, day, 8), &clock, 500).await;
    let dir = std::env::temp_dir().join(format!("ace-change-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = yaml(&sim, "solo", "check_interval: 1s\n");
    let exporter = start_stored(&config, &clock, Some(&dir)).await;
    until(&exporter, "the first refresh", |s| {
        refresh_success(s, "solo") == Some(1.0)
    })
    .await;
    let before = quiet(&exporter, &sim, "solo").await;
    exporter.shutdown().await;

    // The stored snapshot is served at once, and its check's answer was stored with it: the
    // restarted exporter checks (one request each) and buys nothing more.
    let exporter = start_stored(&config, &clock, Some(&dir)).await;
    let page = get(exporter.local_addr(), "/metrics").await.text();
    assert_eq!(served_lines(&page), before.served);
    // Its first check is due a check interval after the stored data's fetch.
    clock.set(at(day, 12, 0, 2));
    until(&exporter, "two unchanged checks", |s| {
        metric(s, "aws_cost_data_checks_unchanged_total", "solo") >= 2.0
    })
    .await;
    let after = quiet_after(&exporter, &sim, "solo", before.billed).await;
    assert_eq!((after.billed - before.billed) as f64, after.unchanged);
    assert_eq!(after.served, before.served);
    exporter.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// One simulated day, checked on the hour from midnight (every `step` hours) with AWS
/// publishing at 02:00, 10:00 and 18:00: the plans bought at each check, and the requests of
/// the day (the first refresh, after midnight, included). The README's cost table is this.
async fn replay_day(
    sim: &Simulator,
    exporter: &Exporter,
    clock: &TestClock,
    name: &str,
    step: u32,
    plan: usize,
) -> (Vec<u32>, usize) {
    let day = today();
    until(exporter, "the first refresh", |s| {
        refresh_success(s, name) == Some(1.0)
    })
    .await;
    let start = quiet(exporter, sim, name).await;
    let mut last = quiet(exporter, sim, name).await;
    let mut planned_at = Vec::new();
    for hour in (step..24).step_by(step as usize) {
        let now = at(day, hour, 0, 0);
        clock.set(now);
        until(exporter, "the check", |s| {
            metric(s, "aws_cost_data_last_checked_timestamp_seconds", name)
                == now.timestamp() as f64
        })
        .await;
        let here = quiet(exporter, sim, name).await;
        let bought = (here.billed - last.billed) as f64 - (here.unchanged - last.unchanged);
        match bought {
            0.0 => {}
            b if b == plan as f64 => planned_at.push(hour),
            b => panic!("{b} requests at {hour}:00 beyond the checks"),
        }
        last = here;
    }
    // The day's requests, had each hour been checked once: the first refresh, one request per
    // check that found nothing, and the plans.
    let checks = (24 / step) as usize - 1;
    let day_requests = start.billed + (checks - planned_at.len()) + planned_at.len() * plan;
    (planned_at, day_requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_publications_costs_what_the_readme_says() {
    let day = today();
    let single = |sim: &Simulator, name: &str, checks: &str| {
        yaml(sim, name, checks).replace(
            "cost_basis: [unblended, amortized]",
            "cost_basis: [unblended]",
        )
    };

    // A standalone account, checked every 6h: each check is its plan's discovery, and every
    // six hours has news (a publication, or the new day), so the day costs what four refreshes
    // cost before: 4 x 4 requests.
    let clock = TestClock::at(at(day, 0, 0, 30));
    let sim = simulator(single_dataset(PAYER, day, 9), &clock, 500).await;
    let exporter = start(&single(&sim, "solo", "check_interval: 300ms\n"), &clock).await;
    let (planned, requests) = replay_day(&sim, &exporter, &clock, "solo", 6, 4).await;
    assert_eq!(planned, [6, 12, 18]);
    assert_eq!(requests, 16);
    exporter.shutdown().await;

    // An organization, checked every hour: 24 checks, and the plan after each of the four
    // changes (the new day, 02:00, 10:00, 18:00): 24 + 4 x P, each change seen within the hour.
    let clock = TestClock::at(at(day, 0, 0, 30));
    let plan = plan_without_checks(org_dataset(day, 10), &clock, &single).await;
    let sim = simulator(org_dataset(day, 10), &clock, 30).await;
    let exporter = start(&single(&sim, "org", "check_interval: 300ms\n"), &clock).await;
    // A change costs its check and the plan.
    let (planned, requests) = replay_day(&sim, &exporter, &clock, "org", 1, plan + 1).await;
    assert_eq!(planned, [2, 10, 18]);
    // The first check asked by account (several pages' first) and then the total: one more.
    assert_eq!(requests, 24 + 4 * plan + 1);
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_failed_is_retried_with_the_plan_although_the_data_is_unchanged() {
    let day = today();
    let clock = TestClock::at(at(day, 12, 0, 0));
    let sim = simulator(single_dataset(PAYER, day, 11), &clock, 500).await;
    sim.set_failure(
        PAYER,
        "GetCostForecast",
        Some(("DataUnavailableException", "not enough data to forecast")),
    );
    let exporter = start(&yaml(&sim, "solo", "check_interval: 300ms\n"), &clock).await;
    let forecast = |s: &[Sample]| {
        value_of(
            s,
            "aws_cost_query_success",
            &[("integration", "solo"), ("query", "forecast")],
        )
    };
    until(&exporter, "the partial refresh", |s| {
        forecast(s) == Some(0.0)
    })
    .await;
    let failing = quiet(&exporter, &sim, "solo").await;
    // Nothing changed at AWS, but the forecast's series are its last good ones (none): no
    // check stops at "unchanged" while a part is owed its retry.
    assert_eq!(failing.unchanged, 0.0);
    sim.set_failure(PAYER, "GetCostForecast", None);
    let fixed = until(&exporter, "the retry", |s| {
        forecast(s) == Some(1.0) && refresh_success(s, "solo") == Some(1.0)
    })
    .await;
    assert!(
        fixed
            .iter()
            .any(|s| s.name == "aws_cost_month_forecast_usd" && s.label("integration") == "solo")
    );
    // Then checks find the data unchanged again: one request each.
    until(&exporter, "an unchanged check", |s| {
        metric(s, "aws_cost_data_checks_unchanged_total", "solo") >= 2.0
    })
    .await;
    let before = quiet(&exporter, &sim, "solo").await;
    until(&exporter, "another unchanged check", |s| {
        metric(s, "aws_cost_data_checks_unchanged_total", "solo") >= before.unchanged + 1.0
    })
    .await;
    let after = quiet(&exporter, &sim, "solo").await;
    assert_eq!(
        (after.billed - before.billed) as f64,
        after.unchanged - before.unchanged
    );
    exporter.shutdown().await;
}
