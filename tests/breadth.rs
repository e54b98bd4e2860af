//! Resource-level costs, cost-allocation tags, forecasts, budgets and Organizations, end to end
//! through the real SDK against the simulated Cost Explorer, with exact values from the
//! simulation's own rows.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use aws_cost_exporter::config::CostBasis;
use aws_cost_exporter::metrics::Metrics;
use aws_cost_exporter::refresh::{RefreshError, Refresher};
use aws_cost_exporter::snapshot::SnapshotStore;
use aws_cost_simulator::dataset::{SimRow, units_to_f64};
use aws_cost_simulator::{CostMetric, Dataset, Simulator};
use chrono::{Datelike, Days, NaiveDate, TimeZone, Utc};
use common::*;

const EC2: &str = "Amazon Elastic Compute Cloud - Compute";
const RDS: &str = "Amazon Relational Database Service";
const BASES: [CostBasis; 2] = [CostBasis::Unblended, CostBasis::Amortized];

async fn simulator(today: NaiveDate, resources: bool) -> Simulator {
    let mut builder = Simulator::builder()
        .account("111111111111", org_dataset(today, 11))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .page_size(60);
    if resources {
        builder = builder.resource_level_data("111111111111");
    }
    builder.start().await.unwrap()
}

fn yaml(sim: &Simulator, extra: &str) -> String {
    format!(
        "integrations:\n  - name: payer\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {e}\n    organizations_endpoint_url: {e}\n    cost_basis: [unblended, amortized]\n{extra}",
        PAYER_KEY.0,
        PAYER_KEY.1,
        e = sim.endpoint()
    )
}

async fn scrape_once(sim: &Simulator, extra: &str, today: NaiveDate) -> Vec<Sample> {
    let exporter = start_exporter(parse_config(&yaml(sim, extra)), today).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["payer"]).await;
    exporter.shutdown().await;
    samples
}

fn of<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}

fn basis_of(sample: &Sample) -> CostBasis {
    CostBasis::parse(sample.label("cost_basis")).unwrap()
}

fn requests(samples: &[Sample], operation: &str) -> Option<f64> {
    value_of(
        samples,
        "aws_cost_api_requests_total",
        &[
            ("integration", "payer"),
            ("operation", operation),
            ("outcome", "success"),
        ],
    )
}

#[tokio::test]
async fn tag_series_are_exact_and_sum_to_the_untagged_total() {
    let today = date(2026, 11, 23);
    let sim = simulator(today, false).await;
    let samples = scrape_once(&sim, "    tags: [team, env]\n", today).await;
    let dataset = sim.dataset("111111111111").unwrap();
    let data_day = today - Days::new(1);
    let month_start = today.with_day(1).unwrap();
    type InPeriod = Box<dyn Fn(NaiveDate) -> bool>;
    let periods: [(&str, InPeriod); 2] = [
        ("aws_cost_tag_daily_usd", Box::new(move |d| d == data_day)),
        (
            "aws_cost_tag_month_to_date_usd",
            Box::new(move |d| d >= month_start && d <= today),
        ),
    ];
    for (metric, in_period) in &periods {
        let series = of(&samples, metric);
        assert!(!series.is_empty(), "{metric}");
        for s in &series {
            let key = s.label("tag_key");
            let value = s.label("tag_value");
            let expected = dataset.total(cost_metric(basis_of(s)), |r| {
                in_period(r.day)
                    && r.account_id() == s.label("account_id")
                    && r.tag(key).unwrap_or_default() == value
            });
            assert_close(s.value, expected, &format!("{metric} {:?}", s.labels));
        }
        for key in ["team", "env"] {
            for basis in BASES {
                let sum: f64 = series
                    .iter()
                    .filter(|s| s.label("tag_key") == key && basis_of(s) == basis)
                    .map(|s| s.value)
                    .sum();
                assert_close(
                    sum,
                    dataset.total(cost_metric(basis), |r| in_period(r.day)),
                    &format!("{metric} {key} {basis}"),
                );
            }
        }
        // Untagged cost has an empty value; tag values with quotes arrive intact.
        assert!(series.iter().any(|s| s.label("tag_value").is_empty()));
        assert!(
            series
                .iter()
                .any(|s| s.label("tag_value") == "web \"frontend\"")
        );
        assert!(series.iter().all(|s| s.label("tag_value") != "__other__"));
    }
    // Two queries per tag key (the month to date and the data day, and their pages) on top of
    // the cost queries.
    let mut expected = expected_requests(&dataset, today, 1, 60);
    for key in ["team", "env"] {
        for period in month_and_day(today, 1) {
            let groups = distinct(
                &dataset,
                period,
                |_| true,
                |r| format!("{}|{}", r.account_id(), r.tag(key).unwrap_or_default()),
            );
            expected += pages_of([groups.len()], 60);
        }
    }
    assert_eq!(
        requests(&samples, "GetCostAndUsage"),
        Some(f64::from(expected))
    );
}

#[tokio::test]
async fn tag_series_fold_into_other_without_losing_cost() {
    let today = date(2026, 11, 23);
    let sim = simulator(today, false).await;
    let samples = scrape_once(
        &sim,
        "    tags: [team, env]\n    max_tag_series: 3\n",
        today,
    )
    .await;
    let dataset = sim.dataset("111111111111").unwrap();
    let month_start = today.with_day(1).unwrap();
    let in_month = |r: &SimRow| r.day >= month_start && r.day <= today;
    let series = of(&samples, "aws_cost_tag_month_to_date_usd");
    for basis in BASES {
        let kept: Vec<_> = series
            .iter()
            .filter(|s| basis_of(s) == basis && s.label("tag_value") != "__other__")
            .collect();
        assert_eq!(kept.len(), 3, "{basis}");
        for key in ["team", "env"] {
            let sum: f64 = series
                .iter()
                .filter(|s| s.label("tag_key") == key && basis_of(s) == basis)
                .map(|s| s.value)
                .sum();
            assert_close(
                sum,
                dataset.total(cost_metric(basis), in_month),
                &format!("{key} {basis} with folding"),
            );
        }
    }
    // The kept three are the largest (account, key, value) by absolute unblended cost.
    let mut magnitudes: Vec<(f64, (String, String, String))> = Vec::new();
    for account in ORG.iter().map(|(id, _)| *id) {
        for (key, values) in [
            ("team", &["platform", "data", "web \"frontend\"", ""][..]),
            ("env", &["prod", "staging", ""][..]),
        ] {
            for value in values {
                let total = dataset.total(CostMetric::Unblended, |r| {
                    in_month(r)
                        && r.account_id() == account
                        && r.tag(key).unwrap_or_default() == *value
                });
                if dataset.rows.iter().any(|r| {
                    in_month(r)
                        && r.account_id() == account
                        && r.tag(key).unwrap_or_default() == *value
                }) {
                    magnitudes.push((
                        total.abs(),
                        (account.to_string(), key.to_string(), value.to_string()),
                    ));
                }
            }
        }
    }
    magnitudes.sort_by(|a, b| b.0.total_cmp(&a.0));
    let expected: BTreeSet<(String, String, String)> =
        magnitudes.iter().take(3).map(|(_, k)| k.clone()).collect();
    let kept: BTreeSet<(String, String, String)> = series
        .iter()
        .filter(|s| basis_of(s) == CostBasis::Unblended && s.label("tag_value") != "__other__")
        .map(|s| {
            (
                s.label("account_id").into(),
                s.label("tag_key").into(),
                s.label("tag_value").into(),
            )
        })
        .collect();
    assert_eq!(kept, expected);
    let metric = [
        ("integration", "payer"),
        ("metric", "aws_cost_tag_month_to_date_usd"),
    ];
    assert_eq!(
        value_of(&samples, "aws_cost_series", &metric),
        Some(series.len() as f64)
    );
    let dropped = (magnitudes.len() - 3) * BASES.len();
    assert_eq!(
        value_of(&samples, "aws_cost_series_dropped", &metric),
        Some(dropped as f64)
    );
}

/// The data day's rows of the resource services, by (account, service, resource, charge type).
fn resource_totals(
    dataset: &Dataset,
    day: NaiveDate,
    basis: CostMetric,
) -> BTreeMap<(String, String, String, String), f64> {
    let mut keys = BTreeSet::new();
    for r in dataset
        .rows
        .iter()
        .filter(|r| r.day == day && (r.service() == EC2 || r.service() == RDS))
    {
        keys.insert((
            r.account_id().to_string(),
            r.service().to_string(),
            r.resource_id().unwrap_or_default().to_string(),
            r.record_type().to_string(),
        ));
    }
    keys.into_iter()
        .map(|k| {
            let total = dataset.total(basis, |r| {
                r.day == day
                    && r.account_id() == k.0
                    && r.service() == k.1
                    && r.resource_id() == Some(k.2.as_str())
                    && r.record_type() == k.3
            });
            (k, total)
        })
        .collect()
}

#[tokio::test]
async fn resource_series_are_exact_and_fold_into_other() {
    let today = date(2026, 11, 23);
    let data_day = today - Days::new(1);
    let sim = simulator(today, true).await;
    let extra = format!("    resources: [\"{EC2}\", \"{RDS}\"]\n    max_resource_series: 10\n");
    let samples = scrape_once(&sim, &extra, today).await;
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    let dataset = sim.dataset("111111111111").unwrap();
    let series = of(&samples, "aws_cost_resource_daily_usd");
    let unblended = resource_totals(&dataset, data_day, CostMetric::Unblended);
    for basis in BASES {
        let totals = resource_totals(&dataset, data_day, cost_metric(basis));
        let mine: Vec<_> = series.iter().filter(|s| basis_of(s) == basis).collect();
        // Kept resources carry their exact cost.
        for s in mine
            .iter()
            .filter(|s| s.label("resource_id") != "__other__")
        {
            let key = (
                s.label("account_id").to_string(),
                s.label("aws_service").to_string(),
                s.label("resource_id").to_string(),
                s.label("charge_type").to_string(),
            );
            assert_close(s.value, totals[&key], &format!("{key:?} {basis}"));
        }
        assert_eq!(
            mine.iter()
                .filter(|s| s.label("resource_id") != "__other__")
                .count(),
            10
        );
        // Folding keeps every (account, service, charge type) total exact.
        let mut groups: BTreeMap<(String, String, String), f64> = BTreeMap::new();
        for s in &mine {
            *groups
                .entry((
                    s.label("account_id").into(),
                    s.label("aws_service").into(),
                    s.label("charge_type").into(),
                ))
                .or_default() += s.value;
        }
        for ((account, service, charge_type), sum) in groups {
            let expected = dataset.total(cost_metric(basis), |r| {
                r.day == data_day
                    && r.account_id() == account
                    && r.service() == service
                    && r.record_type() == charge_type
            });
            assert_close(
                sum,
                expected,
                &format!("{account} {service} {charge_type} {basis}"),
            );
        }
    }
    // The kept ten are the largest by absolute unblended cost.
    let mut ranked: Vec<_> = unblended.iter().collect();
    ranked.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(b.0)));
    let expected: BTreeSet<String> = ranked
        .iter()
        .take(10)
        .map(|(k, _)| format!("{}|{}", k.2, k.3))
        .collect();
    let kept: BTreeSet<String> = series
        .iter()
        .filter(|s| basis_of(s) == CostBasis::Unblended && s.label("resource_id") != "__other__")
        .map(|s| format!("{}|{}", s.label("resource_id"), s.label("charge_type")))
        .collect();
    assert_eq!(kept, expected);
    let metric = [
        ("integration", "payer"),
        ("metric", "aws_cost_resource_daily_usd"),
    ];
    assert_eq!(
        value_of(&samples, "aws_cost_series", &metric),
        Some(series.len() as f64)
    );
    assert_eq!(
        value_of(&samples, "aws_cost_series_dropped", &metric),
        Some(((unblended.len() - 10) * BASES.len()) as f64)
    );
    // Requests: per service, one per value of the smaller of its accounts and charge types.
    let mut expected_requests = 0;
    for service in [EC2, RDS] {
        let rows: Vec<&SimRow> = dataset
            .rows
            .iter()
            .filter(|r| r.day == data_day && r.service() == service)
            .collect();
        let accounts: BTreeSet<&str> = rows.iter().map(|r| r.account_id()).collect();
        let types: BTreeSet<&str> = rows.iter().map(|r| r.record_type()).collect();
        expected_requests += accounts.len().min(types.len());
    }
    assert_eq!(
        requests(&samples, "GetCostAndUsageWithResources"),
        Some(expected_requests as f64)
    );
}

#[tokio::test]
async fn refused_resources_and_forecasts_leave_the_other_metrics_refreshing() {
    let today = date(2026, 11, 23);
    let sim = Simulator::builder()
        .account("111111111111", org_dataset(today, 11))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .fail(
            "111111111111",
            "GetCostForecast",
            "DataUnavailableException",
            "Insufficient amount of historical data to generate forecast.",
        )
        .start()
        .await
        .unwrap();
    let config = parse_config(&yaml(
        &sim,
        &format!("    resources: [\"{EC2}\"]\n    tags: [team]\n"),
    ));
    let integration = config.integrations[0].clone();
    let metrics = std::sync::Arc::new(Metrics::new());
    let store = std::sync::Arc::new(SnapshotStore::new(vec!["payer".into()]));
    let noon = Utc.from_utc_datetime(&today.and_hms_opt(12, 0, 0).unwrap());
    let refresher = Refresher::new(
        integration.clone(),
        aws_cost_exporter::credentials::clients(&integration, &metrics).await,
        1,
        store.clone(),
        metrics.clone(),
        std::sync::Arc::new(move || noon),
    );
    let err = refresher.refresh_once().await.unwrap_err();
    let RefreshError::Partial {
        failures, summary, ..
    } = &err
    else {
        panic!("expected a partial failure, got {err}");
    };
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0]
            .to_string()
            .contains("Resource-level data is not enabled"),
        "{}",
        failures[0]
    );
    assert!(
        failures[0]
            .to_string()
            .contains("Resource-level data at daily granularity"),
        "says what to enable: {}",
        failures[0]
    );
    assert!(
        failures[1].to_string().contains("DataUnavailableException"),
        "{}",
        failures[1]
    );
    assert!(summary.series > 100);
    // Everything else was published.
    let snapshot = store.get("payer").unwrap();
    let dataset = sim.dataset("111111111111").unwrap();
    let data_day = today - Days::new(1);
    let family = |family| parse_exposition(std::str::from_utf8(snapshot.text(family)).unwrap());
    let daily: f64 = family(&aws_cost_exporter::parts::costs::DAILY)
        .iter()
        .filter(|s| s.label("cost_basis") == "unblended")
        .map(|s| s.value)
        .sum();
    assert_close(
        daily,
        dataset.total(CostMetric::Unblended, |r| r.day == data_day),
        "daily",
    );
    assert!(!family(&aws_cost_exporter::parts::tags::TAG_DAILY).is_empty());
    assert!(family(&aws_cost_exporter::parts::resources::RESOURCE_DAILY).is_empty());
    assert!(family(&aws_cost_exporter::parts::forecast::FORECAST).is_empty());
    let text = metrics.encode(aws_cost_exporter::exposition::Format::Classic);
    for (query, ok) in [("costs", 1), ("tags", 1), ("resources", 0), ("forecast", 0)] {
        let line =
            format!("aws_cost_query_success{{integration=\"payer\",query=\"{query}\"}} {ok}\n");
        assert!(text.contains(&line), "{line} in {text}");
    }
}

#[tokio::test]
async fn forecasts_and_budgets_are_exact() {
    let today = date(2026, 11, 23);
    let sim = simulator(today, false).await;
    let extra = format!(
        "    budgets:\n      - name: prod-ec2\n        monthly_usd: 9000\n        accounts: [\"333333333333\"]\n        services: [\"{EC2}\"]\n        thresholds:\n          - {{percent: 50, on: actual}}\n          - {{percent: 80, on: actual}}\n          - {{percent: 112.5, on: forecast}}\n      - name: total\n        monthly_usd: 120000\n        cost_basis: amortized\n      - name: data\n        monthly_usd: 5000\n        accounts: [\"444444444444\", \"555555555555\"]\n"
    );
    let samples = scrape_once(&sim, &extra, today).await;
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    let dataset = sim.dataset("111111111111").unwrap();
    let month_start = today.with_day(1).unwrap();
    let (start, end) = (today + Days::new(1), date(2026, 12, 1));
    let in_month = |r: &SimRow| r.day >= month_start && r.day <= today;
    for basis in BASES {
        let mtd = dataset.total(cost_metric(basis), in_month);
        let (mean, lower, upper) = dataset.forecast_units(cost_metric(basis), start, end, |_| true);
        let labels = [("integration", "payer"), ("cost_basis", basis.as_str())];
        assert_close(
            value_of(&samples, "aws_cost_month_forecast_usd", &labels).unwrap(),
            mtd + units_to_f64(mean),
            "forecast",
        );
        assert_close(
            value_of(&samples, "aws_cost_month_forecast_lower_usd", &labels).unwrap(),
            mtd + units_to_f64(lower),
            "lower",
        );
        assert_close(
            value_of(&samples, "aws_cost_month_forecast_upper_usd", &labels).unwrap(),
            mtd + units_to_f64(upper),
            "upper",
        );
    }
    type Filter = Box<dyn Fn(&SimRow) -> bool>;
    let budgets: [(&str, f64, CostMetric, Filter); 3] = [
        (
            "prod-ec2",
            9000.0,
            CostMetric::Unblended,
            Box::new(|r: &SimRow| r.account_id() == "333333333333" && r.service() == EC2),
        ),
        (
            "total",
            120000.0,
            CostMetric::Amortized,
            Box::new(|_: &SimRow| true),
        ),
        (
            "data",
            5000.0,
            CostMetric::Unblended,
            Box::new(|r: &SimRow| {
                r.account_id() == "444444444444" || r.account_id() == "555555555555"
            }),
        ),
    ];
    for (name, amount, basis, filter) in &budgets {
        let labels = [("integration", "payer"), ("budget", *name)];
        assert_eq!(
            value_of(&samples, "aws_cost_budget_usd", &labels),
            Some(*amount)
        );
        let mtd = dataset.total(*basis, |r| in_month(r) && filter(r));
        assert_close(
            value_of(&samples, "aws_cost_budget_month_to_date_usd", &labels).unwrap(),
            mtd,
            name,
        );
        let (rest, _, _) = dataset.forecast_units(*basis, start, end, |r| filter(r));
        assert_close(
            value_of(&samples, "aws_cost_budget_month_forecast_usd", &labels).unwrap(),
            mtd + units_to_f64(rest),
            name,
        );
    }
    // One forecast per cost basis, one per filtered budget; the unfiltered one reuses its basis'.
    assert_eq!(requests(&samples, "GetCostForecast"), Some(4.0));
    // Every threshold of every budget: prod-ec2's own, the others' the default 100 % of both.
    let thresholds: Vec<(String, String, String, f64)> =
        of(&samples, "aws_cost_budget_threshold_ratio")
            .into_iter()
            .map(|s| {
                assert_eq!(s.label("integration"), "payer");
                (
                    s.label("budget").to_string(),
                    s.label("on").to_string(),
                    s.label("percent").to_string(),
                    s.value,
                )
            })
            .collect();
    let want: Vec<(String, String, String, f64)> = [
        ("prod-ec2", "actual", "50", 0.5),
        ("prod-ec2", "actual", "80", 0.8),
        ("prod-ec2", "forecast", "112.5", 1.125),
        ("total", "actual", "100", 1.0),
        ("total", "forecast", "100", 1.0),
        ("data", "actual", "100", 1.0),
        ("data", "forecast", "100", 1.0),
    ]
    .iter()
    .map(|(b, o, p, v)| (b.to_string(), o.to_string(), p.to_string(), *v))
    .collect();
    assert_eq!(thresholds, want);
}

#[tokio::test]
async fn on_the_last_day_of_a_month_the_forecast_is_month_to_date() {
    let today = date(2026, 11, 30);
    let sim = simulator(today, false).await;
    let extra = "    budgets:\n      - name: staging\n        monthly_usd: 100\n        accounts: [\"444444444444\"]\n";
    let samples = scrape_once(&sim, extra, today).await;
    let dataset = sim.dataset("111111111111").unwrap();
    let month_start = today.with_day(1).unwrap();
    for basis in BASES {
        let mtd = dataset.total(cost_metric(basis), |r| {
            r.day >= month_start && r.day <= today
        });
        let labels = [("integration", "payer"), ("cost_basis", basis.as_str())];
        assert_close(
            value_of(&samples, "aws_cost_month_forecast_usd", &labels).unwrap(),
            mtd,
            "forecast",
        );
        assert_eq!(
            value_of(&samples, "aws_cost_month_forecast_lower_usd", &labels),
            None
        );
    }
    let budget = [("budget", "staging")];
    assert_eq!(
        value_of(&samples, "aws_cost_budget_month_forecast_usd", &budget),
        value_of(&samples, "aws_cost_budget_month_to_date_usd", &budget)
    );
    assert_eq!(
        requests(&samples, "GetCostForecast"),
        None,
        "nothing left to forecast, nothing asked"
    );
}

#[tokio::test]
async fn organizations_names_every_member() {
    let today = date(2026, 11, 23);
    let sim = simulator(today, false).await;
    let samples = scrape_once(
        &sim,
        "    organizations: true\n    forecast: false\n",
        today,
    )
    .await;
    let info = of(&samples, "aws_cost_account_info");
    let names: BTreeMap<&str, &str> = info
        .iter()
        .map(|s| (s.label("account_id"), s.label("account_name")))
        .collect();
    let mut expected: BTreeMap<&str, &str> = ORG.iter().copied().collect();
    // A member with no cost yet still gets a name.
    expected.insert("666666666666", "Sandbox (new)");
    assert_eq!(names, expected);
    assert!(
        !samples
            .iter()
            .any(|s| s.name == "aws_cost_daily_usd" && s.label("account_id") == "666666666666")
    );
    // Five accounts: one page of up to 20.
    assert_eq!(requests(&samples, "ListAccounts"), Some(1.0));
    assert_eq!(
        requests(&samples, "GetCostForecast"),
        None,
        "forecast: false asks nothing"
    );
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_query_success",
            &[("query", "organizations")]
        ),
        Some(1.0)
    );

    // Without an organization the names fall back to Cost Explorer's, then to the id.
    let standalone = Simulator::builder()
        .account("222222222222", single_dataset("222222222222", today, 5))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "222222222222")
        .start()
        .await
        .unwrap();
    let yaml = format!(
        "integrations:\n  - name: payer\n    account_id: \"222222222222\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {e}\n    organizations_endpoint_url: {e}\n    organizations: true\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        e = standalone.endpoint()
    );
    let exporter = start_exporter(parse_config(&yaml), today).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["payer"]).await;
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_query_success",
            &[("query", "organizations")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value_of(&samples, "aws_cost_refresh_success", &[]),
        Some(0.0)
    );
    let daily = of(&samples, "aws_cost_daily_usd");
    assert!(
        !daily.is_empty() && daily.iter().all(|s| s.label("account_name") == "Solo"),
        "{daily:?}"
    );
    exporter.shutdown().await;
}
