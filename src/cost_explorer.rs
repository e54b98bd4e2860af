//! Cost Explorer queries: the query plan, paging and response parsing.
//!
//! The exporter needs cost per day by account, service and charge type. `GetCostAndUsage`
//! accepts at most two `GroupBy` keys, so the third dimension must be split into one query per
//! value through a `Filter`. The plan ([`plan_split`]) first asks for the cost by account and
//! record type (one request), then splits on whichever of those two dimensions has fewer
//! values, grouping each query by the other two. That is `1 + min(accounts, record types)`
//! billed requests before pagination, and every cost row lands in exactly one query because the
//! filter values come from the same period's data.
//!
//! This module knows requests and rows, not Prometheus.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use aws_sdk_costexplorer::Client;
use aws_sdk_costexplorer::error::DisplayErrorContext;
use aws_sdk_costexplorer::types::{
    DateInterval, Dimension as SdkDimension, DimensionValues, DimensionValuesWithAttributes,
    Expression, ForecastResult, Granularity, GroupDefinition, GroupDefinitionType, Metric,
    MetricValue, ResultByTime,
};
use chrono::NaiveDate;

use crate::config::CostBasis;

/// The most pages one query may return before the exporter gives up on it.
pub const MAX_PAGES_PER_QUERY: usize = 1000;

/// The dimensions the cost series are broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    LinkedAccount,
    Service,
    RecordType,
}

impl Dimension {
    /// Cost Explorer's name for the dimension.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::LinkedAccount => "LINKED_ACCOUNT",
            Dimension::Service => "SERVICE",
            Dimension::RecordType => "RECORD_TYPE",
        }
    }

    fn sdk(self) -> SdkDimension {
        SdkDimension::from(self.as_str())
    }

    /// The two dimensions other than `self`, in a fixed order.
    pub fn others(self) -> [Dimension; 2] {
        match self {
            Dimension::LinkedAccount => [Dimension::Service, Dimension::RecordType],
            Dimension::Service => [Dimension::LinkedAccount, Dimension::RecordType],
            Dimension::RecordType => [Dimension::LinkedAccount, Dimension::Service],
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum CostExplorerError {
    #[error("Cost Explorer {operation} failed: {message}")]
    Api {
        operation: &'static str,
        message: String,
    },
    #[error(
        "Cost Explorer returned {metric} in {unit:?} (amount {amount}); only USD amounts are supported"
    )]
    NotUsd {
        metric: String,
        unit: String,
        amount: String,
    },
    #[error("Cost Explorer returned an unparsable {metric} amount {amount:?}")]
    BadAmount { metric: String, amount: String },
    #[error("malformed Cost Explorer response: {0}")]
    Malformed(String),
    #[error("Cost Explorer kept returning a NextPageToken after {MAX_PAGES_PER_QUERY} pages")]
    TooManyPages,
}

/// One day's cost for one account, service and record type, per requested cost basis.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    pub day: NaiveDate,
    pub account_id: String,
    pub service: String,
    pub record_type: String,
    /// One amount (USD) per requested cost basis, in the order requested.
    pub amounts: Vec<f64>,
}

/// The result of a refresh's queries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostData {
    pub rows: Vec<CostRow>,
    /// The days AWS marked as Estimated.
    pub estimated_days: BTreeSet<NaiveDate>,
    /// Account id to account name, as Cost Explorer's dimension attributes give it.
    pub account_names: BTreeMap<String, String>,
    /// Billed `GetCostAndUsage` requests (pages) made.
    pub requests: u32,
}

/// The plan for the breakdown queries after discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    /// The dimension filtered on, one query per value.
    pub split: Dimension,
    pub values: Vec<String>,
}

/// Picks the split with the fewest queries: one per account or one per record type.
pub fn plan_split(accounts: &BTreeSet<String>, record_types: &BTreeSet<String>) -> SplitPlan {
    if accounts.len() <= record_types.len() {
        SplitPlan {
            split: Dimension::LinkedAccount,
            values: accounts.iter().cloned().collect(),
        }
    } else {
        SplitPlan {
            split: Dimension::RecordType,
            values: record_types.iter().cloned().collect(),
        }
    }
}

/// What a query groups by: a dimension, or a cost-allocation tag key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKey {
    Dimension(Dimension),
    Tag(String),
}

impl GroupKey {
    fn definition(&self) -> GroupDefinition {
        let (kind, key) = match self {
            GroupKey::Dimension(d) => (GroupDefinitionType::Dimension, d.as_str()),
            GroupKey::Tag(tag) => (GroupDefinitionType::Tag, tag.as_str()),
        };
        GroupDefinition::builder().r#type(kind).key(key).build()
    }
}

/// A filter: each dimension must match one of its values (an empty filter matches everything).
pub type Filter = Vec<(Dimension, Vec<String>)>;

/// The Cost Explorer `Expression` for a filter.
pub fn filter_expression(filter: &[(Dimension, Vec<String>)]) -> Option<Expression> {
    let mut parts: Vec<Expression> = filter
        .iter()
        .map(|(dimension, values)| {
            Expression::builder()
                .dimensions(
                    DimensionValues::builder()
                        .key(dimension.sdk())
                        .set_values(Some(values.clone()))
                        .build(),
                )
                .build()
        })
        .collect();
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Expression::builder().set_and(Some(parts)).build()),
    }
}

/// One grouped, daily cost query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupedQuery {
    pub start: NaiveDate,
    /// Exclusive, as Cost Explorer has it.
    pub end: NaiveDate,
    pub group_by: [GroupKey; 2],
    pub filter: Filter,
}

/// A daily amount for one pair of group keys.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupedAmount {
    pub day: NaiveDate,
    pub keys: [String; 2],
    pub amounts: Vec<f64>,
}

/// All pages of one grouped query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupedResult {
    pub amounts: Vec<GroupedAmount>,
    pub estimated_days: BTreeSet<NaiveDate>,
    pub attributes: HashMap<String, String>,
    pub pages: u32,
}

/// One day's cost for one account and value of a cost-allocation tag.
#[derive(Debug, Clone, PartialEq)]
pub struct TagRow {
    pub day: NaiveDate,
    pub account_id: String,
    /// Empty for untagged cost.
    pub tag_value: String,
    pub amounts: Vec<f64>,
}

/// One day's cost of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRow {
    pub account_id: String,
    pub service: String,
    pub resource_id: String,
    pub record_type: String,
    pub amounts: Vec<f64>,
}

/// A forecast for a period: the mean and, when AWS gives one, the prediction interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastValue {
    pub mean: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

/// The prediction interval level asked of GetCostForecast, in percent.
pub const PREDICTION_INTERVAL_LEVEL: i32 = 80;

/// Requests one page of a daily cost query. `GetCostAndUsage` and
/// `GetCostAndUsageWithResources` take the same parameters and return the same shapes, but
/// through distinct SDK types.
macro_rules! daily_page {
    ($builder:expr, $operation:literal, $period:ident, $metrics:ident, $group_by:ident, $filter:ident, $token:ident) => {{
        let request = $builder
            .time_period($period.clone())
            .granularity(Granularity::Daily)
            .set_metrics(Some($metrics.clone()))
            .set_group_by(Some($group_by.clone()))
            .set_filter($filter.clone())
            .set_next_page_token($token);
        async move {
            let out = request.send().await.map_err(|e| api_error($operation, e))?;
            Ok(Page {
                results: out.results_by_time.unwrap_or_default(),
                attributes: out.dimension_value_attributes.unwrap_or_default(),
                next: out.next_page_token,
            })
        }
    }};
}

/// One page of a cost query.
struct Page {
    results: Vec<ResultByTime>,
    attributes: Vec<DimensionValuesWithAttributes>,
    next: Option<String>,
}

fn api_error(operation: &'static str, err: impl std::error::Error) -> CostExplorerError {
    CostExplorerError::Api {
        operation,
        message: DisplayErrorContext(&err).to_string(),
    }
}

fn date_interval(start: NaiveDate, end: NaiveDate) -> Result<DateInterval, CostExplorerError> {
    DateInterval::builder()
        .start(start.format("%Y-%m-%d").to_string())
        .end(end.format("%Y-%m-%d").to_string())
        .build()
        .map_err(|e| CostExplorerError::Malformed(e.to_string()))
}

/// A Cost Explorer client for one integration.
#[derive(Debug, Clone)]
pub struct CostExplorer {
    client: Client,
}

impl CostExplorer {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Daily cost by account, service and record type for `[start, end)`.
    pub async fn daily_costs(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        bases: &[CostBasis],
    ) -> Result<CostData, CostExplorerError> {
        let discovery = self
            .grouped(
                &GroupedQuery {
                    start,
                    end,
                    group_by: [
                        GroupKey::Dimension(Dimension::LinkedAccount),
                        GroupKey::Dimension(Dimension::RecordType),
                    ],
                    filter: Vec::new(),
                },
                bases,
            )
            .await?;
        let mut data = CostData {
            estimated_days: discovery.estimated_days.clone(),
            requests: discovery.pages,
            ..CostData::default()
        };
        let accounts: BTreeSet<String> = discovery
            .amounts
            .iter()
            .map(|a| a.keys[0].clone())
            .collect();
        let record_types: BTreeSet<String> = discovery
            .amounts
            .iter()
            .map(|a| a.keys[1].clone())
            .collect();
        for account in &accounts {
            if let Some(name) = discovery.attributes.get(account) {
                data.account_names.insert(account.clone(), name.clone());
            }
        }
        let plan = plan_split(&accounts, &record_types);
        let group_by = plan.split.others().map(GroupKey::Dimension);
        for value in plan.values {
            let result = self
                .grouped(
                    &GroupedQuery {
                        start,
                        end,
                        group_by: group_by.clone(),
                        filter: vec![(plan.split, vec![value.clone()])],
                    },
                    bases,
                )
                .await?;
            data.requests += result.pages;
            data.estimated_days.extend(result.estimated_days);
            for (account, name) in result.attributes {
                data.account_names.entry(account).or_insert(name);
            }
            for amount in result.amounts {
                let [first, second] = amount.keys;
                let (account_id, service, record_type) = match plan.split {
                    Dimension::LinkedAccount => (value.clone(), first, second),
                    Dimension::RecordType => (first, second, value.clone()),
                    Dimension::Service => (first, value.clone(), second),
                };
                data.rows.push(CostRow {
                    day: amount.day,
                    account_id,
                    service,
                    record_type,
                    amounts: amount.amounts,
                });
            }
        }
        Ok(data)
    }

    /// Daily cost by account and value of one cost-allocation tag key for `[start, end)`:
    /// one query (and its pages). Untagged cost has an empty tag value.
    pub async fn tag_costs(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        bases: &[CostBasis],
        tag_key: &str,
    ) -> Result<(Vec<TagRow>, GroupedResult), CostExplorerError> {
        let mut result = self
            .grouped(
                &GroupedQuery {
                    start,
                    end,
                    group_by: [
                        GroupKey::Dimension(Dimension::LinkedAccount),
                        GroupKey::Tag(tag_key.to_string()),
                    ],
                    filter: Vec::new(),
                },
                bases,
            )
            .await?;
        let rows = std::mem::take(&mut result.amounts)
            .into_iter()
            .map(|amount| {
                let [account_id, tag] = amount.keys;
                TagRow {
                    day: amount.day,
                    account_id,
                    tag_value: tag_value(&tag).to_string(),
                    amounts: amount.amounts,
                }
            })
            .collect();
        Ok((rows, result))
    }

    /// One day's cost by resource for one service, with GetCostAndUsageWithResources.
    /// `accounts` and `record_types` are those the service had that day: the query splits on
    /// the smaller set, as [`CostExplorer::daily_costs`] does. Returns the rows and the pages.
    pub async fn resource_costs(
        &self,
        day: NaiveDate,
        service: &str,
        accounts: &BTreeSet<String>,
        record_types: &BTreeSet<String>,
        bases: &[CostBasis],
    ) -> Result<(Vec<ResourceRow>, u32), CostExplorerError> {
        let plan = plan_split(accounts, record_types);
        let other = match plan.split {
            Dimension::LinkedAccount => Dimension::RecordType,
            _ => Dimension::LinkedAccount,
        };
        let end = day.succ_opt().unwrap_or(day);
        let period = date_interval(day, end)?;
        let metrics: Vec<String> = bases.iter().map(|b| b.metric().to_string()).collect();
        let group_by = vec![
            resource_id_definition(),
            GroupKey::Dimension(other).definition(),
        ];
        let mut rows = Vec::new();
        let mut pages = 0;
        for value in plan.values {
            let filter = filter_expression(&[
                (Dimension::Service, vec![service.to_string()]),
                (plan.split, vec![value.clone()]),
            ]);
            let result = self
                .pages(bases, |token| {
                    daily_page!(
                        self.client.get_cost_and_usage_with_resources(),
                        "GetCostAndUsageWithResources",
                        period,
                        metrics,
                        group_by,
                        filter,
                        token
                    )
                })
                .await?;
            pages += result.pages;
            for amount in result.amounts.into_iter().filter(|a| a.day == day) {
                let [resource_id, other_value] = amount.keys;
                let (account_id, record_type) = match plan.split {
                    Dimension::LinkedAccount => (value.clone(), other_value),
                    _ => (other_value, value.clone()),
                };
                rows.push(ResourceRow {
                    account_id,
                    service: service.to_string(),
                    resource_id,
                    record_type,
                    amounts: amount.amounts,
                });
            }
        }
        Ok((rows, pages))
    }

    /// AWS's forecast of one cost basis for `[start, end)` (start today or later).
    pub async fn forecast(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        basis: CostBasis,
        filter: &[(Dimension, Vec<String>)],
    ) -> Result<ForecastValue, CostExplorerError> {
        let out = self
            .client
            .get_cost_forecast()
            .time_period(date_interval(start, end)?)
            .metric(Metric::from(basis.forecast_metric()))
            .granularity(Granularity::Monthly)
            .prediction_interval_level(PREDICTION_INTERVAL_LEVEL)
            .set_filter(filter_expression(filter))
            .send()
            .await
            .map_err(|e| api_error("GetCostForecast", e))?;
        let total = out.total().ok_or_else(|| {
            CostExplorerError::Malformed("GetCostForecast returned no Total".into())
        })?;
        let mean = parse_amount(basis.forecast_metric(), total)?;
        let bound =
            |get: fn(&ForecastResult) -> Option<&str>| -> Result<Option<f64>, CostExplorerError> {
                let mut sum = 0.0;
                for result in out.forecast_results_by_time() {
                    let Some(text) = get(result) else {
                        return Ok(None);
                    };
                    sum += parse_number(basis.forecast_metric(), text)?;
                }
                Ok((!out.forecast_results_by_time().is_empty()).then_some(sum))
            };
        Ok(ForecastValue {
            mean,
            lower: bound(ForecastResult::prediction_interval_lower_bound)?,
            upper: bound(ForecastResult::prediction_interval_upper_bound)?,
        })
    }

    /// Runs one grouped query, following `NextPageToken` until the last page.
    pub async fn grouped(
        &self,
        query: &GroupedQuery,
        bases: &[CostBasis],
    ) -> Result<GroupedResult, CostExplorerError> {
        let period = date_interval(query.start, query.end)?;
        let metrics: Vec<String> = bases.iter().map(|b| b.metric().to_string()).collect();
        let group_by: Vec<GroupDefinition> =
            query.group_by.iter().map(GroupKey::definition).collect();
        let filter = filter_expression(&query.filter);
        self.pages(bases, |token| {
            daily_page!(
                self.client.get_cost_and_usage(),
                "GetCostAndUsage",
                period,
                metrics,
                group_by,
                filter,
                token
            )
        })
        .await
    }

    /// Fetches pages until one has no `NextPageToken`, parsing each.
    async fn pages<F, Fut>(
        &self,
        bases: &[CostBasis],
        mut fetch: F,
    ) -> Result<GroupedResult, CostExplorerError>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: Future<Output = Result<Page, CostExplorerError>>,
    {
        let mut result = GroupedResult::default();
        let mut token: Option<String> = None;
        loop {
            if result.pages as usize >= MAX_PAGES_PER_QUERY {
                return Err(CostExplorerError::TooManyPages);
            }
            let page = fetch(token.take()).await?;
            result.pages += 1;
            for by_time in &page.results {
                parse_result_by_time(by_time, bases, &mut result)?;
            }
            for attribute in &page.attributes {
                if let (Some(value), Some(name)) = (
                    attribute.value(),
                    attribute.attributes().and_then(|a| a.get("description")),
                ) && !name.is_empty()
                {
                    result.attributes.insert(value.to_string(), name.clone());
                }
            }
            match page.next {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => break,
            }
        }
        Ok(result)
    }
}

/// Grouping by `RESOURCE_ID`, which only GetCostAndUsageWithResources accepts.
fn resource_id_definition() -> GroupDefinition {
    GroupDefinition::builder()
        .r#type(GroupDefinitionType::Dimension)
        .key("RESOURCE_ID")
        .build()
}

/// The value of a tag group key: Cost Explorer writes `key$value`, and `key$` for untagged.
pub fn tag_value(group_key: &str) -> &str {
    group_key
        .split_once('$')
        .map_or(group_key, |(_, value)| value)
}

fn parse_result_by_time(
    by_time: &ResultByTime,
    bases: &[CostBasis],
    result: &mut GroupedResult,
) -> Result<(), CostExplorerError> {
    let start = by_time
        .time_period()
        .map(|p| p.start())
        .ok_or_else(|| CostExplorerError::Malformed("a result has no TimePeriod".into()))?;
    let day = parse_date(start)?;
    if by_time.estimated() {
        result.estimated_days.insert(day);
    }
    for group in by_time.groups() {
        let keys: [String; 2] = match group.keys() {
            [a, b] => [a.clone(), b.clone()],
            other => {
                return Err(CostExplorerError::Malformed(format!(
                    "a group has {} keys, expected 2",
                    other.len()
                )));
            }
        };
        let metrics = group.metrics().ok_or_else(|| {
            CostExplorerError::Malformed(format!("group {keys:?} has no Metrics"))
        })?;
        result.amounts.push(GroupedAmount {
            day,
            keys,
            amounts: parse_metrics(metrics, bases)?,
        });
    }
    Ok(())
}

/// The amounts for `bases`, in order, from a `Metrics` or `Total` map.
pub fn parse_metrics(
    metrics: &HashMap<String, MetricValue>,
    bases: &[CostBasis],
) -> Result<Vec<f64>, CostExplorerError> {
    bases
        .iter()
        .map(|basis| {
            let value = metrics.get(basis.metric()).ok_or_else(|| {
                CostExplorerError::Malformed(format!(
                    "a group lacks the requested metric {}",
                    basis.metric()
                ))
            })?;
            parse_amount(basis.metric(), value)
        })
        .collect()
}

/// Parses a decimal amount, refusing any unit but USD.
pub fn parse_amount(metric: &str, value: &MetricValue) -> Result<f64, CostExplorerError> {
    let amount = value.amount().unwrap_or_default();
    let unit = value.unit().unwrap_or_default();
    if unit != "USD" {
        return Err(CostExplorerError::NotUsd {
            metric: metric.to_string(),
            unit: unit.to_string(),
            amount: amount.to_string(),
        });
    }
    parse_number(metric, amount)
}

/// Parses a finite decimal number as Cost Explorer writes it.
fn parse_number(metric: &str, amount: &str) -> Result<f64, CostExplorerError> {
    match amount.trim().parse::<f64>() {
        Ok(parsed) if parsed.is_finite() => Ok(parsed),
        _ => Err(CostExplorerError::BadAmount {
            metric: metric.to_string(),
            amount: amount.to_string(),
        }),
    }
}

/// Parses Cost Explorer's `YYYY-MM-DD` dates (it may append a time, which is ignored).
pub fn parse_date(text: &str) -> Result<NaiveDate, CostExplorerError> {
    let date = text.get(..10).unwrap_or(text);
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| CostExplorerError::Malformed(format!("unparsable date {text:?}")))
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

    fn value(amount: &str, unit: &str) -> MetricValue {
        MetricValue::builder().amount(amount).unit(unit).build()
    }

    #[test]
    fn amounts_parse_decimal_and_scientific_notation() {
        assert_eq!(
            parse_amount("UnblendedCost", &value("12.3456789012", "USD")).ok(),
            Some(12.3456789012)
        );
        assert_eq!(
            parse_amount("UnblendedCost", &value("-2.61E-8", "USD")).ok(),
            Some(-2.61e-8)
        );
        assert_eq!(
            parse_amount("UnblendedCost", &value("0", "USD")).ok(),
            Some(0.0)
        );
    }

    #[test]
    fn amounts_in_other_units_are_refused() {
        let err = parse_amount("UnblendedCost", &value("10", "EUR")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cost Explorer returned UnblendedCost in \"EUR\" (amount 10); only USD amounts are supported"
        );
        assert!(matches!(
            parse_amount("X", &value("NaN", "USD")),
            Err(CostExplorerError::BadAmount { .. })
        ));
        assert!(matches!(
            parse_amount("X", &value("", "USD")),
            Err(CostExplorerError::BadAmount { .. })
        ));
        assert!(matches!(
            parse_amount("X", &value("inf", "USD")),
            Err(CostExplorerError::BadAmount { .. })
        ));
    }

    #[test]
    fn metrics_come_back_in_the_requested_order() {
        let mut map = HashMap::new();
        map.insert("UnblendedCost".to_string(), value("1.5", "USD"));
        map.insert("AmortizedCost".to_string(), value("2.5", "USD"));
        let parsed = parse_metrics(&map, &[CostBasis::Amortized, CostBasis::Unblended]).unwrap();
        assert_eq!(parsed, vec![2.5, 1.5]);
        assert!(parse_metrics(&map, &[CostBasis::Blended]).is_err());
    }

    #[test]
    fn dates_parse() {
        assert_eq!(
            parse_date("2026-11-23").ok(),
            NaiveDate::from_ymd_opt(2026, 11, 23)
        );
        assert_eq!(
            parse_date("2026-11-23T00:00:00Z").ok(),
            NaiveDate::from_ymd_opt(2026, 11, 23)
        );
        assert!(parse_date("23/11/2026").is_err());
    }
}
