//! Anomalies: AWS Cost Anomaly Detection's anomalies of the last 90 days, every monitor
//! (`anomalies: true`). The largest `max_anomaly_series` by impact are served; the rest are
//! counted as dropped. When it fails, its last series stay.
//!
//! `GetAnomalies` (paged by `NextPageToken`) is asked every refresh, from 90 days before
//! today (the longest AWS keeps); `GetAnomalyMonitors` names the monitors and is asked once a
//! UTC day, or sooner when an anomaly names a monitor it has not seen.
//!
//! With change detection ([`crate::change`]) it keeps its own cadence: it runs in every full
//! refresh, and in a refresh whose check found the cost data unchanged once its last fetch
//! is a `refresh_interval` old (less the scheduler's jitter), so that checking every hour does
//! not ask for anomalies every hour.
//!
//! An anomaly's service and account are those of its root cause with the largest
//! contribution (the first one when AWS gives no contributions). It is open while it has no
//! end date, or its end date is today.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_costexplorer::types::{AnomalyDateInterval, RootCause};
use chrono::{DateTime, Days, NaiveDate, Utc};

use super::costs::midnight;
use super::{Cx, Encoding, Keys, Out, Part, PartError, Scope};
use crate::cost_explorer::{CostExplorer, CostExplorerError, Tokens, api_error, parse_date};
use crate::exposition::FamilyDesc;
use crate::model::{DEFAULT_MAX_ANOMALY_SERIES, Integration};
use crate::schema::{ConfigError, NativeIntegration, positive};
use crate::snapshot::{Identity, Lines, gauge};
use crate::storage::Fingerprint;

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

/// The families the anomaly queries fill.
pub const FAMILIES: [FamilyDesc; 5] = [
    ANOMALY_IMPACT,
    ANOMALY_OPEN,
    ANOMALY_MAX_SCORE,
    ANOMALY_START,
    ANOMALIES,
];

/// The anomalies part.
pub struct Anomalies;

/// The anomaly monitors' names as last fetched: the UTC day, and every monitor ARN known then
/// (named or not): a new ARN fetches them again.
#[derive(Debug, Clone)]
pub struct Monitors {
    pub day: NaiveDate,
    pub names: BTreeMap<String, String>,
    pub known: BTreeSet<String>,
}

/// What the part keeps: the monitors' names, and when it last fetched.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    pub monitors: Option<Monitors>,
    pub fetched_at: Option<DateTime<Utc>>,
}

/// One fetch: the anomalies with their monitors' names, and the names when they were asked.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub data: AnomalyData,
    pub monitors: Option<Monitors>,
}

impl Part for Anomalies {
    const NAME: &'static str = "anomalies";
    const FAMILIES: &'static [FamilyDesc] = &FAMILIES;
    const COUNTED: &'static [FamilyDesc] = &[ANOMALY_IMPACT];
    const OWN_CADENCE: bool = true;
    type Fetched = Fetched;
    type Kept = Kept;

    fn enabled(integration: &Integration) -> bool {
        integration.anomalies
    }

    /// `anomalies` (default off) and `max_anomaly_series`.
    fn configure(
        raw: &NativeIntegration,
        keys: &Keys<'_>,
        into: &mut Integration,
    ) -> Result<(), ConfigError> {
        into.anomalies = raw.anomalies.unwrap_or(false);
        into.max_anomaly_series = positive(
            &keys.key("max_anomaly_series"),
            &raw.max_anomaly_series,
            DEFAULT_MAX_ANOMALY_SERIES,
        )?;
        Ok(())
    }

    fn fingerprint(integration: &Integration, _data_delay_days: u32, print: &mut Fingerprint) {
        print.str(&integration.account_id);
        print.u64(integration.max_anomaly_series as u64);
    }

    /// The anomalies of the last 90 days, and the names of their monitors (asked once a day,
    /// or again when an anomaly names a monitor not known then).
    /// Every full refresh; after an unchanged check, once a refresh interval (less jitter)
    /// after its last fetch.
    fn due(cx: &Cx<'_>, kept: &Kept) -> bool {
        let interval = cx
            .integration
            .refresh_interval
            .mul_f64(1.0 - crate::model::JITTER);
        cx.scope != Scope::Unchanged
            || kept
                .fetched_at
                .is_none_or(|at| (cx.now - at).to_std().is_ok_and(|age| age >= interval))
    }

    async fn fetch(cx: &Cx<'_>, kept: &Kept) -> Result<Fetched, PartError> {
        let ce = &cx.clients.cost_explorer;
        let today = cx.now.date_naive();
        let anomalies = ce
            .anomalies(today)
            .await
            .map_err(|err| PartError::new("anomalies", &err))?;
        let cached = kept.monitors.as_ref().filter(|cached| {
            cached.day == today
                && anomalies
                    .iter()
                    .all(|a| cached.known.contains(&a.monitor_arn))
        });
        let (names, monitors) = match cached {
            Some(cached) => (cached.names.clone(), None),
            None => {
                let names = ce
                    .anomaly_monitors()
                    .await
                    .map_err(|err| PartError::new("anomaly monitors", &err))?;
                let mut known: BTreeSet<String> = names.keys().cloned().collect();
                known.extend(anomalies.iter().map(|a| a.monitor_arn.clone()));
                let monitors = Monitors {
                    day: today,
                    names: names.clone(),
                    known,
                };
                (names, Some(monitors))
            }
        };
        Ok(Fetched {
            data: AnomalyData {
                today,
                anomalies,
                monitors: names,
            },
            monitors,
        })
    }

    fn remember(cx: &Cx<'_>, fetched: &Fetched, kept: &mut Kept) {
        if let Some(monitors) = &fetched.monitors {
            kept.monitors = Some(monitors.clone());
        }
        kept.fetched_at = Some(cx.now);
    }

    fn encode(cx: &Encoding<'_>, fetched: Option<&Fetched>, _kept: &Kept, out: &mut Out<'_>) {
        match fetched {
            Some(fetched) => encode_anomalies(
                cx.identity,
                &fetched.data,
                cx.integration.max_anomaly_series,
                out,
            ),
            None => out.keep(),
        }
    }
}

/// How far back anomalies are asked for.
pub const ANOMALY_DAYS: u64 = 90;

/// One anomaly, as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub id: String,
    pub monitor_arn: String,
    /// Of the root cause with the largest contribution; empty when AWS names none.
    pub service: String,
    pub account_id: String,
    /// Total impact in USD (actual minus expected spend).
    pub impact_usd: f64,
    pub max_score: f64,
    pub start: NaiveDate,
    pub end: Option<NaiveDate>,
}

impl Anomaly {
    /// Whether it is still open on `today`.
    pub fn is_open(&self, today: NaiveDate) -> bool {
        self.end.is_none_or(|end| end >= today)
    }
}

/// The anomalies of one refresh, with the names of the monitors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnomalyData {
    pub today: NaiveDate,
    pub anomalies: Vec<Anomaly>,
    /// Monitor ARN to name: every monitor, including those without anomalies.
    pub monitors: BTreeMap<String, String>,
}

impl AnomalyData {
    /// The name of a monitor, or its ARN when AWS did not name it.
    pub fn monitor_name<'a>(&'a self, arn: &'a str) -> &'a str {
        self.monitors.get(arn).map_or(arn, String::as_str)
    }
}

/// The root cause that explains most of an anomaly.
fn main_cause(causes: &[RootCause]) -> Option<&RootCause> {
    causes
        .iter()
        .enumerate()
        .max_by(|(i, a), (j, b)| {
            let contribution = |c: &RootCause| c.impact().map_or(0.0, |i| i.contribution());
            contribution(a)
                .total_cmp(&contribution(b))
                // The first of equals wins.
                .then(j.cmp(i))
        })
        .map(|(_, cause)| cause)
}

impl CostExplorer {
    /// The anomalies that started in the 90 days before `today`.
    pub async fn anomalies(&self, today: NaiveDate) -> Result<Vec<Anomaly>, CostExplorerError> {
        const OP: &str = "GetAnomalies";
        let start = today - Days::new(ANOMALY_DAYS);
        let interval = AnomalyDateInterval::builder()
            .start_date(start.format("%Y-%m-%d").to_string())
            .build()
            .map_err(|e| CostExplorerError::Malformed(e.to_string()))?;
        let mut found = Vec::new();
        let mut tokens = Tokens::new(OP);
        let mut token = None;
        loop {
            let out = self
                .client()
                .get_anomalies()
                .date_interval(interval.clone())
                .set_next_page_token(token)
                .send()
                .await
                .map_err(|e| api_error(OP, e))?;
            for anomaly in out.anomalies() {
                let cause = main_cause(anomaly.root_causes());
                let start = anomaly.anomaly_start_date().ok_or_else(|| {
                    CostExplorerError::Malformed(format!(
                        "anomaly {} has no AnomalyStartDate",
                        anomaly.anomaly_id()
                    ))
                })?;
                let end = anomaly
                    .anomaly_end_date()
                    .filter(|e| !e.is_empty())
                    .map(parse_date)
                    .transpose()?;
                let impact = anomaly.impact().map_or(0.0, |i| i.total_impact());
                if !impact.is_finite() {
                    return Err(CostExplorerError::BadAmount {
                        metric: "TotalImpact".into(),
                        amount: impact.to_string(),
                    });
                }
                found.push(Anomaly {
                    id: anomaly.anomaly_id().to_string(),
                    monitor_arn: anomaly.monitor_arn().to_string(),
                    service: cause
                        .and_then(RootCause::service)
                        .unwrap_or_default()
                        .to_string(),
                    account_id: cause
                        .and_then(RootCause::linked_account)
                        .unwrap_or_default()
                        .to_string(),
                    impact_usd: impact,
                    max_score: anomaly.anomaly_score().map_or(0.0, |s| s.max_score()),
                    start: parse_date(start)?,
                    end,
                });
            }
            match tokens.next(out.next_page_token())? {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// Every anomaly monitor's ARN and name.
    pub async fn anomaly_monitors(&self) -> Result<BTreeMap<String, String>, CostExplorerError> {
        const OP: &str = "GetAnomalyMonitors";
        let mut monitors = BTreeMap::new();
        let mut tokens = Tokens::new(OP);
        let mut token = None;
        loop {
            let out = self
                .client()
                .get_anomaly_monitors()
                .set_next_page_token(token)
                .send()
                .await
                .map_err(|e| api_error(OP, e))?;
            for monitor in out.anomaly_monitors() {
                if let Some(arn) = monitor.monitor_arn() {
                    monitors.insert(arn.to_string(), monitor.monitor_name().to_string());
                }
            }
            match tokens.next(out.next_page_token())? {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        Ok(monitors)
    }
}

/// Encodes the anomalies, the largest `max_series` by impact kept (the rest counted as dropped
/// on [`ANOMALY_IMPACT`]), handing each family's block to `set`.
fn encode_anomalies(
    integration: &Identity,
    data: &AnomalyData,
    max_series: usize,
    out: &mut Out<'_>,
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
    out.set(&ANOMALY_IMPACT, impact.block(dropped));
    out.set(&ANOMALY_OPEN, open.block(0));
    out.set(&ANOMALY_MAX_SCORE, score.block(0));
    out.set(&ANOMALY_START, start.block(0));
    out.set(&ANOMALIES, count.block(0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_costexplorer::types::RootCauseImpact;

    fn cause(service: &str, contribution: Option<f64>) -> RootCause {
        let mut b = RootCause::builder().service(service);
        if let Some(c) = contribution {
            b = b.impact(RootCauseImpact::builder().contribution(c).build());
        }
        b.build()
    }

    #[test]
    fn the_main_cause_contributes_most_and_the_first_wins_ties() {
        let causes = [
            cause("a", Some(1.0)),
            cause("b", Some(5.0)),
            cause("c", Some(2.0)),
        ];
        assert_eq!(main_cause(&causes).and_then(|c| c.service()), Some("b"));
        let causes = [cause("a", None), cause("b", None)];
        assert_eq!(main_cause(&causes).and_then(|c| c.service()), Some("a"));
        let causes = [cause("a", Some(3.0)), cause("b", Some(3.0))];
        assert_eq!(main_cause(&causes).and_then(|c| c.service()), Some("a"));
        assert!(main_cause(&[]).is_none());
    }

    #[test]
    fn an_anomaly_is_open_without_an_end_or_ending_today() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let mut a = Anomaly {
            id: "x".into(),
            monitor_arn: "m".into(),
            service: String::new(),
            account_id: String::new(),
            impact_usd: 1.0,
            max_score: 0.5,
            start: day(1),
            end: None,
        };
        assert!(a.is_open(day(23)));
        a.end = Some(day(23));
        assert!(a.is_open(day(23)));
        a.end = Some(day(22));
        assert!(!a.is_open(day(23)));
    }
}
