//! Cost series per integration, encoded once when a refresh builds them, and the store that
//! swaps them in atomically so that a scrape never waits for AWS and never sees half a refresh.
//!
//! A snapshot keeps no typed copy of the data: each family's sample lines (identical in the
//! classic and OpenMetrics formats for gauges without timestamps) are written once, with their
//! deflate [`Piece`], and the store joins the integrations' pieces family by family, adding
//! only each format's own `# HELP`/`# TYPE`/`# UNIT` lines. A scrape sends those shared bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{DateTime, Utc};

mod commitments;

pub use commitments::{
    ANOMALIES, ANOMALY_FAMILIES, ANOMALY_IMPACT, ANOMALY_MAX_SCORE, ANOMALY_OPEN, ANOMALY_START,
    COMMITMENT_FAMILIES, COMMITMENTS_DATA_DAY, PLAN_END, PLAN_INFO, PLAN_UTILIZATION,
    RESERVATION_END, RESERVATION_INFO, RESERVATION_UTILIZATION, RI_COVERAGE, RI_NET_SAVINGS,
    RI_ON_DEMAND, RI_UNUSED_HOURS, RI_UTILIZATION, SP_COMMITMENT, SP_COVERAGE, SP_COVERED,
    SP_NET_SAVINGS, SP_ON_DEMAND, SP_UTILIZATION,
};

use crate::aggregate::Table;
use crate::anomalies::AnomalyData;
use crate::clock::lock;
use crate::commitments::CommitmentData;
use crate::config::{CostBasis, Integration};
pub use crate::cost_explorer::Period;
use crate::cost_explorer::{CostData, ForecastValue, TagData};
use crate::exposition::{FamilyDesc, Format, MetricType, Piece, Run, push_label_value, push_value};

const fn gauge(name: &'static str, help: &'static str, unit: Option<&'static str>) -> FamilyDesc {
    FamilyDesc {
        name,
        help,
        unit,
        kind: MetricType::Gauge,
    }
}

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
pub const TAG_DAILY: FamilyDesc = gauge(
    "aws_cost_tag_daily_usd",
    "Cost in USD of the last complete UTC day by account and cost-allocation tag value (empty: untagged)",
    Some("usd"),
);
pub const TAG_MONTH_TO_DATE: FamilyDesc = gauge(
    "aws_cost_tag_month_to_date_usd",
    "Cost in USD of the current UTC month by account and cost-allocation tag value (empty: untagged)",
    Some("usd"),
);
pub const RESOURCE_DAILY: FamilyDesc = gauge(
    "aws_cost_resource_daily_usd",
    "Cost in USD of the last complete UTC day by resource; the smallest are folded into resource_id=\"__other__\"",
    Some("usd"),
);
pub const FORECAST: FamilyDesc = gauge(
    "aws_cost_month_forecast_usd",
    "AWS's forecast in USD for the whole current UTC month: month to date plus the forecast for the rest",
    Some("usd"),
);
pub const FORECAST_LOWER: FamilyDesc = gauge(
    "aws_cost_month_forecast_lower_usd",
    "Lower bound of the 80% prediction interval of aws_cost_month_forecast_usd",
    Some("usd"),
);
pub const FORECAST_UPPER: FamilyDesc = gauge(
    "aws_cost_month_forecast_upper_usd",
    "Upper bound of the 80% prediction interval of aws_cost_month_forecast_usd",
    Some("usd"),
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
pub const BUDGET_FORECAST: FamilyDesc = gauge(
    "aws_cost_budget_month_forecast_usd",
    "Forecast in USD for the whole current UTC month within the budget's filter",
    Some("usd"),
);
pub const ACCOUNT_INFO: FamilyDesc = gauge(
    "aws_cost_account_info",
    "The accounts an integration knows, with their names; always 1",
    None,
);
pub const SERIES: FamilyDesc = gauge(
    "aws_cost_series",
    "Series the integration exports per cost metric",
    None,
);
pub const SERIES_DROPPED: FamilyDesc = gauge(
    "aws_cost_series_dropped",
    "Series folded into __other__ per cost metric because of max_resource_series or max_tag_series",
    None,
);

/// The families of the cost queries, budgets and accounts.
const COST_FAMILIES: [FamilyDesc; 14] = [
    DAILY,
    MONTH_TO_DATE,
    DATA_DAY,
    ESTIMATED,
    TAG_DAILY,
    TAG_MONTH_TO_DATE,
    RESOURCE_DAILY,
    FORECAST,
    FORECAST_LOWER,
    FORECAST_UPPER,
    BUDGET,
    BUDGET_MONTH_TO_DATE,
    BUDGET_FORECAST,
    ACCOUNT_INFO,
];

/// The cost families, in exposition order: the cost queries', the commitments', the
/// anomalies', then the series counts.
pub const FAMILIES: [FamilyDesc; 39] = join(
    join::<14, 18, 32>(COST_FAMILIES, COMMITMENT_FAMILIES),
    join::<5, 2, 7>(ANOMALY_FAMILIES, [SERIES, SERIES_DROPPED]),
);

/// `a` then `b` (a compile-time error unless `N` is their length together).
const fn join<const A: usize, const B: usize, const N: usize>(
    a: [FamilyDesc; A],
    b: [FamilyDesc; B],
) -> [FamilyDesc; N] {
    assert!(A + B == N);
    let mut out = [DAILY; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < A { a[i] } else { b[i - A] };
        i += 1;
    }
    out
}

/// The label value that stands for everything folded away by a series cap.
pub const OTHER: &str = "__other__";

/// Everything one refresh of an integration gathered.
#[derive(Debug, Clone)]
pub struct RefreshData {
    pub costs: CostData,
    /// Tag costs; `None` when the tag queries failed (the last snapshot's tag series stay).
    pub tags: Option<TagData>,
    /// The data day's resource costs, keyed (account, service, resource, record type); `None`
    /// when they failed (the last snapshot's resource series stay).
    pub resources: Option<Table<4>>,
    /// Per cost basis, the forecast for the rest of the month (`None`: nothing left to forecast).
    pub forecasts: BTreeMap<CostBasis, Option<ForecastValue>>,
    /// Per filtered budget, the forecast for the rest of the month within its filter.
    pub budget_forecasts: BTreeMap<String, Option<ForecastValue>>,
    /// Account id to name from AWS Organizations (empty unless `organizations: true`).
    pub organization_accounts: BTreeMap<String, String>,
    /// Commitments; `None` when not fetched this refresh (fetched once a day) or failed: the
    /// last snapshot's commitment series stay.
    pub commitments: Option<CommitmentData>,
    /// Anomalies; `None` when they failed (the last snapshot's anomaly series stay).
    pub anomalies: Option<AnomalyData>,
}

impl RefreshData {
    /// Cost data and nothing else.
    pub fn new(costs: CostData) -> Self {
        Self {
            costs,
            tags: None,
            resources: None,
            forecasts: BTreeMap::new(),
            budget_forecasts: BTreeMap::new(),
            organization_accounts: BTreeMap::new(),
            commitments: None,
            anomalies: None,
        }
    }
}

/// One family's samples of one integration, encoded.
#[derive(Debug, Clone, Default)]
struct Block {
    piece: Piece,
    samples: usize,
    /// Series folded into `__other__` (capped families only).
    dropped: usize,
}

/// An integration's cost data as served: immutable, encoded once.
#[derive(Debug, Clone)]
pub struct IntegrationSnapshot {
    pub integration: String,
    pub period: Period,
    /// When its data was fetched from AWS (set by the refresh; `aws_cost_data_age_seconds`
    /// is computed from it at scrape time).
    pub fetched_at: DateTime<Utc>,
    /// One block per family of [`FAMILIES`].
    blocks: Vec<Block>,
}

/// One family's encoded sample lines of one integration, as `--storage.path` keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBlock {
    pub text: Bytes,
    pub samples: usize,
    pub dropped: usize,
}

/// Writes one family's sample lines of one integration.
struct Lines<'a> {
    name: &'static str,
    integration: &'a str,
    out: String,
    samples: usize,
}

impl<'a> Lines<'a> {
    fn new(family: &FamilyDesc, integration: &'a str) -> Self {
        Self {
            name: family.name,
            integration,
            out: String::new(),
            samples: 0,
        }
    }

    /// Writes `name{integration="...",label="value",...` (no closing brace).
    fn open(&mut self, labels: &[(&str, &str)]) {
        self.out.push_str(self.name);
        self.out.push_str("{integration=\"");
        push_label_value(&mut self.out, self.integration);
        self.out.push('"');
        for (label, value) in labels {
            self.out.push(',');
            self.out.push_str(label);
            self.out.push_str("=\"");
            push_label_value(&mut self.out, value);
            self.out.push('"');
        }
    }

    /// Ends a sample opened by [`Lines::open`].
    fn close(&mut self, value: f64) {
        self.out.push_str("} ");
        push_value(&mut self.out, value);
        self.out.push('\n');
        self.samples += 1;
    }

    /// One sample: `integration` first, then `labels`, in the exposition's sample-line form.
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.open(labels);
        self.close(value);
    }

    /// One sample per cost basis of a row whose other labels are `labels`: the same lines as
    /// [`Lines::sample`] with `cost_basis` last, the shared part escaped once and copied.
    fn samples_by_basis(&mut self, labels: &[(&str, &str)], bases: &[CostBasis], values: &[f64]) {
        let start = self.out.len();
        self.open(labels);
        self.out.push_str(",cost_basis=\"");
        let prefix = start..self.out.len();
        let mut written = 0;
        for (basis, value) in bases.iter().zip(values) {
            if written > 0 {
                self.out.extend_from_within(prefix.clone());
            }
            // Cost basis names need no escaping.
            self.out.push_str(basis.as_str());
            self.out.push('"');
            self.close(*value);
            written += 1;
        }
        if written == 0 {
            self.out.truncate(start);
        }
    }

    fn block(mut self, dropped: usize) -> Block {
        // Kept for a whole refresh interval: no spare capacity.
        self.out.shrink_to_fit();
        Block {
            piece: Piece::new(self.out),
            samples: self.samples,
            dropped,
        }
    }
}

/// Account names: Organizations', then Cost Explorer's, then the id.
struct Names(BTreeMap<String, String>);

impl Names {
    fn of<'a>(&'a self, id: &'a str) -> &'a str {
        self.0.get(id).map_or(id, String::as_str)
    }
}

/// Encodes a table whose first key is an account id, one sample per row and cost basis, in
/// label order: account_id, account_name, `labels` for the other keys, cost_basis.
fn table_block<const K: usize>(
    family: &FamilyDesc,
    integration: &Integration,
    table: &Table<K>,
    labels: [&'static str; K],
    names: &Names,
    dropped: usize,
) -> Block {
    let mut lines = Lines::new(family, &integration.name);
    lines
        .out
        .reserve(table.len() * integration.cost_basis.len() * 200);
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(K + 1);
    for row in table.sorted() {
        let key = table.key(row);
        pairs.clear();
        pairs.push((labels[0], key[0]));
        pairs.push(("account_name", names.of(key[0])));
        pairs.extend(labels[1..].iter().copied().zip(key[1..].iter().copied()));
        lines.samples_by_basis(&pairs, &integration.cost_basis, table.amounts(row));
    }
    lines.block(dropped * integration.cost_basis.len())
}

/// Index of a family in [`FAMILIES`].
fn index_of(family: &FamilyDesc) -> usize {
    FAMILIES
        .iter()
        .position(|f| f.name == family.name)
        .unwrap_or_default()
}

impl IntegrationSnapshot {
    /// Encodes a refresh's data. Parts the refresh could not get (`None` tags or resources) keep
    /// `previous`'s encoded series.
    pub fn build(
        integration: &Integration,
        data: &RefreshData,
        period: Period,
        previous: Option<&IntegrationSnapshot>,
    ) -> Self {
        let bases = &integration.cost_basis;
        let mut names = data.costs.account_names.clone();
        if let Some(tags) = &data.tags {
            for (id, name) in &tags.account_names {
                names.entry(id.clone()).or_insert_with(|| name.clone());
            }
        }
        names.extend(
            data.organization_accounts
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let names = Names(names);
        let mut blocks: Vec<Block> = vec![Block::default(); FAMILIES.len()];
        let mut set = |family: &FamilyDesc, block: Block| blocks[index_of(family)] = block;
        let keep = |family: &FamilyDesc| {
            previous
                .map(|p| p.blocks[index_of(family)].clone())
                .unwrap_or_default()
        };
        let name = integration.name.as_str();
        let cost_labels = ["account_id", "aws_service", "charge_type"];
        let costs = &data.costs;
        set(
            &DAILY,
            table_block(&DAILY, integration, &costs.daily, cost_labels, &names, 0),
        );
        set(
            &MONTH_TO_DATE,
            table_block(
                &MONTH_TO_DATE,
                integration,
                &costs.month,
                cost_labels,
                &names,
                0,
            ),
        );
        let mut lines = Lines::new(&DATA_DAY, name);
        let midnight = period
            .data_day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or_default();
        lines.sample(&[], midnight as f64);
        set(&DATA_DAY, lines.block(0));
        let mut lines = Lines::new(&ESTIMATED, name);
        for (p, flag) in [
            ("daily", costs.estimated_daily),
            ("month_to_date", costs.estimated_month),
        ] {
            lines.sample(&[("period", p)], f64::from(u8::from(flag)));
        }
        set(&ESTIMATED, lines.block(0));

        if !integration.tags.is_empty() {
            match &data.tags {
                Some(tags) => {
                    let labels = ["account_id", "tag_key", "tag_value"];
                    for (family, table) in
                        [(TAG_DAILY, &tags.daily), (TAG_MONTH_TO_DATE, &tags.month)]
                    {
                        let (table, dropped) = table.fold(integration.max_tag_series, 2, OTHER);
                        set(
                            &family,
                            table_block(&family, integration, &table, labels, &names, dropped),
                        );
                    }
                }
                None => {
                    set(&TAG_DAILY, keep(&TAG_DAILY));
                    set(&TAG_MONTH_TO_DATE, keep(&TAG_MONTH_TO_DATE));
                }
            }
        }
        if !integration.resources.is_empty() {
            let block = match &data.resources {
                Some(resources) => {
                    let (table, dropped) =
                        resources.fold(integration.max_resource_series, 2, OTHER);
                    let labels = ["account_id", "aws_service", "resource_id", "charge_type"];
                    table_block(
                        &RESOURCE_DAILY,
                        integration,
                        &table,
                        labels,
                        &names,
                        dropped,
                    )
                }
                None => keep(&RESOURCE_DAILY),
            };
            set(&RESOURCE_DAILY, block);
        }

        // Month to date per cost basis: the base of every forecast.
        let basis_index = |basis: CostBasis| bases.iter().position(|b| *b == basis).unwrap_or(0);
        if integration.forecast {
            let mut mean = Lines::new(&FORECAST, name);
            let mut lower = Lines::new(&FORECAST_LOWER, name);
            let mut upper = Lines::new(&FORECAST_UPPER, name);
            for (index, basis) in bases.iter().enumerate() {
                let Some(forecast) = data.forecasts.get(basis) else {
                    continue;
                };
                let mtd = costs.month.total(index, |_| true);
                let labels = [("cost_basis", basis.as_str())];
                mean.sample(&labels, mtd + forecast.map_or(0.0, |f| f.mean));
                if let Some(value) = forecast.and_then(|f| f.lower) {
                    lower.sample(&labels, mtd + value);
                }
                if let Some(value) = forecast.and_then(|f| f.upper) {
                    upper.sample(&labels, mtd + value);
                }
            }
            set(&FORECAST, mean.block(0));
            set(&FORECAST_LOWER, lower.block(0));
            set(&FORECAST_UPPER, upper.block(0));
        }
        let mut amount = Lines::new(&BUDGET, name);
        let mut spent = Lines::new(&BUDGET_MONTH_TO_DATE, name);
        let mut forecast = Lines::new(&BUDGET_FORECAST, name);
        for budget in &integration.budgets {
            let labels = [("budget", budget.name.as_str())];
            let mtd = costs.month.total(basis_index(budget.cost_basis), |key| {
                budget.covers(key[0], key[1])
            });
            amount.sample(&labels, budget.monthly_usd);
            spent.sample(&labels, mtd);
            let rest = if budget.is_filtered() {
                data.budget_forecasts.get(&budget.name)
            } else {
                data.forecasts.get(&budget.cost_basis)
            };
            if integration.forecast
                && let Some(rest) = rest
            {
                forecast.sample(&labels, mtd + rest.map_or(0.0, |r| r.mean));
            }
        }
        set(&BUDGET, amount.block(0));
        set(&BUDGET_MONTH_TO_DATE, spent.block(0));
        set(&BUDGET_FORECAST, forecast.block(0));

        if integration.commitments {
            match &data.commitments {
                Some(commitments) => {
                    commitments::encode_commitments(name, commitments, &mut set);
                }
                None => {
                    for family in &COMMITMENT_FAMILIES {
                        set(family, keep(family));
                    }
                }
            }
        }
        if integration.anomalies {
            match &data.anomalies {
                Some(anomalies) => commitments::encode_anomalies(
                    name,
                    anomalies,
                    integration.max_anomaly_series,
                    &mut set,
                ),
                None => {
                    for family in &ANOMALY_FAMILIES {
                        set(family, keep(family));
                    }
                }
            }
        }

        // Every account with a name or with cost.
        let mut known: BTreeSet<&str> = names.0.keys().map(String::as_str).collect();
        for table in [&costs.daily, &costs.month] {
            known.extend(table.iter().map(|(key, _)| key[0]));
        }
        let mut lines = Lines::new(&ACCOUNT_INFO, name);
        for id in known {
            lines.sample(&[("account_id", id), ("account_name", names.of(id))], 1.0);
        }
        set(&ACCOUNT_INFO, lines.block(0));

        let mut counted = vec![DAILY, MONTH_TO_DATE];
        if !integration.tags.is_empty() {
            counted.extend([TAG_DAILY, TAG_MONTH_TO_DATE]);
        }
        if !integration.resources.is_empty() {
            counted.push(RESOURCE_DAILY);
        }
        if integration.anomalies {
            counted.push(ANOMALY_IMPACT);
        }
        let mut series = Lines::new(&SERIES, name);
        let mut dropped = Lines::new(&SERIES_DROPPED, name);
        for family in counted {
            let block = &blocks[index_of(&family)];
            let labels = [("metric", family.name)];
            series.sample(&labels, block.samples as f64);
            dropped.sample(&labels, block.dropped as f64);
        }
        blocks[index_of(&SERIES)] = series.block(0);
        blocks[index_of(&SERIES_DROPPED)] = dropped.block(0);

        Self {
            integration: integration.name.clone(),
            period,
            fetched_at: Utc::now(),
            blocks,
        }
    }

    /// The same snapshot, its data fetched at `at`.
    pub fn fetched(mut self, at: DateTime<Utc>) -> Self {
        self.fetched_at = at;
        self
    }

    /// Each family's encoded block, in [`FAMILIES`] order.
    pub fn encoded_blocks(&self) -> Vec<EncodedBlock> {
        self.blocks
            .iter()
            .map(|b| EncodedBlock {
                text: b.piece.text.clone(),
                samples: b.samples,
                dropped: b.dropped,
            })
            .collect()
    }

    /// Rebuilds a snapshot from [`Self::encoded_blocks`] (compressing each block again);
    /// `None` unless there is one block per family.
    pub fn from_encoded(
        integration: String,
        period: Period,
        fetched_at: DateTime<Utc>,
        blocks: Vec<EncodedBlock>,
    ) -> Option<Self> {
        if blocks.len() != FAMILIES.len() {
            return None;
        }
        let blocks = blocks
            .into_iter()
            .map(|b| Block {
                piece: Piece::new(b.text),
                samples: b.samples,
                dropped: b.dropped,
            })
            .collect();
        Some(Self {
            integration,
            period,
            fetched_at,
            blocks,
        })
    }

    /// The sample lines of one family.
    pub fn text(&self, family: &FamilyDesc) -> &[u8] {
        &self.blocks[index_of(family)].piece.text
    }

    /// The number of series this snapshot serves.
    pub fn series_count(&self) -> usize {
        self.blocks.iter().map(|b| b.samples).sum()
    }
}

/// The cost families of all integrations, joined once per publish, per format.
#[derive(Debug, Default)]
pub struct Rendered {
    classic: Run,
    openmetrics: Run,
    pub series: usize,
}

impl Rendered {
    /// The cost families in `format`: each family's header lines, then every integration's
    /// samples of it.
    pub fn run(&self, format: Format) -> &Run {
        match format {
            Format::Classic => &self.classic,
            Format::OpenMetrics => &self.openmetrics,
        }
    }
}

/// The latest good snapshot of every integration. Refreshes publish; scrapes load.
#[derive(Debug)]
pub struct SnapshotStore {
    /// Taken by refreshes and reloads only; scrapes never take it.
    inner: Mutex<StoreInner>,
    rendered: ArcSwap<Rendered>,
}

#[derive(Debug, Default)]
struct StoreInner {
    /// Integration names in config order, which is exposition order.
    order: Vec<String>,
    snapshots: BTreeMap<String, Arc<IntegrationSnapshot>>,
    /// Each family's header lines, per format, compressed once.
    headers: Vec<[Piece; 2]>,
}

impl StoreInner {
    fn render(&mut self) -> Rendered {
        if self.headers.is_empty() {
            self.headers = FAMILIES
                .iter()
                .map(|family| {
                    [Format::Classic, Format::OpenMetrics].map(|format| {
                        let mut header = String::new();
                        family.write_header(&mut header, format);
                        Piece::new(header)
                    })
                })
                .collect();
        }
        let ordered: Vec<&Arc<IntegrationSnapshot>> = self
            .order
            .iter()
            .filter_map(|name| self.snapshots.get(name))
            .collect();
        let mut rendered = Rendered {
            series: ordered.iter().map(|s| s.series_count()).sum(),
            ..Rendered::default()
        };
        for (index, [classic, openmetrics]) in self.headers.iter().enumerate() {
            if ordered.iter().all(|s| s.blocks[index].piece.is_empty()) {
                continue;
            }
            rendered.classic.push(classic);
            rendered.openmetrics.push(openmetrics);
            for snapshot in &ordered {
                rendered.classic.push(&snapshot.blocks[index].piece);
                rendered.openmetrics.push(&snapshot.blocks[index].piece);
            }
        }
        rendered
    }
}

impl SnapshotStore {
    pub fn new(order: Vec<String>) -> Self {
        Self {
            inner: Mutex::new(StoreInner {
                order,
                ..StoreInner::default()
            }),
            rendered: ArcSwap::from_pointee(Rendered::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        lock(&self.inner)
    }

    /// Replaces an integration's snapshot and re-renders the combined cost families.
    pub fn publish(&self, snapshot: Arc<IntegrationSnapshot>) {
        let mut inner = self.inner();
        inner
            .snapshots
            .insert(snapshot.integration.clone(), snapshot);
        let rendered = inner.render();
        self.rendered.store(Arc::new(rendered));
    }

    /// Sets the integrations (config order) after a reload, dropping the others' snapshots.
    pub fn set_integrations(&self, order: Vec<String>) {
        let mut inner = self.inner();
        inner.snapshots.retain(|name, _| order.contains(name));
        inner.order = order;
        let rendered = inner.render();
        self.rendered.store(Arc::new(rendered));
    }

    /// The current rendering; a scrape clones an `Arc` and sends its bytes.
    pub fn rendered(&self) -> Arc<Rendered> {
        self.rendered.load_full()
    }

    /// The current snapshot of one integration.
    pub fn get(&self, integration: &str) -> Option<Arc<IntegrationSnapshot>> {
        self.inner().snapshots.get(integration).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Budget;
    use chrono::NaiveDate;
    use std::io::Read as _;

    /// A row's samples, written with the shared part once, are exactly the lines the general
    /// sample writer makes, escapes included.
    #[test]
    fn samples_by_basis_match_single_samples() {
        let labels = [
            ("account_id", "111111111111"),
            ("account_name", "Ops \"east\"\\ \n team"),
            ("aws_service", "Amazon S3"),
        ];
        let bases = [
            CostBasis::Unblended,
            CostBasis::Amortized,
            CostBasis::NetUnblended,
        ];
        let values = [1.5, -0.25, 3.0];
        let mut rows = Lines::new(&DAILY, "pay\"er");
        rows.samples_by_basis(&labels, &bases, &values);
        let mut single = Lines::new(&DAILY, "pay\"er");
        for (basis, value) in bases.iter().zip(values) {
            let mut all = labels.to_vec();
            all.push(("cost_basis", basis.as_str()));
            single.sample(&all, value);
        }
        let shared = "aws_cost_daily_usd{integration=\"pay\\\"er\",account_id=\"111111111111\",\
                      account_name=\"Ops \\\"east\\\"\\\\ \\n team\",aws_service=\"Amazon S3\",cost_basis=";
        let expected = format!(
            "{shared}\"unblended\"}} 1.5\n{shared}\"amortized\"}} -0.25\n{shared}\"net_unblended\"}} 3\n"
        );
        assert_eq!(rows.out, expected);
        assert_eq!(single.out, expected);
        assert_eq!((rows.samples, single.samples), (3, 3));
        let mut none = Lines::new(&DAILY, "payer");
        none.samples_by_basis(&labels, &[], &[]);
        assert_eq!((none.out.as_str(), none.samples), ("", 0));
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn integration(bases: &[CostBasis]) -> Integration {
        let mut i = Integration::new("payer", "111111111111");
        i.cost_basis = bases.to_vec();
        i
    }

    /// The value of the first line of `text` that carries every `label="value"` pair.
    fn find(text: &[u8], labels: &[(&str, &str)]) -> Option<f64> {
        std::str::from_utf8(text).unwrap().lines().find_map(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
                .then(|| line.rsplit(' ').next().unwrap().parse().unwrap())
        })
    }

    fn lines(text: &[u8]) -> usize {
        std::str::from_utf8(text).unwrap().lines().count()
    }

    /// Costs of two bases: the data day (22nd) and the month to date through the 23rd.
    fn sample_costs() -> CostData {
        let mut costs = CostData::new(2);
        costs
            .daily
            .add(["111111111111", "Amazon S3", "Usage"], &[0.5, 1.0]);
        costs.daily.add(["111111111111", "Tax", "Tax"], &[0.1, 0.1]);
        costs
            .daily
            .add(["222222222222", "Amazon S3", "Credit"], &[-0.25, -0.25]);
        costs
            .month
            .add(["111111111111", "Amazon S3", "Usage"], &[1.75, 3.0]);
        costs.month.add(["111111111111", "Tax", "Tax"], &[0.1, 0.1]);
        costs
            .month
            .add(["222222222222", "Amazon S3", "Credit"], &[-0.25, -0.25]);
        costs
            .account_names
            .insert("111111111111".into(), "Prod \"main\"".into());
        costs.estimated_month = true;
        costs
    }

    #[test]
    fn period_covers_month_and_data_day() {
        let p = Period::new(day(23), 1);
        assert_eq!(
            (p.query_start(), p.data_day, p.data_day_end(), p.query_end()),
            (day(1), day(22), day(23), day(24))
        );
        assert_eq!(
            p.forecast_period(),
            Some((day(24), NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()))
        );
        // On the first of a month the data day lies in the previous month.
        let first = Period::new(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(), 1);
        assert_eq!(first.query_start(), day(30));
        assert_eq!(
            first.month_start(),
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
        );
        assert_eq!(
            first.query_end(),
            NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()
        );
        assert_eq!(
            first.next_month_start(),
            NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()
        );
        // Nothing is left to forecast on the last day of a month.
        assert_eq!(Period::new(day(30), 1).forecast_period(), None);
    }

    #[test]
    fn costs_encode_once_for_both_formats() {
        let i = integration(&[CostBasis::Unblended, CostBasis::Amortized]);
        let snap = IntegrationSnapshot::build(
            &i,
            &RefreshData::new(sample_costs()),
            Period::new(day(23), 1),
            None,
        );
        assert_eq!(lines(snap.text(&DAILY)), 6);
        assert_eq!(lines(snap.text(&MONTH_TO_DATE)), 6);
        let s3 = |basis: &'static str| {
            [
                ("account_id", "111111111111"),
                ("aws_service", "Amazon S3"),
                ("cost_basis", basis),
            ]
        };
        assert_eq!(find(snap.text(&DAILY), &s3("unblended")), Some(0.5));
        assert_eq!(find(snap.text(&MONTH_TO_DATE), &s3("amortized")), Some(3.0));
        assert_eq!(
            find(snap.text(&ESTIMATED), &[("period", "daily")]),
            Some(0.0)
        );
        assert_eq!(
            find(snap.text(&ESTIMATED), &[("period", "month_to_date")]),
            Some(1.0)
        );
        assert_eq!(
            find(snap.text(&SERIES), &[("metric", "aws_cost_daily_usd")]),
            Some(6.0)
        );
        assert_eq!(
            std::str::from_utf8(snap.text(&ACCOUNT_INFO)).unwrap(),
            "aws_cost_account_info{integration=\"payer\",account_id=\"111111111111\",account_name=\"Prod \\\"main\\\"\"} 1\n\
             aws_cost_account_info{integration=\"payer\",account_id=\"222222222222\",account_name=\"222222222222\"} 1\n",
            "named accounts and accounts with cost"
        );
        assert_eq!(snap.series_count(), 6 + 6 + 1 + 2 + 2 + 2 + 2);

        let store = SnapshotStore::new(vec!["payer".into()]);
        store.publish(Arc::new(snap));
        let rendered = store.rendered();
        let text = String::from_utf8(rendered.run(Format::Classic).plain().concat()).unwrap();
        assert!(text.contains(
            "# HELP aws_cost_daily_usd Cost in USD of the last complete UTC day (see aws_cost_data_day_timestamp_seconds), by account, service and charge type\n# TYPE aws_cost_daily_usd gauge\n\
             aws_cost_daily_usd{integration=\"payer\",account_id=\"111111111111\",account_name=\"Prod \\\"main\\\"\",aws_service=\"Amazon S3\",charge_type=\"Usage\",cost_basis=\"unblended\"} 0.5\n"
        ), "{text}");
        assert!(text.contains(
            "aws_cost_month_to_date_usd{integration=\"payer\",account_id=\"222222222222\",account_name=\"222222222222\",aws_service=\"Amazon S3\",charge_type=\"Credit\",cost_basis=\"amortized\"} -0.25\n"
        ), "{text}");
        assert!(
            text.contains(
                "aws_cost_data_day_timestamp_seconds{integration=\"payer\"} 1795305600\n"
            ),
            "{text}"
        );
        // Families without samples (forecast off, no budgets) have no header.
        assert!(!text.contains("aws_cost_budget_usd"));
        // OpenMetrics differs only by its header lines.
        let om = String::from_utf8(rendered.run(Format::OpenMetrics).plain().concat()).unwrap();
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
        assert!(om.contains("# TYPE aws_cost_daily_usd gauge\n# UNIT aws_cost_daily_usd usd\n"));
        // The gzip member decodes to the same text.
        let gzip = rendered.run(Format::Classic).gzip().concat();
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);
    }

    #[test]
    fn forecasts_and_budgets() {
        let mut i = integration(&[CostBasis::Unblended]);
        i.budgets = vec![
            Budget {
                name: "all".into(),
                monthly_usd: 10.0,
                accounts: vec![],
                services: vec![],
                cost_basis: CostBasis::Unblended,
            },
            Budget {
                name: "s3-main".into(),
                monthly_usd: 1.0,
                accounts: vec!["111111111111".into()],
                services: vec!["Amazon S3".into()],
                cost_basis: CostBasis::Unblended,
            },
        ];
        let mut costs = CostData::new(1);
        costs
            .month
            .add(["111111111111", "Amazon S3", "Usage"], &[1.75]);
        costs.month.add(["111111111111", "Tax", "Tax"], &[0.1]);
        costs
            .month
            .add(["222222222222", "Amazon S3", "Credit"], &[-0.25]);
        let mut data = RefreshData::new(costs);
        let rest = ForecastValue {
            mean: 10.0,
            lower: Some(8.0),
            upper: Some(12.0),
        };
        data.forecasts.insert(CostBasis::Unblended, Some(rest));
        data.budget_forecasts
            .insert("s3-main".into(), Some(ForecastValue { mean: 2.0, ..rest }));
        let snap = IntegrationSnapshot::build(&i, &data, Period::new(day(23), 1), None);
        // Month to date: 1.75 + 0.1 - 0.25 = 1.6.
        assert_eq!(find(snap.text(&FORECAST), &[]), Some(1.6 + 10.0));
        assert_eq!(find(snap.text(&FORECAST_LOWER), &[]), Some(1.6 + 8.0));
        assert_eq!(find(snap.text(&FORECAST_UPPER), &[]), Some(1.6 + 12.0));
        assert_eq!(
            find(snap.text(&BUDGET), &[("budget", "s3-main")]),
            Some(1.0)
        );
        assert_eq!(
            find(snap.text(&BUDGET_MONTH_TO_DATE), &[("budget", "s3-main")]),
            Some(1.75)
        );
        assert_eq!(
            find(snap.text(&BUDGET_FORECAST), &[("budget", "s3-main")]),
            Some(3.75)
        );
        assert_eq!(
            find(snap.text(&BUDGET_MONTH_TO_DATE), &[("budget", "all")]),
            Some(1.6)
        );
        assert_eq!(
            find(snap.text(&BUDGET_FORECAST), &[("budget", "all")]),
            Some(11.6)
        );

        // The last day: nothing left to forecast, the forecast is month to date.
        data.forecasts.insert(CostBasis::Unblended, None);
        data.budget_forecasts.insert("s3-main".into(), None);
        let last = IntegrationSnapshot::build(&i, &data, Period::new(day(30), 1), None);
        assert_eq!(
            find(last.text(&BUDGET_FORECAST), &[("budget", "s3-main")]),
            Some(1.75)
        );
        assert_eq!(find(last.text(&FORECAST), &[]), Some(1.6));
        assert!(last.text(&FORECAST_LOWER).is_empty());
    }

    #[test]
    fn failed_parts_keep_the_last_encoded_series() {
        let mut i = integration(&[CostBasis::Unblended]);
        i.tags = vec!["team".into()];
        i.max_tag_series = 1;
        let mut tags = TagData {
            daily: Table::new(1),
            month: Table::new(1),
            account_names: BTreeMap::new(),
            requests: 2,
        };
        tags.daily.add(["111111111111", "team", "web"], &[2.0]);
        tags.daily.add(["111111111111", "team", ""], &[1.0]);
        tags.month.add(["111111111111", "team", "web"], &[5.0]);
        let mut data = RefreshData::new(CostData::new(1));
        data.tags = Some(tags);
        let period = Period::new(day(23), 1);
        let first = IntegrationSnapshot::build(&i, &data, period, None);
        assert_eq!(
            std::str::from_utf8(first.text(&TAG_DAILY)).unwrap(),
            "aws_cost_tag_daily_usd{integration=\"payer\",account_id=\"111111111111\",account_name=\"111111111111\",tag_key=\"team\",tag_value=\"__other__\",cost_basis=\"unblended\"} 1\n\
             aws_cost_tag_daily_usd{integration=\"payer\",account_id=\"111111111111\",account_name=\"111111111111\",tag_key=\"team\",tag_value=\"web\",cost_basis=\"unblended\"} 2\n"
        );
        let metric = [("metric", "aws_cost_tag_daily_usd")];
        assert_eq!(find(first.text(&SERIES_DROPPED), &metric), Some(1.0));
        // The tag queries fail next time: the last tag series stay, with their counts.
        data.tags = None;
        let second = IntegrationSnapshot::build(&i, &data, period, Some(&first));
        assert_eq!(second.text(&TAG_DAILY), first.text(&TAG_DAILY));
        assert_eq!(
            second.text(&TAG_MONTH_TO_DATE),
            first.text(&TAG_MONTH_TO_DATE)
        );
        assert_eq!(find(second.text(&SERIES), &metric), Some(2.0));
        assert_eq!(find(second.text(&SERIES_DROPPED), &metric), Some(1.0));
        // Without a last snapshot there is nothing to keep.
        let alone = IntegrationSnapshot::build(&i, &data, period, None);
        assert!(alone.text(&TAG_DAILY).is_empty());
    }

    #[test]
    fn families_stay_contiguous_across_integrations() {
        let store = SnapshotStore::new(vec!["a".into(), "b".into()]);
        let mut costs = CostData::new(1);
        costs.daily.add(["111111111111", "S3", "Usage"], &[1.0]);
        costs.month.add(["111111111111", "S3", "Usage"], &[1.0]);
        let data = RefreshData::new(costs);
        for name in ["b", "a"] {
            let i = Integration::new(name, "111111111111");
            store.publish(Arc::new(IntegrationSnapshot::build(
                &i,
                &data,
                Period::new(day(23), 1),
                None,
            )));
        }
        let rendered = store.rendered();
        let text = String::from_utf8(rendered.run(Format::OpenMetrics).plain().concat()).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('{').next().unwrap())
            .collect();
        let mut deduped = names.clone();
        deduped.dedup();
        assert_eq!(
            deduped,
            vec![
                DAILY.name,
                MONTH_TO_DATE.name,
                DATA_DAY.name,
                ESTIMATED.name,
                ACCOUNT_INFO.name,
                SERIES.name,
                SERIES_DROPPED.name
            ]
        );
        // Config order, not publish order.
        assert!(text.find("integration=\"a\"").unwrap() < text.find("integration=\"b\"").unwrap());
    }
}
