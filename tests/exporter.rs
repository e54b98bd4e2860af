//! End-to-end tests: the exporter on 127.0.0.1:0, the real aws-sdk-costexplorer client over
//! HTTP against the simulated Cost Explorer (and STS), scraped over HTTP, with every value
//! compared against sums computed from the simulator's own rows.

mod common;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::time::Duration;

use aws_cost_exporter::config::CostBasis;
use aws_cost_exporter::cost_explorer::{CostExplorerError, Period};
use aws_cost_simulator::{Behavior, CostMetric, Simulator};
use aws_sdk_costexplorer::types::{DateInterval, Granularity};
use chrono::{Datelike, Days, NaiveDate};
use common::*;
use http::Method;

/// Cost Explorer's own ungrouped total for `[start, end)`, one period.
async fn ungrouped_total(
    sim: &Simulator,
    key: (&str, &str),
    start: NaiveDate,
    end: NaiveDate,
    basis: CostBasis,
) -> f64 {
    let out = ce_client(sim, key)
        .get_cost_and_usage()
        .time_period(
            DateInterval::builder()
                .start(start.to_string())
                .end(end.to_string())
                .build()
                .unwrap(),
        )
        .granularity(Granularity::Monthly)
        .metrics(basis.metric())
        .send()
        .await
        .expect("ungrouped query");
    out.results_by_time()
        .iter()
        .map(|r| {
            let v = &r.total().unwrap()[basis.metric()];
            assert_eq!(v.unit(), Some("USD"));
            v.amount().unwrap().parse::<f64>().unwrap()
        })
        .sum()
}

fn payer_yaml(sim: &Simulator, extra: &str) -> String {
    format!(
        "integrations:\n  - name: payer\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {}\n{extra}",
        PAYER_KEY.0,
        PAYER_KEY.1,
        sim.endpoint()
    )
}

async fn reconcile(
    today: NaiveDate,
    data_delay_days: u64,
    accounts: &'static [(&'static str, &'static str)],
    page: usize,
) {
    let dataset = aws_cost_simulator::Dataset::generate(&aws_cost_simulator::DatasetSpec {
        seed: 11,
        accounts,
        today,
        history_days: 45,
        estimated_days: 2,
        scale: 1.0,
        idle_accounts: &[],
    });
    let sim = Simulator::builder()
        .account("111111111111", dataset)
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .page_size(page)
        .start()
        .await
        .unwrap();
    let yaml = format!(
        "data_delay_days: {data_delay_days}\n{}",
        payer_yaml(
            &sim,
            "    cost_basis: [unblended, amortized, blended, net_unblended, net_amortized]\n",
        )
    );
    let exporter = start_exporter(parse_config(&yaml), today).await;
    let addr = exporter.local_addr();
    let samples = wait_for_refresh(addr, &["payer"]).await;
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));

    let dataset = sim.dataset("111111111111").unwrap();
    let data_day = today - Days::new(data_delay_days);
    let month_start = today.with_day(1).unwrap();
    let daily = |d: NaiveDate| d == data_day;
    let mtd = |d: NaiveDate| d >= month_start && d <= today;
    type InPeriod<'a> = &'a dyn Fn(NaiveDate) -> bool;
    let periods: [(&str, InPeriod, NaiveDate, NaiveDate); 2] = [
        (
            "aws_cost_daily_usd",
            &daily,
            data_day,
            data_day + Days::new(1),
        ),
        (
            "aws_cost_month_to_date_usd",
            &mtd,
            month_start,
            today + Days::new(1),
        ),
    ];
    for (metric, in_period, start, end) in periods {
        for basis in CostBasis::ALL {
            let series: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.name == metric && s.label("cost_basis") == basis.as_str())
                .collect();
            // Every cost row lands in exactly one series.
            let expected_keys: BTreeSet<(String, String, String)> = dataset
                .rows
                .iter()
                .filter(|r| in_period(r.day))
                .map(|r| {
                    (
                        r.account_id().to_string(),
                        r.service().to_string(),
                        r.record_type().to_string(),
                    )
                })
                .collect();
            let keys: BTreeSet<(String, String, String)> = series
                .iter()
                .map(|s| {
                    (
                        s.label("account_id").to_string(),
                        s.label("aws_service").to_string(),
                        s.label("charge_type").to_string(),
                    )
                })
                .collect();
            assert_eq!(
                keys.len(),
                series.len(),
                "{metric} {basis}: duplicate series"
            );
            assert_eq!(keys, expected_keys, "{metric} {basis}: series keys");
            assert!(
                series.len() > 10 * accounts.len().min(4),
                "{metric} {basis}: only {} series",
                series.len()
            );
            // Every value equals the exact sum of its rows.
            for s in &series {
                assert_eq!(s.label("integration"), "payer");
                let account = s.label("account_id");
                let name = accounts.iter().find(|(id, _)| *id == account).unwrap().1;
                assert_eq!(s.label("account_name"), name);
                let expected = dataset.total(cost_metric(basis), |r| {
                    in_period(r.day)
                        && r.account_id() == account
                        && r.service() == s.label("aws_service")
                        && r.record_type() == s.label("charge_type")
                });
                assert_close(
                    s.value,
                    expected,
                    &format!("{metric} {basis} {:?}", s.labels),
                );
            }
            // The series add up to Cost Explorer's ungrouped total.
            let sum: f64 = series.iter().map(|s| s.value).sum();
            let total = ungrouped_total(&sim, PAYER_KEY, start, end, basis).await;
            assert_close(sum, total, &format!("{metric} {basis} total"));
            assert_close(
                sum,
                dataset.total(cost_metric(basis), |r| in_period(r.day)),
                &format!("{metric} {basis} exact"),
            );
        }
    }
    // Negative charge types come through as negative values.
    assert!(
        samples
            .iter()
            .any(|s| s.name == "aws_cost_month_to_date_usd"
                && s.label("charge_type") == "Credit"
                && s.value < 0.0)
    );
    let midnight = data_day.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp() as f64;
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_data_day_timestamp_seconds",
            &[("integration", "payer")]
        ),
        Some(midnight)
    );
    assert_eq!(
        value_of(&samples, "aws_cost_estimated", &[("period", "daily")]),
        Some(if dataset.is_estimated(data_day) {
            1.0
        } else {
            0.0
        })
    );
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_estimated",
            &[("period", "month_to_date")]
        ),
        Some(1.0)
    );

    // Billing: the counter matches what the simulator saw and what the plan should cost.
    let counted = value_of(
        &samples,
        "aws_cost_api_requests_total",
        &[
            ("integration", "payer"),
            ("operation", "GetCostAndUsage"),
            ("outcome", "success"),
        ],
    )
    .unwrap();
    let exporter_requests = sim
        .requests()
        .iter()
        .filter(|r| r.operation == "GetCostAndUsage" && r.access_key_id == PAYER_KEY.0)
        .count();
    // The ungrouped checks above also hit the simulator: 2 periods x 5 bases.
    assert_eq!(counted as usize, exporter_requests - 10);
    let expected = expected_requests(&dataset, today, data_delay_days, page);
    assert_eq!(counted as u32, expected);
    let queries = expected_requests(&dataset, today, data_delay_days, usize::MAX);
    assert!(
        expected > queries,
        "the test must page: {expected} requests for {queries} queries"
    );

    exporter.shutdown().await;
}

#[tokio::test]
async fn series_reconcile_with_cost_explorer_mid_month() {
    reconcile(date(2026, 11, 23), 1, ORG, 7).await;
}

/// More accounts than record types: the plan splits on record type instead.
const LARGE_ORG: &[(&str, &str)] = &[
    ("111111111111", "Management"),
    ("100000000001", "Team 1"),
    ("100000000002", "Team 2"),
    ("100000000003", "Team 3"),
    ("100000000004", "Team 4"),
    ("100000000005", "Team 5"),
    ("100000000006", "Team 6"),
    ("100000000007", "Team 7"),
    ("100000000008", "Team 8"),
    ("100000000009", "Team 9"),
    ("100000000010", "Team 10"),
    ("100000000011", "Team 11"),
];

#[tokio::test]
async fn series_reconcile_when_the_plan_splits_on_record_type() {
    reconcile(date(2026, 11, 23), 1, LARGE_ORG, 60).await;
}

#[tokio::test]
async fn series_reconcile_on_the_first_of_a_month() {
    // The daily gauge describes the last day of the previous month; month to date is one day.
    reconcile(date(2026, 12, 1), 1, ORG, 7).await;
}

#[tokio::test]
async fn series_reconcile_for_a_standalone_account() {
    // One account: discovery asks for the accounts only, then the month and the day.
    reconcile(date(2026, 11, 23), 1, &[("111111111111", "Solo")], 7).await;
}

#[tokio::test]
async fn series_reconcile_on_the_last_day_of_a_month() {
    reconcile(date(2026, 12, 31), 1, ORG, 7).await;
}

#[tokio::test]
async fn series_reconcile_when_the_data_day_is_older_than_the_month() {
    // The data day (October 29th) lies in the previous month; discovery covers both months.
    reconcile(date(2026, 11, 23), 25, ORG, 7).await;
}

#[tokio::test]
async fn assumed_role_credentials_sign_cost_explorer_calls() {
    let today = date(2026, 11, 23);
    let sim = Simulator::builder()
        .account("222222222222", single_dataset("222222222222", today, 5))
        .access_key(BASE_KEY.0, BASE_KEY.1, "999999999999")
        .role("222222222222", "CostExporter", Some("ext-123"))
        .page_size(10)
        .start()
        .await
        .unwrap();
    let integration = |name: &str, external_id: &str| {
        format!(
            "  - name: {name}\n    account_id: \"222222222222\"\n    assumed_role_name: CostExporter\n    external_id: {external_id}\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {e}\n    sts_endpoint_url: {e}\n",
            BASE_KEY.0,
            BASE_KEY.1,
            e = sim.endpoint()
        )
    };
    let yaml = format!(
        "integrations:\n{}{}",
        integration("workload", "ext-123"),
        integration("wrong", "not-the-external-id")
    );
    let exporter = start_exporter(parse_config(&yaml), today).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["workload", "wrong"]).await;
    assert_eq!(refresh_success(&samples, "workload"), Some(1.0));
    assert_eq!(refresh_success(&samples, "wrong"), Some(0.0));

    let log = sim.requests();
    let assume: Vec<_> = log.iter().filter(|r| r.operation == "AssumeRole").collect();
    assert_eq!(assume.len(), 2, "{log:?}");
    assert!(
        assume.iter().all(|r| r.access_key_id == BASE_KEY.0),
        "AssumeRole signed by the base identity"
    );
    let ce: Vec<_> = log
        .iter()
        .filter(|r| r.operation == "GetCostAndUsage")
        .collect();
    assert!(!ce.is_empty());
    assert!(
        ce.iter()
            .all(|r| r.access_key_id.starts_with("ASIASIMULATED") && r.status == 200),
        "every Cost Explorer call is signed by the assumed session: {ce:?}"
    );
    let count = |integration: &str, operation: &str, outcome: &str| {
        value_of(
            &samples,
            "aws_cost_api_requests_total",
            &[
                ("integration", integration),
                ("operation", operation),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(count("workload", "AssumeRole", "success"), Some(1.0));
    assert_eq!(
        count("workload", "GetCostAndUsage", "success"),
        Some(ce.len() as f64)
    );
    assert_eq!(count("wrong", "AssumeRole", "client_error"), Some(1.0));
    // Without credentials no Cost Explorer request is sent, and none is counted.
    assert_eq!(count("wrong", "GetCostAndUsage", "success"), None);
    assert_eq!(count("wrong", "GetCostAndUsage", "transport_error"), None);

    let dataset = sim.dataset("222222222222").unwrap();
    let month_start = today.with_day(1).unwrap();
    let sum: f64 = samples
        .iter()
        .filter(|s| s.name == "aws_cost_month_to_date_usd" && s.label("integration") == "workload")
        .map(|s| s.value)
        .sum();
    assert_close(
        sum,
        dataset.total(CostMetric::Unblended, |r| {
            r.day >= month_start && r.day <= today
        }),
        "workload MTD",
    );
    assert!(
        samples
            .iter()
            .all(|s| s.label("integration") != "wrong" || !s.name.starts_with("aws_cost_month"))
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn expiring_sessions_are_renewed() {
    let today = date(2026, 11, 23);
    let sim = Simulator::builder()
        .account("222222222222", single_dataset("222222222222", today, 5))
        .access_key(BASE_KEY.0, BASE_KEY.1, "999999999999")
        .role("222222222222", "CostExporter", None)
        // Sessions shorter than the SDK's renewal buffer: every use needs a new one.
        .session_duration(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let yaml = format!(
        "refresh_interval: 1s\nintegrations:\n  - name: workload\n    account_id: \"222222222222\"\n    assumed_role_name: CostExporter\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {e}\n    sts_endpoint_url: {e}\n",
        BASE_KEY.0,
        BASE_KEY.1,
        e = sim.endpoint()
    );
    let exporter = start_exporter(parse_config(&yaml), today).await;
    let samples = wait_for(
        exporter.local_addr(),
        "a second session and a finished refresh",
        |s| {
            refresh_success(s, "workload").is_some()
                && value_of(
                    s,
                    "aws_cost_api_requests_total",
                    &[("operation", "AssumeRole"), ("outcome", "success")],
                )
                .is_some_and(|v| v >= 2.0)
        },
    )
    .await;
    assert_eq!(refresh_success(&samples, "workload"), Some(1.0));
    let keys: BTreeSet<String> = sim
        .requests()
        .iter()
        .filter(|r| r.operation == "GetCostAndUsage")
        .map(|r| r.access_key_id.clone())
        .collect();
    assert!(
        keys.len() >= 2,
        "Cost Explorer calls used renewed sessions: {keys:?}"
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_failing_integration_does_not_affect_a_healthy_one() {
    let today = date(2026, 11, 23);
    let sim = Simulator::builder()
        .account("111111111111", org_dataset(today, 3))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .account("666666666666", single_dataset("666666666666", today, 1))
        .behavior("666666666666", Behavior::AccessDenied)
        .access_key("AKIATESTDENY1EXAMPLE", "denied-secret", "666666666666")
        .account("777777777777", single_dataset("777777777777", today, 2))
        .behavior("777777777777", Behavior::Currency("EUR".into()))
        .access_key("AKIATESTEURO1EXAMPLE", "euro-secret", "777777777777")
        .start()
        .await
        .unwrap();
    let mut yaml = payer_yaml(&sim, "");
    for (name, account, key, secret) in [
        (
            "denied",
            "666666666666",
            "AKIATESTDENY1EXAMPLE",
            "denied-secret",
        ),
        (
            "euro",
            "777777777777",
            "AKIATESTEURO1EXAMPLE",
            "euro-secret",
        ),
    ] {
        yaml.push_str(&format!(
            "  - name: {name}\n    account_id: \"{account}\"\n    access_key_id: {key}\n    secret_access_key: {secret}\n    endpoint_url: {}\n",
            sim.endpoint()
        ));
    }
    let exporter = start_exporter(parse_config(&yaml), today).await;
    let addr = exporter.local_addr();
    let samples = wait_for_refresh(addr, &["payer", "denied", "euro"]).await;
    let success = |name: &str| refresh_success(&samples, name);
    assert_eq!(
        (success("payer"), success("denied"), success("euro")),
        (Some(1.0), Some(0.0), Some(0.0))
    );
    for name in ["denied", "euro"] {
        assert!(
            samples.iter().all(|s| !(s.label("integration") == name
                && s.name.starts_with("aws_cost_")
                && s.name.ends_with("_usd"))),
            "{name} has no cost series"
        );
        assert_eq!(
            value_of(
                &samples,
                "aws_cost_refresh_last_success_timestamp_seconds",
                &[("integration", name)]
            ),
            None
        );
        assert!(
            value_of(
                &samples,
                "aws_cost_refresh_duration_seconds",
                &[("integration", name)]
            )
            .is_some()
        );
    }
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_api_requests_total",
            &[
                ("integration", "denied"),
                ("operation", "GetCostAndUsage"),
                ("outcome", "client_error")
            ]
        ),
        Some(1.0)
    );
    let dataset = sim.dataset("111111111111").unwrap();
    let sum: f64 = samples
        .iter()
        .filter(|s| s.name == "aws_cost_daily_usd" && s.label("integration") == "payer")
        .map(|s| s.value)
        .sum();
    assert_close(
        sum,
        dataset.total(CostMetric::Unblended, |r| r.day == date(2026, 11, 22)),
        "payer daily",
    );
    // A failing refresh never makes the exporter unready.
    assert_eq!(get(addr, "/-/ready").await.status, 200);
    assert_eq!(get(addr, "/-/healthy").await.status, 200);
    exporter.shutdown().await;
}

#[tokio::test]
async fn refresh_errors_say_what_went_wrong() {
    let today = date(2026, 11, 23);
    let sim = Simulator::builder()
        .account("777777777777", single_dataset("777777777777", today, 2))
        .behavior("777777777777", Behavior::Currency("EUR".into()))
        .access_key("AKIATESTEURO1EXAMPLE", "euro-secret", "777777777777")
        .start()
        .await
        .unwrap();
    let yaml = format!(
        "integrations:\n  - name: euro\n    account_id: \"777777777777\"\n    access_key_id: AKIATESTEURO1EXAMPLE\n    secret_access_key: euro-secret\n    endpoint_url: {}\n",
        sim.endpoint()
    );
    let config = parse_config(&yaml);
    let metrics = std::sync::Arc::new(aws_cost_exporter::metrics::Metrics::new());
    let ce = aws_cost_exporter::credentials::cost_explorer(&config.integrations[0], &metrics).await;
    let err = ce
        .costs(Period::new(today, 1), &[CostBasis::Unblended], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CostExplorerError::NotUsd { ref unit, .. } if unit == "EUR"),
        "{err}"
    );
    assert!(
        err.to_string().contains("only USD amounts are supported"),
        "{err}"
    );
    assert!(!err.to_string().contains("euro-secret"));

    sim.set_behavior("777777777777", Behavior::AccessDenied);
    let err = ce
        .costs(Period::new(today, 1), &[CostBasis::Unblended], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("AccessDeniedException"), "{err}");
    assert!(
        err.to_string()
            .contains("not authorized to perform: ce:GetCostAndUsage"),
        "{err}"
    );

    // A token that comes back again stops the query at once, and the error names the query.
    sim.set_behavior("777777777777", Behavior::LoopingToken);
    let before = sim.requests().len();
    let err = ce
        .costs(Period::new(today, 1), &[CostBasis::Unblended], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CostExplorerError::TokenLoop { pages: 2, .. }),
        "{err}"
    );
    // The accounts' first page promises more, so the record types are asked next: that query
    // returns its first token again on its second page.
    assert_eq!(
        err.to_string(),
        "Cost Explorer returned a NextPageToken it had already returned, after 2 pages of \
         GetCostAndUsage MONTHLY 2026-11-01..2026-11-24 by RECORD_TYPE,SERVICE"
    );
    assert_eq!(
        sim.requests().len() - before,
        3,
        "three pages, then it stops"
    );
}

#[tokio::test]
async fn a_failed_refresh_keeps_serving_the_last_good_data() {
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let exporter = start_exporter(
        parse_config(&format!("refresh_interval: 1s\n{}", payer_yaml(&sim, ""))),
        today,
    )
    .await;
    let addr = exporter.local_addr();
    let before = wait_for_refresh(addr, &["payer"]).await;
    let costs = |samples: &[Sample]| -> Vec<Sample> {
        samples
            .iter()
            .filter(|s| s.name.ends_with("_usd") || s.name == "aws_cost_data_day_timestamp_seconds")
            .cloned()
            .collect()
    };
    let good = costs(&before);
    assert!(good.len() > 40);
    let last_success = |s: &[Sample]| {
        value_of(
            s,
            "aws_cost_refresh_last_success_timestamp_seconds",
            &[("integration", "payer")],
        )
    };

    sim.set_behavior("111111111111", Behavior::AccessDenied);
    let failed = wait_for(addr, "a failed refresh", |s| {
        refresh_success(s, "payer") == Some(0.0)
    })
    .await;
    assert_eq!(costs(&failed), good, "the last good data is still served");
    assert_eq!(last_success(&failed), last_success(&before));

    sim.set_behavior("111111111111", Behavior::Normal);
    let recovered = wait_for(addr, "a successful refresh", |s| {
        refresh_success(s, "payer") == Some(1.0)
    })
    .await;
    assert_eq!(costs(&recovered), good);
    exporter.shutdown().await;
}

#[tokio::test]
async fn scrapes_never_wait_for_aws() {
    let today = date(2026, 11, 23);
    let sim = Simulator::builder()
        .account("111111111111", org_dataset(today, 3))
        .behavior("111111111111", Behavior::Hang(Duration::from_secs(30)))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .start()
        .await
        .unwrap();
    let exporter = start_exporter(parse_config(&payer_yaml(&sim, "")), today).await;
    let addr = exporter.local_addr();
    // Wait until the refresh is stuck inside Cost Explorer.
    for _ in 0..200 {
        if !sim.requests().is_empty() || sim.in_flight() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        sim.in_flight(),
        1,
        "the refresh is waiting on Cost Explorer"
    );
    let response = tokio::time::timeout(Duration::from_secs(5), get(addr, "/metrics"))
        .await
        .expect("a scrape answers while AWS hangs");
    assert_eq!(response.status, 200);
    let samples = parse_exposition(&response.text());
    assert_eq!(
        value_of(&samples, "aws_cost_exporter_build_info", &[]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&samples, "aws_cost_refresh_success", &[]),
        None,
        "no attempt has finished"
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn both_formats_gzip_head_and_routes() {
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let exporter = start_exporter(parse_config(&payer_yaml(&sim, "")), today).await;
    let addr = exporter.local_addr();
    wait_for_refresh(addr, &["payer"]).await;

    let classic = get(addr, "/metrics").await;
    assert_eq!(classic.status, 200);
    assert_eq!(
        classic.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic_text = classic.text();
    assert!(!classic_text.contains("# EOF") && !classic_text.contains("# UNIT"));
    assert!(classic_text.contains("# TYPE aws_cost_api_requests_total counter\n"));
    assert!(classic_text.contains("# TYPE aws_cost_daily_usd gauge\n"));
    // The escaped account name: quote, backslash and newline.
    assert!(
        classic_text.contains("account_name=\"Data \\\"Lake\\\" \\\\ Analytics\\nTeam\""),
        "escaping"
    );

    let om = request(
        addr,
        Method::GET,
        "/metrics",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    )
    .await;
    assert_eq!(
        om.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om_text = om.text();
    assert!(om_text.ends_with("# EOF\n"));
    assert!(om_text.contains("# TYPE aws_cost_api_requests counter\n"));
    assert!(om_text.contains("# UNIT aws_cost_daily_usd usd\n"));
    let mut a = parse_exposition(&classic_text);
    let mut b = parse_exposition(&om_text);
    let key = |s: &Sample| format!("{}{:?}", s.name, s.labels);
    a.sort_by_key(key);
    b.sort_by_key(key);
    assert_eq!(a, b, "both formats carry the same samples");

    let gz = request(
        addr,
        Method::GET,
        "/metrics",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(gz.headers["content-encoding"], "gzip");
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, classic_text);
    assert!(
        gz.body.len() * 4 < classic.body.len(),
        "gzip compresses: {} of {}",
        gz.body.len(),
        classic.body.len()
    );

    let head = request(addr, Method::HEAD, "/metrics", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.headers["content-length"],
        classic.body.len().to_string().as_str()
    );
    assert_eq!(
        head.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );

    let landing = get(addr, "/").await;
    assert_eq!(landing.status, 200);
    assert!(landing.text().contains("<a href=\"/metrics\">"));
    assert_eq!(get(addr, "/nope").await.status, 404);
    assert_eq!(get(addr, "/metrics/").await.status, 404);
    let post = request(addr, Method::POST, "/metrics", &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    exporter.shutdown().await;
}

#[tokio::test]
async fn telemetry_path_is_configurable() {
    let today = date(2026, 11, 23);
    let sim = org_simulator(today, 500).await;
    let start = |telemetry_path: &str| {
        aws_cost_exporter::Exporter::start(
            parse_config(&payer_yaml(&sim, "")),
            aws_cost_exporter::ExporterOptions {
                listen_address: "127.0.0.1:0".into(),
                telemetry_path: telemetry_path.into(),
                ..Default::default()
            },
        )
    };
    let exporter = start("/costs").await.unwrap();
    let addr = exporter.local_addr();
    assert_eq!(get(addr, "/costs").await.status, 200);
    assert_eq!(get(addr, "/metrics").await.status, 404);
    assert!(get(addr, "/").await.text().contains("<a href=\"/costs\">"));
    exporter.shutdown().await;
    let err = start("/-/ready")
        .await
        .err()
        .expect("a telemetry path that shadows a route is refused");
    assert!(err.to_string().contains("--web.telemetry-path"));
}

#[tokio::test]
async fn reload_adds_changes_and_removes_integrations() {
    let today = date(2026, 11, 23);
    let sim = Simulator::builder()
        .account("111111111111", org_dataset(today, 3))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .account("222222222222", single_dataset("222222222222", today, 5))
        .access_key("AKIATESTSOLO1EXAMPLE", "solo-secret", "222222222222")
        .account("666666666666", single_dataset("666666666666", today, 1))
        .behavior("666666666666", Behavior::AccessDenied)
        .access_key("AKIATESTDENY1EXAMPLE", "denied-secret", "666666666666")
        .start()
        .await
        .unwrap();
    let entry = |name: &str, account: &str, key: &str, secret: &str, extra: &str| {
        format!(
            "  - name: {name}\n    account_id: \"{account}\"\n    access_key_id: {key}\n    secret_access_key: {secret}\n    endpoint_url: {}\n{extra}",
            sim.endpoint()
        )
    };
    let payer = entry("payer", "111111111111", PAYER_KEY.0, PAYER_KEY.1, "");
    let denied = entry(
        "denied",
        "666666666666",
        "AKIATESTDENY1EXAMPLE",
        "denied-secret",
        "",
    );
    let solo = entry(
        "solo",
        "222222222222",
        "AKIATESTSOLO1EXAMPLE",
        "solo-secret",
        "",
    );
    let mut exporter = start_exporter(
        parse_config(&format!("integrations:\n{payer}{denied}")),
        today,
    )
    .await;
    let addr = exporter.local_addr();
    wait_for_refresh(addr, &["payer", "denied"]).await;
    let payer_requests = || {
        sim.requests()
            .iter()
            .filter(|r| r.access_key_id == PAYER_KEY.0)
            .count()
    };
    let before = payer_requests();

    let summary = exporter
        .reload(parse_config(&format!("integrations:\n{solo}{payer}")))
        .await;
    assert_eq!(summary.added, vec!["solo"]);
    assert_eq!(summary.removed, vec!["denied"]);
    assert_eq!(summary.unchanged, vec!["payer"]);
    assert!(summary.changed.is_empty());
    let samples = wait_for_refresh(addr, &["solo"]).await;
    assert!(
        samples
            .iter()
            .all(|s| s.label("integration") != "denied" || s.name == "aws_cost_api_requests_total"),
        "no gauge of a removed integration remains"
    );
    assert_eq!(
        payer_requests(),
        before,
        "an unchanged integration is not refreshed again"
    );
    // Exposition follows the new config order.
    let text = get(addr, "/metrics").await.text();
    assert!(
        text.find("integration=\"solo\",account_id").unwrap()
            < text.find("integration=\"payer\",account_id").unwrap()
    );
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_exporter_config_last_reload_successful",
            &[]
        ),
        Some(1.0)
    );

    let payer_amortized = entry(
        "payer",
        "111111111111",
        PAYER_KEY.0,
        PAYER_KEY.1,
        "    cost_basis: [unblended, amortized]\n    forecast: false\n",
    );
    let summary = exporter
        .reload(parse_config(&format!(
            "integrations:\n{solo}{payer_amortized}"
        )))
        .await;
    assert_eq!(summary.changed, vec!["payer"]);
    assert_eq!(summary.unchanged, vec!["solo"]);
    let samples = wait_for(addr, "amortized series", |s| {
        s.iter()
            .any(|s| s.label("integration") == "payer" && s.label("cost_basis") == "amortized")
    })
    .await;
    let dataset = sim.dataset("111111111111").unwrap();
    let sum: f64 = samples
        .iter()
        .filter(|s| {
            s.name == "aws_cost_daily_usd"
                && s.label("integration") == "payer"
                && s.label("cost_basis") == "amortized"
        })
        .map(|s| s.value)
        .sum();
    assert_close(
        sum,
        dataset.total(CostMetric::Amortized, |r| r.day == date(2026, 11, 22)),
        "amortized after reload",
    );
    // The part the reload turned off no longer reports.
    let query = |q: &str| {
        value_of(
            &samples,
            "aws_cost_query_success",
            &[("integration", "payer"), ("query", q)],
        )
    };
    assert_eq!((query("costs"), query("forecast")), (Some(1.0), None));
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_query_success",
            &[("integration", "solo"), ("query", "forecast")]
        ),
        Some(1.0)
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn throttling_is_retried_and_counted() {
    let today = date(2026, 11, 23);
    let sim = Simulator::builder()
        .account("111111111111", org_dataset(today, 3))
        .behavior("111111111111", Behavior::Throttled(2))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .start()
        .await
        .unwrap();
    let exporter = start_exporter(
        parse_config(&payer_yaml(&sim, "    forecast: false\n")),
        today,
    )
    .await;
    let samples = wait_for_refresh(exporter.local_addr(), &["payer"]).await;
    // The SDK retries LimitExceededException; the refresh succeeds with exact data.
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    let count = |outcome: &str| {
        value_of(
            &samples,
            "aws_cost_api_requests_total",
            &[("operation", "GetCostAndUsage"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        count("client_error"),
        Some(2.0),
        "both throttled attempts are counted"
    );
    let log = sim.requests();
    assert_eq!(log.iter().filter(|r| r.status == 400).count(), 2);
    assert_eq!(
        count("success"),
        Some(log.iter().filter(|r| r.status == 200).count() as f64)
    );
    let dataset = sim.dataset("111111111111").unwrap();
    let sum: f64 = samples
        .iter()
        .filter(|s| s.name == "aws_cost_daily_usd")
        .map(|s| s.value)
        .sum();
    assert_close(
        sum,
        dataset.total(CostMetric::Unblended, |r| r.day == date(2026, 11, 22)),
        "daily after throttling",
    );
    exporter.shutdown().await;
}

/// The exact expected value of every (account, service, record type) of the rows `keep`
/// selects, in 1e-10 USD, one pass over the rows.
fn exact_series(
    dataset: &aws_cost_simulator::Dataset,
    keep: impl Fn(NaiveDate) -> bool,
    basis: CostMetric,
) -> std::collections::HashMap<(String, String, String), i128> {
    let mut sums = std::collections::HashMap::new();
    for r in dataset.rows.iter().filter(|r| keep(r.day)) {
        let key = (
            r.account_id().to_string(),
            r.service().to_string(),
            r.record_type().to_string(),
        );
        *sums.entry(key).or_insert(0i128) += i128::from(r.amount(basis));
    }
    sums
}

/// A large organization (the demo's, at 455 accounts, 500 groups a page): every series exact,
/// and the billed requests what the plan says and within 1.5 x the fewest full pages + 12.
async fn large_organization(accounts: usize, today: NaiveDate) {
    let (organization, _) = aws_cost_simulator::demo_datasets(today, accounts);
    let sim = Simulator::builder()
        .account("111111111111", organization)
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .page_size(500)
        .start()
        .await
        .unwrap();
    let yaml = payer_yaml(
        &sim,
        &format!(
            "    forecast: false\n    organizations: true\n    organizations_endpoint_url: {}\n",
            sim.endpoint()
        ),
    );
    let exporter = start_exporter(parse_config(&yaml), today).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["payer"]).await;
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    let dataset = sim.dataset("111111111111").unwrap();
    // Every member named, from Organizations' pages of 20 accounts.
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "aws_cost_account_info")
            .count(),
        dataset.accounts.len()
    );
    let list_accounts = sim
        .requests()
        .iter()
        .filter(|r| r.operation == "ListAccounts")
        .count();
    assert_eq!(list_accounts, dataset.accounts.len().div_ceil(20));
    let data_day = today - Days::new(1);
    let month_start = today.with_day(1).unwrap();
    type InPeriod = Box<dyn Fn(NaiveDate) -> bool>;
    let periods: [(&str, InPeriod); 2] = [
        ("aws_cost_daily_usd", Box::new(move |d| d == data_day)),
        (
            "aws_cost_month_to_date_usd",
            Box::new(move |d| d >= month_start && d <= today),
        ),
    ];
    for (metric, keep) in periods {
        let expected = exact_series(&dataset, keep, CostMetric::Unblended);
        let series: Vec<&Sample> = samples.iter().filter(|s| s.name == metric).collect();
        assert_eq!(
            series.len(),
            expected.len(),
            "{metric}: one series per group"
        );
        for s in series {
            let key = (
                s.label("account_id").to_string(),
                s.label("aws_service").to_string(),
                s.label("charge_type").to_string(),
            );
            let units = expected
                .get(&key)
                .copied()
                .unwrap_or_else(|| panic!("{key:?}"));
            assert_close(
                s.value,
                aws_cost_simulator::dataset::units_to_f64(units),
                &format!("{metric} {key:?}"),
            );
        }
    }
    let billed = sim
        .requests()
        .iter()
        .filter(|r| r.operation == "GetCostAndUsage" && r.status == 200)
        .count() as u32;
    assert_eq!(billed, expected_requests(&dataset, today, 1, 500));
    let bound = lower_bound(&dataset, today, 1, 500);
    assert!(
        f64::from(billed) <= 1.5 * f64::from(bound) + 12.0,
        "{billed} requests for a lower bound of {bound}"
    );
    eprintln!("{accounts} accounts: {billed} requests, lower bound {bound}");
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_40_account_organization_costs_few_requests_and_reconciles() {
    large_organization(40, date(2026, 11, 23)).await;
}

#[tokio::test]
async fn a_455_account_organization_costs_few_requests_and_reconciles() {
    large_organization(455, date(2026, 11, 23)).await;
}

#[tokio::test]
async fn a_1500_account_organization_refreshes_and_reconciles() {
    // The month's last day: the most days, the most groups.
    large_organization(1500, date(2026, 12, 31)).await;
}
