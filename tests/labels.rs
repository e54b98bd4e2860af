//! Static labels (`labels:` per integration): every series the integration exports carries
//! them, its cost, budget, tag, resource, view, commitment and anomaly series, its series
//! counts and its health series alike; a reload that changes them leaves no series with the
//! old ones; and every label the exporter serves is one a static label may not take.

mod common;

use std::collections::BTreeSet;

use aws_cost_exporter::config::SERIES_LABELS;
use aws_cost_exporter::parts::PARTS;
use aws_cost_simulator::{DEMO_SCALE, demo_simulator};
use common::parts::*;
use common::*;

fn with_labels(config: &str, labels: &str) -> String {
    config.replace(
        "    account_id: \"111111111111\"\n",
        &format!("    account_id: \"111111111111\"\n    labels: {labels}\n"),
    )
}

/// The exporter's own series of one integration, besides the cost families.
const HEALTH: [&str; 8] = [
    "aws_cost_refresh_success",
    "aws_cost_refresh_failures_total",
    "aws_cost_refresh_last_success_timestamp_seconds",
    "aws_cost_refresh_duration_seconds",
    "aws_cost_api_requests_total",
    "aws_cost_query_success",
    "aws_cost_data_age_seconds",
    "aws_cost_api_budget_exhausted",
];

#[tokio::test]
async fn every_series_of_the_integration_carries_its_static_labels() {
    let today = date(2026, 11, 23);
    let sim = demo_simulator(today, DEMO_SCALE).start().await.unwrap();
    let full = full_config(&sim.endpoint());
    let mut exporter = start_exporter(
        parse_config(&with_labels(&full, "{team: finops, env: prod}")),
        today,
    )
    .await;
    let addr = exporter.local_addr();
    let samples = wait_for_refresh(addr, &["payer"]).await;
    assert_eq!(refresh_success(&samples, "payer"), Some(1.0));
    let ours: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.label("integration") == "payer")
        .collect();
    let names: BTreeSet<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    for family in parts_families().chain(HEALTH) {
        assert!(names.contains(family), "{family} is served");
    }
    for sample in &ours {
        assert_eq!(
            (sample.label("team"), sample.label("env")),
            ("finops", "prod"),
            "{sample:?}"
        );
    }

    // Every label the page has is one the exporter's series have (SERIES_LABELS, which a
    // static label may not take), a view's own, or a static label.
    let config = parse_config(&with_labels(&full, "{team: finops, env: prod}"));
    let integration = &config.integrations[0];
    let mut allowed: BTreeSet<String> = SERIES_LABELS.iter().map(|l| l.to_string()).collect();
    for view in &integration.views {
        allowed.extend(view.group_by.iter().map(|key| key.label.clone()));
    }
    allowed.extend(integration.labels.iter().map(|(name, _)| name.clone()));
    for sample in &samples {
        for label in sample.labels.keys() {
            assert!(
                allowed.contains(label),
                "{label} of {} is neither in SERIES_LABELS nor a view's or a static label",
                sample.name
            );
        }
    }

    // Other labels: no series keeps the old ones, at once; the new ones after the refresh.
    exporter
        .reload(parse_config(&with_labels(
            &full,
            "{team: platform, env: prod}",
        )))
        .await;
    let page = parse_exposition(&get(addr, "/metrics").await.text());
    let old: Vec<&Sample> = page
        .iter()
        .filter(|s| s.label("team") == "finops")
        .collect();
    assert!(old.is_empty(), "no series with the old labels: {old:?}");
    let samples = wait_for(addr, "series with the new labels", |s| {
        PARTS.iter().all(|p| serves(s, p)) && refresh_success(s, "payer") == Some(1.0)
    })
    .await;
    for sample in samples.iter().filter(|s| s.label("integration") == "payer") {
        assert_eq!(sample.label("team"), "platform", "{sample:?}");
    }
    exporter.shutdown().await;
}

/// The cost families every part of the list serves.
fn parts_families() -> impl Iterator<Item = &'static str> {
    PARTS
        .iter()
        .flat_map(|part| part.families.iter().map(|f| f.name))
        .chain(["aws_cost_series", "aws_cost_series_dropped"])
}
