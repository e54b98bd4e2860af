//! Costs: cost by account, service and charge type, month to date and on the data day; the
//! budgets' amounts and spend; the accounts an integration knows. Every refresh, first: without
//! them nothing is published.
//!
//! # The query plan
//!
//! Every request is billed, and a page holds a bounded number of groups counted across all of
//! a result's periods, so the plan buys each figure the exporter serves once:
//!
//! - month to date from `MONTHLY` granularity over the month (one group per series), and the
//!   data day from `DAILY` granularity over that day alone;
//! - `GetCostAndUsage` accepts at most two `GroupBy` keys and the cost series have three
//!   (account, service, charge type), so the plan splits on one of them: discovery asks for the
//!   accounts (a `MONTHLY` query grouped by account alone), and when there is more than one
//!   account for the record types with their services (grouped by record type and service): a
//!   page or two each. Then each query filters on one value of whichever has fewer queries and
//!   groups by the other two; record types of a single service (tax, support, fees) share one
//!   query grouped by account and record type, their service being known. Every cost row lands
//!   in exactly one query, because the filter values come from the same period's data.
//!
//! # What it keeps
//!
//! The account names Cost Explorer gave and the month-to-date totals (of every account per
//! cost basis, and within each budget's filter): what the forecast and other parts' encodings
//! need when a refresh does not ask for costs again (a restart or a reload that only owes
//! another part a fetch, or a check that found the data unchanged). Never the cost rows.
//! And what change detection compares the next check with ([`crate::change::Seen`]): the
//! answer of the check before the fetch, the accounts and the plan's requests.
//!
//! # With change detection
//!
//! A refresh that checks first hands its answer to the plan ([`super::Cx::probe`]): when it
//! was grouped by account and saw a single account, it is the plan's discovery, and the plan
//! asks only the two queries of that account.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::NaiveDate;

use super::{Cx, Encoding, Keys, Out, Part, PartError, Shared};
use crate::aggregate::Table;
use crate::change::Seen;
use crate::cost_explorer::{
    CostExplorer, CostExplorerError, Dimension, Granularity, GroupKey, Period, Query,
};
use crate::exposition::FamilyDesc;
use crate::model::{Budget, CostBasis, Integration, Threshold, ThresholdOn};
use crate::schema::{ConfigError, Expander, NativeIntegration, RawThreshold};
use crate::snapshot::{Lines, gauge, table_block};
use crate::storage::{Fingerprint, LoadError, Reader, Writer};
use serde_saphyr::Spanned;

pub const DAILY: FamilyDesc = gauge(
    "aws_cost_daily_usd",
    "Cost in USD of the last complete UTC day (see aws_cost_data_day_timestamp_seconds), by account, service and charge type",
    Some("usd"),
);
pub const MONTH_TO_DATE: FamilyDesc = gauge(
    "aws_cost_month_to_date_usd",
    "Cost in USD from the first of the current UTC month through today, by account, service and charge type",
    Some("usd"),
);
pub const DATA_DAY: FamilyDesc = gauge(
    "aws_cost_data_day_timestamp_seconds",
    "Midnight UTC of the day the daily cost gauges describe",
    Some("seconds"),
);
pub const ESTIMATED: FamilyDesc = gauge(
    "aws_cost_estimated",
    "1 while AWS marks any of the period's figures Estimated, else 0",
    None,
);
pub const BUDGET: FamilyDesc = gauge(
    "aws_cost_budget_usd",
    "The monthly budget in USD",
    Some("usd"),
);
pub const BUDGET_MONTH_TO_DATE: FamilyDesc = gauge(
    "aws_cost_budget_month_to_date_usd",
    "Cost in USD of the current UTC month within the budget's filter",
    Some("usd"),
);
pub const BUDGET_THRESHOLD: FamilyDesc = gauge(
    "aws_cost_budget_threshold_ratio",
    "An alerting threshold of the budget as a share of it, on the month-to-date spend (on=\"actual\") or the month's forecast (on=\"forecast\")",
    None,
);
pub const ACCOUNT_INFO: FamilyDesc = gauge(
    "aws_cost_account_info",
    "The accounts an integration knows, with their names; always 1",
    None,
);

/// The families of the costs part, in exposition order.
pub const FAMILIES: [FamilyDesc; 8] = [
    DAILY,
    MONTH_TO_DATE,
    DATA_DAY,
    ESTIMATED,
    BUDGET,
    BUDGET_MONTH_TO_DATE,
    BUDGET_THRESHOLD,
    ACCOUNT_INFO,
];

/// The costs part.
pub struct Costs;

/// What the costs part keeps: see the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kept {
    /// Account id to name, as Cost Explorer's dimension attributes gave them.
    pub names: Arc<BTreeMap<String, String>>,
    pub totals: Arc<Totals>,
    /// What change detection saw with the served cost data.
    pub seen: Seen,
}

/// The month-to-date totals of the served cost data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Of every account, per cost basis in the integration's order.
    pub month: Vec<f64>,
    /// Within each budget's filter, on the budget's cost basis, by budget name.
    pub budgets: BTreeMap<String, f64>,
}

impl Part for Costs {
    const NAME: &'static str = "costs";
    const FAMILIES: &'static [FamilyDesc] = &FAMILIES;
    const COUNTED: &'static [FamilyDesc] = &[DAILY, MONTH_TO_DATE];
    const REQUIRED: bool = true;
    type Fetched = Arc<CostData>;
    type Kept = Kept;

    /// Always, but for an electrolux-shaped file's integrations, which serve its metrics only.
    fn enabled(integration: &Integration) -> bool {
        integration.costs
    }

    /// `budgets` (the integration's cost bases are validated before any part).
    fn configure(
        raw: &NativeIntegration,
        keys: &Keys<'_>,
        into: &mut Integration,
    ) -> Result<(), ConfigError> {
        let x = keys.x;
        let mut budgets: Vec<Budget> = Vec::new();
        for (i, budget) in raw.budgets.iter().flatten().enumerate() {
            let budget_key = |field: &str| format!("{}[{i}].{field}", keys.key("budgets"));
            let name = x.non_empty(&budget_key("name"), &budget.name)?;
            if budgets.iter().any(|b| b.name == name) {
                return Err(ConfigError::new(
                    Some(budget_key("name")),
                    Some(budget.name.referenced),
                    format!("duplicate budget name {name:?}"),
                ));
            }
            let amount = &budget.monthly_usd;
            if !(amount.value.is_finite() && amount.value > 0.0) {
                return Err(ConfigError::new(
                    Some(budget_key("monthly_usd")),
                    Some(amount.referenced),
                    "must be a positive amount of USD",
                ));
            }
            let mut accounts = Vec::new();
            for (j, account) in budget.accounts.iter().flatten().enumerate() {
                accounts.push(x.account_id(&format!("{}[{j}]", budget_key("accounts")), account)?);
            }
            let mut services = Vec::new();
            for (j, service) in budget.services.iter().flatten().enumerate() {
                services.push(x.non_empty(&format!("{}[{j}]", budget_key("services")), service)?);
            }
            let cost_basis = match &budget.cost_basis {
                None => into.cost_basis[0],
                Some(text) => {
                    let k = budget_key("cost_basis");
                    let basis = x.cost_basis(&k, text)?;
                    if !into.cost_basis.contains(&basis) {
                        return Err(ConfigError::new(
                            Some(k),
                            Some(text.referenced),
                            format!("{basis} is not in the integration's cost_basis; add it there"),
                        ));
                    }
                    basis
                }
            };
            let thresholds = match &budget.thresholds {
                None => Threshold::DEFAULT.to_vec(),
                Some(list) => thresholds(x, &budget_key("thresholds"), list)?,
            };
            budgets.push(Budget {
                name,
                monthly_usd: amount.value,
                accounts,
                services,
                cost_basis,
                thresholds,
            });
        }
        into.budgets = budgets;
        Ok(())
    }

    /// The account, the data day, the cost bases, the budgets, and where account names come
    /// from (Organizations' names label the series when `organizations` is on).
    fn fingerprint(integration: &Integration, data_delay_days: u32, print: &mut Fingerprint) {
        super::print_rows(print, integration, data_delay_days);
        super::print_budgets(print, &integration.budgets);
        // Budgets without `thresholds` print nothing more, so that the fingerprint of a file
        // written before thresholds existed is unchanged (its stored series stay served).
        for (i, budget) in integration.budgets.iter().enumerate() {
            if budget.thresholds != Threshold::DEFAULT {
                print.u64(i as u64);
                print.u64(budget.thresholds.len() as u64);
                for threshold in &budget.thresholds {
                    print.f64(threshold.percent);
                    print.str(threshold.on.as_str());
                }
            }
        }
    }

    async fn fetch(cx: &Cx<'_>, _kept: &Kept) -> Result<Arc<CostData>, PartError> {
        let discovered = cx.probe.and_then(|answer| {
            answer
                .discovered(cx.period)
                .map(|accounts| (accounts, &answer.names))
        });
        cx.clients
            .cost_explorer
            .costs(cx.period, &cx.integration.cost_basis, discovered)
            .await
            .map(Arc::new)
            .map_err(|err| PartError::bare(&err))
    }

    fn remember(cx: &Cx<'_>, costs: &Arc<CostData>, kept: &mut Kept) {
        let integration = cx.integration;
        let bases = &integration.cost_basis;
        let basis_index = |basis: CostBasis| bases.iter().position(|b| *b == basis).unwrap_or(0);
        let totals = Totals {
            month: (0..bases.len())
                .map(|index| costs.month.total(index, |_| true))
                .collect(),
            budgets: integration
                .budgets
                .iter()
                .map(|budget| {
                    let spent = costs.month.total(basis_index(budget.cost_basis), |key| {
                        budget.covers(key[0], key[1])
                    });
                    (budget.name.clone(), spent)
                })
                .collect(),
        };
        *kept = Kept {
            names: Arc::new(costs.account_names.clone()),
            totals: Arc::new(totals),
            seen: Seen {
                answer: cx.probe.cloned(),
                plan_requests: Some(costs.requests),
            },
        };
    }

    fn share(costs: Option<&Arc<CostData>>, kept: &Kept, shared: &mut Shared) {
        shared.rows = costs.cloned();
        shared.totals = kept.totals.clone();
        shared.names.cost_explorer = kept.names.clone();
        shared.seen = kept.seen.clone();
    }

    fn encode(cx: &Encoding<'_>, costs: Option<&Arc<CostData>>, kept: &Kept, out: &mut Out<'_>) {
        let Some(costs) = costs else {
            return out.keep();
        };
        let integration = cx.integration;
        let name = cx.identity;
        let names = &cx.shared.names;
        let labels = ["account_id", "aws_service", "charge_type"];
        let target = (cx.identity, &integration.cost_basis[..]);
        out.set(
            &DAILY,
            table_block(&DAILY, target, &costs.daily, labels, names, 0),
        );
        out.set(
            &MONTH_TO_DATE,
            table_block(&MONTH_TO_DATE, target, &costs.month, labels, names, 0),
        );
        let mut lines = Lines::new(&DATA_DAY, name);
        lines.sample(&[], midnight(cx.period.data_day));
        out.set(&DATA_DAY, lines.block(0));
        let mut lines = Lines::new(&ESTIMATED, name);
        for (period, flag) in [
            ("daily", costs.estimated_daily),
            ("month_to_date", costs.estimated_month),
        ] {
            lines.sample(&[("period", period)], f64::from(u8::from(flag)));
        }
        out.set(&ESTIMATED, lines.block(0));
        let mut amount = Lines::new(&BUDGET, name);
        let mut spent = Lines::new(&BUDGET_MONTH_TO_DATE, name);
        let mut ratios = Lines::new(&BUDGET_THRESHOLD, name);
        for budget in &integration.budgets {
            let labels = [("budget", budget.name.as_str())];
            amount.sample(&labels, budget.monthly_usd);
            for threshold in &budget.thresholds {
                let percent = format_percent(threshold.percent);
                ratios.sample(
                    &[
                        ("budget", budget.name.as_str()),
                        ("on", threshold.on.as_str()),
                        ("percent", percent.as_str()),
                    ],
                    threshold.ratio(),
                );
            }
            let mtd = kept
                .totals
                .budgets
                .get(&budget.name)
                .copied()
                .unwrap_or(0.0);
            spent.sample(&labels, mtd);
        }
        out.set(&BUDGET, amount.block(0));
        out.set(&BUDGET_MONTH_TO_DATE, spent.block(0));
        out.set(&BUDGET_THRESHOLD, ratios.block(0));
        // Every account with a name or with cost.
        let mut known: BTreeSet<&str> = names.ids().collect();
        for table in [&costs.daily, &costs.month] {
            known.extend(table.iter().map(|(key, _)| key[0]));
        }
        let mut lines = Lines::new(&ACCOUNT_INFO, name);
        for id in known {
            lines.sample(&[("account_id", id), ("account_name", names.of(id))], 1.0);
        }
        out.set(&ACCOUNT_INFO, lines.block(0));
    }

    fn save(kept: &Kept, w: &mut Writer) {
        w.map(&kept.names);
        w.f64s(&kept.totals.month);
        w.u64(kept.totals.budgets.len() as u64);
        for (name, spent) in &kept.totals.budgets {
            w.str(name);
            w.f64(*spent);
        }
        kept.seen.save(w);
    }

    fn load(r: &mut Reader<'_>) -> Result<Kept, LoadError> {
        let names = r.map()?;
        let month = r.f64s()?;
        let mut budgets = BTreeMap::new();
        for _ in 0..r.count()? {
            let name = r.str()?.to_string();
            budgets.insert(name, r.f64()?);
        }
        Ok(Kept {
            names: Arc::new(names),
            totals: Arc::new(Totals { month, budgets }),
            seen: Seen::load(r)?,
        })
    }
}

/// Midnight UTC of `day`, in seconds since the epoch.
pub fn midnight(day: NaiveDate) -> f64 {
    day.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .unwrap_or_default() as f64
}

/// Month-to-date and data-day cost by account, service and record type.
#[derive(Debug, Clone)]
pub struct CostData {
    /// The data day, keyed (account id, service, record type).
    pub daily: Table<3>,
    /// The month to date, keyed like `daily`.
    pub month: Table<3>,
    /// Whether AWS marked the data day's figures Estimated.
    pub estimated_daily: bool,
    /// Whether AWS marked the month's figures Estimated.
    pub estimated_month: bool,
    /// Account id to account name, as Cost Explorer's dimension attributes give it.
    pub account_names: BTreeMap<String, String>,
    /// Billed requests (pages) of its queries.
    pub requests: u64,
}

impl CostData {
    pub fn new(bases: usize) -> Self {
        Self {
            daily: Table::new(bases),
            month: Table::new(bases),
            estimated_daily: false,
            estimated_month: false,
            account_names: BTreeMap::new(),
            requests: 0,
        }
    }
}

/// The plan for the breakdown queries after discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitPlan {
    /// The dimension filtered on, one query per value and period.
    pub split: Dimension,
    pub values: Vec<String>,
    /// Record types with a single service, asked together in one query per period grouped by
    /// account and record type (their service is known): record type to service. Only when
    /// splitting on record types, and only two or more of them.
    pub single_service: BTreeMap<String, String>,
}

/// Picks the split with the fewest queries: one per account or one per record type.
pub fn plan_split(accounts: &BTreeSet<String>, record_types: &BTreeSet<String>) -> SplitPlan {
    if accounts.len() <= record_types.len() {
        SplitPlan {
            split: Dimension::LinkedAccount,
            values: accounts.iter().cloned().collect(),
            ..SplitPlan::default()
        }
    } else {
        SplitPlan {
            split: Dimension::RecordType,
            values: record_types.iter().cloned().collect(),
            ..SplitPlan::default()
        }
    }
}

/// The cost queries' plan, from the accounts and each record type's services: record types
/// that have a single service (tax, support, fees) need no query of their own, since a query
/// grouped by account and record type tells their service; so splitting on record types costs
/// one query per period for each of the others, and one for all the single-service ones.
pub fn plan_costs(
    accounts: &BTreeSet<String>,
    record_types: &BTreeMap<String, BTreeSet<String>>,
) -> SplitPlan {
    let single: BTreeMap<String, String> = record_types
        .iter()
        .filter_map(|(record_type, services)| match services.len() {
            1 => services.first().map(|s| (record_type.clone(), s.clone())),
            _ => None,
        })
        .collect();
    let merged = single.len() >= 2;
    if accounts.len() <= record_type_queries(record_types) {
        return SplitPlan {
            split: Dimension::LinkedAccount,
            values: accounts.iter().cloned().collect(),
            ..SplitPlan::default()
        };
    }
    let single_service = if merged { single } else { BTreeMap::new() };
    SplitPlan {
        split: Dimension::RecordType,
        values: record_types
            .keys()
            .filter(|r| !single_service.contains_key(*r))
            .cloned()
            .collect(),
        single_service,
    }
}

/// How many queries per period a plan makes when it splits on these record types.
fn record_type_queries(record_types: &BTreeMap<String, BTreeSet<String>>) -> usize {
    let single = record_types.values().filter(|s| s.len() == 1).count();
    if single >= 2 {
        record_types.len() - single + 1
    } else {
        record_types.len()
    }
}

impl CostExplorer {
    /// Cost by account, service and record type: the month to date and the data day.
    /// With `discovered`, the period's accounts (at most one) and their names, found by a
    /// check: no discovery query.
    pub async fn costs(
        &self,
        period: Period,
        bases: &[CostBasis],
        discovered: Option<(&BTreeSet<String>, &BTreeMap<String, String>)>,
    ) -> Result<CostData, CostExplorerError> {
        let mut data = CostData::new(bases.len());
        let plan = match discovered {
            Some((accounts, names)) => {
                data.account_names.extend(names.clone());
                SplitPlan {
                    split: Dimension::LinkedAccount,
                    values: accounts.iter().cloned().collect(),
                    ..SplitPlan::default()
                }
            }
            None => self.discover(period, bases, &mut data).await?,
        };
        let group_by: Vec<GroupKey> = plan
            .split
            .others()
            .into_iter()
            .map(GroupKey::Dimension)
            .collect();
        let month = (period.month_start(), period.query_end());
        let day = (period.data_day, period.data_day_end());
        for value in &plan.values {
            let filter = vec![(plan.split, vec![value.clone()])];
            for granularity in [Granularity::Monthly, Granularity::Daily] {
                let (range, table, estimated) = match granularity {
                    Granularity::Monthly => (month, &mut data.month, &mut data.estimated_month),
                    Granularity::Daily => (day, &mut data.daily, &mut data.estimated_daily),
                };
                let query = Query::cost(granularity, range, group_by.clone(), filter.clone());
                let stats = self
                    .query_period(&query, bases, |keys, amounts| {
                        table.add(place(plan.split, value, keys), amounts);
                    })
                    .await?;
                *estimated |= !stats.estimated.is_empty();
                data.requests += u64::from(stats.pages);
                for (id, name) in stats.names {
                    data.account_names.entry(id).or_insert(name);
                }
            }
        }
        if !plan.single_service.is_empty() {
            let filter = vec![(
                Dimension::RecordType,
                plan.single_service.keys().cloned().collect(),
            )];
            let group_by = vec![
                GroupKey::Dimension(Dimension::LinkedAccount),
                GroupKey::Dimension(Dimension::RecordType),
            ];
            for granularity in [Granularity::Monthly, Granularity::Daily] {
                let (range, table, estimated) = match granularity {
                    Granularity::Monthly => (month, &mut data.month, &mut data.estimated_month),
                    Granularity::Daily => (day, &mut data.daily, &mut data.estimated_daily),
                };
                let query = Query::cost(granularity, range, group_by.clone(), filter.clone());
                let mut unknown = None;
                let stats = self
                    .query_period(&query, bases, |keys, amounts| {
                        match plan.single_service.get(keys[1]) {
                            Some(service) => table.add([keys[0], service, keys[1]], amounts),
                            None => unknown = Some(keys[1].to_string()),
                        }
                    })
                    .await?;
                if let Some(record_type) = unknown {
                    return Err(CostExplorerError::Malformed(format!(
                        "record type {record_type:?} in {query}"
                    )));
                }
                *estimated |= !stats.estimated.is_empty();
                data.requests += u64::from(stats.pages);
                for (id, name) in stats.names {
                    data.account_names.entry(id).or_insert(name);
                }
            }
        }
        Ok(data)
    }

    /// Discovery: the accounts of the refresh's period (a `MONTHLY` query grouped by account
    /// alone) and, when there is more than one account, its record types with their services
    /// (grouped by record type and service: a page). Accounts are paged only while they could
    /// still be fewer than the record types' queries.
    async fn discover(
        &self,
        period: Period,
        bases: &[CostBasis],
        data: &mut CostData,
    ) -> Result<SplitPlan, CostExplorerError> {
        let range = (period.query_start(), period.query_end());
        let by = |dimension| {
            Query::cost(
                Granularity::Monthly,
                range,
                vec![GroupKey::Dimension(dimension)],
                Vec::new(),
            )
        };
        let accounts_query = by(Dimension::LinkedAccount);
        let mut accounts = BTreeSet::new();
        let mut pager = self.pager(&accounts_query, bases)?;
        pager
            .next_page(&mut collect_first_key(&mut accounts))
            .await?;
        let plan = if pager.has_more() || accounts.len() > 1 {
            let mut record_types: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let services = Query::cost(
                Granularity::Monthly,
                range,
                vec![
                    GroupKey::Dimension(Dimension::RecordType),
                    GroupKey::Dimension(Dimension::Service),
                ],
                Vec::new(),
            );
            let services = self
                .query(&services, bases, |_, keys, _| {
                    record_types
                        .entry(keys[0].to_string())
                        .or_default()
                        .insert(keys[1].to_string());
                    Ok(())
                })
                .await?;
            data.requests += u64::from(services.pages);
            let queries = record_type_queries(&record_types);
            while pager.has_more() && accounts.len() <= queries {
                pager
                    .next_page(&mut collect_first_key(&mut accounts))
                    .await?;
            }
            plan_costs(&accounts, &record_types)
        } else {
            // One account (or none): its queries need no record types.
            SplitPlan {
                split: Dimension::LinkedAccount,
                values: accounts.into_iter().collect(),
                ..SplitPlan::default()
            }
        };
        let stats = pager.into_stats();
        data.requests += u64::from(stats.pages);
        data.account_names.extend(stats.names);
        Ok(plan)
    }
}

/// A sink that collects each group's first key: the values of a single-key query.
fn collect_first_key(
    found: &mut BTreeSet<String>,
) -> impl FnMut(NaiveDate, &[&str], &[f64]) -> Result<(), CostExplorerError> + '_ {
    |_, keys, _| {
        if let Some(first) = keys.first() {
            found.insert(first.to_string());
        }
        Ok(())
    }
}

/// The (account, service, record type) of a group of a split query: the filter's value, and
/// the two group keys of the other dimensions (in [`Dimension::others`] order).
fn place<'k>(split: Dimension, value: &'k str, keys: &[&'k str]) -> [&'k str; 3] {
    match split {
        Dimension::LinkedAccount => [value, keys[0], keys[1]],
        Dimension::Service => [keys[0], value, keys[1]],
        Dimension::RecordType => [keys[0], keys[1], value],
    }
}

/// A budget's `thresholds`: each `percent` positive and finite, `on` `actual` or `forecast`,
/// no two alike; an empty list is allowed (no threshold: the budget's alert never fires).
fn thresholds(
    x: &Expander<'_>,
    key: &str,
    list: &Spanned<Vec<Spanned<RawThreshold>>>,
) -> Result<Vec<Threshold>, ConfigError> {
    let mut out: Vec<Threshold> = Vec::with_capacity(list.value.len());
    for (i, raw) in list.value.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let percent = &raw.value.percent;
        if !(percent.value.is_finite() && percent.value > 0.0) {
            return Err(ConfigError::new(
                Some(format!("{at}.percent")),
                Some(percent.referenced),
                "must be a positive percentage of the budget, such as 80 or 100",
            ));
        }
        let text = x.text(&format!("{at}.on"), &raw.value.on)?;
        let Some(on) = ThresholdOn::parse(text.trim()) else {
            return Err(ConfigError::new(
                Some(format!("{at}.on")),
                Some(raw.value.on.referenced),
                format!("unknown threshold kind {text:?}; expected actual or forecast"),
            ));
        };
        let threshold = Threshold {
            percent: percent.value,
            on,
        };
        if out.contains(&threshold) {
            return Err(ConfigError::new(
                Some(at),
                Some(raw.referenced),
                format!(
                    "duplicate threshold {}% on {}",
                    format_percent(threshold.percent),
                    on.as_str()
                ),
            ));
        }
        out.push(threshold);
    }
    Ok(out)
}

/// A threshold's percentage as its `percent` label: `80`, `12.5`.
fn format_percent(percent: f64) -> String {
    format!("{percent}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plan_splits_on_the_smaller_dimension() {
        let one_account = plan_split(&set(&["111111111111"]), &set(&["Usage", "Tax", "Credit"]));
        assert_eq!(one_account.split, Dimension::LinkedAccount);
        assert_eq!(one_account.values, vec!["111111111111"]);
        assert_eq!(
            one_account.split.others(),
            [Dimension::Service, Dimension::RecordType]
        );

        let org = plan_split(&set(&["1", "2", "3", "4"]), &set(&["Usage", "Tax"]));
        assert_eq!(org.split, Dimension::RecordType);
        assert_eq!(org.values, vec!["Tax", "Usage"]);
        assert_eq!(
            org.split.others(),
            [Dimension::LinkedAccount, Dimension::Service]
        );

        let empty = plan_split(&set(&[]), &set(&[]));
        assert!(empty.values.is_empty());
    }

    #[test]
    fn single_service_record_types_share_a_query() {
        let types = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, BTreeSet<String>> {
            pairs
                .iter()
                .map(|(rt, services)| (rt.to_string(), set(services)))
                .collect()
        };
        let org = types(&[
            ("Usage", &["EC2", "S3"]),
            ("Credit", &["EC2", "S3"]),
            ("Tax", &["Tax"]),
            ("Support", &["Support (Business)"]),
            ("RIFee", &["RDS"]),
        ]);
        // Five record types, three of one service: three queries per period.
        assert_eq!(record_type_queries(&org), 3);
        let accounts = set(&["1", "2", "3", "4"]);
        let plan = plan_costs(&accounts, &org);
        assert_eq!(plan.split, Dimension::RecordType);
        assert_eq!(plan.values, vec!["Credit", "Usage"]);
        assert_eq!(
            plan.single_service,
            [
                ("RIFee", "RDS"),
                ("Support", "Support (Business)"),
                ("Tax", "Tax")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .into()
        );
        // Fewer accounts than those queries: split on accounts, nothing merged.
        let few = plan_costs(&set(&["1", "2", "3"]), &org);
        assert_eq!(few.split, Dimension::LinkedAccount);
        assert!(few.single_service.is_empty());
        // One single-service record type alone gains nothing from merging.
        let one = types(&[("Usage", &["EC2", "S3"]), ("Tax", &["Tax"])]);
        assert_eq!(record_type_queries(&one), 2);
        let plan = plan_costs(&accounts, &one);
        assert_eq!(plan.values, vec!["Tax", "Usage"]);
        assert!(plan.single_service.is_empty());
    }
}
