//! The commitment and anomaly families and their encoding.

use std::collections::BTreeMap;

use super::{Block, Lines, gauge};
use crate::anomalies::AnomalyData;
use crate::commitments::CommitmentData;
use crate::exposition::FamilyDesc;

pub const SP_UTILIZATION: FamilyDesc = gauge(
    "aws_cost_savings_plans_utilization_ratio",
    "Savings Plans commitment used over total commitment, month to date through aws_cost_commitments_data_day_timestamp_seconds",
    Some("ratio"),
);
pub const SP_COMMITMENT: FamilyDesc = gauge(
    "aws_cost_savings_plans_commitment_usd",
    "Savings Plans commitment in USD, month to date, used and unused",
    Some("usd"),
);
pub const SP_NET_SAVINGS: FamilyDesc = gauge(
    "aws_cost_savings_plans_net_savings_usd",
    "What Savings Plans saved in USD, month to date: the on-demand cost of the usage they covered minus their commitment",
    Some("usd"),
);
pub const SP_COVERAGE: FamilyDesc = gauge(
    "aws_cost_savings_plans_coverage_ratio",
    "Spend covered by Savings Plans over all eligible spend, month to date, by service",
    Some("ratio"),
);
pub const SP_COVERED: FamilyDesc = gauge(
    "aws_cost_savings_plans_covered_usd",
    "Spend in USD covered by Savings Plans, month to date, by service",
    Some("usd"),
);
pub const SP_ON_DEMAND: FamilyDesc = gauge(
    "aws_cost_savings_plans_on_demand_usd",
    "Eligible spend in USD not covered by Savings Plans (on demand), month to date, by service",
    Some("usd"),
);
pub const PLAN_UTILIZATION: FamilyDesc = gauge(
    "aws_cost_savings_plan_utilization_ratio",
    "One Savings Plan's commitment used over its commitment, month to date",
    Some("ratio"),
);
pub const PLAN_END: FamilyDesc = gauge(
    "aws_cost_savings_plan_end_timestamp_seconds",
    "When a Savings Plan ends",
    Some("seconds"),
);
pub const PLAN_INFO: FamilyDesc = gauge(
    "aws_cost_savings_plan_info",
    "A Savings Plan's attributes as AWS returns them; always 1",
    None,
);
pub const RI_UTILIZATION: FamilyDesc = gauge(
    "aws_cost_reservation_utilization_ratio",
    "Reserved hours used over purchased, month to date, by service",
    Some("ratio"),
);
pub const RI_UNUSED_HOURS: FamilyDesc = gauge(
    "aws_cost_reservation_unused_hours",
    "Purchased reservation hours not used, month to date, by service",
    Some("hours"),
);
pub const RI_NET_SAVINGS: FamilyDesc = gauge(
    "aws_cost_reservation_net_savings_usd",
    "What reservations saved in USD, month to date: the on-demand cost of the hours used minus their fees, by service",
    Some("usd"),
);
pub const RI_COVERAGE: FamilyDesc = gauge(
    "aws_cost_reservation_coverage_ratio",
    "Running hours covered by reservations over all running hours, month to date, by service and account",
    Some("ratio"),
);
pub const RI_ON_DEMAND: FamilyDesc = gauge(
    "aws_cost_reservation_on_demand_usd",
    "Cost in USD of the running hours reservations did not cover, month to date, by service and account",
    Some("usd"),
);
pub const RESERVATION_UTILIZATION: FamilyDesc = gauge(
    "aws_cost_reservation_subscription_utilization_ratio",
    "One reservation's hours used over purchased, month to date",
    Some("ratio"),
);
pub const RESERVATION_END: FamilyDesc = gauge(
    "aws_cost_reservation_end_timestamp_seconds",
    "When a reservation ends",
    Some("seconds"),
);
pub const RESERVATION_INFO: FamilyDesc = gauge(
    "aws_cost_reservation_info",
    "A reservation's attributes as AWS returns them; always 1",
    None,
);
pub const COMMITMENTS_DATA_DAY: FamilyDesc = gauge(
    "aws_cost_commitments_data_day_timestamp_seconds",
    "Midnight UTC of the last day the commitment figures cover (they are fetched once a day)",
    Some("seconds"),
);
pub const ANOMALY_IMPACT: FamilyDesc = gauge(
    "aws_cost_anomaly_impact_usd",
    "A cost anomaly's total impact in USD (actual minus expected spend), by the service and account of its main root cause; the largest max_anomaly_series are kept",
    Some("usd"),
);
pub const ANOMALY_OPEN: FamilyDesc = gauge(
    "aws_cost_anomaly_open",
    "1 while a cost anomaly has no end date or ends today, else 0",
    None,
);
pub const ANOMALY_MAX_SCORE: FamilyDesc = gauge(
    "aws_cost_anomaly_max_score",
    "A cost anomaly's highest score",
    None,
);
pub const ANOMALY_START: FamilyDesc = gauge(
    "aws_cost_anomaly_start_timestamp_seconds",
    "Midnight UTC of the day a cost anomaly started",
    Some("seconds"),
);
pub const ANOMALIES: FamilyDesc = gauge(
    "aws_cost_anomalies",
    "Cost anomalies that started in the last 90 days, by monitor (every one, kept or not)",
    None,
);

/// The families a commitments fetch fills (kept from the last snapshot between fetches).
pub const COMMITMENT_FAMILIES: [FamilyDesc; 18] = [
    SP_UTILIZATION,
    SP_COMMITMENT,
    SP_NET_SAVINGS,
    SP_COVERAGE,
    SP_COVERED,
    SP_ON_DEMAND,
    PLAN_UTILIZATION,
    PLAN_END,
    PLAN_INFO,
    RI_UTILIZATION,
    RI_UNUSED_HOURS,
    RI_NET_SAVINGS,
    RI_COVERAGE,
    RI_ON_DEMAND,
    RESERVATION_UTILIZATION,
    RESERVATION_END,
    RESERVATION_INFO,
    COMMITMENTS_DATA_DAY,
];

/// The families the anomaly queries fill.
pub const ANOMALY_FAMILIES: [FamilyDesc; 5] = [
    ANOMALY_IMPACT,
    ANOMALY_OPEN,
    ANOMALY_MAX_SCORE,
    ANOMALY_START,
    ANOMALIES,
];

fn midnight(day: chrono::NaiveDate) -> f64 {
    day.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .unwrap_or_default() as f64
}

/// Encodes a commitments fetch, handing each family's block to `set`.
pub(super) fn encode_commitments(
    integration: &str,
    data: &CommitmentData,
    set: &mut impl FnMut(&FamilyDesc, Block),
) {
    let mut lines: BTreeMap<&'static str, Lines<'_>> = COMMITMENT_FAMILIES
        .iter()
        .map(|f| (f.name, Lines::new(f, integration)))
        .collect();
    let mut line = |family: &FamilyDesc, labels: &[(&str, &str)], value: f64| {
        if let Some(lines) = lines.get_mut(family.name) {
            lines.sample(labels, value);
        }
    };
    line(&COMMITMENTS_DATA_DAY, &[], midnight(data.through));
    if let Some(plans) = &data.savings_plans {
        if let Some(ratio) = plans.utilization {
            line(&SP_UTILIZATION, &[], ratio);
        }
        line(&SP_COMMITMENT, &[("state", "used")], plans.used_usd);
        line(&SP_COMMITMENT, &[("state", "unused")], plans.unused_usd);
        line(&SP_NET_SAVINGS, &[], plans.net_savings_usd);
        for coverage in &plans.coverage {
            let labels = [("aws_service", coverage.service.as_str())];
            if let Some(ratio) = coverage.ratio() {
                line(&SP_COVERAGE, &labels, ratio);
            }
            line(&SP_COVERED, &labels, coverage.covered_usd);
            line(&SP_ON_DEMAND, &labels, coverage.on_demand_usd);
        }
        for plan in &plans.plans {
            let arn = [("savings_plan_arn", plan.arn.as_str())];
            if let Some(ratio) = plan.utilization {
                line(&PLAN_UTILIZATION, &arn, ratio);
            }
            if let Some(end) = plan.end {
                line(&PLAN_END, &arn, end as f64);
            }
            line(
                &PLAN_INFO,
                &[
                    ("savings_plan_arn", plan.arn.as_str()),
                    ("account_id", plan.account_id.as_str()),
                    ("savings_plan_type", plan.plan_type.as_str()),
                    ("region", plan.region.as_str()),
                    ("instance_family", plan.instance_family.as_str()),
                    ("payment_option", plan.payment_option.as_str()),
                    ("term", plan.term.as_str()),
                ],
                1.0,
            );
        }
    }
    for service in &data.reservations {
        let labels = [("aws_service", service.service.as_str())];
        if let Some(ratio) = service.utilization {
            line(&RI_UTILIZATION, &labels, ratio);
        }
        line(&RI_UNUSED_HOURS, &labels, service.unused_hours);
        line(&RI_NET_SAVINGS, &labels, service.net_savings_usd);
        for coverage in &service.coverage {
            let labels = [
                ("aws_service", service.service.as_str()),
                ("account_id", coverage.account_id.as_str()),
            ];
            if let Some(ratio) = coverage.ratio() {
                line(&RI_COVERAGE, &labels, ratio);
            }
            line(&RI_ON_DEMAND, &labels, coverage.on_demand_usd);
        }
        for reservation in &service.reservations {
            let labels = [
                ("aws_service", service.service.as_str()),
                ("subscription_id", reservation.subscription_id.as_str()),
            ];
            if let Some(ratio) = reservation.utilization {
                line(&RESERVATION_UTILIZATION, &labels, ratio);
            }
            if let Some(end) = reservation.end {
                line(&RESERVATION_END, &labels, end as f64);
            }
            line(
                &RESERVATION_INFO,
                &[
                    ("aws_service", service.service.as_str()),
                    ("subscription_id", reservation.subscription_id.as_str()),
                    ("account_id", reservation.account_id.as_str()),
                    ("region", reservation.region.as_str()),
                    ("instance_type", reservation.instance_type.as_str()),
                ],
                1.0,
            );
        }
    }
    for family in &COMMITMENT_FAMILIES {
        if let Some(lines) = lines.remove(family.name) {
            set(family, lines.block(0));
        }
    }
}

/// Encodes the anomalies, the largest `max_series` by impact kept (the rest counted as dropped
/// on [`ANOMALY_IMPACT`]), handing each family's block to `set`.
pub(super) fn encode_anomalies(
    integration: &str,
    data: &AnomalyData,
    max_series: usize,
    set: &mut impl FnMut(&FamilyDesc, Block),
) {
    let mut ranked: Vec<_> = data.anomalies.iter().collect();
    ranked.sort_by(|a, b| {
        b.impact_usd
            .total_cmp(&a.impact_usd)
            .then_with(|| a.id.cmp(&b.id))
    });
    let dropped = ranked.len().saturating_sub(max_series);
    ranked.truncate(max_series);
    // Exposed in a stable order: by monitor name, then id.
    ranked.sort_by(|a, b| {
        (data.monitor_name(&a.monitor_arn), &a.id).cmp(&(data.monitor_name(&b.monitor_arn), &b.id))
    });
    let mut impact = Lines::new(&ANOMALY_IMPACT, integration);
    let mut open = Lines::new(&ANOMALY_OPEN, integration);
    let mut score = Lines::new(&ANOMALY_MAX_SCORE, integration);
    let mut start = Lines::new(&ANOMALY_START, integration);
    for anomaly in ranked {
        let labels = [
            ("monitor", data.monitor_name(&anomaly.monitor_arn)),
            ("anomaly_id", anomaly.id.as_str()),
            ("aws_service", anomaly.service.as_str()),
            ("account_id", anomaly.account_id.as_str()),
        ];
        impact.sample(&labels, anomaly.impact_usd);
        open.sample(&labels, f64::from(u8::from(anomaly.is_open(data.today))));
        score.sample(&labels, anomaly.max_score);
        start.sample(&labels, midnight(anomaly.start));
    }
    // Every monitor, with none as 0.
    let mut counts: BTreeMap<&str, usize> = data
        .monitors
        .values()
        .map(|name| (name.as_str(), 0))
        .collect();
    for anomaly in &data.anomalies {
        *counts
            .entry(data.monitor_name(&anomaly.monitor_arn))
            .or_default() += 1;
    }
    let mut count = Lines::new(&ANOMALIES, integration);
    for (monitor, n) in counts {
        count.sample(&[("monitor", monitor)], n as f64);
    }
    set(&ANOMALY_IMPACT, impact.block(dropped));
    set(&ANOMALY_OPEN, open.block(0));
    set(&ANOMALY_MAX_SCORE, score.block(0));
    set(&ANOMALY_START, start.block(0));
    set(&ANOMALIES, count.block(0));
}
