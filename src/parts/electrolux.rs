//! The metrics of an electrolux-oss/aws-cost-exporter file (see [`crate::electrolux`]), each a
//! family of its own name with electrolux's labels and values: for each target account, the
//! account's keys, the iterated dimension's value and alias, each group's value and alias, and
//! `ChargeType="Usage"`.
//!
//! The requests are electrolux's, shared: per metric one `GetCostAndUsage` over its period
//! (`DAILY`: the day before `today - data_delay_days`; `MONTHLY`: from the first of that day's
//! month through it) grouped by its keys under its filter (`RECORD_TYPE` in its record types,
//! its tag filters, its static dimension filters), one per value of an iterated dimension,
//! each paged to its end; metrics that ask the same question (period, grouping, filter) share
//! one request, with all of their metric types. Every refresh; when it fails, the last series
//! stay (electrolux clears them).

use std::collections::HashMap;

use super::{Cx, Encoding, Keys, Out, Part, PartError};
use crate::cost_explorer::{Granularity, GroupKey, Query};
use crate::exposition::{FamilyDesc, NamedFamily};
use crate::model::{
    CostBasis, ElectroluxAlias, ElectroluxMetric, FilterExpr, Integration, KeyKind,
};
use crate::schema::{ConfigError, NativeIntegration};
use crate::snapshot::{Identity, Lines};
use crate::storage::Fingerprint;
use chrono::{Datelike, Days, NaiveDate};

pub struct Electrolux;

/// One query's groups: their keys, and one amount per metric type asked.
type Rows = Vec<(Vec<String>, Vec<f64>)>;

/// What one refresh fetched: the distinct queries' rows, and for each metric and each value
/// it iterates over (or once), which query answers it and at which metric type.
pub struct Fetched {
    rows: Vec<Rows>,
    /// `answers[metric][value]`: (query, metric type's index).
    answers: Vec<Vec<(usize, usize)>>,
}

impl Part for Electrolux {
    const NAME: &'static str = "electrolux";
    const FAMILIES: &'static [FamilyDesc] = &[];
    type Fetched = Fetched;
    type Kept = ();

    fn enabled(integration: &Integration) -> bool {
        integration
            .electrolux
            .as_ref()
            .is_some_and(|e| !e.metrics.is_empty())
    }

    /// Only an electrolux-shaped file has these metrics ([`crate::electrolux`]).
    fn configure(
        _raw: &NativeIntegration,
        _keys: &Keys<'_>,
        _into: &mut Integration,
    ) -> Result<(), ConfigError> {
        Ok(())
    }

    /// The account, and every target and metric.
    fn fingerprint(integration: &Integration, _data_delay_days: u32, print: &mut Fingerprint) {
        print.str(&integration.account_id);
        if let Some(electrolux) = &integration.electrolux {
            print.str(&format!("{electrolux:?}"));
        }
    }

    fn named(integration: &Integration) -> Vec<NamedFamily> {
        integration
            .electrolux
            .iter()
            .flat_map(|e| &e.metrics)
            .map(|m| NamedFamily {
                name: m.name.clone(),
                help: m.help.clone(),
            })
            .collect()
    }

    async fn fetch(cx: &Cx<'_>, _kept: &()) -> Result<Fetched, PartError> {
        let Some(electrolux) = &cx.integration.electrolux else {
            return Ok(Fetched {
                rows: Vec::new(),
                answers: Vec::new(),
            });
        };
        let today = cx.now.date_naive();
        // The distinct queries, each with the metric types it asks for.
        let mut queries: Vec<(Query, Vec<CostBasis>)> = Vec::new();
        let mut answers = Vec::with_capacity(electrolux.metrics.len());
        for metric in &electrolux.metrics {
            let mut of_metric = Vec::new();
            for value in iterated(metric) {
                let query = query(metric, today, value);
                let index = match queries.iter().position(|(q, _)| *q == query) {
                    Some(index) => index,
                    None => {
                        queries.push((query, Vec::new()));
                        queries.len() - 1
                    }
                };
                let bases = &mut queries[index].1;
                let basis = match bases.iter().position(|b| *b == metric.metric_type) {
                    Some(basis) => basis,
                    None => {
                        bases.push(metric.metric_type);
                        bases.len() - 1
                    }
                };
                of_metric.push((index, basis));
            }
            answers.push(of_metric);
        }
        let ce = &cx.clients.cost_explorer;
        let mut rows = Vec::with_capacity(queries.len());
        for (query, bases) in &queries {
            let mut groups: Rows = Vec::new();
            ce.query_period(query, bases, |keys, amounts| {
                groups.push((
                    keys.iter().map(|k| k.to_string()).collect(),
                    amounts.to_vec(),
                ));
            })
            .await
            .map_err(|err| PartError::new(&format!("{query}"), &err))?;
            rows.push(groups);
        }
        Ok(Fetched { rows, answers })
    }

    fn encode(cx: &Encoding<'_>, fetched: Option<&Fetched>, _kept: &(), out: &mut Out<'_>) {
        let (Some(fetched), Some(electrolux)) = (fetched, &cx.integration.electrolux) else {
            return out.keep();
        };
        for (index, (metric, answers)) in
            electrolux.metrics.iter().zip(&fetched.answers).enumerate()
        {
            let identities: Vec<Identity> = electrolux
                .targets
                .iter()
                .map(|target| Identity::labels(target))
                .collect();
            let Some(first) = identities.first() else {
                continue;
            };
            let mut lines = Lines::named(&metric.name, first);
            for identity in &identities {
                lines.set_identity(identity);
                let mut series = Series::default();
                for (value, (query, basis)) in iterated(metric).zip(answers) {
                    let rows = fetched.rows.get(*query).map_or(&[][..], Vec::as_slice);
                    series.add_query(metric, value, rows, *basis);
                }
                for (labels, amount) in &series.rows {
                    let labels: Vec<(&str, &str)> = labels
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    lines.sample(&labels, *amount);
                }
            }
            out.set_named(index, lines.block(0));
        }
    }
}

/// The values a metric's queries iterate over: each of its iterated dimension's, or one query.
fn iterated(metric: &ElectroluxMetric) -> impl Iterator<Item = Option<&str>> {
    let values: Vec<Option<&str>> = match &metric.iterate {
        Some(iterate) => iterate.values.iter().map(|v| Some(v.as_str())).collect(),
        None => vec![None],
    };
    values.into_iter()
}

/// The metric's question for one iterated value (if any), on `today`.
fn query(metric: &ElectroluxMetric, today: NaiveDate, value: Option<&str>) -> Query {
    let day = today - Days::new(u64::from(metric.data_delay_days));
    let (granularity, range) = if metric.monthly {
        (
            Granularity::Monthly,
            (day.with_day(1).unwrap_or(day), day + Days::new(1)),
        )
    } else {
        (Granularity::Daily, (day - Days::new(1), day))
    };
    let group_by = metric
        .groups
        .iter()
        .map(|g| GroupKey::of(g.kind, &g.key))
        .collect();
    let filter = match (value, &metric.iterate) {
        (Some(value), Some(iterate)) => {
            let only = FilterExpr::Values {
                kind: KeyKind::Dimension,
                key: iterate.key.clone(),
                values: vec![value.to_string()],
                match_options: Vec::new(),
            };
            match &metric.filter {
                FilterExpr::And(operands) => {
                    FilterExpr::And(operands.iter().cloned().chain([only]).collect())
                }
                other => FilterExpr::And(vec![other.clone(), only]),
            }
        }
        _ => metric.filter.clone(),
    };
    Query::cost(granularity, range, group_by, Vec::new()).with_expression(Some(filter))
}

/// One target's series of a metric as electrolux sets them: by label set, a later value
/// replacing an earlier one in its place.
#[derive(Default)]
struct Series {
    rows: Vec<(Vec<(String, String)>, f64)>,
    at: HashMap<Vec<(String, String)>, usize>,
}

impl Series {
    fn set(&mut self, labels: Vec<(String, String)>, amount: f64) {
        match self.at.get(&labels) {
            Some(i) => self.rows[*i].1 = amount,
            None => {
                self.at.insert(labels.clone(), self.rows.len());
                self.rows.push((labels, amount));
            }
        }
    }

    /// One query's groups (for the iterated `value`, if any): each a series, or, below the
    /// merge threshold, part of one merged series set after them when its sum is positive.
    fn add_query(
        &mut self,
        metric: &ElectroluxMetric,
        value: Option<&str>,
        rows: &[(Vec<String>, Vec<f64>)],
        basis: usize,
    ) {
        let mut base: Vec<(String, String)> = Vec::new();
        if let (Some(value), Some(iterate)) = (value, &metric.iterate) {
            base.push((iterate.label.clone(), value.to_string()));
            if let Some(alias) = &iterate.alias {
                base.push((
                    alias.label.clone(),
                    aliased(alias, value).unwrap_or_default(),
                ));
            }
        }
        let charge_type = ("ChargeType".to_string(), "Usage".to_string());
        if metric.groups.is_empty() {
            for (_, amounts) in rows {
                let mut labels = base.clone();
                labels.push(charge_type.clone());
                self.set(labels, amounts.get(basis).copied().unwrap_or_default());
            }
            return;
        }
        let mut merged = 0.0;
        for (keys, amounts) in rows {
            let cost = amounts.get(basis).copied().unwrap_or_default();
            if let Some((threshold, _)) = &metric.merge_minor_cost
                && cost < *threshold
            {
                merged += cost;
                continue;
            }
            let mut labels = base.clone();
            for (group, key) in metric.groups.iter().zip(keys) {
                let value = match group.kind {
                    // The text between the first `$` and the next: `team$web` is `web`.
                    KeyKind::Tag => key.split('$').nth(1).unwrap_or_default(),
                    // Dimensions as they are, and cost categories as `Name$value`.
                    KeyKind::Dimension | KeyKind::CostCategory => key.as_str(),
                };
                labels.push((group.label.clone(), value.to_string()));
                if let Some(alias) = &group.alias {
                    labels.push((
                        alias.label.clone(),
                        aliased(alias, value).unwrap_or_default(),
                    ));
                }
            }
            labels.push(charge_type.clone());
            self.set(labels, cost);
        }
        if let Some((_, other)) = &metric.merge_minor_cost
            && merged > 0.0
        {
            let mut labels = base;
            for group in &metric.groups {
                labels.push((group.label.clone(), other.clone()));
                if let Some(alias) = &group.alias {
                    // Electrolux sets the merged series only when the alias maps its value.
                    match aliased(alias, other) {
                        Some(mapped) => labels.push((alias.label.clone(), mapped)),
                        None => return,
                    }
                }
            }
            labels.push(charge_type);
            self.set(labels, merged);
        }
    }
}

fn aliased(alias: &ElectroluxAlias, value: &str) -> Option<String> {
    alias.map.get(value).cloned()
}
