//! The simulated Cost Explorer's commitment and anomaly operations, through the real
//! aws-sdk-costexplorer client on loopback: every figure against sums computed here from the
//! simulator's own cost rows (with the parameters `aws_cost_simulator::commitments`
//! documents), paging, windows, the errors for invalid requests, the SERVICE filter, billing
//! and faults.

mod common;

use std::collections::BTreeSet;

use aws_cost_simulator::Behavior;
use aws_cost_simulator::commitments::{
    ANOMALIES, MONITORS, SAVINGS_PLANS, monitor_arn, reservation_profile, savings_plan_arn,
    subscription_id,
};
use aws_cost_simulator::dataset::{SimRow, format_units, units_to_f64};
use aws_sdk_costexplorer::types::{
    AnomalyDateInterval, DateInterval, DimensionValues, Expression, Granularity, GroupDefinition,
    GroupDefinitionType,
};
use chrono::{Days, NaiveDate};
use common::commitments::*;
use common::*;

/// Bounds every paging loop.
const MAX_PAGES: usize = 100;

fn today() -> NaiveDate {
    date(2026, 11, 23)
}

fn interval(start: NaiveDate, end: NaiveDate) -> DateInterval {
    DateInterval::builder()
        .start(start.to_string())
        .end(end.to_string())
        .build()
        .unwrap()
}

fn dimension(key: &str, values: &[&str]) -> Expression {
    let mut d = DimensionValues::builder().key(key.into());
    for v in values {
        d = d.values(*v);
    }
    Expression::builder().dimensions(d.build()).build()
}

fn group(key: &str) -> GroupDefinition {
    GroupDefinition::builder()
        .r#type(GroupDefinitionType::Dimension)
        .key(key)
        .build()
}

/// The error code and message of a failed call.
fn error_of<T, E, R>(
    result: Result<T, aws_sdk_costexplorer::error::SdkError<E, R>>,
) -> (String, String)
where
    T: std::fmt::Debug,
    E: aws_sdk_costexplorer::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    let err = result.expect_err("the call fails");
    let meta = err.as_service_error().expect("a service error");
    (
        meta.code().unwrap_or_default().to_string(),
        meta.message().unwrap_or_default().to_string(),
    )
}

fn assert_sp_utilization(
    u: &aws_sdk_costexplorer::types::SavingsPlansUtilization,
    s: &aws_sdk_costexplorer::types::SavingsPlansSavings,
    a: &aws_sdk_costexplorer::types::SavingsPlansAmortizedCommitment,
    [recurring, upfront, total, used, on_demand]: [i128; 5],
) {
    assert_eq!(u.total_commitment(), Some(format_units(total).as_str()));
    assert_eq!(u.used_commitment(), Some(format_units(used).as_str()));
    assert_eq!(
        u.unused_commitment(),
        Some(format_units(total - used).as_str())
    );
    assert_eq!(
        u.utilization_percentage(),
        Some(percent(used, total).as_str())
    );
    assert_eq!(
        s.net_savings(),
        Some(format_units(on_demand - total).as_str())
    );
    assert_eq!(
        s.on_demand_cost_equivalent(),
        Some(format_units(on_demand).as_str())
    );
    assert_eq!(
        a.amortized_recurring_commitment(),
        Some(format_units(recurring).as_str())
    );
    assert_eq!(
        a.amortized_upfront_commitment(),
        Some(format_units(upfront).as_str())
    );
    assert_eq!(
        a.total_amortized_commitment(),
        Some(format_units(total).as_str())
    );
}

#[tokio::test]
async fn savings_plans_utilization_is_derived_from_the_fee_and_covered_usage_rows() {
    let sim = org_simulator(today(), 500).await;
    let dataset = sim.dataset("111111111111").unwrap();
    let ce = ce_client(&sim, PAYER_KEY);
    let (start, end) = (date(2026, 10, 10), date(2026, 11, 22));
    let out = ce
        .get_savings_plans_utilization()
        .time_period(interval(start, end))
        .granularity(Granularity::Monthly)
        .send()
        .await
        .unwrap();
    let by_time = out.savings_plans_utilizations_by_time();
    let expected_periods = [(start, date(2026, 11, 1)), (date(2026, 11, 1), end)];
    assert_eq!(by_time.len(), 2);
    for (period, (from, to)) in by_time.iter().zip(expected_periods) {
        let tp = period.time_period().unwrap();
        assert_eq!(
            (tp.start(), tp.end()),
            (from.to_string().as_str(), to.to_string().as_str())
        );
        assert_sp_utilization(
            period.utilization().unwrap(),
            period.savings().unwrap(),
            period.amortized_commitment().unwrap(),
            sum_plans(&expected_plans(&dataset, from, to)),
        );
    }
    let total = out.total().unwrap();
    let expected = sum_plans(&expected_plans(&dataset, start, end));
    assert_sp_utilization(
        total.utilization().unwrap(),
        total.savings().unwrap(),
        total.amortized_commitment().unwrap(),
        expected,
    );
    // Plans are used, partly: some commitment unused, none over-used.
    assert!(expected[3] < expected[2] && expected[3] > 0);
    // The fee rows are the recurring commitment, exactly.
    let fee: i128 = dataset
        .rows
        .iter()
        .filter(|r| r.day >= start && r.day < end && r.record_type() == "SavingsPlanRecurringFee")
        .map(unblended)
        .sum();
    assert_eq!(expected[0], fee);

    // DAILY: one entry per day.
    let daily = ce
        .get_savings_plans_utilization()
        .time_period(interval(date(2026, 11, 15), end))
        .granularity(Granularity::Daily)
        .send()
        .await
        .unwrap();
    assert_eq!(daily.savings_plans_utilizations_by_time().len(), 7);

    // End must be before today; Start at most 13 months back.
    for bad_end in [today(), today() + Days::new(1)] {
        let (code, message) = error_of(
            ce.get_savings_plans_utilization()
                .time_period(interval(date(2026, 11, 1), bad_end))
                .send()
                .await,
        );
        assert_eq!(code, "ValidationException");
        assert_eq!(
            message,
            format!("End date {bad_end} must be before today (2026-11-23)")
        );
    }
    let (code, message) = error_of(
        ce.get_savings_plans_utilization()
            .time_period(interval(date(2025, 10, 31), date(2026, 11, 1)))
            .send()
            .await,
    );
    assert_eq!(code, "ValidationException");
    assert_eq!(
        message,
        "Start date 2025-10-31 is too old: data is available for the last 13 months, from 2025-11-01"
    );
    assert!(
        ce.get_savings_plans_utilization()
            .time_period(interval(date(2025, 11, 1), date(2026, 11, 1)))
            .send()
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn savings_plans_details_page_with_next_token_and_match_each_plan() {
    let sim = org_simulator(today(), 1).await;
    let dataset = sim.dataset("111111111111").unwrap();
    let ce = ce_client(&sim, PAYER_KEY);
    let (start, end) = (date(2026, 11, 1), date(2026, 11, 22));
    let mut details = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut totals = Vec::new();
    for _ in 0..MAX_PAGES {
        let out = ce
            .get_savings_plans_utilization_details()
            .time_period(interval(start, end))
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        assert_eq!(out.time_period().unwrap().start(), "2026-11-01");
        totals.push(out.total().cloned());
        details.extend(out.savings_plans_utilization_details().to_vec());
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, SAVINGS_PLANS.len(), "one plan a page");
    let expected = expected_plans(&dataset, start, end);
    let mut ends = BTreeSet::new();
    for ((detail, plan), figures) in details.iter().zip(SAVINGS_PLANS).zip(&expected) {
        assert_eq!(
            detail.savings_plan_arn(),
            Some(savings_plan_arn("111111111111", plan).as_str())
        );
        assert_sp_utilization(
            detail.utilization().unwrap(),
            detail.savings().unwrap(),
            detail.amortized_commitment().unwrap(),
            *figures,
        );
        let attributes = detail.attributes().unwrap();
        let end_day = today() + Days::new(plan.days_to_end);
        assert_eq!(
            attributes["EndDateTime"],
            format!("{end_day}T00:00:00.000Z")
        );
        assert_eq!(
            attributes["StartDateTime"],
            format!("{}T00:00:00.000Z", end_day - Days::new(plan.term_days))
        );
        assert_eq!(attributes["SavingsPlansType"], plan.plan_type);
        assert_eq!(attributes["PaymentOption"], plan.payment_option);
        assert_eq!(attributes["PurchaseTerm"], plan.term);
        assert_eq!(attributes["Region"], plan.region);
        assert_eq!(attributes["InstanceFamily"], plan.instance_family);
        assert_eq!(attributes["AccountId"], "111111111111");
        ends.insert(plan.days_to_end);
    }
    // Near and far from expiry.
    assert!(ends.first().unwrap() <= &30 && ends.last().unwrap() >= &365);
    // Every page carries the total of all plans.
    let total = sum_plans(&expected);
    for page_total in totals {
        let t = page_total.unwrap();
        assert_sp_utilization(
            t.utilization().unwrap(),
            t.savings().unwrap(),
            t.amortized_commitment().unwrap(),
            total,
        );
    }
    // A token of another request is refused; so is an End not before today.
    let first = ce
        .get_savings_plans_utilization_details()
        .time_period(interval(start, end))
        .send()
        .await
        .unwrap();
    let (code, _) = error_of(
        ce.get_savings_plans_utilization_details()
            .time_period(interval(date(2026, 11, 2), end))
            .next_token(first.next_token().unwrap())
            .send()
            .await,
    );
    assert_eq!(code, "InvalidNextTokenException");
    let (code, _) = error_of(
        ce.get_savings_plans_utilization_details()
            .time_period(interval(start, today()))
            .send()
            .await,
    );
    assert_eq!(code, "ValidationException");
}

#[tokio::test]
async fn savings_plans_coverage_groups_pages_and_refuses_granularity_with_group_by() {
    let sim = org_simulator(today(), 2).await;
    let dataset = sim.dataset("111111111111").unwrap();
    let ce = ce_client(&sim, PAYER_KEY);
    let (start, end) = (date(2026, 11, 1), date(2026, 11, 23));
    let mut coverages = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    for _ in 0..MAX_PAGES {
        let out = ce
            .get_savings_plans_coverage()
            .time_period(interval(start, end))
            .group_by(group("LINKED_ACCOUNT"))
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        coverages.extend(out.savings_plans_coverages().to_vec());
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    // (covered, on demand) per account.
    let expected = expected_sp_coverage(&dataset, (start, end), SimRow::account_id);
    assert_eq!(expected.len(), 4);
    assert_eq!(pages, 2, "4 accounts, 2 a page");
    assert_eq!(coverages.len(), 4);
    for (coverage, (account, (covered, on_demand))) in coverages.iter().zip(&expected) {
        assert_eq!(coverage.attributes().unwrap()["linkedAccount"], *account);
        let tp = coverage.time_period().unwrap();
        assert_eq!((tp.start(), tp.end()), ("2026-11-01", "2026-11-23"));
        let data = coverage.coverage().unwrap();
        assert_eq!(
            data.spend_covered_by_savings_plans(),
            Some(format_units(*covered).as_str())
        );
        assert_eq!(
            data.on_demand_cost(),
            Some(format_units(*on_demand).as_str())
        );
        assert_eq!(
            data.total_cost(),
            Some(format_units(covered + on_demand).as_str())
        );
        assert_eq!(
            data.coverage_percentage(),
            Some(percent(*covered, covered + on_demand).as_str())
        );
    }
    // By service: EC2 and Lambda.
    let out = ce
        .get_savings_plans_coverage()
        .time_period(interval(start, end))
        .group_by(group("SERVICE"))
        .max_results(10)
        .send()
        .await
        .unwrap();
    let services: Vec<&str> = out
        .savings_plans_coverages()
        .iter()
        .map(|c| c.attributes().unwrap()["service"].as_str())
        .collect();
    assert_eq!(services, ["AWS Lambda", EC2]);
    assert!(out.next_token().is_none(), "both fit the page of 2");
    // MaxResults below the page size makes smaller pages.
    let out = ce
        .get_savings_plans_coverage()
        .time_period(interval(start, end))
        .group_by(group("SERVICE"))
        .max_results(1)
        .send()
        .await
        .unwrap();
    assert_eq!(out.savings_plans_coverages().len(), 1);
    assert!(out.next_token().is_some());
    // Ungrouped, DAILY: one entry per day, paged two a page.
    let mut entries = 0;
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let out = ce
            .get_savings_plans_coverage()
            .time_period(interval(date(2026, 11, 17), end))
            .granularity(Granularity::Daily)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        entries += out.savings_plans_coverages().len();
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(entries, 6);
    // GroupBy with Granularity is refused, and a window too old.
    let (code, message) = error_of(
        ce.get_savings_plans_coverage()
            .time_period(interval(start, end))
            .group_by(group("SERVICE"))
            .granularity(Granularity::Monthly)
            .send()
            .await,
    );
    assert_eq!(code, "ValidationException");
    assert_eq!(message, "Granularity can't be set if GroupBy is set");
    let (code, _) = error_of(
        ce.get_savings_plans_coverage()
            .time_period(interval(date(2025, 1, 1), end))
            .send()
            .await,
    );
    assert_eq!(code, "ValidationException");
}

fn assert_aggregates(a: &aws_sdk_costexplorer::types::ReservationAggregates, f: [i128; 6]) {
    let [purchased, actual, fee, on_demand, unused_cost, potential] = f;
    let net = on_demand - fee;
    assert_eq!(
        a.utilization_percentage(),
        Some(percent(actual, purchased).as_str())
    );
    assert_eq!(a.purchased_hours(), Some(format_units(purchased).as_str()));
    assert_eq!(a.total_actual_hours(), Some(format_units(actual).as_str()));
    assert_eq!(
        a.unused_hours(),
        Some(format_units(purchased - actual).as_str())
    );
    assert_eq!(
        a.on_demand_cost_of_ri_hours_used(),
        Some(format_units(on_demand).as_str())
    );
    assert_eq!(a.net_ri_savings(), Some(format_units(net).as_str()));
    assert_eq!(
        a.total_potential_ri_savings(),
        Some(format_units(potential).as_str())
    );
    assert_eq!(a.amortized_upfront_fee(), Some("0"));
    assert_eq!(
        a.amortized_recurring_fee(),
        Some(format_units(fee).as_str())
    );
    assert_eq!(a.total_amortized_fee(), Some(format_units(fee).as_str()));
    assert_eq!(
        a.ri_cost_for_unused_hours(),
        Some(format_units(unused_cost).as_str())
    );
    assert_eq!(a.realized_savings(), Some(format_units(net).as_str()));
    assert_eq!(
        a.unrealized_savings(),
        Some(format_units(potential - net).as_str())
    );
}

#[tokio::test]
async fn reservation_utilization_serves_each_service_its_own_data_and_pages() {
    let sim = org_simulator(today(), 5).await;
    let dataset = sim.dataset("111111111111").unwrap();
    let ce = ce_client(&sim, PAYER_KEY);
    let (start, end) = (date(2026, 11, 1), date(2026, 11, 24));
    // Without a SERVICE filter: EC2, which has no reservations.
    let out = ce
        .get_reservation_utilization()
        .time_period(interval(start, end))
        .granularity(Granularity::Monthly)
        .send()
        .await
        .unwrap();
    assert!(out.total().is_none());
    assert_eq!(out.utilizations_by_time().len(), 1);
    assert!(out.utilizations_by_time()[0].groups().is_empty());
    assert!(out.utilizations_by_time()[0].total().is_none());
    for other in [
        "Amazon ElastiCache",
        "Amazon Redshift",
        "Amazon OpenSearch Service",
        EC2,
    ] {
        let out = ce
            .get_reservation_utilization()
            .time_period(interval(start, end))
            .filter(dimension("SERVICE", &[other]))
            .send()
            .await
            .unwrap();
        assert!(out.total().is_none(), "{other}");
    }
    // RDS, by subscription, five a page.
    let expected = expected_reservations(&dataset, RDS, start, end);
    assert_eq!(expected.len(), 12, "4 databases in each of 3 accounts");
    let mut groups = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    for _ in 0..MAX_PAGES {
        let out = ce
            .get_reservation_utilization()
            .time_period(interval(start, end))
            .filter(dimension("SERVICE", &[RDS]))
            .group_by(group("SUBSCRIPTION_ID"))
            .set_next_page_token(token.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        let all = sum_reservations(&expected);
        assert_aggregates(out.total().unwrap(), all);
        for period in out.utilizations_by_time() {
            assert_aggregates(period.total().unwrap(), all);
            groups.extend(period.groups().to_vec());
        }
        token = out.next_page_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(groups.len(), 12);
    let mut under_used = 0;
    for (g, ((account, resource), figures)) in groups.iter().zip(&expected) {
        let id = subscription_id(account, resource);
        assert_eq!(g.key(), Some("SUBSCRIPTION_ID"));
        assert_eq!(g.value(), Some(id.as_str()));
        let attributes = g.attributes().unwrap();
        assert_eq!(attributes["accountId"], *account);
        assert_eq!(attributes["subscriptionId"], id);
        let (u, days_to_end, _) = reservation_profile(resource);
        assert_eq!(
            attributes["endDateTime"],
            format!("{}T00:00:00.000Z", today() + Days::new(days_to_end))
        );
        assert_aggregates(g.utilization().unwrap(), *figures);
        if u < 80 {
            under_used += 1;
        }
    }
    assert_eq!(under_used, 3, "one under-used reservation per account");
    // DAILY without GroupBy: one total per day, today's purchased hours partial.
    let out = ce
        .get_reservation_utilization()
        .time_period(interval(date(2026, 11, 23), end))
        .filter(dimension("SERVICE", &[RDS]))
        .send()
        .await
        .unwrap();
    let day = &out.utilizations_by_time()[0];
    assert_eq!(day.total().unwrap().purchased_hours(), Some("100.8"));
    // Errors: GroupBy with Granularity, a window too old, a service without reservations.
    let (code, message) = error_of(
        ce.get_reservation_utilization()
            .time_period(interval(start, end))
            .group_by(group("SUBSCRIPTION_ID"))
            .granularity(Granularity::Daily)
            .send()
            .await,
    );
    assert_eq!(
        (code.as_str(), message.as_str()),
        (
            "ValidationException",
            "Granularity can't be set if GroupBy is set"
        )
    );
    let (code, _) = error_of(
        ce.get_reservation_utilization()
            .time_period(interval(date(2025, 10, 1), end))
            .send()
            .await,
    );
    assert_eq!(code, "ValidationException");
    let (code, message) = error_of(
        ce.get_reservation_utilization()
            .time_period(interval(start, end))
            .filter(dimension("SERVICE", &["AWS Lambda"]))
            .send()
            .await,
    );
    assert_eq!(code, "ValidationException");
    assert_eq!(message, "SERVICE AWS Lambda does not offer reservations");
}

#[tokio::test]
async fn reservation_coverage_counts_reserved_and_on_demand_hours_per_account() {
    let sim = org_simulator(today(), 2).await;
    let dataset = sim.dataset("111111111111").unwrap();
    let ce = ce_client(&sim, PAYER_KEY);
    let (start, end) = (date(2026, 11, 1), date(2026, 11, 24));
    for (service, reserved_accounts) in [(RDS, 3), (EC2, 0)] {
        // (reserved hours, on-demand cost) per account.
        let expected = expected_ri_coverage(&dataset, service, start, end);
        let mut groups = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        for _ in 0..MAX_PAGES {
            let mut call = ce
                .get_reservation_coverage()
                .time_period(interval(start, end))
                .group_by(group("LINKED_ACCOUNT"))
                .set_next_page_token(token.clone());
            if service == RDS {
                call = call.filter(dimension("SERVICE", &[RDS]));
            }
            let out = call.send().await.unwrap();
            pages += 1;
            let reserved: i128 = expected.values().map(|e| e.0).sum();
            let on_demand: i128 = expected.values().map(|e| e.1).sum();
            let total = out.total().unwrap();
            let hours = total.coverage_hours().unwrap();
            assert_eq!(
                hours.reserved_hours(),
                Some(format_units(reserved).as_str())
            );
            assert_eq!(
                hours.on_demand_hours(),
                Some(format_units(on_demand).as_str())
            );
            assert_eq!(
                hours.coverage_hours_percentage(),
                Some(percent(reserved, reserved + on_demand).as_str())
            );
            for period in out.coverages_by_time() {
                groups.extend(period.groups().to_vec());
            }
            token = out.next_page_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        assert_eq!(pages, expected.len().div_ceil(2), "{service}");
        assert_eq!(groups.len(), expected.len());
        let mut with_reserved = 0;
        for (g, (account, (reserved, on_demand))) in groups.iter().zip(&expected) {
            assert_eq!(g.attributes().unwrap()["linkedAccount"], *account);
            let c = g.coverage().unwrap();
            let hours = c.coverage_hours().unwrap();
            assert_eq!(
                hours.reserved_hours(),
                Some(format_units(*reserved).as_str())
            );
            assert_eq!(
                hours.on_demand_hours(),
                Some(format_units(*on_demand).as_str())
            );
            assert_eq!(
                hours.total_running_hours(),
                Some(format_units(reserved + on_demand).as_str())
            );
            assert_eq!(
                c.coverage_cost().unwrap().on_demand_cost(),
                Some(format_units(*on_demand).as_str())
            );
            if *reserved > 0 {
                with_reserved += 1;
            }
        }
        assert_eq!(with_reserved, reserved_accounts, "{service}");
    }
    let (code, _) = error_of(
        ce.get_reservation_coverage()
            .time_period(interval(start, end))
            .group_by(group("LINKED_ACCOUNT"))
            .granularity(Granularity::Monthly)
            .send()
            .await,
    );
    assert_eq!(code, "ValidationException");
    let (code, _) = error_of(
        ce.get_reservation_coverage()
            .time_period(interval(date(2024, 11, 1), end))
            .send()
            .await,
    );
    assert_eq!(code, "ValidationException");
}

#[tokio::test]
async fn anomalies_and_monitors_page_and_keep_to_ninety_days() {
    let sim = org_simulator(today(), 1).await;
    let dataset = sim.dataset("111111111111").unwrap();
    let ce = ce_client(&sim, PAYER_KEY);
    let anomaly_interval = |start: NaiveDate| {
        AnomalyDateInterval::builder()
            .start_date(start.to_string())
            .build()
            .unwrap()
    };
    let mut anomalies = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    for _ in 0..MAX_PAGES {
        let out = ce
            .get_anomalies()
            .date_interval(anomaly_interval(today() - Days::new(90)))
            .set_next_page_token(token.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        anomalies.extend(out.anomalies().to_vec());
        token = out.next_page_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, ANOMALIES.len());
    let mut open = 0;
    let expected_anomalies = expected_anomalies(&dataset);
    assert_eq!(expected_anomalies.len(), ANOMALIES.len());
    for (anomaly, e) in anomalies.iter().zip(&expected_anomalies) {
        let (spec, account, first, last) = (e.spec, e.account.as_str(), e.first, e.last);
        let (actual, expected, max) = (e.actual, e.expected, e.max_impact);
        assert!(actual > 0, "{}", spec.id);
        let impact = actual - expected;
        assert_eq!(anomaly.anomaly_id(), spec.id);
        assert_eq!(
            anomaly.monitor_arn(),
            monitor_arn("111111111111", spec.monitor)
        );
        assert_eq!(
            anomaly.anomaly_start_date(),
            Some(first.to_string().as_str())
        );
        assert_eq!(
            anomaly.anomaly_end_date(),
            spec.end_days_ago.map(|_| last.to_string()).as_deref()
        );
        if anomaly.anomaly_end_date().is_none() {
            open += 1;
        }
        let i = anomaly.impact().unwrap();
        assert_eq!(i.total_impact(), units_to_f64(impact));
        assert_eq!(i.max_impact(), units_to_f64(max));
        assert_eq!(i.total_actual_spend(), Some(units_to_f64(actual)));
        assert_eq!(i.total_expected_spend(), Some(units_to_f64(expected)));
        assert_eq!(
            i.total_impact_percentage(),
            Some(impact as f64 * 100.0 / expected as f64)
        );
        let score = anomaly.anomaly_score().unwrap();
        assert_eq!(
            (score.max_score(), score.current_score()),
            (spec.max_score, spec.current_score)
        );
        let roots = anomaly.root_causes();
        assert_eq!(roots.len(), 2);
        assert_eq!(roots[0].service(), Some(spec.service));
        assert_eq!(roots[0].linked_account(), Some(account));
        let contributions: Vec<f64> = roots
            .iter()
            .map(|r| r.impact().unwrap().contribution())
            .collect();
        assert_eq!(
            contributions,
            [
                units_to_f64(impact * 7 / 10),
                units_to_f64(impact - impact * 7 / 10)
            ]
        );
    }
    assert_eq!(open, 1, "one open anomaly, the others closed");
    // A narrower window: only what overlaps it.
    let out = ce
        .get_anomalies()
        .date_interval(anomaly_interval(today() - Days::new(2)))
        .max_results(10)
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = out.anomalies().iter().map(|a| a.anomaly_id()).collect();
    assert_eq!(ids, [ANOMALIES[0].id]);
    // By monitor.
    let out = ce
        .get_anomalies()
        .date_interval(anomaly_interval(today() - Days::new(30)))
        .monitor_arn(monitor_arn("111111111111", 1))
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = out.anomalies().iter().map(|a| a.anomaly_id()).collect();
    assert_eq!(ids, [ANOMALIES[2].id]);
    // More than 90 days back is refused.
    let (code, message) = error_of(
        ce.get_anomalies()
            .date_interval(anomaly_interval(today() - Days::new(91)))
            .send()
            .await,
    );
    assert_eq!(code, "ValidationException");
    assert_eq!(
        message,
        "StartDate 2026-08-24 is too old: anomalies are kept for 90 days, from 2026-08-25"
    );
    // Monitors, one a page.
    let mut monitors = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let out = ce
            .get_anomaly_monitors()
            .set_next_page_token(token.clone())
            .send()
            .await
            .unwrap();
        monitors.extend(out.anomaly_monitors().to_vec());
        token = out.next_page_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let names: Vec<(&str, String)> = monitors
        .iter()
        .map(|m| {
            (
                m.monitor_name(),
                m.monitor_arn().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: Vec<(&str, String)> = MONITORS
        .iter()
        .enumerate()
        .map(|(i, m)| (m.1, monitor_arn("111111111111", i)))
        .collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn commitment_requests_are_billed_and_meet_the_faults() {
    let sim = org_simulator(today(), 1).await;
    let ce = ce_client(&sim, PAYER_KEY);
    let (start, end) = (date(2026, 11, 1), date(2026, 11, 22));
    assert_eq!(sim.billed_requests(), 0);
    ce.get_savings_plans_utilization()
        .time_period(interval(start, end))
        .send()
        .await
        .unwrap();
    ce.get_anomaly_monitors().send().await.unwrap();
    // A refused request is a request too.
    let _ = ce
        .get_reservation_coverage()
        .time_period(interval(start, end))
        .group_by(group("LINKED_ACCOUNT"))
        .granularity(Granularity::Daily)
        .send()
        .await;
    assert_eq!(sim.billed_requests(), 3);
    let operations: Vec<String> = sim.requests().iter().map(|r| r.operation.clone()).collect();
    assert_eq!(
        operations,
        [
            "GetSavingsPlansUtilization",
            "GetAnomalyMonitors",
            "GetReservationCoverage"
        ]
    );

    // Faults apply as to every operation.
    sim.set_behavior("111111111111", Behavior::AccessDenied);
    let (code, _) = error_of(
        ce.get_savings_plans_coverage()
            .time_period(interval(start, end))
            .send()
            .await,
    );
    assert_eq!(code, "AccessDeniedException");
    // Throttling is retried by the SDK: two billed requests, the first refused.
    sim.set_behavior("111111111111", Behavior::Throttled(1));
    let before = sim.billed_requests();
    ce.get_anomaly_monitors().send().await.unwrap();
    assert_eq!(sim.billed_requests() - before, 2);
    let statuses: Vec<u16> = sim
        .requests()
        .iter()
        .rev()
        .take(2)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 400]);
    // A looping token: the first page again, with the same token.
    sim.set_behavior("111111111111", Behavior::LoopingToken);
    let first = ce
        .get_savings_plans_utilization_details()
        .time_period(interval(start, end))
        .send()
        .await
        .unwrap();
    let token = first.next_token().unwrap().to_string();
    for _ in 0..3 {
        let again = ce
            .get_savings_plans_utilization_details()
            .time_period(interval(start, end))
            .next_token(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(again.next_token(), Some(token.as_str()));
        assert_eq!(
            again.savings_plans_utilization_details(),
            first.savings_plans_utilization_details()
        );
    }
    let out = ce.get_anomaly_monitors().send().await.unwrap();
    assert!(out.next_page_token().is_some(), "even the last page loops");
    sim.set_behavior("111111111111", Behavior::Normal);
    let out = ce.get_anomaly_monitors().send().await.unwrap();
    assert!(out.next_page_token().is_some());
    assert_eq!(out.anomaly_monitors().len(), 1);
}
