//! Views end to end, through the real SDK against the simulated Cost Explorer (paging every 7
//! groups): every series of every view, period and cost basis against sums of the simulation's
//! own rows under a filter evaluated here; each view's series (with `__other__`) against Cost
//! Explorer's ungrouped total under the view's filter, asked through the SDK; the exact
//! requests each view buys and the issue's bound on them; folding; and a cost category that
//! does not exist, served as uncategorised and logged once.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use aws_cost_exporter::config::CostBasis;
use aws_cost_simulator::dataset::{SimRow, units_to_f64};
use aws_cost_simulator::{Dataset, Simulator, demo_cost_categories};
use aws_sdk_costexplorer::types::{
    CostCategoryValues, DateInterval, Dimension, DimensionValues, Expression, Granularity,
    MatchOption, TagValues,
};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::*;

const PAGE: usize = 7;
const EC2: &str = "Amazon Elastic Compute Cloud - Compute";
const DAILY: &str = "aws_cost_view_daily_usd";
const MONTH_TO_DATE: &str = "aws_cost_view_month_to_date_usd";

fn today() -> NaiveDate {
    date(2026, 11, 23)
}

fn noon(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
}

/// One view of the test: its configuration, and independently of the exporter, which rows it
/// keeps, their key, and Cost Explorer's filter for the ungrouped total.
struct TestView {
    name: &'static str,
    yaml: &'static str,
    /// The label of each key, in order (`account_name` follows `account_id`).
    labels: &'static [&'static str],
    bases: &'static [CostBasis],
    max_series: usize,
    keep: fn(&SimRow) -> bool,
    key: fn(&SimRow) -> Vec<String>,
    filter: fn() -> Option<Expression>,
}

const BOTH: &[CostBasis] = &[CostBasis::Unblended, CostBasis::Amortized];

fn views() -> Vec<TestView> {
    vec![
        TestView {
            name: "team_by_region",
            yaml: "      - name: team_by_region
        group_by:
          - cost_category: Team
            label: team
          - dimension: REGION
        filter:
          Not: {Dimensions: {Key: RECORD_TYPE, Values: [Credit, Refund]}}
",
            labels: &["team", "region"],
            bases: BOTH,
            max_series: 500,
            keep: |r| !matches!(r.record_type(), "Credit" | "Refund"),
            key: |r| {
                vec![
                    r.cost_category("Team").unwrap_or_default().to_string(),
                    r.dimension("REGION").unwrap().to_string(),
                ]
            },
            filter: || {
                Some(
                    Expression::builder()
                        .not(dimensions("RECORD_TYPE", &["Credit", "Refund"]))
                        .build(),
                )
            },
        },
        TestView {
            name: "production_instance_types",
            yaml: "      - name: production_instance_types
        group_by:
          - dimension: INSTANCE_TYPE
        filter:
          And:
            - CostCategories: {Key: Environment, Values: [Production]}
            - Dimensions: {Key: SERVICE, Values: [\"Amazon Elastic Compute Cloud - Compute\"]}
        cost_basis: [unblended]
",
            labels: &["instance_type"],
            bases: &[CostBasis::Unblended],
            max_series: 500,
            keep: |r| r.cost_category("Environment") == Some("Production") && r.service() == EC2,
            key: |r| vec![r.dimension("INSTANCE_TYPE").unwrap().to_string()],
            filter: || {
                Some(
                    Expression::builder()
                        .and(
                            Expression::builder()
                                .cost_categories(
                                    CostCategoryValues::builder()
                                        .key("Environment")
                                        .values("Production")
                                        .build(),
                                )
                                .build(),
                        )
                        .and(dimensions("SERVICE", &[EC2]))
                        .build(),
                )
            },
        },
        TestView {
            name: "accounts_by_team",
            yaml: "      - name: accounts_by_team
        group_by:
          - dimension: LINKED_ACCOUNT
          - tag: team
        filter:
          Or:
            - Tags: {Key: env, Values: [prod]}
            - Tags: {Key: env, MatchOptions: [ABSENT]}
",
            labels: &["account_id", "tag_team"],
            bases: BOTH,
            max_series: 500,
            keep: |r| matches!(r.tag("env"), None | Some("prod")),
            key: |r| {
                vec![
                    r.account_id().to_string(),
                    r.tag("team").unwrap_or_default().to_string(),
                ]
            },
            filter: || {
                Some(
                    Expression::builder()
                        .or(Expression::builder()
                            .tags(TagValues::builder().key("env").values("prod").build())
                            .build())
                        .or(Expression::builder()
                            .tags(
                                TagValues::builder()
                                    .key("env")
                                    .match_options(MatchOption::Absent)
                                    .build(),
                            )
                            .build())
                        .build(),
                )
            },
        },
        TestView {
            name: "usage_types",
            yaml: "      - name: usage_types
        group_by:
          - dimension: USAGE_TYPE
        cost_basis: [amortized, unblended]
        max_series: 5
",
            labels: &["usage_type"],
            bases: &[CostBasis::Amortized, CostBasis::Unblended],
            max_series: 5,
            keep: |_| true,
            key: |r| vec![r.dimension("USAGE_TYPE").unwrap().to_string()],
            filter: || None,
        },
        TestView {
            name: "missing_category",
            yaml: "      - name: missing_category
        group_by:
          - cost_category: Cost Centre
        cost_basis: [unblended]
",
            labels: &["cost_category_cost_centre"],
            bases: &[CostBasis::Unblended],
            max_series: 500,
            keep: |_| true,
            key: |_| vec![String::new()],
            filter: || None,
        },
    ]
}

fn dimensions(key: &str, values: &[&str]) -> Expression {
    let mut d = DimensionValues::builder().key(Dimension::from(key));
    for v in values {
        d = d.values(*v);
    }
    Expression::builder().dimensions(d.build()).build()
}

fn dataset() -> Dataset {
    org_dataset(today(), 11).with_cost_categories(demo_cost_categories(ORG))
}

async fn simulator() -> Simulator {
    Simulator::builder()
        .account("111111111111", dataset())
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .page_size(PAGE)
        .start()
        .await
        .unwrap()
}

fn yaml(sim: &Simulator, name: &str, views: &[TestView]) -> String {
    let mut yaml = format!(
        "refresh_interval: 6h\nintegrations:\n  - name: {name}\n    account_id: \"111111111111\"\n    access_key_id: {}\n    secret_access_key: {}\n    endpoint_url: {e}\n    organizations_endpoint_url: {e}\n    cost_basis: [unblended, amortized]\n    views:\n",
        PAYER_KEY.0,
        PAYER_KEY.1,
        e = sim.endpoint()
    );
    for view in views {
        yaml.push_str(view.yaml);
    }
    yaml
}

/// Cost Explorer's ungrouped total of one period (a single result period) under a filter, per
/// cost basis.
async fn ungrouped_total(
    ce: &aws_sdk_costexplorer::Client,
    granularity: Granularity,
    (start, end): (NaiveDate, NaiveDate),
    filter: Option<Expression>,
    bases: &[CostBasis],
) -> Vec<f64> {
    let mut request = ce
        .get_cost_and_usage()
        .granularity(granularity)
        .time_period(
            DateInterval::builder()
                .start(start.to_string())
                .end(end.to_string())
                .build()
                .unwrap(),
        )
        .set_filter(filter);
    for basis in bases {
        request = request.metrics(basis.metric());
    }
    let response = request.send().await.expect("an ungrouped total");
    let results = response.results_by_time();
    assert_eq!(results.len(), 1, "one result period");
    let total = results[0].total().expect("a total");
    bases
        .iter()
        .map(|basis| {
            total[basis.metric()]
                .amount()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        })
        .collect()
}

/// The view's expected groups in one period: key to the sum of each basis, in 1e-10 USD.
fn expected(
    dataset: &Dataset,
    view: &TestView,
    (start, end): (NaiveDate, NaiveDate),
) -> BTreeMap<Vec<String>, Vec<i128>> {
    let mut groups: BTreeMap<Vec<String>, Vec<i128>> = BTreeMap::new();
    for row in dataset.day_rows(start, end) {
        if !(view.keep)(row) {
            continue;
        }
        let sums = groups
            .entry((view.key)(row))
            .or_insert_with(|| vec![0; view.bases.len()]);
        for (sum, basis) in sums.iter_mut().zip(view.bases) {
            *sum += i128::from(row.amount(cost_metric(*basis)));
        }
    }
    groups
}

/// A served series' key: its value of each of the view's labels.
fn key_of(sample: &Sample, view: &TestView) -> Vec<String> {
    view.labels
        .iter()
        .map(|label| sample.label(label).to_string())
        .collect()
}

#[tokio::test]
async fn every_view_series_is_exact_and_each_view_sums_to_its_filtered_total() {
    let sim = simulator().await;
    let dataset = dataset();
    let views = views();
    let clock = TestClock::at(noon(today()));
    let exporter = start_on_clock(&yaml(&sim, "viewed", &views), &clock).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["viewed"]).await;
    assert_eq!(refresh_success(&samples, "viewed"), Some(1.0));
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_query_success",
            &[("integration", "viewed"), ("query", "views")]
        ),
        Some(1.0)
    );
    let ce = ce_client(&sim, PAYER_KEY);
    let [month, day] = month_and_day(today(), 1);

    for view in &views {
        for (family, period, granularity) in [
            (MONTH_TO_DATE, month, Granularity::Monthly),
            (DAILY, day, Granularity::Daily),
        ] {
            let what = format!("{} {family}", view.name);
            let series: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.name == family && s.label("view") == view.name)
                .collect();
            // Exactly the view's labels, besides integration, view and cost_basis.
            for s in &series {
                let mut names: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
                for fixed in ["integration", "view", "cost_basis"] {
                    assert!(names.remove(fixed), "{what}: {fixed} in {s:?}");
                }
                let mut want: BTreeSet<&str> = view.labels.iter().copied().collect();
                if view.labels.contains(&"account_id") {
                    want.insert("account_name");
                    let name = ORG
                        .iter()
                        .find(|(id, _)| *id == s.label("account_id"))
                        .map_or("", |(_, name)| *name);
                    assert_eq!(s.label("account_name"), name, "{what}: {s:?}");
                }
                assert_eq!(names, want, "{what}: {s:?}");
            }
            let groups = expected(&dataset, view, period);
            assert!(!groups.is_empty(), "{what}: the test's view has cost");

            // Which groups are served as they are: all of them, or the max_series largest by
            // the first basis (ties by key); the rest is one __other__ series per basis.
            let other = vec!["__other__".to_string(); view.labels.len()];
            let served: BTreeSet<Vec<String>> = series
                .iter()
                .map(|s| key_of(s, view))
                .filter(|key| *key != other)
                .collect();
            if groups.len() <= view.max_series {
                assert_eq!(
                    served,
                    groups.keys().cloned().collect(),
                    "{what}: every group"
                );
            } else {
                assert_eq!(served.len(), view.max_series, "{what}: max_series kept");
                let magnitude = |key: &Vec<String>| groups[key][0].abs();
                let smallest_kept = served.iter().map(magnitude).min().unwrap();
                for (key, _) in groups.iter().filter(|(key, _)| !served.contains(*key)) {
                    assert!(
                        magnitude(key) <= smallest_kept,
                        "{what}: {key:?} folded while smaller groups are kept"
                    );
                }
            }
            let totals =
                ungrouped_total(&ce, granularity, period, (view.filter)(), view.bases).await;
            for (b, basis) in view.bases.iter().enumerate() {
                let of_basis: Vec<&&Sample> = series
                    .iter()
                    .filter(|s| s.label("cost_basis") == basis.as_str())
                    .collect();
                let mut folded = 0i128;
                for (key, sums) in &groups {
                    if served.contains(key) {
                        let value = of_basis
                            .iter()
                            .find(|s| key_of(s, view) == *key)
                            .map(|s| s.value);
                        assert_close(
                            value.expect("served"),
                            units_to_f64(sums[b]),
                            &format!("{what} {basis:?} {key:?}"),
                        );
                    } else {
                        folded += sums[b];
                    }
                }
                let other_value = of_basis
                    .iter()
                    .find(|s| key_of(s, view) == other)
                    .map(|s| s.value);
                if served.len() == groups.len() {
                    assert_eq!(other_value, None, "{what}: nothing folded");
                } else {
                    assert_close(
                        other_value.expect("__other__ is served"),
                        units_to_f64(folded),
                        &format!("{what} {basis:?} __other__"),
                    );
                }
                assert_eq!(of_basis.len(), groups.len().min(view.max_series + 1));
                let sum: f64 = of_basis.iter().map(|s| s.value).sum();
                let rows: i128 = groups.values().map(|sums| sums[b]).sum();
                assert_close(sum, totals[b], &format!("{what} {basis:?}: CE's total"));
                assert_close(sum, units_to_f64(rows), &format!("{what} {basis:?}: rows"));
            }
        }
    }

    // The filters select what the test meant: uncategorised (Tax, ...) and untagged cost under
    // the empty value, tag values with quotes intact, Credit and Refund nowhere in the region
    // view, and usage types folded.
    let has = |view: &str, label: &str, value: &str| {
        samples.iter().any(|s| {
            s.label("view") == view && s.labels.get(label).map(String::as_str) == Some(value)
        })
    };
    assert!(has("team_by_region", "team", ""));
    assert!(has("team_by_region", "team", "Web Frontend"));
    assert!(has("accounts_by_team", "tag_team", ""));
    assert!(has("accounts_by_team", "tag_team", "web \"frontend\""));
    assert!(has("usage_types", "usage_type", "__other__"));
    assert!(has("missing_category", "cost_category_cost_centre", ""));
    let all = expected(&dataset, &views[0], month);
    let unfiltered = dataset.total_units(cost_metric(CostBasis::Unblended), |r| {
        r.day >= month.0 && r.day < month.1
    });
    let kept: i128 = all.values().map(|sums| sums[0]).sum();
    assert_ne!(kept, unfiltered, "the region view's filter removes cost");

    // Each view buys one query per period, paged: exactly the pages of its groups, within the
    // issue's bound, on top of the cost queries.
    let mut views_requests = 0;
    for view in &views {
        let [m, d] = [month, day].map(|period| expected(&dataset, view, period).len());
        let pages = pages_of([m], PAGE) + pages_of([d], PAGE);
        let bound = 1.5 * (d.div_ceil(PAGE) as f64) + m.div_ceil(PAGE) as f64 + 2.0;
        assert!(
            f64::from(pages) <= bound,
            "{}: {pages} > {bound}",
            view.name
        );
        views_requests += pages;
    }
    let costs = expected_requests(&dataset, today(), 1, PAGE);
    let billed = sim
        .requests()
        .iter()
        .filter(|r| r.operation == "GetCostAndUsage")
        .count() as u32
        - 2 * views.len() as u32; // the test's own ungrouped totals
    assert_eq!(billed, costs + views_requests);
    assert_eq!(
        value_of(
            &samples,
            "aws_cost_api_requests_total",
            &[
                ("integration", "viewed"),
                ("operation", "GetCostAndUsage"),
                ("outcome", "success")
            ]
        ),
        Some(f64::from(costs + views_requests))
    );
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_cost_category_missing_from_the_account_is_served_uncategorised_and_logged_once() {
    let sim = simulator().await;
    let views = views();
    let missing: Vec<TestView> = views
        .into_iter()
        .filter(|v| v.name == "missing_category")
        .collect();
    let clock = TestClock::at(noon(today()));
    // Refreshing every 300 ms.
    let yaml = yaml(&sim, "uncategorised", &missing).replace(
        "    cost_basis: [unblended, amortized]\n",
        "    cost_basis: [unblended, amortized]\n    refresh_interval: 300ms\n",
    );
    let exporter = start_on_clock(&yaml, &clock).await;
    let addr = exporter.local_addr();
    let samples = wait_for_refresh(addr, &["uncategorised"]).await;
    let [month, _] = month_and_day(today(), 1);
    let total = dataset().total(cost_metric(CostBasis::Unblended), |r| {
        r.day >= month.0 && r.day < month.1
    });
    assert_close(
        value_of(
            &samples,
            MONTH_TO_DATE,
            &[
                ("view", "missing_category"),
                ("cost_category_cost_centre", ""),
            ],
        )
        .expect("served"),
        total,
        "all of the month, uncategorised",
    );
    let warned = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .filter(|l| l.contains("no cost has a value of this cost category"))
            .collect()
    };
    let lines = warned(logs::integration_lines("uncategorised"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("level=warn"), "{}", lines[0]);
    assert!(lines[0].contains("view=missing_category"), "{}", lines[0]);
    assert!(
        lines[0].contains("cost_category=\"Cost Centre\""),
        "{}",
        lines[0]
    );

    // The next refreshes find it missing again, and say nothing more.
    let first = sim.billed_requests();
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.billed_requests() < 3 * first {
        assert!(tokio::time::Instant::now() < deadline, "two more refreshes");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(warned(logs::integration_lines("uncategorised")).len(), 1);
    exporter.shutdown().await;
}

/// The views of the README's worked examples, as written there: every one is accepted, served
/// in both families, and adds up to the month's cost it selects (the untagged view: the rows
/// without a team tag).
#[tokio::test]
async fn the_readme_examples_are_served() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("\n## Views\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Views section");
    let examples: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.starts_with("      - name:"))
        .collect();
    assert_eq!(examples.len(), 3, "three worked examples");
    let sim = simulator().await;
    let mut yaml = yaml(&sim, "readme", &[]);
    for example in &examples {
        yaml.push_str(example);
    }
    let clock = TestClock::at(noon(today()));
    let exporter = start_on_clock(&yaml, &clock).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["readme"]).await;
    assert_eq!(refresh_success(&samples, "readme"), Some(1.0));
    for view in ["team_by_region", "production_instance_types", "untagged"] {
        for family in [DAILY, MONTH_TO_DATE] {
            assert!(
                samples
                    .iter()
                    .any(|s| s.name == family && s.label("view") == view),
                "{view} {family}"
            );
        }
    }
    let [month, _] = month_and_day(today(), 1);
    let untagged: f64 = samples
        .iter()
        .filter(|s| {
            s.name == MONTH_TO_DATE
                && s.label("view") == "untagged"
                && s.label("cost_basis") == "unblended"
        })
        .map(|s| s.value)
        .sum();
    assert_close(
        untagged,
        dataset().total(cost_metric(CostBasis::Unblended), |r| {
            r.day >= month.0 && r.day < month.1 && r.tag("team").is_none()
        }),
        "the untagged view",
    );
    exporter.shutdown().await;
}
