//! AWS Cost Anomaly Detection: the anomalies of the last 90 days, every monitor.
//!
//! `GetAnomalies` (paged by `NextPageToken`) is asked every refresh, from 90 days before
//! today (the longest AWS keeps); `GetAnomalyMonitors` names the monitors and is asked once a
//! UTC day, or sooner when an anomaly names a monitor it has not seen.
//!
//! An anomaly's service and account are those of its root cause with the largest
//! contribution (the first one when AWS gives no contributions). It is open while it has no
//! end date, or its end date is today.

use std::collections::BTreeMap;

use aws_sdk_costexplorer::types::{AnomalyDateInterval, RootCause};
use chrono::{Days, NaiveDate};

use crate::cost_explorer::{CostExplorer, CostExplorerError, Tokens, api_error, parse_date};

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
