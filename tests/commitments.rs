//! Commitments and anomalies, exporter side: the exporter (its library entry point, or its
//! refresher driven at chosen times) on 127.0.0.1:0, the real aws-sdk-costexplorer client
//! against the simulated Cost Explorer, scraped over HTTP. Every served figure is compared
//! with sums computed here from the simulator's own cost rows (tests/common/commitments.rs),
//! and every billed request is counted, at the simulator and in `aws_cost_api_requests_total`:
//! the pages of each operation, none for an integration without commitments, the daily
//! schedule, a failed fetch that keeps the last series, and the daily request cap.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_cost_exporter::credentials::{self, Timeouts};
use aws_cost_exporter::metrics::Metrics;
use aws_cost_exporter::parts::commitments::FAMILIES as COMMITMENT_FAMILIES;
use aws_cost_exporter::refresh::Refresher;
use aws_cost_exporter::server::{self, ServerState};
use aws_cost_exporter::snapshot::SnapshotStore;
use aws_cost_simulator::commitments::{
    ANOMALIES, MONITORS, SAVINGS_PLANS, reservation_profile, savings_plan_arn, subscription_id,
};
use aws_cost_simulator::dataset::{SimRow, units_to_f64};
use aws_cost_simulator::{Behavior, Dataset, Simulator};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{DateTime, Days, NaiveDate, TimeZone as _, Utc};
use common::commitments::*;
use common::*;
use tokio_util::sync::CancellationToken;

const PAYER: &str = "111111111111";

/// The simulator's today.
fn today() -> NaiveDate {
    date(2026, 11, 23)
}

fn at(day: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(hour, minute, 0).unwrap())
}

/// The operations that fetch commitments.
const COMMITMENT_OPERATIONS: [&str; 5] = [
    "GetSavingsPlansUtilization",
    "GetSavingsPlansUtilizationDetails",
    "GetSavingsPlansCoverage",
    "GetReservationUtilization",
    "GetReservationCoverage",
];

/// One integration `name` on the payer, forecasts off (so that every request is a cost,
/// commitment or anomaly page), with `extra` keys.
fn integration_yaml(sim: &Simulator, name: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    account_id: \"{PAYER}\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n    forecast: false\n{extra}",
        PAYER_KEY.0,
        PAYER_KEY.1,
        sim.endpoint()
    )
}

fn config_yaml(sim: &Simulator, top: &str, name: &str, extra: &str) -> String {
    format!("{top}integrations:\n{}", integration_yaml(sim, name, extra))
}

const BOTH: &str = "    commitments: true\n    anomalies: true\n";

/// Requests the simulator received, by operation.
fn by_operation(requests: &[aws_cost_simulator::LoggedRequest]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        *out.entry(r.operation.clone()).or_default() += 1;
    }
    out
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| (op.to_string(), *n))
        .collect()
}

/// `aws_cost_api_requests_total` of one integration, by operation and outcome (zeros left out).
fn counted(samples: &[Sample], integration: &str) -> BTreeMap<(String, String), usize> {
    samples
        .iter()
        .filter(|s| {
            s.name == "aws_cost_api_requests_total"
                && s.label("integration") == integration
                && s.value > 0.0
        })
        .map(|s| {
            (
                (
                    s.label("operation").to_string(),
                    s.label("outcome").to_string(),
                ),
                s.value as usize,
            )
        })
        .collect()
}

/// The same counts as all successes.
fn successes(expected: &BTreeMap<String, usize>) -> BTreeMap<(String, String), usize> {
    expected
        .iter()
        .map(|(op, n)| ((op.clone(), "success".to_string()), *n))
        .collect()
}

type Labels = BTreeMap<String, String>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The samples of one family for one integration: labels (but `integration`) to value.
fn family(samples: &[Sample], name: &str, integration: &str) -> BTreeMap<Labels, f64> {
    let mut out = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == name && s.label("integration") == integration)
    {
        let mut l = s.labels.clone();
        l.remove("integration");
        assert!(
            out.insert(l, s.value).is_none(),
            "{name}: a duplicate series"
        );
    }
    out
}

/// An expected sample value: passed through from AWS's decimal (equal), or computed by a
/// floating-point division (within 1e-9 relative).
#[derive(Debug, Clone, Copy)]
enum Want {
    Exact(f64),
    Close(f64),
}

/// The family holds exactly these series, with these values.
fn assert_family(samples: &[Sample], name: &str, integration: &str, want: &[(Labels, Want)]) {
    let got = family(samples, name, integration);
    let mut sorted: Vec<&Labels> = want.iter().map(|(l, _)| l).collect();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), want.len(), "{name}: duplicate expectations");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        sorted,
        "{name}: the series served"
    );
    for (l, w) in want {
        let value = got[l];
        match *w {
            Want::Exact(v) => assert_eq!(value, v, "{name} {l:?}"),
            Want::Close(v) => assert_close(value, v, &format!("{name} {l:?}")),
        }
    }
}

/// The dataset's services with reservation charges in a refresh's cost rows (the month to date
/// and the data day), and whether it shows Savings Plans charges.
fn wanted(dataset: &Dataset, clock_today: NaiveDate, data_delay_days: u64) -> (bool, Vec<String>) {
    let [month, day] = month_and_day(clock_today, data_delay_days);
    let rows: Vec<&SimRow> = dataset
        .rows
        .iter()
        .filter(|r| (r.day >= month.0 && r.day < month.1) || (r.day >= day.0 && r.day < day.1))
        .collect();
    let plans = rows
        .iter()
        .any(|r| r.record_type().starts_with("SavingsPlan"));
    let services: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| matches!(r.record_type(), "RIFee" | "DiscountedUsage"))
        .map(|r| r.service().to_string())
        .collect();
    (plans, services.into_iter().collect())
}

/// Asserts every commitment family of `integration` against the rows of `dataset` over the
/// window `[start, end)`.
fn assert_commitments(
    samples: &[Sample],
    integration: &str,
    dataset: &Dataset,
    (start, end): (NaiveDate, NaiveDate),
) {
    let sim_today = dataset.today.unwrap();
    let one = |name: &str, pairs: &[(&str, &str)], want: Want| {
        assert_family(samples, name, integration, &[(labels(pairs), want)]);
    };
    one(
        "aws_cost_commitments_data_day_timestamp_seconds",
        &[],
        Want::Exact(midnight(end - Days::new(1))),
    );

    // Savings Plans: [recurring, upfront, total, used, on demand] per plan.
    let plans = expected_plans(dataset, start, end);
    let all = sum_plans(&plans);
    assert!(all[3] > 0 && all[3] < all[2], "plans used, partly: {all:?}");
    one(
        "aws_cost_savings_plans_utilization_ratio",
        &[],
        Want::Close(ratio(all[3], all[2])),
    );
    assert_family(
        samples,
        "aws_cost_savings_plans_commitment_usd",
        integration,
        &[
            (labels(&[("state", "used")]), Want::Exact(decimal(all[3]))),
            (
                labels(&[("state", "unused")]),
                Want::Exact(decimal(all[2] - all[3])),
            ),
        ],
    );
    one(
        "aws_cost_savings_plans_net_savings_usd",
        &[],
        Want::Exact(decimal(all[4] - all[2])),
    );
    let coverage = expected_sp_coverage(dataset, (start, end), SimRow::service);
    assert_eq!(
        coverage.keys().map(String::as_str).collect::<Vec<_>>(),
        ["AWS Lambda", EC2]
    );
    let (mut ratios, mut covered, mut on_demand) = (Vec::new(), Vec::new(), Vec::new());
    for (service, (c, o)) in &coverage {
        let l = labels(&[("aws_service", service.as_str())]);
        assert!(c + o > 0, "{service}");
        ratios.push((l.clone(), Want::Close(ratio(*c, c + o))));
        covered.push((l.clone(), Want::Exact(decimal(*c))));
        on_demand.push((l, Want::Exact(decimal(*o))));
    }
    assert_family(
        samples,
        "aws_cost_savings_plans_coverage_ratio",
        integration,
        &ratios,
    );
    assert_family(
        samples,
        "aws_cost_savings_plans_covered_usd",
        integration,
        &covered,
    );
    assert_family(
        samples,
        "aws_cost_savings_plans_on_demand_usd",
        integration,
        &on_demand,
    );
    let (mut utilization, mut ends, mut info) = (Vec::new(), Vec::new(), Vec::new());
    for (plan, f) in SAVINGS_PLANS.iter().zip(&plans) {
        let arn = savings_plan_arn(PAYER, plan);
        let l = labels(&[("savings_plan_arn", arn.as_str())]);
        utilization.push((l.clone(), Want::Close(ratio(f[3], f[2]))));
        ends.push((
            l,
            Want::Exact(midnight(sim_today + Days::new(plan.days_to_end))),
        ));
        info.push((
            labels(&[
                ("savings_plan_arn", arn.as_str()),
                ("account_id", PAYER),
                ("savings_plan_type", plan.plan_type),
                ("region", plan.region),
                ("instance_family", plan.instance_family),
                ("payment_option", plan.payment_option),
                ("term", plan.term),
            ]),
            Want::Exact(1.0),
        ));
    }
    assert_family(
        samples,
        "aws_cost_savings_plan_utilization_ratio",
        integration,
        &utilization,
    );
    assert_family(
        samples,
        "aws_cost_savings_plan_end_timestamp_seconds",
        integration,
        &ends,
    );
    assert_family(samples, "aws_cost_savings_plan_info", integration, &info);

    // Reservations: RDS only, [purchased, actual, fee, on demand, ..] per reservation.
    let reservations = expected_reservations(dataset, RDS, start, end);
    assert_eq!(reservations.len(), 12, "4 databases in each of 3 accounts");
    let r = sum_reservations(&reservations);
    let rds = [("aws_service", RDS)];
    one(
        "aws_cost_reservation_utilization_ratio",
        &rds,
        Want::Close(ratio(r[1], r[0])),
    );
    one(
        "aws_cost_reservation_unused_hours",
        &rds,
        Want::Exact(decimal(r[0] - r[1])),
    );
    one(
        "aws_cost_reservation_net_savings_usd",
        &rds,
        Want::Exact(decimal(r[3] - r[2])),
    );
    let (mut ratios, mut on_demand) = (Vec::new(), Vec::new());
    for (account, (reserved, od)) in expected_ri_coverage(dataset, RDS, start, end) {
        let l = labels(&[("aws_service", RDS), ("account_id", account.as_str())]);
        assert!(reserved > 0 && od > 0, "{account}");
        ratios.push((l.clone(), Want::Close(ratio(reserved, reserved + od))));
        on_demand.push((l, Want::Exact(decimal(od))));
    }
    assert_eq!(ratios.len(), 3);
    assert_family(
        samples,
        "aws_cost_reservation_coverage_ratio",
        integration,
        &ratios,
    );
    assert_family(
        samples,
        "aws_cost_reservation_on_demand_usd",
        integration,
        &on_demand,
    );
    let (mut utilization, mut ends, mut info) = (Vec::new(), Vec::new(), Vec::new());
    for ((account, resource), f) in &reservations {
        let id = subscription_id(account, resource);
        let (_, days_to_end, _) = reservation_profile(resource);
        let l = labels(&[("aws_service", RDS), ("subscription_id", id.as_str())]);
        utilization.push((l.clone(), Want::Close(ratio(f[1], f[0]))));
        ends.push((l, Want::Exact(midnight(sim_today + Days::new(days_to_end)))));
        info.push((
            labels(&[
                ("aws_service", RDS),
                ("subscription_id", id.as_str()),
                ("account_id", account.as_str()),
                ("region", "us-east-1"),
                ("instance_type", ""),
            ]),
            Want::Exact(1.0),
        ));
    }
    assert_family(
        samples,
        "aws_cost_reservation_subscription_utilization_ratio",
        integration,
        &utilization,
    );
    assert_family(
        samples,
        "aws_cost_reservation_end_timestamp_seconds",
        integration,
        &ends,
    );
    assert_family(samples, "aws_cost_reservation_info", integration, &info);
}

/// Every sample of the commitment families, of every integration.
fn commitment_samples(samples: &[Sample]) -> Vec<Sample> {
    let names: Vec<&str> = COMMITMENT_FAMILIES.iter().map(|f| f.name).collect();
    samples
        .iter()
        .filter(|s| names.contains(&s.name.as_str()))
        .cloned()
        .collect()
}

fn query_success(samples: &[Sample], integration: &str, query: &str) -> Option<f64> {
    value_of(
        samples,
        "aws_cost_query_success",
        &[("integration", integration), ("query", query)],
    )
}

#[tokio::test]
async fn every_commitment_series_is_the_sum_of_the_simulators_rows() {
    let sim = org_simulator(today(), 500).await;
    let config = parse_config(&config_yaml(&sim, "", "payer", BOTH));
    let exporter = start_exporter(config, today()).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["payer"]).await;
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    for query in ["costs", "commitments", "anomalies"] {
        assert_eq!(
            query_success(&samples, "payer", query),
            Some(1.0),
            "{query}"
        );
    }
    let dataset = sim.dataset(PAYER).unwrap();
    // The cost rows show Savings Plans and RDS reservations, nothing else.
    assert_eq!(wanted(&dataset, today(), 1), (true, vec![RDS.to_string()]));
    // Data day yesterday: the window ends before today (Savings Plans utilisation needs it).
    assert_commitments(
        &samples,
        "payer",
        &dataset,
        (date(2026, 11, 1), date(2026, 11, 22)),
    );
    // 18 families, every one of them served.
    for f in &COMMITMENT_FAMILIES {
        assert!(
            samples.iter().any(|s| s.name == f.name),
            "{} is served",
            f.name
        );
    }
    exporter.shutdown().await;
}

#[tokio::test]
async fn anomalies_are_served_by_monitor_and_main_cause_and_the_largest_are_kept() {
    let sim = org_simulator(today(), 500).await;
    let config = parse_config(&format!(
        "integrations:\n{}{}",
        integration_yaml(&sim, "payer", "    anomalies: true\n"),
        integration_yaml(
            &sim,
            "capped",
            "    anomalies: true\n    max_anomaly_series: 2\n"
        ),
    ));
    let exporter = start_exporter(config, today()).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["payer", "capped"]).await;
    let dataset = sim.dataset(PAYER).unwrap();
    let anomalies = expected_anomalies(&dataset);
    assert_eq!(anomalies.len(), 3);
    // Distinct impacts: the ranking is the impact's alone.
    let mut by_impact: Vec<&ExpectedAnomaly> = anomalies.iter().collect();
    by_impact.sort_by_key(|a| std::cmp::Reverse(a.impact()));
    assert!(by_impact[0].impact() > by_impact[1].impact());
    assert!(by_impact[1].impact() > by_impact[2].impact() && by_impact[2].impact() > 0);

    for (integration, kept) in [("payer", 3), ("capped", 2)] {
        assert_eq!(refresh_success(&samples, integration), Some(1.0));
        assert_eq!(query_success(&samples, integration, "anomalies"), Some(1.0));
        let (mut impact, mut open, mut score, mut start) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for a in &by_impact[..kept] {
            let l = labels(&[
                ("monitor", MONITORS[a.spec.monitor].1),
                ("anomaly_id", a.spec.id),
                ("aws_service", a.spec.service),
                ("account_id", a.account.as_str()),
            ]);
            impact.push((l.clone(), Want::Exact(units_to_f64(a.impact()))));
            let is_open = a.spec.end_days_ago.is_none();
            open.push((l.clone(), Want::Exact(if is_open { 1.0 } else { 0.0 })));
            score.push((l.clone(), Want::Exact(a.spec.max_score)));
            start.push((l, Want::Exact(midnight(a.first))));
        }
        assert_family(
            &samples,
            "aws_cost_anomaly_impact_usd",
            integration,
            &impact,
        );
        assert_family(&samples, "aws_cost_anomaly_open", integration, &open);
        assert_family(&samples, "aws_cost_anomaly_max_score", integration, &score);
        assert_family(
            &samples,
            "aws_cost_anomaly_start_timestamp_seconds",
            integration,
            &start,
        );
        // Every anomaly counted, kept or not: two of the service monitor, one of the other.
        assert_family(
            &samples,
            "aws_cost_anomalies",
            integration,
            &[
                (labels(&[("monitor", "Linked accounts")]), Want::Exact(1.0)),
                (labels(&[("monitor", "Services")]), Want::Exact(2.0)),
            ],
        );
        let metric = [
            ("integration", integration),
            ("metric", "aws_cost_anomaly_impact_usd"),
        ];
        assert_eq!(
            value_of(&samples, "aws_cost_series", &metric),
            Some(kept as f64)
        );
        assert_eq!(
            value_of(&samples, "aws_cost_series_dropped", &metric),
            Some((3 - kept) as f64)
        );
        // Commitments are off: none of their series.
        assert!(commitment_samples(&samples).is_empty());
    }
    // One open anomaly (started three days ago), the others closed.
    let open: Vec<&str> = anomalies
        .iter()
        .filter(|a| a.last == today())
        .map(|a| a.spec.id)
        .collect();
    assert_eq!(open, [ANOMALIES[0].id]);
    exporter.shutdown().await;
}

/// One refresh with commitments and anomalies on at simulator page size `page_size`: the
/// requests of each operation, at the simulator and in the exporter's counter.
async fn assert_pages(page_size: usize, expected_commitment_pages: [usize; 6]) {
    let sim = org_simulator(today(), page_size).await;
    let config = parse_config(&config_yaml(&sim, "", "payer", BOTH));
    let exporter = start_exporter(config, today()).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["payer"]).await;
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    let dataset = sim.dataset(PAYER).unwrap();

    // The pages the data makes: entries over the page size, each operation.
    let (start, end) = (date(2026, 11, 1), date(2026, 11, 22));
    let pages = |entries: usize| entries.max(1).div_ceil(page_size);
    let from_data = [
        pages(SAVINGS_PLANS.len()),
        pages(expected_sp_coverage(&dataset, (start, end), SimRow::service).len()),
        pages(expected_reservations(&dataset, RDS, start, end).len()),
        pages(expected_ri_coverage(&dataset, RDS, start, end).len()),
        pages(ANOMALIES.len()),
        pages(MONITORS.len()),
    ];
    assert_eq!(from_data, expected_commitment_pages);
    let [
        details,
        coverage,
        reservations,
        reservation_coverage,
        anomalies,
        monitors,
    ] = from_data;
    let costs = expected_requests(&dataset, today(), 1, page_size) as usize;
    let expected = counts(&[
        ("GetCostAndUsage", costs),
        ("GetSavingsPlansUtilizationDetails", details),
        ("GetSavingsPlansCoverage", coverage),
        ("GetReservationUtilization", reservations),
        ("GetReservationCoverage", reservation_coverage),
        ("GetAnomalies", anomalies),
        ("GetAnomalyMonitors", monitors),
    ]);
    assert_eq!(by_operation(&sim.requests()), expected, "at the simulator");
    assert_eq!(
        sim.billed_requests(),
        expected.values().sum::<usize>(),
        "every one billed"
    );
    assert_eq!(counted(&samples, "payer"), successes(&expected), "counted");
    exporter.shutdown().await;
}

#[tokio::test]
async fn each_commitment_and_anomaly_operation_takes_one_page_when_it_fits() {
    assert_pages(500, [1, 1, 1, 1, 1, 1]).await;
}

#[tokio::test]
async fn every_page_of_every_commitment_and_anomaly_operation_is_asked_and_counted() {
    // One entry a page: 3 plans, 2 services covered, 12 reservations in 3 accounts, 3
    // anomalies, 2 monitors.
    assert_pages(1, [3, 2, 12, 3, 3, 2]).await;
}

#[tokio::test]
async fn an_integration_without_commitment_charges_asks_nothing_about_commitments() {
    let mut dataset = org_dataset(today(), 11);
    dataset.rows.retain(|r| {
        !r.record_type().starts_with("SavingsPlan")
            && !matches!(r.record_type(), "RIFee" | "DiscountedUsage")
    });
    let sim = Simulator::builder()
        .account(PAYER, dataset)
        .access_key(PAYER_KEY.0, PAYER_KEY.1, PAYER)
        .page_size(500)
        .start()
        .await
        .unwrap();
    let dataset = sim.dataset(PAYER).unwrap();
    assert_eq!(wanted(&dataset, today(), 1), (false, Vec::new()));
    let config = parse_config(&config_yaml(&sim, "", "plain", "    commitments: true\n"));
    let exporter = start_exporter(config, today()).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["plain"]).await;
    assert_eq!(refresh_success(&samples, "plain"), Some(1.0));
    assert_eq!(query_success(&samples, "plain", "commitments"), Some(1.0));
    let costs = expected_requests(&dataset, today(), 1, 500) as usize;
    let expected = counts(&[("GetCostAndUsage", costs)]);
    assert_eq!(by_operation(&sim.requests()), expected);
    assert_eq!(sim.billed_requests(), costs);
    assert_eq!(counted(&samples, "plain"), successes(&expected));
    for operation in COMMITMENT_OPERATIONS {
        assert!(!expected.contains_key(operation));
    }
    // Nothing to show but the day the (empty) figures describe.
    let served = commitment_samples(&samples);
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(
        served[0].name,
        "aws_cost_commitments_data_day_timestamp_seconds"
    );
    assert_eq!(served[0].value, midnight(date(2026, 11, 21)));
    exporter.shutdown().await;
}

/// On the Cost Explorer client: right before the next attempt of the armed operation goes
/// out, the simulator is told to refuse exactly one request of the payer (`AccessDenied`, not
/// retried), so that this attempt, and no other, fails.
#[derive(Debug, Clone)]
struct FailNext {
    sim: Arc<Simulator>,
    armed: Arc<Mutex<Option<&'static str>>>,
}

impl Intercept for FailNext {
    fn name(&self) -> &'static str {
        "test: fail the next request of one operation"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map(Metadata::name);
        let mut armed = self.armed.lock().unwrap();
        if armed.is_some() && *armed == operation {
            *armed = None;
            self.sim.set_behavior_for(PAYER, Behavior::AccessDenied, 1);
        }
        Ok(())
    }
}

/// One integration's refresher, driven by the test at the times it sets, its snapshot and
/// metrics served on 127.0.0.1:0 as the exporter serves them.
struct Driven {
    sim: Arc<Simulator>,
    clock: TestClock,
    armed: Arc<Mutex<Option<&'static str>>>,
    refresher: Refresher,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Driven {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What one refresh did and what was served after it.
struct Refreshed {
    ok: bool,
    requests: BTreeMap<String, usize>,
    samples: Vec<Sample>,
}

impl Driven {
    async fn start(sim: Arc<Simulator>, yaml: &str, clock: TestClock) -> Self {
        let config = parse_config(yaml);
        let integration = config.integrations[0].clone();
        let metrics = Arc::new(Metrics::with_clock(clock.clock()));
        let store = Arc::new(SnapshotStore::new(vec![integration.name.clone()]));
        let armed = Arc::new(Mutex::new(None));
        let fail = FailNext {
            sim: sim.clone(),
            armed: armed.clone(),
        };
        let clients = credentials::clients_with(
            &integration,
            &metrics,
            Timeouts::default(),
            Some(SharedInterceptor::new(fail)),
        )
        .await;
        let refresher = Refresher::new(
            integration,
            clients,
            config.data_delay_days,
            store.clone(),
            metrics.clone(),
            clock.clock(),
        );
        let (listener, addr) = server::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let state = Arc::new(ServerState::new(store, metrics, "/metrics".into()));
        tokio::spawn(server::serve(listener, state, stop.clone()));
        Self {
            sim,
            clock,
            armed,
            refresher,
            addr,
            stop,
        }
    }

    /// Fails the next attempt of `operation` (see [`FailNext`]).
    fn fail_next(&self, operation: &'static str) {
        *self.armed.lock().unwrap() = Some(operation);
    }

    /// One refresh at `time`.
    async fn refresh_at(&self, time: DateTime<Utc>) -> Refreshed {
        self.clock.set(time);
        let before = self.sim.requests().len();
        let ok = self.refresher.attempt().await;
        let requests = by_operation(&self.sim.requests()[before..]);
        let samples = parse_exposition(&get(self.addr, "/metrics").await.text());
        Refreshed {
            ok,
            requests,
            samples,
        }
    }
}

/// Every request a refresh with commitments and anomalies makes on the clock's `day`, data
/// three days back: the cost pages, the commitment first pages when `commitments`, a page of
/// anomalies, and a page of monitors when `monitors`.
fn refresh_requests(
    dataset: &Dataset,
    day: NaiveDate,
    commitments: bool,
    monitors: bool,
) -> BTreeMap<String, usize> {
    let c = usize::from(commitments);
    counts(&[
        (
            "GetCostAndUsage",
            expected_requests(dataset, day, 3, 500) as usize,
        ),
        ("GetSavingsPlansUtilizationDetails", c),
        ("GetSavingsPlansCoverage", c),
        ("GetReservationUtilization", c),
        ("GetReservationCoverage", c),
        ("GetAnomalies", 1),
        ("GetAnomalyMonitors", usize::from(monitors)),
    ])
}

/// Data three days back, so that the Savings Plans window ends before the simulator's today
/// on its today and on the day after (and anomalies, 90 days back from the exporter's today,
/// stay within the simulator's 90 days).
fn driven_yaml(sim: &Simulator) -> String {
    config_yaml(sim, "data_delay_days: 3\n", "payer", BOTH)
}

#[tokio::test]
async fn commitments_are_fetched_on_the_first_refresh_of_a_utc_day_and_monitors_too() {
    let sim = Arc::new(org_simulator(today(), 500).await);
    let dataset = sim.dataset(PAYER).unwrap();
    let clock = TestClock::at(at(today(), 12, 0));
    let driven = Driven::start(sim.clone(), &driven_yaml(&sim), clock).await;
    let next_day = today() + Days::new(1);

    // The first refresh: everything. Data day the 20th, so the window is [1st, 21st).
    let first = driven.refresh_at(at(today(), 12, 0)).await;
    assert!(first.ok);
    assert_eq!(
        first.requests,
        refresh_requests(&dataset, today(), true, true)
    );
    assert_commitments(
        &first.samples,
        "payer",
        &dataset,
        (date(2026, 11, 1), date(2026, 11, 21)),
    );

    // Later the same UTC day: the costs and the anomalies again, no commitment, no monitor.
    let same_day = driven.refresh_at(at(today(), 23, 59)).await;
    assert!(same_day.ok);
    assert_eq!(
        same_day.requests,
        refresh_requests(&dataset, today(), false, false)
    );
    assert_eq!(
        commitment_samples(&same_day.samples),
        commitment_samples(&first.samples),
        "the day's commitment series stay"
    );
    assert_eq!(
        query_success(&same_day.samples, "payer", "commitments"),
        Some(1.0)
    );
    assert_eq!(
        family(&same_day.samples, "aws_cost_anomaly_impact_usd", "payer"),
        family(&first.samples, "aws_cost_anomaly_impact_usd", "payer"),
    );
    assert_eq!(
        family(&same_day.samples, "aws_cost_anomaly_impact_usd", "payer").len(),
        3
    );

    // Just after midnight UTC: commitments and monitors again, over the new window [1st, 22nd).
    let new_day = driven.refresh_at(at(next_day, 0, 1)).await;
    assert!(new_day.ok);
    assert_eq!(
        new_day.requests,
        refresh_requests(&dataset, next_day, true, true)
    );
    assert_commitments(
        &new_day.samples,
        "payer",
        &dataset,
        (date(2026, 11, 1), date(2026, 11, 22)),
    );

    // And that day's next refresh asks neither.
    let again = driven.refresh_at(at(next_day, 6, 0)).await;
    assert!(again.ok);
    assert_eq!(
        again.requests,
        refresh_requests(&dataset, next_day, false, false)
    );
    assert_eq!(
        commitment_samples(&again.samples),
        commitment_samples(&new_day.samples)
    );
    // Billed, counted: four refreshes' requests, all of them successes.
    let mut all: BTreeMap<String, usize> = BTreeMap::new();
    for refresh in [&first, &same_day, &new_day, &again] {
        for (op, n) in &refresh.requests {
            *all.entry(op.clone()).or_default() += n;
        }
    }
    assert_eq!(all["GetSavingsPlansUtilizationDetails"], 2);
    assert_eq!(all["GetAnomalies"], 4);
    assert_eq!(all["GetAnomalyMonitors"], 2);
    assert_eq!(counted(&again.samples, "payer"), successes(&all));
    assert_eq!(sim.billed_requests(), all.values().sum::<usize>());
}

#[tokio::test]
async fn a_failed_commitment_fetch_keeps_the_last_series_and_is_retried_until_it_succeeds() {
    let sim = Arc::new(org_simulator(today(), 500).await);
    let dataset = sim.dataset(PAYER).unwrap();
    let clock = TestClock::at(at(today(), 12, 0));
    let driven = Driven::start(sim.clone(), &driven_yaml(&sim), clock).await;
    let next_day = today() + Days::new(1);

    let first = driven.refresh_at(at(today(), 12, 0)).await;
    assert!(first.ok);
    let kept = commitment_samples(&first.samples);
    assert_commitments(
        &first.samples,
        "payer",
        &dataset,
        (date(2026, 11, 1), date(2026, 11, 21)),
    );

    // The next day, Savings Plans coverage is refused: the commitments part fails after two
    // requests (no reservation is asked), the rest refreshes.
    driven.fail_next("GetSavingsPlansCoverage");
    let failed = driven.refresh_at(at(next_day, 1, 0)).await;
    assert!(!failed.ok);
    let mut expected = refresh_requests(&dataset, next_day, true, true);
    expected.remove("GetReservationUtilization");
    expected.remove("GetReservationCoverage");
    assert_eq!(failed.requests, expected);
    let last = sim.requests();
    let refused: Vec<u16> = last
        .iter()
        .filter(|r| r.operation == "GetSavingsPlansCoverage")
        .map(|r| r.status)
        .collect();
    assert_eq!(refused, [200, 400]);
    let s = &failed.samples;
    assert_eq!(refresh_success(s, "payer"), Some(0.0));
    assert_eq!(query_success(s, "payer", "commitments"), Some(0.0));
    assert_eq!(query_success(s, "payer", "costs"), Some(1.0));
    assert_eq!(query_success(s, "payer", "anomalies"), Some(1.0));
    assert_eq!(
        value_of(
            s,
            "aws_cost_refresh_failures_total",
            &[("integration", "payer"), ("reason", "access_denied")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            s,
            "aws_cost_api_requests_total",
            &[
                ("integration", "payer"),
                ("operation", "GetSavingsPlansCoverage"),
                ("outcome", "client_error")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        commitment_samples(s),
        kept,
        "the last commitment series, unchanged"
    );
    // The costs moved on to the new data day.
    assert_eq!(
        value_of(
            s,
            "aws_cost_data_day_timestamp_seconds",
            &[("integration", "payer")]
        ),
        Some(midnight(date(2026, 11, 21)))
    );

    // The next refresh that day asks again (monitors are known for the day) and recovers.
    let recovered = driven.refresh_at(at(next_day, 2, 0)).await;
    assert!(recovered.ok);
    assert_eq!(
        recovered.requests,
        refresh_requests(&dataset, next_day, true, false)
    );
    assert_eq!(
        query_success(&recovered.samples, "payer", "commitments"),
        Some(1.0)
    );
    assert_eq!(refresh_success(&recovered.samples, "payer"), Some(1.0));
    assert_commitments(
        &recovered.samples,
        "payer",
        &dataset,
        (date(2026, 11, 1), date(2026, 11, 22)),
    );
    // Then not again that day.
    let after = driven.refresh_at(at(next_day, 3, 0)).await;
    assert!(after.ok);
    assert_eq!(
        after.requests,
        refresh_requests(&dataset, next_day, false, false)
    );
}

#[tokio::test]
async fn the_daily_request_cap_stops_commitment_pages_too() {
    // One entry a page: the details of the three plans take three pages.
    let sim = org_simulator(today(), 1).await;
    let dataset = sim.dataset(PAYER).unwrap();
    let costs = expected_requests(&dataset, today(), 1, 1) as usize;
    // Room for the cost pages and two pages of Savings Plans details, not the third.
    let cap = costs + 2;
    let config = parse_config(&config_yaml(
        &sim,
        "",
        "capped",
        &format!("{BOTH}    max_api_requests_per_day: {cap}\n"),
    ));
    let exporter = start_exporter(config, today()).await;
    let samples = wait_for(exporter.local_addr(), "the cap to be reached", |s| {
        value_of(
            s,
            "aws_cost_api_budget_exhausted",
            &[("integration", "capped")],
        ) == Some(1.0)
            && refresh_success(s, "capped") == Some(0.0)
    })
    .await;
    assert_eq!(sim.billed_requests(), cap, "exactly the cap");
    let expected = counts(&[
        ("GetCostAndUsage", costs),
        ("GetSavingsPlansUtilizationDetails", 2),
    ]);
    assert_eq!(by_operation(&sim.requests()), expected);
    assert_eq!(counted(&samples, "capped"), successes(&expected));
    assert_eq!(query_success(&samples, "capped", "costs"), Some(1.0));
    assert_eq!(query_success(&samples, "capped", "commitments"), Some(0.0));
    // The refresh stopped there: anomalies were not asked.
    assert_eq!(query_success(&samples, "capped", "anomalies"), None);
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_refresh_failures_total",
            &[("integration", "capped"), ("reason", "api_budget")]
        ),
        Some(1.0)
    );
    exporter.shutdown().await;
}
