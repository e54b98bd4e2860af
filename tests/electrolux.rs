//! An electrolux-oss/aws-cost-exporter v1.1.4 file read as it is: its example file's model,
//! its mistakes refused at their key, and its metrics served under its own names and labels
//! with the values its code computes (the period of each granularity and delay, record types
//! and their defaults, tag, dimension and iterated filters, aliases, merged minor cost, tags
//! and cost categories as it writes them), against the simulation's rows; requests shared
//! between metrics and targets, counted exactly.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use aws_cost_exporter::config::{self, ConfigError, ConfigFormat, CostBasis};
use aws_cost_simulator::dataset::SimRow;
use aws_cost_simulator::{Dataset, Simulator, demo_cost_categories};
use chrono::{Datelike, Days, NaiveDate};
use common::*;

const EXAMPLE: &str = include_str!("fixtures/electrolux/exporter_config.yaml");
const EC2: &str = "Amazon Elastic Compute Cloud - Compute";
const RDS: &str = "Amazon Relational Database Service";

fn today() -> NaiveDate {
    date(2026, 11, 23)
}

fn parse(text: &str, env: &[(&str, &str)]) -> Result<config::Config, ConfigError> {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    config::parse_with_env(text, &|name| env.get(name).cloned())
}

#[test]
fn the_example_file_is_read_as_is() {
    let config = parse(EXAMPLE, &[]).expect("the example is accepted");
    assert_eq!(
        config.format,
        ConfigFormat::Electrolux {
            exporter_port: Some(9090)
        }
    );
    // No role: every target is asked with the same credentials, once.
    assert_eq!(config.integrations.len(), 1);
    let default = &config.integrations[0];
    assert_eq!(default.name, "default");
    assert_eq!(default.refresh_interval.as_secs(), 28_800);
    assert_eq!(default.static_credentials, None);
    assert_eq!(default.assumed_role_name, None);
    assert!(!default.costs && !default.forecast);
    let electrolux = default.electrolux.as_ref().unwrap();
    assert_eq!(
        electrolux.targets,
        vec![
            vec![
                ("EnvironmentName".to_string(), "dev".to_string()),
                ("ProjectName".to_string(), "dev-team-1".to_string()),
                ("Publisher".to_string(), "234567890123".to_string()),
            ],
            vec![
                ("EnvironmentName".to_string(), "dev".to_string()),
                ("ProjectName".to_string(), "dev-team-2".to_string()),
                ("Publisher".to_string(), "321645789123".to_string()),
            ],
        ]
    );
    let names: Vec<(&str, &str)> = electrolux
        .metrics
        .iter()
        .map(|m| (m.name.as_str(), m.help.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "aws_daily_cost_by_service_by_account",
                "Daily cost of an AWS account in USD by service and account"
            ),
            ("aws_daily_cost_usd", "Daily cost of an AWS account in USD"),
        ]
    );
    let first = &electrolux.metrics[0];
    assert_eq!(first.metric_type, CostBasis::Amortized);
    assert!(!first.monthly);
    assert_eq!(first.data_delay_days, 0);
    assert_eq!(
        first.filter.to_string(),
        "And(RECORD_TYPE in [\"Usage\", \"SavingsPlanCoveredUsage\"], tag my_org:team in [\"dev-team-1\", \"dev-team-2\"] EQUALS, tag EnvironmentName in [\"dev\"] EQUALS)"
    );
    let labels: Vec<&str> = first.groups.iter().map(|g| g.label.as_str()).collect();
    assert_eq!(labels, ["ServiceName", "AccountName"]);
    let alias = first.groups[1].alias.as_ref().unwrap();
    assert_eq!(alias.label, "AccountAlias");
    assert_eq!(alias.map["234567890123"], "publisher1");
    // The second metric names no record types: AmortizedCost's defaults.
    assert!(
        electrolux.metrics[1].filter.to_string().starts_with(
            "And(RECORD_TYPE in [\"Usage\", \"SavingsPlanCoveredUsage\", \"SavingsPlanRecurringFee\", \"SavingsPlanUpfrontFee\", \"DiscountedUsage\", \"RIFee\"], "
        ),
        "{}",
        electrolux.metrics[1].filter
    );

    // Its environment variables: set values win over the defaults.
    let config = parse(
        EXAMPLE,
        &[
            ("EXPORTER_PORT", "8080"),
            ("POLLING_INTERVAL_SECONDS", "3600.5"),
            ("AWS_ACCESS_KEY", "AKIAEXAMPLEK1EXAMPLE"),
            ("AWS_ACCESS_SECRET", "example-secret"),
            ("AWS_ASSUMED_ROLE", "CostExporter"),
        ],
    )
    .unwrap();
    assert_eq!(
        config.format,
        ConfigFormat::Electrolux {
            exporter_port: Some(8080)
        }
    );
    // A role: each target asked as itself, one integration each, named by its Publisher.
    let names: Vec<&str> = config
        .integrations
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["234567890123", "321645789123"]);
    for integration in &config.integrations {
        assert_eq!(integration.refresh_interval.as_secs_f64(), 3600.5);
        assert_eq!(
            integration.role_arn().unwrap(),
            format!("arn:aws:iam::{}:role/CostExporter", integration.name)
        );
        assert_eq!(
            integration
                .static_credentials
                .as_ref()
                .unwrap()
                .access_key_id,
            "AKIAEXAMPLEK1EXAMPLE"
        );
        let targets = &integration.electrolux.as_ref().unwrap().targets;
        assert_eq!(targets.len(), 1);
        assert!(targets[0].contains(&("Publisher".to_string(), integration.name.clone())));
    }
}

/// A minimal valid file with `metric` as its only metric.
fn with_metric(metric: &str) -> String {
    format!(
        "exporter_port: 9090\npolling_interval_seconds: 60\nmetrics:\n{metric}target_aws_accounts:\n  - Publisher: 111111111111\n    Team: a\n"
    )
}

/// An alias map key PyYAML reads as a number (an unquoted account id) never matches the text
/// Cost Explorer returns in electrolux: it is left out of the map, and a quoted one stays.
#[test]
fn alias_keys_electrolux_reads_as_numbers_never_match() {
    let metric = "  - metric_name: m\n    metric_type: UnblendedCost\n    group_by:\n      enabled: true\n      merge_minor_cost: {enabled: false}\n      groups:\n        - type: DIMENSION\n          key: LINKED_ACCOUNT\n          label_name: AccountId\n          alias: {label_name: AccountAlias, map: {333333333333: production, \"444444444444\": staging, 0x1F: hex, 2024-01-31: date, 'yes': quoted, no: bool, web: web}}\n";
    let config = parse(&with_metric(metric), &[]).unwrap();
    let electrolux = config.integrations[0].electrolux.as_ref().unwrap();
    let alias = electrolux.metrics[0].groups[0].alias.as_ref().unwrap();
    let map: Vec<(&str, &str)> = alias
        .map
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        map,
        [
            ("444444444444", "staging"),
            ("web", "web"),
            ("yes", "quoted")
        ]
    );
}

#[test]
fn mistakes_are_refused_at_their_key() {
    let group = "  - metric_name: m\n    metric_type: UnblendedCost\n    group_by:\n      enabled: true\n      merge_minor_cost: {enabled: false}\n      groups:\n";
    let cases: Vec<(String, &str, (u64, u64), &str)> = vec![
        (
            format!("{group}        - {{type: DIMENSION, key: SERVICE, label_name: a}}\n        - {{type: DIMENSION, key: REGION, label_name: b}}\n        - {{type: TAG, key: team, label_name: c}}\n"),
            "metrics[0].group_by.groups",
            (10, 9),
            "at most two groups",
        ),
        (
            format!("{group}        - {{type: DIMENSION, key: SERVICE, label_name: a}}\n        - {{type: TAG, key: team, label_name: a}}\n"),
            "metrics[0].group_by.groups[1].label_name",
            (11, 46),
            "\"a\" is another label of the metric",
        ),
        (
            format!("{group}        - {{type: DIMENSION, key: SERVICE, label_name: Team}}\n"),
            "metrics[0].group_by.groups[0].label_name",
            (10, 55),
            "is a key of the target AWS accounts",
        ),
        (
            format!("{group}        - {{type: DIMENSION, key: SERVICE, label_name: ChargeType}}\n"),
            "metrics[0].group_by.groups[0].label_name",
            (10, 55),
            "ChargeType is the label every series of the metric has",
        ),
        (
            format!("{group}        - {{type: TAG, key: team, label_name: t, alias: {{label_name: u, map: {{}}}}}}\n"),
            "metrics[0].group_by.groups[0].alias",
            (10, 56),
            "Group with alias must be a dimension!",
        ),
        (
            format!("{group}        - {{type: DIMENSION, key: SERVICES, label_name: s}}\n"),
            "metrics[0].group_by.groups[0].key",
            (10, 34),
            "\"SERVICES\" is not a dimension Cost Explorer groups by",
        ),
        (
            "  - metric_name: m\n    metric_type: UnblendedCost\n    group_by:\n      enabled: true\n      groups: [{type: DIMENSION, key: SERVICE, label_name: s}]\n".to_string(),
            "metrics[0].group_by.merge_minor_cost",
            (7, 7),
            "is required",
        ),
        (
            "  - metric_name: m\n    metric_type: UsageQuantity\n    group_by: {enabled: false}\n".to_string(),
            "metrics[0].metric_type",
            (5, 18),
            "is a usage amount, not a cost",
        ),
        (
            "  - metric_name: m\n    metric_type: Cost\n    group_by: {enabled: false}\n".to_string(),
            "metrics[0].metric_type",
            (5, 18),
            "Invalid metric_type: Cost.",
        ),
        (
            "  - metric_name: m\n    metric_type: UnblendedCost\n    granularity: HOURLY\n    group_by: {enabled: false}\n".to_string(),
            "metrics[0].granularity",
            (6, 18),
            "Invalid granularity: HOURLY. It must be one of DAILY, MONTHLY.",
        ),
        (
            "  - metric_name: m\n    metric_type: UnblendedCost\n    data_delay_days: -1\n    group_by: {enabled: false}\n".to_string(),
            "metrics[0].data_delay_days",
            (6, 22),
            "It must be a non-negative integer",
        ),
        (
            "  - metric_name: m\n    metric_type: UnblendedCost\n    record_types: [Usage, Bogus]\n    group_by: {enabled: false}\n".to_string(),
            "metrics[0].record_types[1]",
            (6, 27),
            "Invalid record_types: \"Bogus\"",
        ),
        (
            "  - metric_name: m\n    metric_type: UnblendedCost\n    group_by: {enabled: false}\n    dimension_filters:\n      - {key: SERVICE, values: []}\n".to_string(),
            "metrics[0].dimension_filters[0].values",
            (8, 32),
            "cannot be empty",
        ),
        (
            "  - metric_name: m\n    metric_type: UnblendedCost\n    group_by: {enabled: false}\n    dimension_filters:\n      - {key: LINKED_ACCOUNT, values: [\"444444444444\", 333333333333]}\n".to_string(),
            "metrics[0].dimension_filters[0].values[1]",
            (8, 56),
            "\"333333333333\" is not a string to electrolux (YAML 1.1 reads it as a number, bool, null or date, which Cost Explorer's client refuses): quote it",
        ),
        (
            "  - metric_name: m\n    metric_type: UnblendedCost\n    group_by: {enabled: false}\n    dimension_filters:\n      - {key: SERVICE, values: [a], iterate: true}\n".to_string(),
            "metrics[0].dimension_filters[0].label_name",
            (8, 9),
            "must have 'label_name'",
        ),
        (
            "  - metric_name: m\n    metric_type: UnblendedCost\n    group_by: {enabled: false}\n    dimension_filters:\n      - {key: SERVICE, values: [a], iterate: true, label_name: s}\n      - {key: REGION, values: [b], iterate: true, label_name: r}\n".to_string(),
            "metrics[0].dimension_filters[1].iterate",
            (9, 45),
            "Only one dimension_filter with iterate=true is supported at a time.",
        ),
        (
            "  - metric_name: 9m\n    metric_type: UnblendedCost\n    group_by: {enabled: false}\n".to_string(),
            "metrics[0].metric_name",
            (4, 18),
            "is not a Prometheus metric name",
        ),
        (
            "  - metric_name: aws_cost_daily_usd\n    metric_type: UnblendedCost\n    group_by: {enabled: false}\n".to_string(),
            "metrics[0].metric_name",
            (4, 18),
            "is a metric of this exporter's own",
        ),
        (
            "  - metric_name: m\n    metric_type: UnblendedCost\n    group_by: {enabled: false}\n  - metric_name: m\n    metric_type: AmortizedCost\n    group_by: {enabled: false}\n".to_string(),
            "metrics[1].metric_name",
            (7, 18),
            "duplicate metric name \"m\"",
        ),
    ];
    for (metric, key, position, message) in &cases {
        let text = with_metric(metric);
        let err = parse(&text, &[]).expect_err(&text);
        assert_eq!(err.key.as_deref(), Some(*key), "{text}\n{err}");
        assert_eq!(err.position, Some(*position), "{text}\n{err}");
        assert!(err.message.contains(message), "{text}\n{err}");
    }
    let targets: &[(&str, &str, (u64, u64), &str)] = &[
        (
            "target_aws_accounts: []\n",
            "target_aws_accounts",
            (4, 22),
            "at least one target AWS account",
        ),
        (
            "target_aws_accounts:\n  - Team: a\n",
            "target_aws_accounts[0]",
            (5, 5),
            "Publisher is a mandatory key",
        ),
        (
            "target_aws_accounts:\n  - {Publisher: 111111111111, Team: a}\n  - {Publisher: 222222222222}\n",
            "target_aws_accounts[1]",
            (6, 5),
            "the same set of keys",
        ),
        (
            "target_aws_accounts:\n  - {Publisher: 12345}\n",
            "target_aws_accounts[0].Publisher",
            (5, 17),
            "\"12345\" is not a 12-digit AWS account id",
        ),
        (
            "target_aws_accounts:\n  - {Publisher: 111111111111, team-name: a}\n",
            "target_aws_accounts[0].team-name",
            (5, 42),
            "cannot be a label",
        ),
    ];
    for (accounts, key, position, message) in targets {
        let text =
            format!("exporter_port: 9090\npolling_interval_seconds: 60\nmetrics: []\n{accounts}");
        let err = parse(&text, &[]).expect_err(&text);
        assert_eq!(err.key.as_deref(), Some(*key), "{text}\n{err}");
        assert_eq!(err.position, Some(*position), "{text}\n{err}");
        assert!(err.message.contains(message), "{text}\n{err}");
    }
    // A variable neither set nor defaulted, where it is.
    let err = parse(
        "exporter_port: $PORT\npolling_interval_seconds: 60\nmetrics: []\ntarget_aws_accounts: [{Publisher: 111111111111}]\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(err.position, Some((1, 16)));
    assert!(err.message.contains("$PORT"), "{err}");
    // A secret never shows in an error.
    let err = parse(
        "exporter_port: 9090\npolling_interval_seconds: 60\naws_access_secret: $SECRET|\"\nmetrics: []\ntarget_aws_accounts: [{Publisher: 111111111111}]\n",
        &[("SECRET", "hunter2-secret\"")],
    )
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// The test's file: two targets asked with the same static key pair, and metrics that cover
/// what electrolux computes.
const FILE: &str = "exporter_port: $EXPORTER_PORT|9090
polling_interval_seconds: $POLLING_INTERVAL_SECONDS|28800
aws_access_key: $AWS_ACCESS_KEY|\"\"
aws_access_secret: $AWS_ACCESS_SECRET|\"\"
metrics:
  # By service and account, with an alias, production usage only (a tag filter).
  - metric_name: daily_by_service_account
    group_by:
      enabled: true
      groups:
        - {type: DIMENSION, key: SERVICE, label_name: ServiceName}
        - type: DIMENSION
          key: LINKED_ACCOUNT
          label_name: AccountId
          alias: {label_name: AccountAlias, map: {\"333333333333\": production}}
      merge_minor_cost: {enabled: false, threshold: 10, tag_value: other}
    metric_type: UnblendedCost
    record_types: [Usage]
    tag_filters:
      - {tag_key: env, tag_values: [prod]}
  # The same question in another metric type: one request for both.
  - metric_name: daily_by_service_account_amortized
    group_by:
      enabled: true
      groups:
        - {type: DIMENSION, key: SERVICE, label_name: ServiceName}
        - {type: DIMENSION, key: LINKED_ACCOUNT, label_name: AccountId}
      merge_minor_cost: {enabled: false}
    metric_type: AmortizedCost
    record_types: [Usage]
    tag_filters:
      - {tag_key: env, tag_values: [prod]}
  # Month to date a day in arrears, by tag, AmortizedCost's default record types.
  - metric_name: monthly_by_team
    granularity: MONTHLY
    data_delay_days: 1
    group_by:
      enabled: true
      groups:
        - {type: TAG, key: team, label_name: Team}
      merge_minor_cost: {enabled: false}
    metric_type: AmortizedCost
  # A cost category by region, the small groups merged.
  - metric_name: daily_by_category_region
    data_delay_days: 2
    group_by:
      enabled: true
      groups:
        - {type: COST_CATEGORY, key: Team, label_name: Category}
        - {type: DIMENSION, key: REGION, label_name: Region}
      merge_minor_cost: {enabled: true, threshold: 50, tag_value: other}
    metric_type: NetUnblendedCost
    record_types: [Usage, Tax, Credit]
  # Without grouping, iterating over two accounts, EC2 and RDS only.
  - metric_name: daily_total
    group_by: {enabled: false}
    metric_type: UnblendedCost
    dimension_filters:
      - {key: SERVICE, values: [\"Amazon Elastic Compute Cloud - Compute\", \"Amazon Relational Database Service\"]}
      - key: LINKED_ACCOUNT
        values: [\"333333333333\", \"444444444444\"]
        iterate: true
        label_name: Account
        alias: {label_name: Environment, map: {\"333333333333\": prod}}
target_aws_accounts:
  - Publisher: 111111111111
    ProjectName: platform
  - Publisher: \"222222222222\"
    ProjectName: web
";

type Labels = Vec<(&'static str, &'static str)>;
type KeyOf = dyn Fn(&SimRow) -> Vec<(&'static str, String)>;

/// What electrolux computes for one metric of [`FILE`] from the rows: its period, its
/// filter, and each row's labels (without the target's and `ChargeType`).
struct Expected {
    name: &'static str,
    /// (start, end), end exclusive.
    period: (NaiveDate, NaiveDate),
    basis: CostBasis,
    keep: Box<dyn Fn(&SimRow) -> bool>,
    /// The iterated values, each with its labels and filter (one `None` without iteration).
    iterate: Vec<(Labels, Option<&'static str>)>,
    key: Box<KeyOf>,
    merge: Option<(f64, &'static str)>,
    ungrouped: bool,
}

fn expected_metrics() -> Vec<Expected> {
    let d = today();
    let usage_prod = |r: &SimRow| r.record_type() == "Usage" && r.tag("env") == Some("prod");
    let by_service_account = |alias: bool| {
        move |r: &SimRow| {
            let mut labels = vec![
                ("ServiceName", r.service().to_string()),
                ("AccountId", r.account_id().to_string()),
            ];
            if alias {
                let mapped = if r.account_id() == "333333333333" {
                    "production"
                } else {
                    ""
                };
                labels.push(("AccountAlias", mapped.to_string()));
            }
            labels
        }
    };
    let amortized_defaults = [
        "Usage",
        "SavingsPlanCoveredUsage",
        "SavingsPlanRecurringFee",
        "SavingsPlanUpfrontFee",
        "DiscountedUsage",
        "RIFee",
    ];
    vec![
        Expected {
            name: "daily_by_service_account",
            period: (d - Days::new(1), d),
            basis: CostBasis::Unblended,
            keep: Box::new(usage_prod),
            iterate: vec![(vec![], None)],
            key: Box::new(by_service_account(true)),
            merge: None,
            ungrouped: false,
        },
        Expected {
            name: "daily_by_service_account_amortized",
            period: (d - Days::new(1), d),
            basis: CostBasis::Amortized,
            keep: Box::new(usage_prod),
            iterate: vec![(vec![], None)],
            key: Box::new(by_service_account(false)),
            merge: None,
            ungrouped: false,
        },
        Expected {
            name: "monthly_by_team",
            period: (
                (d - Days::new(1)).with_day(1).unwrap(),
                d - Days::new(1) + Days::new(1),
            ),
            basis: CostBasis::Amortized,
            keep: Box::new(move |r| amortized_defaults.contains(&r.record_type())),
            iterate: vec![(vec![], None)],
            key: Box::new(|r| vec![("Team", r.tag("team").unwrap_or_default().to_string())]),
            merge: None,
            ungrouped: false,
        },
        Expected {
            name: "daily_by_category_region",
            period: (d - Days::new(3), d - Days::new(2)),
            basis: CostBasis::NetUnblended,
            keep: Box::new(|r| matches!(r.record_type(), "Usage" | "Tax" | "Credit")),
            iterate: vec![(vec![], None)],
            // Cost categories as Cost Explorer keys them: Name$value.
            key: Box::new(|r| {
                vec![
                    (
                        "Category",
                        format!("Team${}", r.cost_category("Team").unwrap_or_default()),
                    ),
                    ("Region", r.dimension("REGION").unwrap().to_string()),
                ]
            }),
            merge: Some((50.0, "other")),
            ungrouped: false,
        },
        Expected {
            name: "daily_total",
            period: (d - Days::new(1), d),
            basis: CostBasis::Unblended,
            keep: Box::new(|r| {
                r.record_type() == "Usage" && (r.service() == EC2 || r.service() == RDS)
            }),
            iterate: vec![
                (
                    vec![("Account", "333333333333"), ("Environment", "prod")],
                    Some("333333333333"),
                ),
                (
                    vec![("Account", "444444444444"), ("Environment", "")],
                    Some("444444444444"),
                ),
            ],
            key: Box::new(|_| Vec::new()),
            merge: None,
            ungrouped: true,
        },
    ]
}

/// A metric's series for one target, as electrolux sets them: label set (sorted) to value.
fn expected_series(
    dataset: &Dataset,
    metric: &Expected,
    target: &[(&str, &str)],
) -> BTreeMap<BTreeMap<String, String>, f64> {
    let mut series = BTreeMap::new();
    for (iterate_labels, account) in &metric.iterate {
        let mut groups: Vec<(Vec<(&str, String)>, i128)> = Vec::new();
        for row in dataset.day_rows(metric.period.0, metric.period.1) {
            if !(metric.keep)(row) || account.is_some_and(|a| row.account_id() != a) {
                continue;
            }
            let key = (metric.key)(row);
            let amount = i128::from(row.amount(cost_metric(metric.basis)));
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, sum)) => *sum += amount,
                None => groups.push((key, amount)),
            }
        }
        let labels = |key: &[(&str, String)]| -> BTreeMap<String, String> {
            target
                .iter()
                .chain(iterate_labels)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(key.iter().map(|(k, v)| (k.to_string(), v.clone())))
                .chain([("ChargeType".to_string(), "Usage".to_string())])
                .collect()
        };
        let mut merged = 0.0;
        for (key, units) in &groups {
            let value = aws_cost_simulator::dataset::units_to_f64(*units);
            match metric.merge {
                Some((threshold, _)) if value < threshold => merged += value,
                _ => {
                    series.insert(labels(key), value);
                }
            }
        }
        if let Some((_, other)) = metric.merge
            && merged > 0.0
        {
            let key: Vec<(&str, String)> = (metric.key)(&dataset.rows[0])
                .into_iter()
                .map(|(label, _)| (label, other.to_string()))
                .collect();
            series.insert(labels(&key), merged);
        }
        if groups.is_empty() && metric.ungrouped {
            // Ungrouped: Cost Explorer's total, 0 without rows.
            series.insert(labels(&[]), 0.0);
        }
    }
    series
}

#[tokio::test]
async fn its_metrics_are_served_with_its_names_labels_and_values() {
    let dataset = org_dataset(today(), 11).with_cost_categories(demo_cost_categories(ORG));
    let sim = Simulator::builder()
        .account("111111111111", dataset.clone())
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .page_size(1000)
        .start()
        .await
        .unwrap();
    let mut config = parse(
        FILE,
        &[
            ("AWS_ACCESS_KEY", PAYER_KEY.0),
            ("AWS_ACCESS_SECRET", PAYER_KEY.1),
        ],
    )
    .expect("valid");
    for integration in &mut config.integrations {
        integration.endpoint_url = Some(sim.endpoint());
    }
    let exporter = start_exporter(config, today()).await;
    let samples = wait_for_refresh(exporter.local_addr(), &["default"]).await;
    assert_eq!(refresh_success(&samples, "default"), Some(1.0));
    let targets: [&[(&str, &str)]; 2] = [
        &[("Publisher", "111111111111"), ("ProjectName", "platform")],
        &[("Publisher", "222222222222"), ("ProjectName", "web")],
    ];
    for metric in expected_metrics() {
        let mut expected = BTreeMap::new();
        for target in targets {
            expected.extend(expected_series(&dataset, &metric, target));
        }
        assert!(
            !expected.is_empty(),
            "{}: the test's metric has data",
            metric.name
        );
        let served: BTreeMap<BTreeMap<String, String>, f64> = samples
            .iter()
            .filter(|s| s.name == metric.name)
            .map(|s| (s.labels.clone(), s.value))
            .collect();
        assert_eq!(
            served.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{}: the series",
            metric.name
        );
        for (labels, value) in &expected {
            assert_close(
                served[labels],
                *value,
                &format!("{} {labels:?}", metric.name),
            );
        }
    }
    // Merged minor cost is there, as electrolux names it.
    assert!(samples.iter().any(|s| s.name == "daily_by_category_region"
        && s.label("Category") == "other"
        && s.label("Region") == "other"));
    // One request per distinct question: the two service-by-account metrics share theirs, and
    // both targets share every one (the same credentials); the iterated metric asks once per
    // value. Electrolux asks 2 targets × (4 + 2) = 12.
    let billed: BTreeSet<&str> = ["GetCostAndUsage"].into();
    let requests = sim
        .requests()
        .iter()
        .filter(|r| billed.contains(r.operation.as_str()))
        .count();
    assert_eq!(requests, 1 + 1 + 1 + 2);
    // Only its families, and the exporter's own: no cost series of this exporter's.
    assert!(!samples.iter().any(|s| s.name == "aws_cost_daily_usd"));
    exporter.shutdown().await;
}

/// The file's metrics survive a restart with `--storage.path` (served at once, byte for byte,
/// before any request) and a reload that changes nothing of them.
#[tokio::test]
async fn its_metrics_are_stored_and_carried_over() {
    use aws_cost_exporter::{Exporter, ExporterOptions};
    use chrono::{TimeDelta, TimeZone as _, Utc};

    let dataset = org_dataset(today(), 11).with_cost_categories(demo_cost_categories(ORG));
    let sim = Simulator::builder()
        .account("111111111111", dataset)
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .page_size(1000)
        .start()
        .await
        .unwrap();
    let config = || {
        let mut config = parse(
            FILE,
            &[
                ("AWS_ACCESS_KEY", PAYER_KEY.0),
                ("AWS_ACCESS_SECRET", PAYER_KEY.1),
            ],
        )
        .unwrap();
        for integration in &mut config.integrations {
            integration.endpoint_url = Some(sim.endpoint());
        }
        config
    };
    let noon = Utc.from_utc_datetime(&today().and_hms_opt(12, 0, 0).unwrap());
    let clock = TestClock::at(noon);
    let dir = tempfile::tempdir().unwrap();
    let start = |config| {
        Exporter::start(
            config,
            ExporterOptions {
                listen_address: "127.0.0.1:0".into(),
                telemetry_path: "/metrics".into(),
                clock: clock.clock(),
                storage_path: Some(dir.path().to_path_buf()),
                refresh: test_refresh_options(),
                ..ExporterOptions::default()
            },
        )
    };
    let names = [
        "daily_by_service_account",
        "daily_by_service_account_amortized",
        "monthly_by_team",
        "daily_by_category_region",
        "daily_total",
    ];
    let lines = |page: &str| -> Vec<String> {
        page.lines()
            .filter(|l| names.iter().any(|n| l.starts_with(&format!("{n}{{"))))
            .map(str::to_string)
            .collect()
    };
    let first = start(config()).await.unwrap();
    wait_for_refresh(first.local_addr(), &["default"]).await;
    let served = lines(&get(first.local_addr(), "/metrics").await.text());
    assert!(served.len() > 20, "{served:?}");
    first.shutdown().await;

    let requests = sim.requests().len();
    clock.set(noon + TimeDelta::hours(1));
    let mut second = start(config()).await.unwrap();
    let page = get(second.local_addr(), "/metrics").await.text();
    assert_eq!(lines(&page), served, "served from storage at once");
    assert!(
        page.contains("aws_cost_data_age_seconds{integration=\"default\"} 3600"),
        "{}",
        page.lines()
            .filter(|l| l.contains("data_age"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        sim.requests().len(),
        requests,
        "nothing asked before it is due"
    );

    let summary = second.reload(config()).await;
    assert!(summary.changed.is_empty(), "{summary:?}");
    assert_eq!(
        lines(&get(second.local_addr(), "/metrics").await.text()),
        served
    );
    assert_eq!(sim.requests().len(), requests);
    second.shutdown().await;
}
