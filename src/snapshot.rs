//! Typed cost series per integration, built from a refresh's rows, encoded once when built,
//! and the store that swaps them in atomically so that a scrape never waits for AWS and never
//! sees half a refresh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{Datelike, NaiveDate};

use crate::config::{CostBasis, Integration};
use crate::cost_explorer::{CostData, ForecastValue, ResourceRow, TagRow};
use crate::exposition::{FamilyDesc, Format, MetricType, push_sample};

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

/// The cost families, in exposition order.
pub const FAMILIES: [FamilyDesc; 16] = [
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
    SERIES,
    SERIES_DROPPED,
];

/// The label value that stands for everything folded away by a series cap.
pub const OTHER: &str = "__other__";

/// One sample of a family: label pairs after `integration`, and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    /// A label's value ("" when absent).
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }
}

/// The dates a refresh covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Today (UTC) when the refresh ran.
    pub today: NaiveDate,
    /// The day the daily gauges describe.
    pub data_day: NaiveDate,
}

impl Period {
    pub fn new(today: NaiveDate, data_delay_days: u32) -> Self {
        let data_day = today - chrono::Days::new(u64::from(data_delay_days));
        Self { today, data_day }
    }

    /// The first of today's month.
    pub fn month_start(&self) -> NaiveDate {
        self.today.with_day(1).unwrap_or(self.today)
    }

    /// The first of next month.
    pub fn next_month_start(&self) -> NaiveDate {
        let (year, month) = if self.today.month() == 12 {
            (self.today.year() + 1, 1)
        } else {
            (self.today.year(), self.today.month() + 1)
        };
        NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(self.today)
    }

    /// The first day the refresh must query (inclusive).
    pub fn query_start(&self) -> NaiveDate {
        self.month_start().min(self.data_day)
    }

    /// The day after the last day the refresh must query (exclusive, as Cost Explorer's `End`).
    pub fn query_end(&self) -> NaiveDate {
        self.today.succ_opt().unwrap_or(self.today)
    }

    /// The rest of the month to forecast, `[tomorrow, next month)`; `None` on the last day.
    pub fn forecast_period(&self) -> Option<(NaiveDate, NaiveDate)> {
        let tomorrow = self.query_end();
        let end = self.next_month_start();
        (tomorrow < end).then_some((tomorrow, end))
    }

    pub fn in_month_to_date(&self, day: NaiveDate) -> bool {
        day >= self.month_start() && day <= self.today
    }
}

/// Everything one refresh of an integration gathered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshData {
    pub costs: CostData,
    /// Rows per configured tag key.
    pub tags: Vec<(String, Vec<TagRow>)>,
    /// The data day's resource rows.
    pub resources: Vec<ResourceRow>,
    /// Per cost basis, the forecast for the rest of the month (`None`: nothing left to forecast).
    pub forecasts: BTreeMap<CostBasis, Option<ForecastValue>>,
    /// Per filtered budget, the forecast for the rest of the month within its filter.
    pub budget_forecasts: BTreeMap<String, Option<ForecastValue>>,
    /// Account id to name from AWS Organizations (empty unless `organizations: true`).
    pub organization_accounts: BTreeMap<String, String>,
}

/// An integration's cost data as served: immutable, encoded once.
#[derive(Debug, Clone)]
pub struct IntegrationSnapshot {
    pub integration: String,
    pub period: Period,
    /// Samples per family of [`FAMILIES`].
    families: Vec<Vec<Sample>>,
    /// Sample lines per family, the same in both text formats.
    encoded: Vec<String>,
}

/// Label values of a cost series, without `integration` and `cost_basis`; values per basis.
type Keyed = BTreeMap<Vec<String>, Vec<f64>>;

fn add(map: &mut Keyed, key: Vec<String>, amounts: &[f64]) {
    let entry = map.entry(key).or_insert_with(|| vec![0.0; amounts.len()]);
    for (sum, amount) in entry.iter_mut().zip(amounts) {
        *sum += amount;
    }
}

/// Keeps the `max` keys with the largest absolute value (first cost basis; ties by key) and
/// adds the rest into keys whose label at `other_at` is [`OTHER`]. Returns the folded keys count.
pub fn fold(map: Keyed, max: usize, other_at: usize) -> (Keyed, usize) {
    if map.len() <= max {
        return (map, 0);
    }
    let mut ranked: Vec<(Vec<String>, Vec<f64>)> = map.into_iter().collect();
    ranked.sort_by(|(ka, va), (kb, vb)| {
        let a = va.first().copied().unwrap_or_default().abs();
        let b = vb.first().copied().unwrap_or_default().abs();
        b.total_cmp(&a).then_with(|| ka.cmp(kb))
    });
    let folded = ranked.len() - max;
    let mut kept: Keyed = BTreeMap::new();
    let mut others: Keyed = BTreeMap::new();
    for (i, (key, values)) in ranked.into_iter().enumerate() {
        if i < max {
            kept.insert(key, values);
        } else {
            let mut other = key;
            if let Some(slot) = other.get_mut(other_at) {
                *slot = OTHER.to_string();
            }
            add(&mut others, other, &values);
        }
    }
    for (key, values) in others {
        add(&mut kept, key, &values);
    }
    (kept, folded)
}

impl IntegrationSnapshot {
    /// Aggregates a refresh's rows into series, folds capped metrics, and encodes.
    pub fn build(integration: &Integration, data: &RefreshData, period: Period) -> Self {
        let bases = &integration.cost_basis;
        let mut names: BTreeMap<String, String> = data.costs.account_names.clone();
        names.extend(
            data.organization_accounts
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let name_of = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());

        let mut daily = Keyed::new();
        let mut month_to_date = Keyed::new();
        for row in &data.costs.rows {
            let key = vec![
                row.account_id.clone(),
                row.service.clone(),
                row.record_type.clone(),
            ];
            if row.day == period.data_day {
                add(&mut daily, key.clone(), &row.amounts);
            }
            if period.in_month_to_date(row.day) {
                add(&mut month_to_date, key, &row.amounts);
            }
        }
        let mut tag_daily = Keyed::new();
        let mut tag_month_to_date = Keyed::new();
        for (tag_key, rows) in &data.tags {
            for row in rows {
                let key = vec![
                    row.account_id.clone(),
                    tag_key.clone(),
                    row.tag_value.clone(),
                ];
                if row.day == period.data_day {
                    add(&mut tag_daily, key.clone(), &row.amounts);
                }
                if period.in_month_to_date(row.day) {
                    add(&mut tag_month_to_date, key, &row.amounts);
                }
            }
        }
        let mut resources = Keyed::new();
        for row in &data.resources {
            let key = vec![
                row.account_id.clone(),
                row.service.clone(),
                row.resource_id.clone(),
                row.record_type.clone(),
            ];
            add(&mut resources, key, &row.amounts);
        }
        let (tag_daily, tag_daily_dropped) = fold(tag_daily, integration.max_tag_series, 2);
        let (tag_month_to_date, tag_mtd_dropped) =
            fold(tag_month_to_date, integration.max_tag_series, 2);
        let (resources, resources_dropped) = fold(resources, integration.max_resource_series, 2);

        let mut families: Vec<Vec<Sample>> = vec![Vec::new(); FAMILIES.len()];
        let keyed_samples = |map: &Keyed, label_names: &[&'static str]| -> Vec<Sample> {
            let mut out = Vec::with_capacity(map.len() * bases.len());
            for (key, values) in map {
                for (basis, value) in bases.iter().zip(values) {
                    let mut labels: Vec<(&'static str, String)> =
                        Vec::with_capacity(label_names.len() + 2);
                    labels.push(("account_id", key[0].clone()));
                    labels.push(("account_name", name_of(&key[0])));
                    labels.extend(
                        label_names
                            .iter()
                            .zip(&key[1..])
                            .map(|(n, v)| (*n, v.clone())),
                    );
                    labels.push(("cost_basis", basis.as_str().to_string()));
                    out.push(Sample {
                        labels,
                        value: *value,
                    });
                }
            }
            out
        };
        let cost_labels = ["aws_service", "charge_type"];
        let tag_labels = ["tag_key", "tag_value"];
        families[0] = keyed_samples(&daily, &cost_labels);
        families[1] = keyed_samples(&month_to_date, &cost_labels);
        let midnight = period
            .data_day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or_default();
        families[2] = vec![Sample {
            labels: Vec::new(),
            value: midnight as f64,
        }];
        let estimated_daily = data.costs.estimated_days.contains(&period.data_day);
        let estimated_mtd = data
            .costs
            .estimated_days
            .iter()
            .any(|d| period.in_month_to_date(*d));
        families[3] = [("daily", estimated_daily), ("month_to_date", estimated_mtd)]
            .into_iter()
            .map(|(p, flag)| Sample {
                labels: vec![("period", p.to_string())],
                value: f64::from(u8::from(flag)),
            })
            .collect();
        let tags_on = !integration.tags.is_empty();
        let resources_on = !integration.resources.is_empty();
        if tags_on {
            families[4] = keyed_samples(&tag_daily, &tag_labels);
            families[5] = keyed_samples(&tag_month_to_date, &tag_labels);
        }
        if resources_on {
            families[6] = keyed_samples(&resources, &["aws_service", "resource_id", "charge_type"]);
        }

        // Month to date per cost basis, all series: the base of every forecast.
        let mtd_total = |index: usize, covers: &dyn Fn(&[String]) -> bool| -> f64 {
            month_to_date
                .iter()
                .filter(|(key, _)| covers(key))
                .map(|(_, values)| values.get(index).copied().unwrap_or_default())
                .sum()
        };
        let basis_index = |basis: CostBasis| bases.iter().position(|b| *b == basis).unwrap_or(0);
        if integration.forecast {
            for (index, basis) in bases.iter().enumerate() {
                let Some(forecast) = data.forecasts.get(basis) else {
                    continue;
                };
                let mtd = mtd_total(index, &|_| true);
                let labels = vec![("cost_basis", basis.as_str().to_string())];
                let rest = forecast.unwrap_or(ForecastValue {
                    mean: 0.0,
                    lower: None,
                    upper: None,
                });
                families[7].push(Sample {
                    labels: labels.clone(),
                    value: mtd + rest.mean,
                });
                if let Some(lower) = rest.lower {
                    families[8].push(Sample {
                        labels: labels.clone(),
                        value: mtd + lower,
                    });
                }
                if let Some(upper) = rest.upper {
                    families[9].push(Sample {
                        labels,
                        value: mtd + upper,
                    });
                }
            }
        }
        for budget in &integration.budgets {
            let labels = vec![("budget", budget.name.clone())];
            let index = basis_index(budget.cost_basis);
            let mtd = mtd_total(index, &|key| budget.covers(&key[0], &key[1]));
            families[10].push(Sample {
                labels: labels.clone(),
                value: budget.monthly_usd,
            });
            families[11].push(Sample {
                labels: labels.clone(),
                value: mtd,
            });
            let rest = if budget.is_filtered() {
                data.budget_forecasts.get(&budget.name)
            } else {
                data.forecasts.get(&budget.cost_basis)
            };
            if integration.forecast
                && let Some(rest) = rest
            {
                families[12].push(Sample {
                    labels,
                    value: mtd + rest.map_or(0.0, |r| r.mean),
                });
            }
        }
        // Every account with a name or with cost.
        let known: BTreeSet<&String> = names
            .keys()
            .chain(data.costs.rows.iter().map(|r| &r.account_id))
            .collect();
        families[13] = known
            .into_iter()
            .map(|id| Sample {
                labels: vec![("account_id", id.clone()), ("account_name", name_of(id))],
                value: 1.0,
            })
            .collect();
        let mut counted = vec![(DAILY, 0usize, 0usize), (MONTH_TO_DATE, 1, 0)];
        if tags_on {
            counted.push((TAG_DAILY, 4, tag_daily_dropped));
            counted.push((TAG_MONTH_TO_DATE, 5, tag_mtd_dropped));
        }
        if resources_on {
            counted.push((RESOURCE_DAILY, 6, resources_dropped));
        }
        for (family, index, dropped) in counted {
            let labels = vec![("metric", family.name.to_string())];
            let count = families[index].len();
            families[14].push(Sample {
                labels: labels.clone(),
                value: count as f64,
            });
            families[15].push(Sample {
                labels,
                value: (dropped * bases.len()) as f64,
            });
        }

        let encoded = families
            .iter()
            .zip(FAMILIES.iter())
            .map(|(samples, family)| encode(&integration.name, family.name, samples))
            .collect();
        Self {
            integration: integration.name.clone(),
            period,
            families,
            encoded,
        }
    }

    /// The samples of one family.
    pub fn samples(&self, family: &FamilyDesc) -> &[Sample] {
        FAMILIES
            .iter()
            .position(|f| f.name == family.name)
            .and_then(|i| self.families.get(i))
            .map_or(&[], Vec::as_slice)
    }

    /// The number of series this snapshot serves.
    pub fn series_count(&self) -> usize {
        self.families.iter().map(Vec::len).sum()
    }
}

fn encode(integration: &str, name: &str, samples: &[Sample]) -> String {
    let mut out = String::with_capacity(samples.len() * 200);
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(8);
    for sample in samples {
        labels.clear();
        labels.push(("integration", integration));
        labels.extend(sample.labels.iter().map(|(k, v)| (*k, v.as_str())));
        push_sample(&mut out, name, &labels, sample.value);
    }
    out
}

/// The cost families of all integrations, encoded in both formats.
#[derive(Debug, Default)]
pub struct Rendered {
    pub classic: Bytes,
    pub openmetrics: Bytes,
    pub series: usize,
}

impl Rendered {
    pub fn body(&self, format: Format) -> &Bytes {
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
}

impl StoreInner {
    fn render(&self) -> Rendered {
        let ordered: Vec<&Arc<IntegrationSnapshot>> = self
            .order
            .iter()
            .filter_map(|name| self.snapshots.get(name))
            .collect();
        render(&ordered)
    }
}

impl SnapshotStore {
    pub fn new(order: Vec<String>) -> Self {
        Self {
            inner: Mutex::new(StoreInner {
                order,
                snapshots: BTreeMap::new(),
            }),
            rendered: ArcSwap::from_pointee(Rendered::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Replaces an integration's snapshot and re-renders the combined cost families.
    pub fn publish(&self, snapshot: IntegrationSnapshot) {
        let mut inner = self.inner();
        inner
            .snapshots
            .insert(snapshot.integration.clone(), Arc::new(snapshot));
        self.rendered.store(Arc::new(inner.render()));
    }

    /// Sets the integrations (config order) after a reload, dropping the others' snapshots.
    pub fn set_integrations(&self, order: Vec<String>) {
        let mut inner = self.inner();
        inner.snapshots.retain(|name, _| order.contains(name));
        inner.order = order;
        self.rendered.store(Arc::new(inner.render()));
    }

    /// The current rendering; a scrape clones an `Arc` and writes bytes.
    pub fn rendered(&self) -> Arc<Rendered> {
        self.rendered.load_full()
    }

    /// The current snapshot of one integration.
    pub fn get(&self, integration: &str) -> Option<Arc<IntegrationSnapshot>> {
        self.inner().snapshots.get(integration).cloned()
    }
}

fn render(snapshots: &[&Arc<IntegrationSnapshot>]) -> Rendered {
    let mut classic = String::new();
    let mut openmetrics = String::new();
    for (index, family) in FAMILIES.iter().enumerate() {
        if snapshots.iter().all(|s| s.encoded[index].is_empty()) {
            continue;
        }
        family.write_header(&mut classic, Format::Classic);
        family.write_header(&mut openmetrics, Format::OpenMetrics);
        for snapshot in snapshots {
            classic.push_str(&snapshot.encoded[index]);
            openmetrics.push_str(&snapshot.encoded[index]);
        }
    }
    Rendered {
        classic: Bytes::from(classic),
        openmetrics: Bytes::from(openmetrics),
        series: snapshots.iter().map(|s| s.series_count()).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Budget;
    use crate::cost_explorer::CostRow;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn row(
        d: NaiveDate,
        account: &str,
        service: &str,
        record_type: &str,
        amounts: &[f64],
    ) -> CostRow {
        CostRow {
            day: d,
            account_id: account.into(),
            service: service.into(),
            record_type: record_type.into(),
            amounts: amounts.to_vec(),
        }
    }

    fn integration(bases: &[CostBasis]) -> Integration {
        let mut i = Integration::new("payer", "111111111111");
        i.cost_basis = bases.to_vec();
        i
    }

    fn find(samples: &[Sample], labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| labels.iter().all(|(k, v)| s.label(k) == *v))
            .map(|s| s.value)
    }

    #[test]
    fn period_covers_month_and_data_day() {
        let p = Period::new(day(23), 1);
        assert_eq!(
            (p.query_start(), p.data_day, p.query_end()),
            (day(1), day(22), day(24))
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

    fn sample_data() -> RefreshData {
        let mut costs = CostData {
            rows: vec![
                row(day(21), "111111111111", "Amazon S3", "Usage", &[1.25, 2.0]),
                row(day(22), "111111111111", "Amazon S3", "Usage", &[0.5, 1.0]),
                row(day(22), "111111111111", "Tax", "Tax", &[0.1, 0.1]),
                row(
                    day(22),
                    "222222222222",
                    "Amazon S3",
                    "Credit",
                    &[-0.25, -0.25],
                ),
                row(
                    NaiveDate::from_ymd_opt(2026, 10, 31).unwrap(),
                    "111111111111",
                    "Amazon S3",
                    "Usage",
                    &[99.0, 99.0],
                ),
            ],
            ..CostData::default()
        };
        costs
            .account_names
            .insert("111111111111".into(), "Prod \"main\"".into());
        costs.estimated_days.insert(day(23));
        RefreshData {
            costs,
            ..RefreshData::default()
        }
    }

    #[test]
    fn rows_aggregate_into_daily_and_month_to_date() {
        let i = integration(&[CostBasis::Unblended, CostBasis::Amortized]);
        let snap = IntegrationSnapshot::build(&i, &sample_data(), Period::new(day(23), 1));
        assert_eq!(snap.samples(&DAILY).len(), 6);
        assert_eq!(snap.samples(&MONTH_TO_DATE).len(), 6);
        let s3 = |basis: &'static str| {
            [
                ("account_id", "111111111111"),
                ("aws_service", "Amazon S3"),
                ("cost_basis", basis),
            ]
        };
        assert_eq!(find(snap.samples(&DAILY), &s3("unblended")), Some(0.5));
        assert_eq!(
            find(snap.samples(&MONTH_TO_DATE), &s3("unblended")),
            Some(1.75)
        );
        assert_eq!(
            find(snap.samples(&MONTH_TO_DATE), &s3("amortized")),
            Some(3.0)
        );
        assert_eq!(
            find(
                snap.samples(&DAILY),
                &[("account_id", "222222222222"), ("cost_basis", "amortized")]
            ),
            Some(-0.25)
        );
        assert_eq!(
            find(snap.samples(&ESTIMATED), &[("period", "daily")]),
            Some(0.0)
        );
        assert_eq!(
            find(snap.samples(&ESTIMATED), &[("period", "month_to_date")]),
            Some(1.0)
        );
        assert_eq!(
            find(snap.samples(&SERIES), &[("metric", "aws_cost_daily_usd")]),
            Some(6.0)
        );
        assert_eq!(
            snap.samples(&ACCOUNT_INFO),
            &[
                Sample {
                    labels: vec![
                        ("account_id", "111111111111".into()),
                        ("account_name", "Prod \"main\"".into())
                    ],
                    value: 1.0
                },
                Sample {
                    labels: vec![
                        ("account_id", "222222222222".into()),
                        ("account_name", "222222222222".into())
                    ],
                    value: 1.0
                },
            ],
            "named accounts and accounts with cost"
        );

        let store = SnapshotStore::new(vec!["payer".into()]);
        store.publish(snap);
        let rendered = store.rendered();
        let text = std::str::from_utf8(&rendered.classic).unwrap();
        assert!(text.contains(
            "aws_cost_daily_usd{integration=\"payer\",account_id=\"111111111111\",account_name=\"Prod \\\"main\\\"\",aws_service=\"Amazon S3\",charge_type=\"Usage\",cost_basis=\"unblended\"} 0.5\n"
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
        assert!(text.contains("aws_cost_estimated{integration=\"payer\",period=\"daily\"} 0\n"));
        assert!(
            text.contains("aws_cost_estimated{integration=\"payer\",period=\"month_to_date\"} 1\n")
        );
        // Families without samples (forecast off, no budgets) have no header.
        assert!(!text.contains("aws_cost_budget_usd"));
    }

    #[test]
    fn fold_keeps_the_largest_and_sums_the_rest() {
        let mut map = Keyed::new();
        for (id, value) in [
            ("a", 5.0),
            ("b", -7.0),
            ("c", 1.0),
            ("d", 0.5),
            ("e", -0.25),
        ] {
            add(
                &mut map,
                vec!["acct".into(), "svc".into(), id.into()],
                &[value, value * 2.0],
            );
        }
        add(
            &mut map,
            vec!["acct2".into(), "svc".into(), "f".into()],
            &[0.1, 0.2],
        );
        let (kept, folded) = fold(map.clone(), 2, 2);
        assert_eq!(folded, 4);
        let key = |a: &str, r: &str| vec![a.to_string(), "svc".to_string(), r.to_string()];
        assert_eq!(kept[&key("acct", "b")], vec![-7.0, -14.0]);
        assert_eq!(kept[&key("acct", "a")], vec![5.0, 10.0]);
        assert_eq!(kept[&key("acct", OTHER)], vec![1.25, 2.5]);
        assert_eq!(kept[&key("acct2", OTHER)], vec![0.1, 0.2]);
        assert_eq!(kept.len(), 4);
        let total = |m: &Keyed| m.values().map(|v| v[0]).sum::<f64>();
        assert!((total(&kept) - total(&map)).abs() < 1e-12);
        assert_eq!(fold(map.clone(), 10, 2), (map, 0));
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
        let mut data = sample_data();
        for r in &mut data.costs.rows {
            r.amounts.truncate(1);
        }
        let rest = ForecastValue {
            mean: 10.0,
            lower: Some(8.0),
            upper: Some(12.0),
        };
        data.forecasts.insert(CostBasis::Unblended, Some(rest));
        data.budget_forecasts
            .insert("s3-main".into(), Some(ForecastValue { mean: 2.0, ..rest }));
        let snap = IntegrationSnapshot::build(&i, &data, Period::new(day(23), 1));
        // Month to date: 1.25 + 0.5 + 0.1 - 0.25 = 1.6.
        assert_eq!(find(snap.samples(&FORECAST), &[]), Some(1.6 + 10.0));
        assert_eq!(find(snap.samples(&FORECAST_LOWER), &[]), Some(1.6 + 8.0));
        assert_eq!(find(snap.samples(&FORECAST_UPPER), &[]), Some(1.6 + 12.0));
        assert_eq!(
            find(snap.samples(&BUDGET), &[("budget", "s3-main")]),
            Some(1.0)
        );
        assert_eq!(
            find(
                snap.samples(&BUDGET_MONTH_TO_DATE),
                &[("budget", "s3-main")]
            ),
            Some(1.75)
        );
        assert_eq!(
            find(snap.samples(&BUDGET_FORECAST), &[("budget", "s3-main")]),
            Some(3.75)
        );
        assert_eq!(
            find(snap.samples(&BUDGET_MONTH_TO_DATE), &[("budget", "all")]),
            Some(1.6)
        );
        assert_eq!(
            find(snap.samples(&BUDGET_FORECAST), &[("budget", "all")]),
            Some(11.6)
        );

        // The last day: nothing left to forecast, the forecast is month to date.
        data.forecasts.insert(CostBasis::Unblended, None);
        data.budget_forecasts.insert("s3-main".into(), None);
        let last = IntegrationSnapshot::build(&i, &data, Period::new(day(30), 1));
        let mtd = find(
            last.samples(&MONTH_TO_DATE),
            &[("aws_service", "Amazon S3"), ("account_id", "111111111111")],
        );
        assert_eq!(
            find(last.samples(&BUDGET_FORECAST), &[("budget", "s3-main")]),
            mtd
        );
        assert!(last.samples(&FORECAST_LOWER).is_empty());
    }

    #[test]
    fn families_stay_contiguous_across_integrations() {
        let store = SnapshotStore::new(vec!["a".into(), "b".into()]);
        let data = RefreshData {
            costs: CostData {
                rows: vec![row(day(22), "111111111111", "S3", "Usage", &[1.0])],
                ..CostData::default()
            },
            ..RefreshData::default()
        };
        for name in ["b", "a"] {
            let i = Integration::new(name, "111111111111");
            store.publish(IntegrationSnapshot::build(
                &i,
                &data,
                Period::new(day(23), 1),
            ));
        }
        let rendered = store.rendered();
        let text = std::str::from_utf8(&rendered.openmetrics).unwrap();
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
