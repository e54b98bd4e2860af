//! The simulated Cost Explorer's commitment and anomaly operations: Savings Plans utilisation
//! (aggregate and per plan) and coverage, reservation utilisation and coverage, Cost Anomaly
//! Detection's anomalies and monitors.
//!
//! # Derived from the cost rows
//!
//! The commitment data is *derived from the dataset's cost rows*, not added to them, so the
//! cost data (and everything computed from it) is unchanged. Amounts are exact sums in 1e-10
//! USD, and hours in 1e-10 hours, written as Cost Explorer writes them (decimal strings).
//!
//! **Savings Plans.** The plans of [`SAVINGS_PLANS`] belong to the account whose rows carry
//! `SavingsPlanRecurringFee` (the payer); a dataset without such rows has no plans. Each day,
//! plan `k` takes `share_percent` of the day's figures (the last plan the remainder, so the
//! plans add up exactly): of the `SavingsPlanRecurringFee` rows (its recurring commitment),
//! of the `SavingsPlanCoveredUsage` rows' amortized cost (the commitment it used) and of
//! their unblended cost (the on-demand equivalent of the usage it covered). Per plan and day:
//!
//! - `used` = share of covered amortized cost; `on_demand` = share of covered unblended cost;
//!   `recurring` = share of the recurring fee;
//! - `total` = max(`used` × 100 / `utilization_percent`, `recurring`) (integer division);
//! - unused = `total` − `used`; upfront = `total` − `recurring` (plans are Partial Upfront:
//!   the amortized upfront part is what Cost Explorer folds into covered usage when amortized);
//! - net savings = `on_demand` − `total`.
//!
//! A window's figures are the sums of its days'. Percentages are `part × 100 / whole` in
//! `f64` over the exact sums. Plans end `days_to_end` days after the dataset's today.
//!
//! Savings Plans coverage counts, per service of [`SAVINGS_PLANS_ELIGIBLE`] (and account),
//! `SavingsPlanCoveredUsage` unblended cost as covered spend and `Usage` unblended cost as
//! on-demand cost.
//!
//! **Reservations.** Every (service, account, resource) with `RIFee` rows is one reservation
//! of one instance (in the generated data: each RDS database of the accounts that use RDS;
//! EC2, ElastiCache, Redshift and OpenSearch have none, and answer with no reservations).
//! Per reservation and day: purchased hours are 24 (8.4 for the dataset's today, a partial
//! day as in its cost rows); used hours are purchased × `utilization_percent` / 100 of its
//! [`reservation_profile`]; its fee (`AmortizedRecurringFee`, `TotalAmortizedFee`; no
//! upfront) is the day's `RIFee` unblended cost; the on-demand cost of its used hours is the
//! day's `DiscountedUsage` unblended cost of the same resource; net savings = on-demand −
//! fee; cost of unused hours = fee × (100 − u) / 100; potential savings = on-demand × 100 /
//! u − fee; realized = net savings; unrealized = potential − net savings. Subscription ids,
//! ends and terms come from [`reservation_profile`] and [`subscription_id`].
//!
//! Reservation coverage, per account of the service: reserved hours are the reservations'
//! used hours; on-demand hours and cost are the service's `Usage` unblended cost (at a
//! simulated 1 USD an hour).
//!
//! **Anomalies.** [`ANOMALIES`] (an open one and closed ones) sit relative to the dataset's
//! today; each has one root-cause service in one account ([`ANOMALIES`]' `account_index`
//! into the accounts with cost, sorted). Its actual spend is that service's `Usage`
//! unblended cost in that account over its days (start to end, or to today while open), its
//! expected spend `expected_percent` of it (per day, integer division), its impact the
//! difference; its largest daily impact is `MaxImpact`. Two root causes share the impact
//! (us-east-1 70%, us-west-2 the rest). Figures are doubles, as the API has them.
//!
//! # Rules enforced
//!
//! - Paging: `NextToken` for `GetSavingsPlansUtilizationDetails` and
//!   `GetSavingsPlansCoverage`, `NextPageToken` for the others; a page holds at most the
//!   simulator's page size (and `MaxResults`, if smaller) entries; a token belongs to its
//!   request. [`super::Behavior::LoopingToken`] answers the first page with the same token.
//! - Windows: every commitment operation reaches back at most 13 months (the current month
//!   and the 12 before it); Savings Plans utilisation (and its details) needs an `End` before
//!   today; anomalies reach back at most 90 days.
//! - `GroupBy` together with `Granularity` is refused by `GetSavingsPlansCoverage`,
//!   `GetReservationUtilization` and `GetReservationCoverage`. With `GroupBy`, the window is
//!   one period; with neither, the granularity is `DAILY`.
//! - Reservation operations serve EC2 unless a `SERVICE` filter names other services.
//! - The faults of [`super::Behavior`] apply as to every Cost Explorer operation
//!   (`Currency` changes nothing here: these answers carry no unit).
//!
//! Field names are the API model's (checked against aws-sdk-costexplorer's deserializers).
//! The keys *inside* the free-form `Attributes` maps are the simulator's choice, not
//! verified against live AWS: camel case for groups (`linkedAccount`, `service`,
//! `subscriptionId`, `endDateTime`, ...), capitalised for Savings Plans (`AccountId`,
//! `SavingsPlansType`, `EndDateTime`, ...). Anomaly dates are written `YYYY-MM-DD` (the
//! model's `YearMonthDay`). Reservation `*Units` figures, `SortBy`, and `TotalImpact` /
//! `Feedback` filters of `GetAnomalies` are not simulated (the last two are refused).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use chrono::{Datelike, Days, Months, NaiveDate};
use serde_json::{Map, Value, json};

use super::dataset::{CostMetric, Dataset, SimRow, format_units, units_to_f64};
use super::simulator::{self, ApiError, date_field, periods, validation};

/// The operations this module serves (each billed like every Cost Explorer request).
pub const OPERATIONS: &[&str] = &[
    "GetSavingsPlansUtilization",
    "GetSavingsPlansUtilizationDetails",
    "GetSavingsPlansCoverage",
    "GetReservationUtilization",
    "GetReservationCoverage",
    "GetAnomalies",
    "GetAnomalyMonitors",
];

/// One simulated Savings Plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavingsPlanSpec {
    /// The last part of its ARN.
    pub id: &'static str,
    pub plan_type: &'static str,
    pub region: &'static str,
    pub instance_family: &'static str,
    pub payment_option: &'static str,
    pub term: &'static str,
    /// Its share of the day's fee and covered usage (the last plan: the remainder).
    pub share_percent: i128,
    pub utilization_percent: i128,
    /// Days from the dataset's today to its end.
    pub days_to_end: u64,
    /// Its term in days (its start is this long before its end).
    pub term_days: u64,
}

/// The payer's Savings Plans: one far from expiry, one near, one under-used.
pub const SAVINGS_PLANS: &[SavingsPlanSpec] = &[
    SavingsPlanSpec {
        id: "3f6b1c2e-8a4d-4e57-9b1a-0c7d2e5f8a11",
        plan_type: "ComputeSavingsPlans",
        region: "Any",
        instance_family: "",
        payment_option: "Partial Upfront",
        term: "3yr",
        share_percent: 55,
        utilization_percent: 100,
        days_to_end: 700,
        term_days: 1095,
    },
    SavingsPlanSpec {
        id: "7c2d9e4a-1b3f-4a6c-8d5e-2f9a0b1c3d22",
        plan_type: "EC2InstanceSavingsPlans",
        region: "us-east-1",
        instance_family: "m5",
        payment_option: "Partial Upfront",
        term: "1yr",
        share_percent: 30,
        utilization_percent: 96,
        days_to_end: 21,
        term_days: 365,
    },
    SavingsPlanSpec {
        id: "b91e0f3c-5d7a-4c2b-9e8f-4a6b7c8d9e33",
        plan_type: "ComputeSavingsPlans",
        region: "Any",
        instance_family: "",
        payment_option: "Partial Upfront",
        term: "1yr",
        share_percent: 15,
        utilization_percent: 78,
        days_to_end: 160,
        term_days: 365,
    },
];

/// The services whose usage Savings Plans cover (and whose coverage is reported).
pub const SAVINGS_PLANS_ELIGIBLE: &[&str] =
    &["Amazon Elastic Compute Cloud - Compute", "AWS Lambda"];

/// The services with reservations, as the SERVICE dimension names them; the first is the
/// default of the reservation operations.
pub const RESERVATION_SERVICES: &[&str] = &[
    "Amazon Elastic Compute Cloud - Compute",
    "Amazon Relational Database Service",
    "Amazon ElastiCache",
    "Amazon Redshift",
    "Amazon OpenSearch Service",
];

/// Purchased hours of a reservation on a complete day, and on the dataset's today, in 1e-10
/// hours.
pub const HOURS_PER_DAY: i128 = 24 * 10_000_000_000;
pub const HOURS_TODAY: i128 = 84 * 1_000_000_000;

/// (utilization percent, days from today to its end, term in days) of the reservation of a
/// resource, by the number its id ends with, modulo 4: index 2 is under-used, index 3 ends
/// soon.
pub fn reservation_profile(resource_id: &str) -> (i128, u64, u64) {
    let index = trailing_number(resource_id);
    match index % 4 {
        0 => (100, 300, 365),
        1 => (90, 700, 1095),
        2 => (55, 45, 365),
        _ => (100, 12, 365),
    }
}

/// The subscription id of the reservation of a resource in an account: 10 digits.
pub fn subscription_id(account_id: &str, resource_id: &str) -> String {
    let prefix: String = account_id.chars().take(8).collect();
    format!("{prefix}{:02}", trailing_number(resource_id) % 100)
}

fn trailing_number(id: &str) -> u64 {
    let digits: String = id
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap_or(0)
}

/// One simulated cost anomaly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalySpec {
    pub id: &'static str,
    /// Index into [`MONITORS`].
    pub monitor: usize,
    pub service: &'static str,
    /// Index into the dataset's accounts with cost, sorted (clamped to the last).
    pub account_index: usize,
    pub start_days_ago: u64,
    /// `None`: still open.
    pub end_days_ago: Option<u64>,
    /// The expected spend, in percent of the actual.
    pub expected_percent: i128,
    pub max_score: f64,
    pub current_score: f64,
    pub feedback: Option<&'static str>,
}

/// The anomalies: one open, two closed.
pub const ANOMALIES: &[AnomalySpec] = &[
    AnomalySpec {
        id: "5a0e7f3c-1d2b-4c8a-9e6f-000000000001",
        monitor: 0,
        service: "Amazon Elastic Compute Cloud - Compute",
        account_index: 1,
        start_days_ago: 3,
        end_days_ago: None,
        expected_percent: 62,
        max_score: 0.91,
        current_score: 0.77,
        feedback: None,
    },
    AnomalySpec {
        id: "5a0e7f3c-1d2b-4c8a-9e6f-000000000002",
        monitor: 0,
        service: "AmazonCloudWatch",
        account_index: 0,
        start_days_ago: 24,
        end_days_ago: Some(20),
        expected_percent: 70,
        max_score: 0.66,
        current_score: 0.12,
        feedback: Some("YES"),
    },
    AnomalySpec {
        id: "5a0e7f3c-1d2b-4c8a-9e6f-000000000003",
        monitor: 1,
        service: "AWS Lambda",
        account_index: 2,
        start_days_ago: 12,
        end_days_ago: Some(9),
        expected_percent: 75,
        max_score: 0.58,
        current_score: 0.05,
        feedback: None,
    },
];

/// The anomaly monitors: (id, name, dimension).
pub const MONITORS: &[(&str, &str, &str)] = &[
    (
        "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
        "Services",
        "SERVICE",
    ),
    (
        "1e2f3a4b-5c6d-4e7f-8091-a2b3c4d5e6f7",
        "Linked accounts",
        "LINKED_ACCOUNT",
    ),
];

/// The ARN of a monitor owned by `account_id`.
pub fn monitor_arn(account_id: &str, monitor: usize) -> String {
    let id = MONITORS.get(monitor).map_or("", |m| m.0);
    format!("arn:aws:ce::{account_id}:anomalymonitor/{id}")
}

/// The ARN of a Savings Plan owned by `account_id`.
pub fn savings_plan_arn(account_id: &str, plan: &SavingsPlanSpec) -> String {
    format!("arn:aws:savingsplans::{account_id}:savingsplan/{}", plan.id)
}

/// What a request of these operations is answered from.
pub(super) struct Context<'a> {
    pub caller: &'a str,
    pub dataset: &'a Dataset,
    pub page_size: usize,
    pub looping: bool,
}

/// Answers one of [`OPERATIONS`].
pub(super) fn serve(operation: &str, cx: &Context<'_>, request: &Value) -> Result<Value, ApiError> {
    match operation {
        "GetSavingsPlansUtilization" => sp_utilization(cx, request),
        "GetSavingsPlansUtilizationDetails" => sp_utilization_details(cx, request),
        "GetSavingsPlansCoverage" => sp_coverage(cx, request),
        "GetReservationUtilization" => ri_utilization(cx, request),
        "GetReservationCoverage" => ri_coverage(cx, request),
        "GetAnomalies" => anomalies(cx, request),
        "GetAnomalyMonitors" => anomaly_monitors(cx, request),
        other => Err(validation(&format!("operation {other} is not simulated"))),
    }
}

fn today(dataset: &Dataset) -> Result<NaiveDate, ApiError> {
    dataset.today.ok_or_else(|| {
        (
            "DataUnavailableException".into(),
            "Data is not available.".into(),
        )
    })
}

fn ymd(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// The request's `TimePeriod`, checked: Start before End, at most 13 months back.
fn time_period(request: &Value, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let (start, end) = simulator::time_period(request)?;
    let earliest = today
        .with_day(1)
        .and_then(|first| first.checked_sub_months(Months::new(12)))
        .unwrap_or(today);
    if start < earliest {
        return Err(validation(&format!(
            "Start date {} is too old: data is available for the last 13 months, from {}",
            ymd(start),
            ymd(earliest)
        )));
    }
    Ok((start, end))
}

/// The result periods: one for the window with `GroupBy`, else by `Granularity` (DAILY by
/// default); both together are refused.
fn grouped_periods(
    request: &Value,
    start: NaiveDate,
    end: NaiveDate,
    grouped: bool,
) -> Result<Vec<(NaiveDate, NaiveDate)>, ApiError> {
    let granularity = request.get("Granularity").and_then(Value::as_str);
    match (grouped, granularity) {
        (true, Some(_)) => Err(validation("Granularity can't be set if GroupBy is set")),
        (true, None) => Ok(vec![(start, end)]),
        (false, granularity) => periods(start, end, granularity.unwrap_or("DAILY")),
    }
}

/// The request's `GroupBy` dimension keys, each checked against `allowed`.
fn group_by(request: &Value, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    let Some(groups) = request.get("GroupBy").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for group in groups {
        let kind = group
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let key = group.get("Key").and_then(Value::as_str).unwrap_or_default();
        if kind != "DIMENSION" || !allowed.contains(&key) {
            return Err(validation(&format!(
                "GroupBy {kind} {key} is not supported"
            )));
        }
        keys.push(key.to_string());
    }
    if keys.len() > 1 {
        return Err(validation("GroupBy takes one dimension"));
    }
    Ok(keys)
}

/// A `Filter` of `Dimensions`, or an `And` of them: dimension to accepted values.
fn dimension_filter(
    request: &Value,
    allowed: &[&str],
) -> Result<BTreeMap<String, BTreeSet<String>>, ApiError> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let Some(filter) = request.get("Filter") else {
        return Ok(out);
    };
    let parts: Vec<&Value> = match filter.get("And").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![filter],
    };
    for part in parts {
        let dimensions = part
            .get("Dimensions")
            .filter(|_| part.as_object().is_some_and(|o| o.len() == 1))
            .ok_or_else(|| validation("only Dimensions, or And of Dimensions, are simulated"))?;
        let key = dimensions
            .get("Key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !allowed.contains(&key) {
            return Err(validation(&format!(
                "dimension {key} is not supported here"
            )));
        }
        let values = dimensions
            .get("Values")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.insert(key.to_string(), values);
    }
    Ok(out)
}

fn keeps(filter: &BTreeMap<String, BTreeSet<String>>, key: &str, value: &str) -> bool {
    filter.get(key).is_none_or(|values| values.contains(value))
}

/// The page of `len` entries a request asks for: (from, to, the next page's token).
fn page(
    cx: &Context<'_>,
    request: &Value,
    token_field: &str,
    len: usize,
) -> Result<(usize, usize, Option<String>), ApiError> {
    let mut source = request.clone();
    if let Some(object) = source.as_object_mut() {
        object.remove(token_field);
    }
    let mut hasher = DefaultHasher::new();
    source.to_string().hash(&mut hasher);
    let fingerprint = format!("{:016x}", hasher.finish());
    let invalid = || {
        (
            "InvalidNextTokenException".to_string(),
            "The pagination token is invalid.".to_string(),
        )
    };
    let offset = match request.get(token_field).and_then(Value::as_str) {
        None => 0,
        Some(token) => {
            let (offset, print) = token.split_once('.').ok_or_else(invalid)?;
            if print != fingerprint {
                return Err(invalid());
            }
            offset.parse::<usize>().map_err(|_| invalid())?
        }
    };
    if offset > len {
        return Err(invalid());
    }
    let size = match request.get("MaxResults") {
        None => cx.page_size,
        Some(max) => match max.as_u64() {
            Some(n) if n >= 1 => cx.page_size.min(n as usize),
            _ => return Err(validation("MaxResults must be at least 1")),
        },
    };
    let offset = if cx.looping { 0 } else { offset };
    let end = (offset + size).min(len);
    let token = (cx.looping || end < len).then(|| format!("{end}.{fingerprint}"));
    Ok((offset, end, token))
}

/// Writes grouped results by time: per period in the page, its groups and its total.
fn by_time(
    periods: &[(NaiveDate, NaiveDate)],
    groups: &[Vec<Value>],
    totals: &[Option<Value>],
    total_key: &str,
    (from, to): (usize, usize),
) -> Vec<Value> {
    let entries: Vec<(usize, Option<&Value>)> = groups
        .iter()
        .enumerate()
        .flat_map(|(i, g)| {
            if g.is_empty() {
                vec![(i, None)]
            } else {
                g.iter().map(|v| (i, Some(v))).collect()
            }
        })
        .collect();
    let mut out: Vec<Value> = Vec::new();
    let mut current: Option<usize> = None;
    for (i, group) in entries.get(from..to).unwrap_or_default() {
        if current != Some(*i) {
            current = Some(*i);
            let (start, end) = periods[*i];
            let mut object = json!({
                "TimePeriod": {"Start": ymd(start), "End": ymd(end)},
                "Groups": [],
            });
            if let Some(total) = totals.get(*i).cloned().flatten() {
                object[total_key] = total;
            }
            out.push(object);
        }
        if let (Some(group), Some(last)) = (group, out.last_mut())
            && let Some(list) = last["Groups"].as_array_mut()
        {
            list.push((*group).clone());
        }
    }
    out
}

fn percent(part: i128, whole: i128) -> String {
    if whole == 0 {
        return "0".to_string();
    }
    format!("{}", part as f64 * 100.0 / whole as f64)
}

fn unblended(row: &SimRow) -> i128 {
    i128::from(row.amount(CostMetric::Unblended))
}

// ---------------------------------------------------------------------------------------
// Savings Plans

/// One plan's figures over some days, in 1e-10 USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PlanFigures {
    recurring: i128,
    upfront: i128,
    total: i128,
    used: i128,
    on_demand: i128,
}

impl PlanFigures {
    fn add(&mut self, other: &PlanFigures) {
        self.recurring += other.recurring;
        self.upfront += other.upfront;
        self.total += other.total;
        self.used += other.used;
        self.on_demand += other.on_demand;
    }

    fn utilization(&self) -> Value {
        json!({
            "TotalCommitment": format_units(self.total),
            "UsedCommitment": format_units(self.used),
            "UnusedCommitment": format_units(self.total - self.used),
            "UtilizationPercentage": percent(self.used, self.total),
        })
    }

    fn savings(&self) -> Value {
        json!({
            "NetSavings": format_units(self.on_demand - self.total),
            "OnDemandCostEquivalent": format_units(self.on_demand),
        })
    }

    fn amortized(&self) -> Value {
        json!({
            "AmortizedRecurringCommitment": format_units(self.recurring),
            "AmortizedUpfrontCommitment": format_units(self.upfront),
            "TotalAmortizedCommitment": format_units(self.total),
        })
    }
}

/// The plans' owner (the account billed their fee), if the dataset has plans.
fn plan_owner(dataset: &Dataset) -> Option<&str> {
    dataset
        .rows
        .iter()
        .find(|r| r.record_type() == "SavingsPlanRecurringFee")
        .map(SimRow::account_id)
}

/// Each plan's figures over `[from, to)`, day by day as the module docs say.
fn plan_figures(dataset: &Dataset, from: NaiveDate, to: NaiveDate) -> Vec<PlanFigures> {
    let mut sums = vec![PlanFigures::default(); SAVINGS_PLANS.len()];
    let mut day = from;
    while day < to {
        let (mut fee, mut covered, mut amortized) = (0i128, 0i128, 0i128);
        for row in dataset.day_rows(day, day + Days::new(1)) {
            match row.record_type() {
                "SavingsPlanRecurringFee" => fee += unblended(row),
                "SavingsPlanCoveredUsage" => {
                    covered += unblended(row);
                    amortized += i128::from(row.amount(CostMetric::Amortized));
                }
                _ => {}
            }
        }
        let mut taken = PlanFigures::default();
        for (k, plan) in SAVINGS_PLANS.iter().enumerate() {
            let share = |x: i128, taken: i128| {
                if k + 1 == SAVINGS_PLANS.len() {
                    x - taken
                } else {
                    x * plan.share_percent / 100
                }
            };
            let recurring = share(fee, taken.recurring);
            let used = share(amortized, taken.used);
            let on_demand = share(covered, taken.on_demand);
            let total = (used * 100 / plan.utilization_percent).max(recurring);
            let figures = PlanFigures {
                recurring,
                upfront: total - recurring,
                total,
                used,
                on_demand,
            };
            taken.add(&figures);
            sums[k].add(&figures);
        }
        day = day + Days::new(1);
    }
    sums
}

/// Checks a Savings Plans utilisation window: 13 months back, End before today.
fn sp_window(cx: &Context<'_>, request: &Value) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let today = today(cx.dataset)?;
    let (start, end) = time_period(request, today)?;
    if end >= today {
        return Err(validation(&format!(
            "End date {} must be before today ({})",
            ymd(end),
            ymd(today)
        )));
    }
    if request.get("Filter").is_some() {
        return Err(validation(
            "Filter is not simulated for Savings Plans utilization",
        ));
    }
    Ok((start, end))
}

fn sp_utilization(cx: &Context<'_>, request: &Value) -> Result<Value, ApiError> {
    let (start, end) = sp_window(cx, request)?;
    let granularity = request
        .get("Granularity")
        .and_then(Value::as_str)
        .unwrap_or("DAILY");
    let owner = plan_owner(cx.dataset);
    let mut total = PlanFigures::default();
    let mut by_time = Vec::new();
    for (from, to) in periods(start, end, granularity)? {
        let mut sum = PlanFigures::default();
        if owner.is_some() {
            for plan in plan_figures(cx.dataset, from, to) {
                sum.add(&plan);
            }
        }
        total.add(&sum);
        by_time.push(json!({
            "TimePeriod": {"Start": ymd(from), "End": ymd(to)},
            "Utilization": sum.utilization(),
            "Savings": sum.savings(),
            "AmortizedCommitment": sum.amortized(),
        }));
    }
    Ok(json!({
        "SavingsPlansUtilizationsByTime": by_time,
        "Total": {
            "Utilization": total.utilization(),
            "Savings": total.savings(),
            "AmortizedCommitment": total.amortized(),
        },
    }))
}

fn sp_utilization_details(cx: &Context<'_>, request: &Value) -> Result<Value, ApiError> {
    let (start, end) = sp_window(cx, request)?;
    let today = today(cx.dataset)?;
    let mut details = Vec::new();
    let mut total = PlanFigures::default();
    if let Some(owner) = plan_owner(cx.dataset) {
        let name = cx.dataset.accounts.get(owner).cloned().unwrap_or_default();
        for (plan, figures) in SAVINGS_PLANS
            .iter()
            .zip(plan_figures(cx.dataset, start, end))
        {
            total.add(&figures);
            let ends = today + Days::new(plan.days_to_end);
            let starts = ends - Days::new(plan.term_days);
            // The hourly commitment over the window's hours.
            let hours = i128::from((end - start).num_days()) * 24;
            details.push(json!({
                "SavingsPlanArn": savings_plan_arn(owner, plan),
                "Attributes": {
                    "AccountId": owner,
                    "AccountName": name,
                    "SavingsPlansType": plan.plan_type,
                    "Region": plan.region,
                    "InstanceFamily": plan.instance_family,
                    "PaymentOption": plan.payment_option,
                    "PurchaseTerm": plan.term,
                    "StartDateTime": format!("{}T00:00:00.000Z", ymd(starts)),
                    "EndDateTime": format!("{}T00:00:00.000Z", ymd(ends)),
                    "HourlyCommitment": format_units(figures.total / hours.max(1)),
                    "RecurringHourlyFee": format_units(figures.recurring / hours.max(1)),
                    "UpfrontFee": format_units(figures.upfront),
                },
                "Utilization": figures.utilization(),
                "Savings": figures.savings(),
                "AmortizedCommitment": figures.amortized(),
            }));
        }
    }
    let (from, to, token) = page(cx, request, "NextToken", details.len())?;
    let mut response = json!({
        "SavingsPlansUtilizationDetails": details.get(from..to).unwrap_or_default(),
        "Total": {
            "Utilization": total.utilization(),
            "Savings": total.savings(),
            "AmortizedCommitment": total.amortized(),
        },
        "TimePeriod": {"Start": ymd(start), "End": ymd(end)},
    });
    if let Some(token) = token {
        response["NextToken"] = Value::String(token);
    }
    Ok(response)
}

fn sp_coverage(cx: &Context<'_>, request: &Value) -> Result<Value, ApiError> {
    let today = today(cx.dataset)?;
    let (start, end) = time_period(request, today)?;
    let keys = group_by(request, &["SERVICE", "LINKED_ACCOUNT"])?;
    let periods = grouped_periods(request, start, end, !keys.is_empty())?;
    if let Some(metrics) = request.get("Metrics").and_then(Value::as_array)
        && metrics
            .iter()
            .any(|m| m.as_str() != Some("SpendCoveredBySavingsPlans"))
    {
        return Err(validation(
            "Metrics supports only SpendCoveredBySavingsPlans",
        ));
    }
    let filter = dimension_filter(request, &["SERVICE", "LINKED_ACCOUNT"])?;
    let mut coverages = Vec::new();
    for (from, to) in periods {
        // (covered, on demand) per group.
        let mut groups: BTreeMap<String, (i128, i128)> = BTreeMap::new();
        for row in cx.dataset.day_rows(from, to) {
            if !SAVINGS_PLANS_ELIGIBLE.contains(&row.service())
                || !keeps(&filter, "SERVICE", row.service())
                || !keeps(&filter, "LINKED_ACCOUNT", row.account_id())
            {
                continue;
            }
            let key = match keys.first().map(String::as_str) {
                Some("SERVICE") => row.service(),
                Some(_) => row.account_id(),
                None => "",
            };
            let slot = groups.entry(key.to_string()).or_default();
            match row.record_type() {
                "SavingsPlanCoveredUsage" => slot.0 += unblended(row),
                "Usage" => slot.1 += unblended(row),
                _ => {}
            }
        }
        if keys.is_empty() && groups.is_empty() {
            groups.insert(String::new(), (0, 0));
        }
        for (key, (covered, on_demand)) in groups {
            let attributes = match keys.first().map(String::as_str) {
                Some("SERVICE") => json!({"service": key}),
                Some(_) => json!({"linkedAccount": key}),
                None => json!({}),
            };
            coverages.push(json!({
                "Attributes": attributes,
                "Coverage": {
                    "SpendCoveredBySavingsPlans": format_units(covered),
                    "OnDemandCost": format_units(on_demand),
                    "TotalCost": format_units(covered + on_demand),
                    "CoveragePercentage": percent(covered, covered + on_demand),
                },
                "TimePeriod": {"Start": ymd(from), "End": ymd(to)},
            }));
        }
    }
    let (from, to, token) = page(cx, request, "NextToken", coverages.len())?;
    let mut response =
        json!({"SavingsPlansCoverages": coverages.get(from..to).unwrap_or_default()});
    if let Some(token) = token {
        response["NextToken"] = Value::String(token);
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// Reservations

/// One reservation's figures over some days (money in 1e-10 USD, hours in 1e-10 hours).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ReservationFigures {
    purchased: i128,
    actual: i128,
    fee: i128,
    on_demand: i128,
    unused_cost: i128,
    potential: i128,
}

impl ReservationFigures {
    fn add(&mut self, other: &ReservationFigures) {
        self.purchased += other.purchased;
        self.actual += other.actual;
        self.fee += other.fee;
        self.on_demand += other.on_demand;
        self.unused_cost += other.unused_cost;
        self.potential += other.potential;
    }

    fn aggregates(&self) -> Value {
        let net = self.on_demand - self.fee;
        json!({
            "UtilizationPercentage": percent(self.actual, self.purchased),
            "PurchasedHours": format_units(self.purchased),
            "TotalActualHours": format_units(self.actual),
            "UnusedHours": format_units(self.purchased - self.actual),
            "OnDemandCostOfRIHoursUsed": format_units(self.on_demand),
            "NetRISavings": format_units(net),
            "TotalPotentialRISavings": format_units(self.potential),
            "AmortizedUpfrontFee": "0",
            "AmortizedRecurringFee": format_units(self.fee),
            "TotalAmortizedFee": format_units(self.fee),
            "RICostForUnusedHours": format_units(self.unused_cost),
            "RealizedSavings": format_units(net),
            "UnrealizedSavings": format_units(self.potential - net),
        })
    }
}

/// A reservation: (service, account, resource).
type ReservationKey = (String, String, String);

/// The reservations of the services and accounts the filter keeps, with their figures over
/// `[from, to)` (only those with fee rows in it).
fn reservations(
    dataset: &Dataset,
    from: NaiveDate,
    to: NaiveDate,
    services: &BTreeSet<String>,
    filter: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<ReservationKey, ReservationFigures> {
    let today = dataset.today;
    // Per reservation and day: (fee, discounted usage).
    let mut days: BTreeMap<(ReservationKey, NaiveDate), (i128, i128, bool)> = BTreeMap::new();
    for row in dataset.day_rows(from, to) {
        // Only reservation rows (large organizations have millions of others).
        if !matches!(row.record_type(), "RIFee" | "DiscountedUsage")
            || !services.contains(row.service())
            || !keeps(filter, "LINKED_ACCOUNT", row.account_id())
        {
            continue;
        }
        let Some(resource) = row.resource_id() else {
            continue;
        };
        let key = (
            row.service().to_string(),
            row.account_id().to_string(),
            resource.to_string(),
        );
        let slot = days.entry((key, row.day)).or_default();
        match row.record_type() {
            "RIFee" => {
                slot.0 += unblended(row);
                slot.2 = true;
            }
            "DiscountedUsage" => slot.1 += unblended(row),
            _ => {}
        }
    }
    let mut out: BTreeMap<ReservationKey, ReservationFigures> = BTreeMap::new();
    for ((key, day), (fee, on_demand, reserved)) in days {
        if !reserved {
            continue;
        }
        let (u, _, _) = reservation_profile(&key.2);
        let purchased = if Some(day) == today {
            HOURS_TODAY
        } else {
            HOURS_PER_DAY
        };
        let figures = ReservationFigures {
            purchased,
            actual: purchased * u / 100,
            fee,
            on_demand,
            unused_cost: fee * (100 - u) / 100,
            potential: on_demand * 100 / u - fee,
        };
        out.entry(key).or_default().add(&figures);
    }
    out
}

/// The services a reservation request is about: its SERVICE filter, or EC2.
fn reservation_services(
    filter: &BTreeMap<String, BTreeSet<String>>,
) -> Result<BTreeSet<String>, ApiError> {
    let services = match filter.get("SERVICE") {
        Some(values) if !values.is_empty() => values.clone(),
        _ => BTreeSet::from([RESERVATION_SERVICES[0].to_string()]),
    };
    for service in &services {
        if !RESERVATION_SERVICES.contains(&service.as_str()) {
            return Err(validation(&format!(
                "SERVICE {service} does not offer reservations"
            )));
        }
    }
    Ok(services)
}

fn ri_utilization(cx: &Context<'_>, request: &Value) -> Result<Value, ApiError> {
    let today = today(cx.dataset)?;
    let (start, end) = time_period(request, today)?;
    let keys = group_by(request, &["SUBSCRIPTION_ID"])?;
    let periods = grouped_periods(request, start, end, !keys.is_empty())?;
    let filter = dimension_filter(request, &["SERVICE", "LINKED_ACCOUNT"])?;
    let services = reservation_services(&filter)?;
    let mut groups = Vec::new();
    let mut totals = Vec::new();
    let mut total = ReservationFigures::default();
    for &(from, to) in &periods {
        let found = reservations(cx.dataset, from, to, &services, &filter);
        let mut sum = ReservationFigures::default();
        let mut period_groups = Vec::new();
        for ((service, account, resource), figures) in &found {
            sum.add(figures);
            if keys.is_empty() {
                continue;
            }
            let id = subscription_id(account, resource);
            let (_, days_to_end, term_days) = reservation_profile(resource);
            let ends = today + Days::new(days_to_end);
            let starts = ends - Days::new(term_days);
            period_groups.push(json!({
                "Key": "SUBSCRIPTION_ID",
                "Value": id,
                "Attributes": {
                    "accountId": account,
                    "accountName": cx.dataset.accounts.get(account).cloned().unwrap_or_default(),
                    "service": service,
                    "region": "us-east-1",
                    "subscriptionId": id,
                    "leaseId": resource,
                    "numberOfInstances": "1",
                    "subscriptionType": "No Upfront",
                    "subscriptionStatus": "Active",
                    "startDateTime": format!("{}T00:00:00.000Z", ymd(starts)),
                    "endDateTime": format!("{}T00:00:00.000Z", ymd(ends)),
                },
                "Utilization": figures.aggregates(),
            }));
        }
        total.add(&sum);
        totals.push((!found.is_empty()).then(|| sum.aggregates()));
        groups.push(period_groups);
    }
    let len: usize = groups.iter().map(|g| g.len().max(1)).sum();
    let window = page(cx, request, "NextPageToken", len)?;
    let mut response = json!({
        "UtilizationsByTime": by_time(&periods, &groups, &totals, "Total", (window.0, window.1)),
    });
    if total.purchased > 0 {
        response["Total"] = total.aggregates();
    }
    if let Some(token) = window.2 {
        response["NextPageToken"] = Value::String(token);
    }
    Ok(response)
}

fn coverage(reserved: i128, on_demand_hours: i128, on_demand_cost: i128) -> Value {
    json!({
        "CoverageHours": {
            "OnDemandHours": format_units(on_demand_hours),
            "ReservedHours": format_units(reserved),
            "TotalRunningHours": format_units(reserved + on_demand_hours),
            "CoverageHoursPercentage": percent(reserved, reserved + on_demand_hours),
        },
        "CoverageCost": {"OnDemandCost": format_units(on_demand_cost)},
    })
}

fn ri_coverage(cx: &Context<'_>, request: &Value) -> Result<Value, ApiError> {
    let today = today(cx.dataset)?;
    let (start, end) = time_period(request, today)?;
    let keys = group_by(request, &["LINKED_ACCOUNT"])?;
    let periods = grouped_periods(request, start, end, !keys.is_empty())?;
    let filter = dimension_filter(request, &["SERVICE", "LINKED_ACCOUNT"])?;
    let services = reservation_services(&filter)?;
    let mut groups = Vec::new();
    let mut totals = Vec::new();
    let (mut all_reserved, mut all_on_demand) = (0i128, 0i128);
    for &(from, to) in &periods {
        // Per account: (reserved hours, on-demand cost = hours at 1 USD an hour).
        let mut accounts: BTreeMap<String, (i128, i128)> = BTreeMap::new();
        for ((_, account, _), figures) in reservations(cx.dataset, from, to, &services, &filter) {
            accounts.entry(account).or_default().0 += figures.actual;
        }
        for row in cx.dataset.day_rows(from, to) {
            if row.record_type() == "Usage"
                && services.contains(row.service())
                && keeps(&filter, "LINKED_ACCOUNT", row.account_id())
            {
                accounts.entry(row.account_id().to_string()).or_default().1 += unblended(row);
            }
        }
        let reserved: i128 = accounts.values().map(|a| a.0).sum();
        let on_demand: i128 = accounts.values().map(|a| a.1).sum();
        all_reserved += reserved;
        all_on_demand += on_demand;
        totals.push(Some(coverage(reserved, on_demand, on_demand)));
        groups.push(if keys.is_empty() {
            Vec::new()
        } else {
            accounts
                .iter()
                .map(|(account, (reserved, on_demand))| {
                    json!({
                        "Attributes": {"linkedAccount": account},
                        "Coverage": coverage(*reserved, *on_demand, *on_demand),
                    })
                })
                .collect()
        });
    }
    let len: usize = groups.iter().map(|g| g.len().max(1)).sum();
    let window = page(cx, request, "NextPageToken", len)?;
    let mut response = json!({
        "CoveragesByTime": by_time(&periods, &groups, &totals, "Total", (window.0, window.1)),
        "Total": coverage(all_reserved, all_on_demand, all_on_demand),
    });
    if let Some(token) = window.2 {
        response["NextPageToken"] = Value::String(token);
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// Anomalies

/// The accounts with cost, sorted.
fn accounts_with_cost(dataset: &Dataset) -> Vec<&str> {
    let set: BTreeSet<&str> = dataset.rows.iter().map(SimRow::account_id).collect();
    set.into_iter().collect()
}

fn anomalies(cx: &Context<'_>, request: &Value) -> Result<Value, ApiError> {
    let today = today(cx.dataset)?;
    let interval = request
        .get("DateInterval")
        .ok_or_else(|| validation("DateInterval is required"))?;
    let start = date_field(interval, "StartDate")?;
    let end = match interval.get("EndDate") {
        None => today,
        Some(_) => date_field(interval, "EndDate")?,
    };
    if start > end {
        return Err(validation("StartDate must not be after EndDate"));
    }
    let earliest = today - Days::new(90);
    if start < earliest {
        return Err(validation(&format!(
            "StartDate {} is too old: anomalies are kept for 90 days, from {}",
            ymd(start),
            ymd(earliest)
        )));
    }
    for unsupported in ["TotalImpact", "Feedback"] {
        if request.get(unsupported).is_some() {
            return Err(validation(&format!("{unsupported} is not simulated")));
        }
    }
    let monitor_filter = request.get("MonitorArn").and_then(Value::as_str);
    let accounts = accounts_with_cost(cx.dataset);
    let mut found = Vec::new();
    for spec in ANOMALIES {
        let Some(account) = accounts
            .get(spec.account_index.min(accounts.len().saturating_sub(1)))
            .copied()
        else {
            continue;
        };
        let first = today - Days::new(spec.start_days_ago);
        let last = spec.end_days_ago.map_or(today, |d| today - Days::new(d));
        let arn = monitor_arn(cx.caller, spec.monitor);
        if first > end || last < start || monitor_filter.is_some_and(|m| m != arn) {
            continue;
        }
        let (mut actual, mut expected, mut max_impact) = (0i128, 0i128, 0i128);
        let mut day = first;
        while day <= last {
            let spent: i128 = cx
                .dataset
                .day_rows(day, day + Days::new(1))
                .iter()
                .filter(|r| {
                    r.record_type() == "Usage"
                        && r.service() == spec.service
                        && r.account_id() == account
                })
                .map(unblended)
                .sum();
            let normal = spent * spec.expected_percent / 100;
            actual += spent;
            expected += normal;
            max_impact = max_impact.max(spent - normal);
            day = day + Days::new(1);
        }
        let impact = actual - expected;
        let east = impact * 7 / 10;
        let name = cx
            .dataset
            .accounts
            .get(account)
            .cloned()
            .unwrap_or_default();
        let root = |region: &str, contribution: i128| {
            json!({
                "Service": spec.service,
                "Region": region,
                "LinkedAccount": account,
                "LinkedAccountName": name,
                "UsageType": if region == "us-east-1" { "USE1-Usage" } else { "USW2-Usage" },
                "Impact": {"Contribution": units_to_f64(contribution)},
            })
        };
        let dimension = if MONITORS.get(spec.monitor).is_some_and(|m| m.2 == "SERVICE") {
            spec.service
        } else {
            account
        };
        let mut anomaly = json!({
            "AnomalyId": spec.id,
            "AnomalyStartDate": ymd(first),
            "DimensionValue": dimension,
            "RootCauses": [root("us-east-1", east), root("us-west-2", impact - east)],
            "AnomalyScore": {"MaxScore": spec.max_score, "CurrentScore": spec.current_score},
            "Impact": {
                "MaxImpact": units_to_f64(max_impact),
                "TotalImpact": units_to_f64(impact),
                "TotalActualSpend": units_to_f64(actual),
                "TotalExpectedSpend": units_to_f64(expected),
                "TotalImpactPercentage": if expected == 0 { 0.0 } else { impact as f64 * 100.0 / expected as f64 },
            },
            "MonitorArn": arn,
        });
        if spec.end_days_ago.is_some() {
            anomaly["AnomalyEndDate"] = Value::String(ymd(last));
        }
        if let Some(feedback) = spec.feedback {
            anomaly["Feedback"] = Value::String(feedback.to_string());
        }
        found.push(anomaly);
    }
    let (from, to, token) = page(cx, request, "NextPageToken", found.len())?;
    let mut response = json!({"Anomalies": found.get(from..to).unwrap_or_default()});
    if let Some(token) = token {
        response["NextPageToken"] = Value::String(token);
    }
    Ok(response)
}

fn anomaly_monitors(cx: &Context<'_>, request: &Value) -> Result<Value, ApiError> {
    let today = today(cx.dataset)?;
    let wanted: Option<BTreeSet<&str>> = request
        .get("MonitorArnList")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect());
    let created = ymd(today - Days::new(200));
    let monitors: Vec<Value> = MONITORS
        .iter()
        .enumerate()
        .map(|(i, (_, name, dimension))| {
            let arn = monitor_arn(cx.caller, i);
            let mut monitor = Map::new();
            monitor.insert("MonitorArn".into(), json!(arn));
            monitor.insert("MonitorName".into(), json!(name));
            monitor.insert("MonitorType".into(), json!("DIMENSIONAL"));
            monitor.insert("MonitorDimension".into(), json!(dimension));
            monitor.insert("CreationDate".into(), json!(created));
            monitor.insert("LastUpdatedDate".into(), json!(created));
            monitor.insert("LastEvaluatedDate".into(), json!(ymd(today)));
            monitor.insert(
                "DimensionalValueCount".into(),
                json!(ANOMALIES.iter().filter(|a| a.monitor == i).count()),
            );
            Value::Object(monitor)
        })
        .filter(|m| {
            wanted
                .as_ref()
                .is_none_or(|w| m["MonitorArn"].as_str().is_some_and(|a| w.contains(a)))
        })
        .collect();
    let (from, to, token) = page(cx, request, "NextPageToken", monitors.len())?;
    let mut response = json!({"AnomalyMonitors": monitors.get(from..to).unwrap_or_default()});
    if let Some(token) = token {
        response["NextPageToken"] = Value::String(token);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo_datasets;

    fn call(dataset: &Dataset, operation: &str, request: Value) -> Value {
        let cx = Context {
            caller: "111111111111",
            dataset,
            page_size: 500,
            looping: false,
        };
        serve(operation, &cx, &request).unwrap()
    }

    #[test]
    fn every_operation_is_billed() {
        for operation in OPERATIONS {
            assert!(crate::simulator::is_billed(operation), "{operation}");
        }
    }

    /// The demo shows plans near and far from expiry, an under-used reservation, an open and a
    /// closed anomaly with their impact, in the organization; the workload account has plans
    /// and anomalies but no reservations.
    #[test]
    fn the_demo_shows_every_kind_of_commitment_and_anomaly() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let (organization, workload) = demo_datasets(today, crate::DEMO_SCALE);
        let window = json!({"TimePeriod": {"Start": "2026-11-01", "End": "2026-11-22"}});
        for dataset in [&organization, &workload] {
            let details = call(dataset, "GetSavingsPlansUtilizationDetails", window.clone());
            let ends: Vec<&str> = details["SavingsPlansUtilizationDetails"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["Attributes"]["EndDateTime"].as_str().unwrap())
                .collect();
            assert_eq!(
                ends,
                [
                    "2028-10-23T00:00:00.000Z",
                    "2026-12-14T00:00:00.000Z",
                    "2027-05-02T00:00:00.000Z"
                ]
            );
            let anomalies = call(
                dataset,
                "GetAnomalies",
                json!({"DateInterval": {"StartDate": "2026-08-25"}}),
            );
            let anomalies = anomalies["Anomalies"].as_array().unwrap();
            assert_eq!(anomalies.len(), 3);
            assert_eq!(
                anomalies
                    .iter()
                    .filter(|a| a.get("AnomalyEndDate").is_none())
                    .count(),
                1
            );
            for anomaly in anomalies {
                assert!(anomaly["Impact"]["TotalImpact"].as_f64().unwrap() > 0.0);
            }
        }
        let rds = json!({
            "TimePeriod": {"Start": "2026-11-01", "End": "2026-11-24"},
            "GroupBy": [{"Type": "DIMENSION", "Key": "SUBSCRIPTION_ID"}],
            "Filter": {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon Relational Database Service"]}},
        });
        let utilization = call(&organization, "GetReservationUtilization", rds.clone());
        let groups = utilization["UtilizationsByTime"][0]["Groups"]
            .as_array()
            .unwrap();
        assert_eq!(groups.len(), 12);
        let percentages: BTreeSet<&str> = groups
            .iter()
            .map(|g| g["Utilization"]["UtilizationPercentage"].as_str().unwrap())
            .collect();
        assert_eq!(percentages, BTreeSet::from(["100", "55", "90"]));
        let none = call(&workload, "GetReservationUtilization", rds);
        assert!(none.get("Total").is_none());
    }
}
