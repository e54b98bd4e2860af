//! Typed cost series per integration, encoded once when built, and the store that swaps them
//! in atomically so that a scrape never waits for AWS and never sees half a refresh.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{Datelike, NaiveDate};

use crate::config::CostBasis;
use crate::cost_explorer::CostData;
use crate::exposition::{FamilyDesc, Format, MetricType, push_sample};

/// `aws_cost_daily_usd`.
pub const DAILY: FamilyDesc = FamilyDesc {
    name: "aws_cost_daily_usd",
    help: "Cost in USD of the last complete UTC day (see aws_cost_data_day_timestamp_seconds), by account, service and charge type",
    unit: Some("usd"),
    kind: MetricType::Gauge,
};
/// `aws_cost_month_to_date_usd`.
pub const MONTH_TO_DATE: FamilyDesc = FamilyDesc {
    name: "aws_cost_month_to_date_usd",
    help: "Cost in USD from the first of the current UTC month through today, by account, service and charge type",
    unit: Some("usd"),
    kind: MetricType::Gauge,
};
/// `aws_cost_data_day_timestamp_seconds`.
pub const DATA_DAY: FamilyDesc = FamilyDesc {
    name: "aws_cost_data_day_timestamp_seconds",
    help: "Midnight UTC of the day the daily cost gauges describe",
    unit: Some("seconds"),
    kind: MetricType::Gauge,
};
/// `aws_cost_estimated`.
pub const ESTIMATED: FamilyDesc = FamilyDesc {
    name: "aws_cost_estimated",
    help: "1 while AWS marks any of the period's figures Estimated, else 0",
    unit: None,
    kind: MetricType::Gauge,
};

/// The cost families, in exposition order.
pub const FAMILIES: [FamilyDesc; 4] = [DAILY, MONTH_TO_DATE, DATA_DAY, ESTIMATED];

/// One cost series.
#[derive(Debug, Clone, PartialEq)]
pub struct CostSeries {
    pub account_id: String,
    pub account_name: String,
    pub aws_service: String,
    pub charge_type: String,
    pub cost_basis: CostBasis,
    pub value: f64,
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

    /// The first day the refresh must query (inclusive).
    pub fn query_start(&self) -> NaiveDate {
        self.month_start().min(self.data_day)
    }

    /// The day after the last day the refresh must query (exclusive, as Cost Explorer's `End`).
    pub fn query_end(&self) -> NaiveDate {
        self.today.succ_opt().unwrap_or(self.today)
    }

    fn in_month_to_date(&self, day: NaiveDate) -> bool {
        day >= self.month_start() && day <= self.today
    }
}

/// An integration's cost data as served: immutable, encoded once.
#[derive(Debug, Clone)]
pub struct IntegrationSnapshot {
    pub integration: String,
    pub period: Period,
    pub daily: Vec<CostSeries>,
    pub month_to_date: Vec<CostSeries>,
    pub estimated_daily: bool,
    pub estimated_month_to_date: bool,
    /// Sample lines per family of [`FAMILIES`], the same in both text formats.
    encoded: [String; FAMILIES.len()],
}

type SeriesKey = (String, String, String, usize);

impl IntegrationSnapshot {
    /// Aggregates a refresh's rows into series. `bases` is the order of `CostRow::amounts`.
    pub fn build(integration: &str, data: &CostData, bases: &[CostBasis], period: Period) -> Self {
        let mut daily: BTreeMap<SeriesKey, f64> = BTreeMap::new();
        let mut month_to_date: BTreeMap<SeriesKey, f64> = BTreeMap::new();
        for row in &data.rows {
            let is_daily = row.day == period.data_day;
            let is_mtd = period.in_month_to_date(row.day);
            if !is_daily && !is_mtd {
                continue;
            }
            for (index, amount) in row.amounts.iter().enumerate() {
                let key = (
                    row.account_id.clone(),
                    row.service.clone(),
                    row.record_type.clone(),
                    index,
                );
                if is_daily {
                    *daily.entry(key.clone()).or_insert(0.0) += amount;
                }
                if is_mtd {
                    *month_to_date.entry(key).or_insert(0.0) += amount;
                }
            }
        }
        let to_series = |map: BTreeMap<SeriesKey, f64>| -> Vec<CostSeries> {
            map.into_iter()
                .filter_map(|((account_id, service, record_type, index), value)| {
                    let cost_basis = *bases.get(index)?;
                    Some(CostSeries {
                        account_name: data
                            .account_names
                            .get(&account_id)
                            .cloned()
                            .unwrap_or_else(|| account_id.clone()),
                        account_id,
                        aws_service: service,
                        charge_type: record_type,
                        cost_basis,
                        value,
                    })
                })
                .collect()
        };
        let daily = to_series(daily);
        let month_to_date = to_series(month_to_date);
        let estimated_daily = data.estimated_days.contains(&period.data_day);
        let estimated_month_to_date = data
            .estimated_days
            .iter()
            .any(|d| period.in_month_to_date(*d));
        let mut snapshot = Self {
            integration: integration.to_string(),
            period,
            daily,
            month_to_date,
            estimated_daily,
            estimated_month_to_date,
            encoded: Default::default(),
        };
        snapshot.encoded = snapshot.encode();
        snapshot
    }

    /// The number of series this snapshot serves.
    pub fn series_count(&self) -> usize {
        self.daily.len() + self.month_to_date.len() + 3
    }

    fn encode(&self) -> [String; FAMILIES.len()] {
        let cost_lines = |name: &str, series: &[CostSeries]| {
            let mut out = String::with_capacity(series.len() * 200);
            for s in series {
                push_sample(
                    &mut out,
                    name,
                    &[
                        ("integration", &self.integration),
                        ("account_id", &s.account_id),
                        ("account_name", &s.account_name),
                        ("aws_service", &s.aws_service),
                        ("charge_type", &s.charge_type),
                        ("cost_basis", s.cost_basis.as_str()),
                    ],
                    s.value,
                );
            }
            out
        };
        let mut data_day = String::new();
        let midnight = self
            .period
            .data_day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or_default();
        push_sample(
            &mut data_day,
            DATA_DAY.name,
            &[("integration", &self.integration)],
            midnight as f64,
        );
        let mut estimated = String::new();
        for (period, flag) in [
            ("daily", self.estimated_daily),
            ("month_to_date", self.estimated_month_to_date),
        ] {
            push_sample(
                &mut estimated,
                ESTIMATED.name,
                &[("integration", &self.integration), ("period", period)],
                f64::from(u8::from(flag)),
            );
        }
        [
            cost_lines(DAILY.name, &self.daily),
            cost_lines(MONTH_TO_DATE.name, &self.month_to_date),
            data_day,
            estimated,
        ]
    }
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
    /// Integration names in config order, which is exposition order.
    order: Vec<String>,
    snapshots: Mutex<BTreeMap<String, Arc<IntegrationSnapshot>>>,
    rendered: ArcSwap<Rendered>,
}

impl SnapshotStore {
    pub fn new(order: Vec<String>) -> Self {
        Self {
            order,
            snapshots: Mutex::new(BTreeMap::new()),
            rendered: ArcSwap::from_pointee(Rendered::default()),
        }
    }

    /// Replaces an integration's snapshot and re-renders the combined cost families.
    pub fn publish(&self, snapshot: IntegrationSnapshot) {
        // The lock only orders concurrent publishers; scrapes never take it.
        let mut snapshots = match self.snapshots.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        snapshots.insert(snapshot.integration.clone(), Arc::new(snapshot));
        let ordered: Vec<&Arc<IntegrationSnapshot>> = self
            .order
            .iter()
            .filter_map(|name| snapshots.get(name))
            .collect();
        self.rendered.store(Arc::new(render(&ordered)));
    }

    /// The current rendering; a scrape clones an `Arc` and writes bytes.
    pub fn rendered(&self) -> Arc<Rendered> {
        self.rendered.load_full()
    }

    /// The current snapshot of one integration.
    pub fn get(&self, integration: &str) -> Option<Arc<IntegrationSnapshot>> {
        match self.snapshots.lock() {
            Ok(guard) => guard.get(integration).cloned(),
            Err(poisoned) => poisoned.into_inner().get(integration).cloned(),
        }
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

    #[test]
    fn period_covers_month_and_data_day() {
        let p = Period::new(day(23), 1);
        assert_eq!(
            (p.query_start(), p.data_day, p.query_end()),
            (day(1), day(22), day(24))
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
    }

    #[test]
    fn rows_aggregate_into_daily_and_month_to_date() {
        let mut data = CostData {
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
        data.account_names
            .insert("111111111111".into(), "Prod \"main\"".into());
        data.estimated_days.insert(day(23));
        let bases = [CostBasis::Unblended, CostBasis::Amortized];
        let snap = IntegrationSnapshot::build("payer", &data, &bases, Period::new(day(23), 1));
        assert_eq!(snap.daily.len(), 6);
        assert_eq!(snap.month_to_date.len(), 6);
        let find = |series: &[CostSeries], account: &str, service: &str, basis: CostBasis| {
            series
                .iter()
                .find(|s| {
                    s.account_id == account && s.aws_service == service && s.cost_basis == basis
                })
                .map(|s| s.value)
        };
        assert_eq!(
            find(
                &snap.daily,
                "111111111111",
                "Amazon S3",
                CostBasis::Unblended
            ),
            Some(0.5)
        );
        assert_eq!(
            find(
                &snap.month_to_date,
                "111111111111",
                "Amazon S3",
                CostBasis::Unblended
            ),
            Some(1.75)
        );
        assert_eq!(
            find(
                &snap.month_to_date,
                "111111111111",
                "Amazon S3",
                CostBasis::Amortized
            ),
            Some(3.0)
        );
        assert_eq!(
            find(
                &snap.daily,
                "222222222222",
                "Amazon S3",
                CostBasis::Amortized
            ),
            Some(-0.25)
        );
        assert!(!snap.estimated_daily);
        assert!(snap.estimated_month_to_date);

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
        assert_eq!(text.matches("# TYPE").count(), 4);
    }

    #[test]
    fn families_stay_contiguous_across_integrations() {
        let store = SnapshotStore::new(vec!["a".into(), "b".into()]);
        let data = CostData {
            rows: vec![row(day(22), "111111111111", "S3", "Usage", &[1.0])],
            ..CostData::default()
        };
        for name in ["b", "a"] {
            store.publish(IntegrationSnapshot::build(
                name,
                &data,
                &[CostBasis::Unblended],
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
                ESTIMATED.name
            ]
        );
        // Config order, not publish order.
        assert!(text.find("integration=\"a\"").unwrap() < text.find("integration=\"b\"").unwrap());
    }
}
