//! Commitments: Savings Plans and reservations' utilisation, coverage, savings and expiry,
//! month to date (`commitments: true`).
//!
//! # Cadence
//!
//! Commitment data changes once a day: fetched on the first refresh of a UTC day, or when the
//! cost rows show commitments they did not before (so it needs the refresh's cost rows). When
//! it is not due, or fails, its last series stay.
//!
//! # What is asked, and when
//!
//! Only what exists: the cost rows of the refresh (the month to date and the data day) say
//! which commitments the integration has. Savings Plans are asked about only when some row's
//! charge type starts with `SavingsPlan`, and reservations only for the services whose rows
//! carry `RIFee` or `DiscountedUsage` charges (of those the reservation reports cover,
//! [`RESERVATION_SERVICES`]), each with its own `SERVICE` filter (without
//! one, the reservation operations answer for EC2 only). An integration without commitments
//! makes no request at all.
//!
//! - Savings Plans: `GetSavingsPlansUtilizationDetails` (one row per plan, and the aggregate
//!   `Total`, so `GetSavingsPlansUtilization` is not needed) and `GetSavingsPlansCoverage`
//!   grouped by `SERVICE`; both page with `NextToken`.
//! - Per service with reservations: `GetReservationUtilization` grouped by `SUBSCRIPTION_ID`
//!   (one row per reservation, and the service's `Total`) and `GetReservationCoverage`
//!   grouped by `LINKED_ACCOUNT`; both page with `NextPageToken`.
//!
//! With a `GroupBy`, no `Granularity` is sent (three of these operations refuse both), so
//! each answer is one aggregate over the window.
//!
//! # The window
//!
//! `[first of the month, end)`, where `end` is the day after the data day, but at most
//! yesterday: Savings Plans utilisation needs an `End` before today. The same window serves
//! every commitment figure, so that they describe the same days; its last day is exported as
//! `aws_cost_commitments_data_day_timestamp_seconds`.
//!
//! # Attributes
//!
//! The keys inside the free-form `Attributes` maps are not part of the API model; they are
//! looked up without regard to case or punctuation (`endDateTime`, `EndDateTime`,
//! `end_date_time` are one key), and a missing attribute is an empty label, never an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_costexplorer::operation::RequestId;
use aws_sdk_costexplorer::types::{
    DimensionValues, Expression, GroupDefinition, GroupDefinitionType, SavingsPlansUtilization,
    SavingsPlansUtilizationAggregates,
};
use chrono::{DateTime, Datelike, NaiveDate};
use serde::Deserialize;

use super::costs::{CostData, midnight};
use super::{Cx, Encoding, Keys, Out, Part, PartError};
use crate::cost_explorer::page::{Borrowed, RawBody, parse_json};
use crate::cost_explorer::{
    CostExplorer, CostExplorerError, Dimension, Period, Tokens, api_error, date_interval,
    parse_date, parse_number,
};
use crate::exposition::FamilyDesc;
use crate::model::Integration;
use crate::schema::{ConfigError, NativeIntegration};
use crate::snapshot::{Identity, Lines, gauge};
use crate::storage::Fingerprint;

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
/// The families a commitments fetch fills (kept from the last snapshot between fetches).
pub const FAMILIES: [FamilyDesc; 18] = [
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

/// The commitments part.
pub struct Commitments;

/// What one fetch asked about, and what it found.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub wanted: Wanted,
    pub data: CommitmentData,
}

/// The UTC day the served commitments were fetched, and what the cost rows then showed.
pub type Kept = Option<(NaiveDate, Wanted)>;

impl Part for Commitments {
    const NAME: &'static str = "commitments";
    const OWN_CADENCE: bool = true;
    const FAMILIES: &'static [FamilyDesc] = &FAMILIES;
    const NEEDS_COST_ROWS: bool = true;
    type Fetched = Fetched;
    type Kept = Kept;

    fn enabled(integration: &Integration) -> bool {
        integration.commitments
    }

    /// `commitments` (default off).
    fn configure(
        raw: &NativeIntegration,
        _keys: &Keys<'_>,
        into: &mut Integration,
    ) -> Result<(), ConfigError> {
        into.commitments = raw.commitments.unwrap_or(false);
        Ok(())
    }

    /// The account and the data day (the window ends with it).
    fn fingerprint(integration: &Integration, data_delay_days: u32, print: &mut Fingerprint) {
        print.str(&integration.account_id);
        print.u64(u64::from(data_delay_days));
    }

    /// On a new UTC day, or when the cost rows show commitments they did not before.
    fn due(cx: &Cx<'_>, kept: &Kept) -> bool {
        let wanted = cx.shared.rows.as_deref().map(Wanted::from_costs);
        kept.as_ref()
            .is_none_or(|(day, last)| *day != cx.now.date_naive() || wanted.as_ref() != Some(last))
    }

    async fn fetch(cx: &Cx<'_>, _kept: &Kept) -> Result<Fetched, PartError> {
        let wanted = Wanted::from_costs(cx.rows(Self::NAME)?);
        let data = cx
            .clients
            .cost_explorer
            .commitments(&wanted, window(cx.period))
            .await
            .map_err(|err| PartError::new("commitments", &err))?;
        Ok(Fetched { wanted, data })
    }

    /// Kept only once published: a refresh that stops before fetches them again.
    fn remember(cx: &Cx<'_>, fetched: &Fetched, kept: &mut Kept) {
        *kept = Some((cx.now.date_naive(), fetched.wanted.clone()));
    }

    fn encode(cx: &Encoding<'_>, fetched: Option<&Fetched>, _kept: &Kept, out: &mut Out<'_>) {
        match fetched {
            Some(fetched) => encode_commitments(cx.identity, &fetched.data, out),
            None => out.keep(),
        }
    }
}

/// Charge types (`RECORD_TYPE`) that mean a service has reservations.
pub const RESERVATION_CHARGES: [&str; 2] = ["RIFee", "DiscountedUsage"];
/// The services Cost Explorer's reservation reports cover, as the `SERVICE` dimension names
/// them. Reservation charges of any other service (DynamoDB reserved capacity, for one) are
/// not asked about: the operations would refuse the filter.
pub const RESERVATION_SERVICES: [&str; 6] = [
    "Amazon Elastic Compute Cloud - Compute",
    "Amazon Relational Database Service",
    "Amazon ElastiCache",
    "Amazon Redshift",
    "Amazon OpenSearch Service",
    "Amazon Elasticsearch Service",
];
/// The prefix of the charge types that mean Savings Plans exist.
pub const SAVINGS_PLAN_CHARGE_PREFIX: &str = "SavingsPlan";

/// What the commitment queries are about: derived from the cost rows, free to compute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub savings_plans: bool,
    /// Services with reservation charges, as the `SERVICE` dimension names them.
    pub reservation_services: BTreeSet<String>,
}

impl Wanted {
    /// What the cost rows of a refresh show.
    pub fn from_costs(costs: &CostData) -> Self {
        let mut wanted = Wanted::default();
        for table in [&costs.month, &costs.daily] {
            for (key, _) in table.iter() {
                let (service, charge) = (key[1], key[2]);
                if charge.starts_with(SAVINGS_PLAN_CHARGE_PREFIX) {
                    wanted.savings_plans = true;
                }
                if RESERVATION_CHARGES.contains(&charge)
                    && RESERVATION_SERVICES.contains(&service)
                    && !wanted.reservation_services.contains(service)
                {
                    wanted.reservation_services.insert(service.to_string());
                }
            }
        }
        wanted
    }
}

/// The window commitment figures describe: `[start, end)`, see the module documentation.
pub fn window(period: Period) -> (NaiveDate, NaiveDate) {
    let yesterday = period.today.pred_opt().unwrap_or(period.today);
    let end = period.data_day_end().min(yesterday);
    let last = end.pred_opt().unwrap_or(end);
    (last.with_day(1).unwrap_or(last), end)
}

/// Everything one fetch of the commitments found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitmentData {
    /// The last day the figures cover.
    pub through: NaiveDate,
    /// `None`: the integration has no Savings Plans charges (nothing was asked).
    pub savings_plans: Option<SavingsPlans>,
    /// One per service with reservation charges.
    pub reservations: Vec<ServiceReservations>,
}

/// The Savings Plans of an integration over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavingsPlans {
    /// Used over total commitment, 0–1; `None` when AWS reports no commitment.
    pub utilization: Option<f64>,
    pub used_usd: f64,
    pub unused_usd: f64,
    pub net_savings_usd: f64,
    /// Per service: spend covered by Savings Plans and on-demand spend.
    pub coverage: Vec<SavingsPlansCoverage>,
    pub plans: Vec<SavingsPlan>,
}

/// Savings Plans coverage of one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavingsPlansCoverage {
    pub service: String,
    pub covered_usd: f64,
    pub on_demand_usd: f64,
}

impl SavingsPlansCoverage {
    /// Covered over total eligible spend, 0–1; `None` without eligible spend.
    pub fn ratio(&self) -> Option<f64> {
        let total = self.covered_usd + self.on_demand_usd;
        (total > 0.0).then(|| self.covered_usd / total)
    }
}

/// One Savings Plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavingsPlan {
    pub arn: String,
    pub utilization: Option<f64>,
    /// Its end, in seconds since the epoch, when AWS says.
    pub end: Option<i64>,
    pub account_id: String,
    pub plan_type: String,
    pub region: String,
    pub instance_family: String,
    pub payment_option: String,
    pub term: String,
}

/// The reservations of one service over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceReservations {
    pub service: String,
    /// Used over purchased hours, 0–1; `None` when AWS reports none.
    pub utilization: Option<f64>,
    pub unused_hours: f64,
    pub net_savings_usd: f64,
    pub coverage: Vec<ReservationCoverage>,
    pub reservations: Vec<Reservation>,
}

/// Reservation coverage of one service in one account, in hours.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReservationCoverage {
    pub account_id: String,
    pub reserved_hours: f64,
    pub on_demand_hours: f64,
    pub on_demand_usd: f64,
}

impl ReservationCoverage {
    /// Reserved over running hours, 0–1; `None` without running hours.
    pub fn ratio(&self) -> Option<f64> {
        let total = self.reserved_hours + self.on_demand_hours;
        (total > 0.0).then(|| self.reserved_hours / total)
    }
}

/// One reservation (subscription).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reservation {
    pub subscription_id: String,
    pub utilization: Option<f64>,
    pub end: Option<i64>,
    pub account_id: String,
    pub region: String,
    pub instance_type: String,
}

type Attributes = HashMap<String, String>;

/// An attribute by name, whatever its case and punctuation.
fn attribute<'a>(attributes: Option<&'a Attributes>, name: &str) -> &'a str {
    attributes
        .and_then(|map| map.iter().find(|(key, _)| same_key(key, name)))
        .map_or("", |(_, value)| value.as_str())
}

/// Whether two attribute keys are the same once their case and punctuation are ignored.
fn same_key(key: &str, wanted: &str) -> bool {
    normalized(key).eq(normalized(wanted))
}

fn normalized(key: &str) -> impl Iterator<Item = u8> + '_ {
    key.bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase())
}

/// A point in time as AWS writes it in attributes (RFC 3339, or a date), in seconds since the
/// epoch; `None` when absent or unparsable (an attribute is informative, never fatal).
pub fn timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.timestamp());
    }
    parse_date(text)
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

/// A decimal figure that may be absent (absent: `None`; unparsable: an error).
fn figure(name: &str, text: Option<&str>) -> Result<Option<f64>, CostExplorerError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(text) => parse_number(name, text).map(Some),
    }
}

/// A percentage as a ratio.
fn ratio(name: &str, percent: Option<&str>) -> Result<Option<f64>, CostExplorerError> {
    Ok(figure(name, percent)?.map(|p| p / 100.0))
}

fn service_filter(service: &str) -> Expression {
    Expression::builder()
        .dimensions(
            DimensionValues::builder()
                .key(Dimension::Service.as_str().into())
                .values(service)
                .build(),
        )
        .build()
}

fn group(key: &str) -> GroupDefinition {
    GroupDefinition::builder()
        .r#type(GroupDefinitionType::Dimension)
        .key(key)
        .build()
}

impl CostExplorer {
    /// Fetches everything `wanted` names over `window`.
    pub async fn commitments(
        &self,
        wanted: &Wanted,
        (start, end): (NaiveDate, NaiveDate),
    ) -> Result<CommitmentData, CostExplorerError> {
        let mut data = CommitmentData {
            through: end.pred_opt().unwrap_or(end),
            ..CommitmentData::default()
        };
        if wanted.savings_plans {
            let mut plans = self.savings_plans_utilization(start, end).await?;
            plans.coverage = self.savings_plans_coverage(start, end).await?;
            data.savings_plans = Some(plans);
        }
        for service in &wanted.reservation_services {
            let mut reservations = self.reservation_utilization(service, start, end).await?;
            reservations.coverage = self.reservation_coverage(service, start, end).await?;
            data.reservations.push(reservations);
        }
        Ok(data)
    }

    /// Every plan's utilisation and attributes, and the aggregate over the plans.
    async fn savings_plans_utilization(
        &self,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<SavingsPlans, CostExplorerError> {
        const OP: &str = "GetSavingsPlansUtilizationDetails";
        let mut plans = SavingsPlans::default();
        // The first page's aggregate, and the sums of the plans (used without an aggregate).
        let mut total: Option<SavingsPlansUtilizationAggregates> = None;
        let (mut used, mut unused, mut committed, mut net) = (0.0, 0.0, 0.0, 0.0);
        let mut tokens = Tokens::new(OP);
        let mut token = None;
        loop {
            let out = self
                .client()
                .get_savings_plans_utilization_details()
                .time_period(date_interval(start, end)?)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error(OP, e))?;
            if total.is_none() {
                total = out.total().cloned();
            }
            for detail in out.savings_plans_utilization_details() {
                let attributes = detail.attributes();
                let utilization = detail.utilization();
                let amount = |name, get: fn(&SavingsPlansUtilization) -> Option<&str>| {
                    figure(name, utilization.and_then(get)).map(Option::unwrap_or_default)
                };
                used += amount("UsedCommitment", SavingsPlansUtilization::used_commitment)?;
                unused += amount(
                    "UnusedCommitment",
                    SavingsPlansUtilization::unused_commitment,
                )?;
                committed += amount("TotalCommitment", SavingsPlansUtilization::total_commitment)?;
                net += figure("NetSavings", detail.savings().and_then(|s| s.net_savings()))?
                    .unwrap_or(0.0);
                plans.plans.push(SavingsPlan {
                    arn: detail.savings_plan_arn().unwrap_or_default().to_string(),
                    utilization: utilization_ratio(utilization)?,
                    end: timestamp(attribute(attributes, "EndDateTime")),
                    account_id: attribute(attributes, "AccountId").to_string(),
                    plan_type: attribute(attributes, "SavingsPlansType").to_string(),
                    region: attribute(attributes, "Region").to_string(),
                    instance_family: attribute(attributes, "InstanceFamily").to_string(),
                    payment_option: attribute(attributes, "PaymentOption").to_string(),
                    term: attribute(attributes, "PurchaseTerm").to_string(),
                });
            }
            match tokens.next(out.next_token())? {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        // AWS's aggregate where it gives one, else the sums of the plans.
        let aggregate = total
            .as_ref()
            .and_then(|t| t.utilization())
            .filter(|u| u.total_commitment().is_some());
        match aggregate {
            Some(u) => {
                plans.used_usd = figure("UsedCommitment", u.used_commitment())?.unwrap_or(0.0);
                plans.unused_usd =
                    figure("UnusedCommitment", u.unused_commitment())?.unwrap_or(0.0);
                plans.utilization = utilization_ratio(Some(u))?;
            }
            None => {
                plans.used_usd = used;
                plans.unused_usd = unused;
                plans.utilization = (committed > 0.0).then(|| used / committed);
            }
        }
        let aggregate_net = total
            .as_ref()
            .and_then(|t| t.savings())
            .and_then(|s| s.net_savings());
        plans.net_savings_usd = match aggregate_net {
            Some(text) => figure("NetSavings", Some(text))?.unwrap_or(0.0),
            None => net,
        };
        plans.plans.sort_by(|a, b| a.arn.cmp(&b.arn));
        Ok(plans)
    }

    /// Savings Plans coverage per service.
    async fn savings_plans_coverage(
        &self,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<SavingsPlansCoverage>, CostExplorerError> {
        const OP: &str = "GetSavingsPlansCoverage";
        let mut services: BTreeMap<String, SavingsPlansCoverage> = BTreeMap::new();
        let mut tokens = Tokens::new(OP);
        let mut token = None;
        loop {
            let out = self
                .client()
                .get_savings_plans_coverage()
                .time_period(date_interval(start, end)?)
                .group_by(group(Dimension::Service.as_str()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error(OP, e))?;
            for coverage in out.savings_plans_coverages() {
                let service = attribute(coverage.attributes(), "SERVICE");
                let data = coverage.coverage();
                let slot =
                    services
                        .entry(service.to_string())
                        .or_insert_with(|| SavingsPlansCoverage {
                            service: service.to_string(),
                            ..SavingsPlansCoverage::default()
                        });
                slot.covered_usd += figure(
                    "SpendCoveredBySavingsPlans",
                    data.and_then(|d| d.spend_covered_by_savings_plans()),
                )?
                .unwrap_or(0.0);
                slot.on_demand_usd +=
                    figure("OnDemandCost", data.and_then(|d| d.on_demand_cost()))?.unwrap_or(0.0);
            }
            match tokens.next(out.next_token())? {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        Ok(services.into_values().collect())
    }

    /// One service's reservations: each one's utilisation and the service's aggregate.
    async fn reservation_utilization(
        &self,
        service: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<ServiceReservations, CostExplorerError> {
        const OP: &str = "GetReservationUtilization";
        let mut found = ServiceReservations {
            service: service.to_string(),
            ..ServiceReservations::default()
        };
        // The first page's aggregate: (UtilizationPercentage, UnusedHours, NetRISavings).
        let mut total: Option<[Option<String>; 3]> = None;
        let query = format!("{OP} of {service}");
        let mut tokens = Tokens::new(query.clone());
        let mut token = None;
        let mut pages = 0;
        loop {
            // The body is read here rather than by the SDK's typed deserializer, which built
            // a map and a dozen strings per reservation (see `cost_explorer::page`).
            let raw = RawBody::default();
            let out = self
                .client()
                .get_reservation_utilization()
                .time_period(date_interval(start, end)?)
                .filter(service_filter(service))
                .group_by(group("SUBSCRIPTION_ID"))
                .set_next_page_token(token)
                .customize()
                .interceptor(raw.clone())
                .send()
                .await
                .map_err(|e| api_error(OP, e))?;
            pages += 1;
            let body = raw.take();
            let page = parse_json::<RawUtilization>(&body).map_err(|error| {
                CostExplorerError::MalformedPage {
                    page: pages,
                    operation: OP,
                    query: query.clone(),
                    error: crate::failure::shorten(&error, 120),
                    request_id: out.request_id().map(str::to_string),
                }
            })?;
            if total.is_none() {
                total = page.total.map(|t| {
                    [t.utilization_percentage, t.unused_hours, t.net_ri_savings]
                        .map(|figure| figure.map(|text| text.0.into_owned()))
                });
            }
            for period in page.utilizations_by_time.iter().flatten() {
                for reservation in period.groups.iter().flatten() {
                    let attributes = reservation.attributes.as_ref();
                    let attribute = |name| raw_attribute(attributes, name);
                    let id = match reservation.value.as_ref().map(Borrowed::as_str) {
                        Some(value) if !value.is_empty() => value,
                        _ => attribute("subscriptionId"),
                    };
                    found.reservations.push(Reservation {
                        subscription_id: id.to_string(),
                        utilization: ratio(
                            "UtilizationPercentage",
                            reservation
                                .utilization
                                .as_ref()
                                .and_then(|u| u.utilization_percentage.as_ref())
                                .map(Borrowed::as_str),
                        )?,
                        end: timestamp(attribute("endDateTime")),
                        account_id: attribute("accountId").to_string(),
                        region: attribute("region").to_string(),
                        instance_type: attribute("instanceType").to_string(),
                    });
                }
            }
            match tokens.next(page.next_page_token.as_ref().map(Borrowed::as_str))? {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        if let Some([utilization, unused, net]) = &total {
            found.utilization = ratio("UtilizationPercentage", utilization.as_deref())?;
            found.unused_hours = figure("UnusedHours", unused.as_deref())?.unwrap_or(0.0);
            found.net_savings_usd = figure("NetRISavings", net.as_deref())?.unwrap_or(0.0);
        }
        found
            .reservations
            .sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
        Ok(found)
    }

    /// One service's reservation coverage per account.
    async fn reservation_coverage(
        &self,
        service: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<ReservationCoverage>, CostExplorerError> {
        const OP: &str = "GetReservationCoverage";
        let mut accounts: BTreeMap<String, ReservationCoverage> = BTreeMap::new();
        let mut tokens = Tokens::new(format!("{OP} of {service}"));
        let mut token = None;
        loop {
            let out = self
                .client()
                .get_reservation_coverage()
                .time_period(date_interval(start, end)?)
                .filter(service_filter(service))
                .group_by(group(Dimension::LinkedAccount.as_str()))
                .set_next_page_token(token)
                .send()
                .await
                .map_err(|e| api_error(OP, e))?;
            for period in out.coverages_by_time() {
                for coverage in period.groups() {
                    let account = attribute(coverage.attributes(), "LINKED_ACCOUNT");
                    let hours = coverage.coverage().and_then(|c| c.coverage_hours());
                    let cost = coverage.coverage().and_then(|c| c.coverage_cost());
                    let slot = accounts.entry(account.to_string()).or_insert_with(|| {
                        ReservationCoverage {
                            account_id: account.to_string(),
                            ..ReservationCoverage::default()
                        }
                    });
                    slot.reserved_hours +=
                        figure("ReservedHours", hours.and_then(|h| h.reserved_hours()))?
                            .unwrap_or(0.0);
                    slot.on_demand_hours +=
                        figure("OnDemandHours", hours.and_then(|h| h.on_demand_hours()))?
                            .unwrap_or(0.0);
                    slot.on_demand_usd +=
                        figure("OnDemandCost", cost.and_then(|c| c.on_demand_cost()))?
                            .unwrap_or(0.0);
                }
            }
            match tokens.next(out.next_page_token())? {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        Ok(accounts.into_values().collect())
    }
}

/// A `GetReservationUtilization` page, as far as it is read: what the SDK's deserializer
/// accepts (unknown members skipped, `null` as absent), borrowing the page's strings.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawUtilization<'a> {
    #[serde(borrow, default)]
    utilizations_by_time: Option<Vec<RawUtilizationByTime<'a>>>,
    #[serde(borrow, default)]
    total: Option<RawReservationAggregates<'a>>,
    #[serde(borrow, default)]
    next_page_token: Option<Borrowed<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawUtilizationByTime<'a> {
    #[serde(borrow, default)]
    groups: Option<Vec<RawReservationGroup<'a>>>,
}

/// One reservation: its subscription id (`Value`), attributes and utilisation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawReservationGroup<'a> {
    #[serde(borrow, default)]
    value: Option<Borrowed<'a>>,
    #[serde(borrow, default)]
    attributes: Option<RawAttributes<'a>>,
    #[serde(borrow, default)]
    utilization: Option<RawReservationAggregates<'a>>,
}

/// The figures of `ReservationAggregates` that are exported, as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawReservationAggregates<'a> {
    #[serde(borrow, default)]
    utilization_percentage: Option<Borrowed<'a>>,
    #[serde(borrow, default)]
    unused_hours: Option<Borrowed<'a>>,
    #[serde(rename = "NetRISavings", borrow, default)]
    net_ri_savings: Option<Borrowed<'a>>,
}

/// An `Attributes` map as its pairs, in page order; `null` values are left out, as the SDK
/// leaves them out of its map.
#[derive(Debug, Default)]
struct RawAttributes<'a>(Vec<(Borrowed<'a>, Borrowed<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawAttributes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = RawAttributes<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of attributes")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<RawAttributes<'a>, M::Error> {
                let mut pairs = Vec::new();
                while let Some((key, value)) =
                    map.next_entry::<Borrowed<'a>, Option<Borrowed<'a>>>()?
                {
                    if let Some(value) = value {
                        pairs.push((key, value));
                    }
                }
                Ok(RawAttributes(pairs))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// An attribute of a page's group by name, whatever its case and punctuation, as
/// [`attribute`] finds it in the SDK's map.
fn raw_attribute<'a>(attributes: Option<&'a RawAttributes<'_>>, name: &str) -> &'a str {
    attributes
        .and_then(|pairs| pairs.0.iter().find(|(key, _)| same_key(key.as_str(), name)))
        .map_or("", |(_, value)| value.as_str())
}

/// A Savings Plans utilisation as a ratio: AWS's percentage, else used over total.
fn utilization_ratio(
    utilization: Option<&SavingsPlansUtilization>,
) -> Result<Option<f64>, CostExplorerError> {
    let Some(u) = utilization else {
        return Ok(None);
    };
    if let Some(r) = ratio("UtilizationPercentage", u.utilization_percentage())? {
        return Ok(Some(r));
    }
    let used = figure("UsedCommitment", u.used_commitment())?;
    let total = figure("TotalCommitment", u.total_commitment())?;
    Ok(match (used, total) {
        (Some(used), Some(total)) if total > 0.0 => Some(used / total),
        _ => None,
    })
}

/// Encodes a commitments fetch, handing each family's block to `set`.
fn encode_commitments(integration: &Identity, data: &CommitmentData, out: &mut Out<'_>) {
    let mut lines: BTreeMap<&'static str, Lines<'_>> = FAMILIES
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
    for family in &FAMILIES {
        if let Some(lines) = lines.remove(family.name) {
            out.set(family, lines.block(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn the_window_ends_before_today_and_starts_on_the_first() {
        // Data day yesterday: Savings Plans utilisation needs an End before today.
        let w = window(Period::new(date(2026, 11, 23), 1));
        assert_eq!(w, (date(2026, 11, 1), date(2026, 11, 22)));
        // Data two days back: through it.
        let w = window(Period::new(date(2026, 11, 23), 2));
        assert_eq!(w, (date(2026, 11, 1), date(2026, 11, 22)));
        let w = window(Period::new(date(2026, 11, 23), 3));
        assert_eq!(w, (date(2026, 11, 1), date(2026, 11, 21)));
        // Early in a month, the whole of the last one.
        let w = window(Period::new(date(2026, 12, 2), 1));
        assert_eq!(w, (date(2026, 11, 1), date(2026, 12, 1)));
        let w = window(Period::new(date(2026, 12, 1), 0));
        assert_eq!(w, (date(2026, 11, 1), date(2026, 11, 30)));
        let w = window(Period::new(date(2027, 1, 3), 1));
        assert_eq!(w, (date(2027, 1, 1), date(2027, 1, 2)));
    }

    #[test]
    fn only_commitments_the_cost_rows_show_are_wanted() {
        const RDS: &str = "Amazon Relational Database Service";
        let mut costs = CostData::new(1);
        costs.month.add(["1", "AWS Lambda", "Usage"], &[1.0]);
        costs.month.add(["1", "Amazon DynamoDB", "RIFee"], &[1.0]);
        assert_eq!(Wanted::from_costs(&costs), Wanted::default());
        // The data day alone is enough (early in a month it is in the last one).
        costs.daily.add(["2", RDS, "DiscountedUsage"], &[1.0]);
        costs.month.add(["3", RDS, "RIFee"], &[1.0]);
        costs.month.add(
            [
                "3",
                "Savings Plans for AWS Compute usage",
                "SavingsPlanRecurringFee",
            ],
            &[1.0],
        );
        let wanted = Wanted::from_costs(&costs);
        assert!(wanted.savings_plans);
        assert_eq!(
            wanted.reservation_services,
            BTreeSet::from([RDS.to_string()])
        );
    }

    #[test]
    fn attributes_are_found_whatever_their_spelling() {
        let map: Attributes = [
            (
                "endDateTime".to_string(),
                "2027-01-01T00:00:00.000Z".to_string(),
            ),
            ("Region".to_string(), "us-east-1".to_string()),
        ]
        .into();
        assert_eq!(
            attribute(Some(&map), "EndDateTime"),
            "2027-01-01T00:00:00.000Z"
        );
        assert_eq!(
            attribute(Some(&map), "end_date_time"),
            "2027-01-01T00:00:00.000Z"
        );
        assert_eq!(attribute(Some(&map), "region"), "us-east-1");
        assert_eq!(attribute(Some(&map), "instanceType"), "");
        assert_eq!(attribute(None, "region"), "");
    }

    #[test]
    fn timestamps_are_read_in_every_shape_aws_writes() {
        assert_eq!(timestamp("2027-01-01T00:00:00.000Z"), Some(1_798_761_600));
        assert_eq!(timestamp("2027-01-01T00:00:00Z"), Some(1_798_761_600));
        assert_eq!(timestamp("2027-01-01"), Some(1_798_761_600));
        assert_eq!(timestamp("2027-01-01T01:00:00+01:00"), Some(1_798_761_600));
        assert_eq!(timestamp(""), None);
        assert_eq!(timestamp("soon"), None);
    }

    #[test]
    fn figures_may_be_absent_but_not_garbled() {
        assert_eq!(figure("X", None).unwrap(), None);
        assert_eq!(figure("X", Some(" ")).unwrap(), None);
        assert_eq!(figure("X", Some("12.5")).unwrap(), Some(12.5));
        assert!(matches!(
            figure("X", Some("twelve")),
            Err(CostExplorerError::BadAmount { .. })
        ));
        assert_eq!(ratio("X", Some("96")).unwrap(), Some(0.96));
    }

    #[test]
    fn coverage_ratios_are_part_over_whole() {
        let sp = SavingsPlansCoverage {
            service: "s".into(),
            covered_usd: 30.0,
            on_demand_usd: 10.0,
        };
        assert_eq!(sp.ratio(), Some(0.75));
        assert_eq!(SavingsPlansCoverage::default().ratio(), None);
        let ri = ReservationCoverage {
            account_id: "1".into(),
            reserved_hours: 24.0,
            on_demand_hours: 72.0,
            on_demand_usd: 72.0,
        };
        assert_eq!(ri.ratio(), Some(0.25));
    }
}
