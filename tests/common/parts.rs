//! The configuration with every part of a refresh on, against the demo's simulated AWS, and
//! how each part is turned off: shared by tests/parts.rs and tests/storage.rs.

use std::collections::BTreeMap;

use aws_cost_exporter::config::Config;
use aws_cost_exporter::parts::{Kind, PARTS};
use aws_cost_simulator::LoggedRequest;

use super::{Sample, value_of};

/// How the test's configuration turns each optional part off: a line and what replaces it.
/// A part missing here fails the test: every part of the list is checked.
pub const OFF: &[(&str, &str, &str)] = &[
    ("tags", "    tags: [team, env]\n", ""),
    (
        "resources",
        "    resources: [\"Amazon Elastic Compute Cloud - Compute\"]\n",
        "",
    ),
    ("forecast", "    forecast: true\n", "    forecast: false\n"),
    (
        "organizations",
        "    organizations: true\n",
        "    organizations: false\n",
    ),
    ("commitments", "    commitments: true\n", ""),
    (
        "anomalies",
        "    anomalies: true\n",
        "    anomalies: false\n",
    ),
    ("views", VIEWS, ""),
];

/// The parts no file of this exporter's own shape turns on: only an electrolux-oss file does
/// (tests/electrolux.rs covers it, its reload and its storage).
pub const NOT_NATIVE: &[&str] = &["electrolux"];

/// The views of the test's configuration.
pub const VIEWS: &str = "    views:
      - name: service_by_charge_type
        group_by:
          - dimension: SERVICE
          - dimension: RECORD_TYPE
            label: record
        filter:
          Not: {Dimensions: {Key: RECORD_TYPE, Values: [Tax]}}
        max_series: 20
      - name: accounts
        group_by:
          - dimension: LINKED_ACCOUNT
        cost_basis: [unblended]
";

/// The requests a part that runs alone makes when a reload turns it back on, by operation.
pub fn alone(part: &str) -> Option<BTreeMap<String, usize>> {
    let requests: &[(&str, usize)] = match part {
        // Two keys, the month to date and the data day each, a page each.
        "tags" => &[("GetCostAndUsage", 4)],
        // Two cost bases and one filtered budget.
        "forecast" => &[("GetCostForecast", 3)],
        // A page of anomalies and, with no names kept, a page of monitors.
        "anomalies" => &[("GetAnomalies", 1), ("GetAnomalyMonitors", 1)],
        // Two views, the month to date and the data day each, a page each.
        "views" => &[("GetCostAndUsage", 4)],
        _ => return None,
    };
    Some(
        requests
            .iter()
            .map(|(op, n)| (op.to_string(), *n))
            .collect(),
    )
}

pub fn full_config(endpoint: &str) -> String {
    format!(
        "refresh_interval: 6h
integrations:
  - name: payer
    account_id: \"111111111111\"
    access_key_id: AKIAIOSFODNN7EXAMPLE
    secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
    endpoint_url: {endpoint}
    organizations_endpoint_url: {endpoint}
    cost_basis: [unblended, amortized]
    max_api_requests_per_day: 1000000
    tags: [team, env]
    resources: [\"Amazon Elastic Compute Cloud - Compute\"]
    max_resource_series: 25
    forecast: true
    organizations: true
    commitments: true
    anomalies: true
    budgets:
      - name: organization
        monthly_usd: 60000
      - name: production-compute
        monthly_usd: 9000
        accounts: [\"333333333333\"]
        services: [\"Amazon Elastic Compute Cloud - Compute\"]
{VIEWS}"
    )
}

/// The sample lines of `part`'s families in a page.
pub fn lines_of(page: &str, part: &Kind) -> Vec<String> {
    page.lines()
        .filter(|line| {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            part.families.iter().any(|family| family.name == name)
        })
        .map(str::to_string)
        .collect()
}

pub fn query_success(samples: &[Sample], part: &str) -> Option<f64> {
    value_of(
        samples,
        "aws_cost_query_success",
        &[("integration", "payer"), ("query", part)],
    )
}

pub fn operations(requests: &[LoggedRequest]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in requests {
        *counts.entry(request.operation.clone()).or_default() += 1;
    }
    counts
}

/// Whether a part's fingerprint is the same in both configurations.
pub fn unchanged(part: &Kind, a: &Config, b: &Config) -> bool {
    (part.fingerprint)(&a.integrations[0], a.data_delay_days)
        == (part.fingerprint)(&b.integrations[0], b.data_delay_days)
}

/// Whether every part with families serves some of them (the integration published).
pub fn serves(samples: &[Sample], part: &Kind) -> bool {
    part.families.is_empty()
        || samples
            .iter()
            .any(|s| part.families.iter().any(|f| f.name == s.name))
}

/// Checks that a part turned on again serves what every part served at first, and that the
/// requests it took were its own alone (when it runs alone) or a whole refresh.
pub fn check_back(part: &str, page: &str, initial: &str, requests: &[LoggedRequest]) {
    for every in &PARTS {
        assert_eq!(
            lines_of(page, every),
            lines_of(initial, every),
            "{part} on again: {}",
            every.name
        );
    }
    let bought = operations(requests);
    match alone(part) {
        Some(expected) => assert_eq!(bought, expected, "{part} alone"),
        None => assert!(
            bought.get("GetCostAndUsage").copied().unwrap_or_default() > 0,
            "{part}: a whole refresh, costs first: {bought:?}"
        ),
    }
}
