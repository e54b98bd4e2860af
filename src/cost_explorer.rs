//! Cost Explorer queries: the query plan, paging and response parsing.
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
//! Pages are parsed straight into the aggregate ([`Table`]); a page's typed response is dropped
//! as soon as its groups are added. This module knows requests and rows, not Prometheus.

mod page;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use aws_sdk_costexplorer::Client;
use aws_sdk_costexplorer::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_costexplorer::operation::RequestId;
use aws_sdk_costexplorer::types::{
    DateInterval, Dimension as SdkDimension, DimensionValues, Expression, ForecastResult,
    Granularity as SdkGranularity, GroupDefinition, GroupDefinitionType, Metric, MetricValue,
};
use chrono::{Datelike, NaiveDate};

use crate::aggregate::Table;
use crate::config::CostBasis;
use crate::failure::{AwsError, Classify, Concise, Reason, ToConcise};

/// A ceiling on the pages of one query, far above any real organization: only a Cost Explorer
/// that never stops answering with a new token reaches it.
pub const MAX_PAGES_PER_QUERY: u32 = 100_000;

/// The dimensions the cost series are broken down by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    #[default]
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

    /// The first day any query of the refresh covers (inclusive).
    pub fn query_start(&self) -> NaiveDate {
        self.month_start().min(self.data_day)
    }

    /// The day after today: the exclusive `End` of the month-to-date queries.
    pub fn query_end(&self) -> NaiveDate {
        self.today.succ_opt().unwrap_or(self.today)
    }

    /// The day after the data day: the exclusive `End` of the daily queries.
    pub fn data_day_end(&self) -> NaiveDate {
        self.data_day.succ_opt().unwrap_or(self.data_day)
    }

    /// The rest of the month to forecast, `[tomorrow, next month)`; `None` on the last day.
    pub fn forecast_period(&self) -> Option<(NaiveDate, NaiveDate)> {
        let tomorrow = self.query_end();
        let end = self.next_month_start();
        (tomorrow < end).then_some((tomorrow, end))
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum CostExplorerError {
    /// AWS answered with an error, or did not answer.
    #[error(transparent)]
    Api(#[from] AwsError),
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
    /// A page that could not be parsed, with the request id of the answer that carried it.
    #[error(
        "malformed Cost Explorer response: page {page} of {query}: {error}{}",
        in_request(.request_id)
    )]
    MalformedPage {
        page: u32,
        /// The query's operation, which `query` starts with.
        operation: &'static str,
        query: String,
        error: String,
        request_id: Option<String>,
    },
    #[error(
        "Cost Explorer returned a NextPageToken it had already returned, after {pages} pages of {query}"
    )]
    TokenLoop { query: String, pages: u32 },
    #[error(
        "Cost Explorer kept returning a NextPageToken after {MAX_PAGES_PER_QUERY} pages of {query}"
    )]
    TooManyPages { query: String },
}

impl Classify for CostExplorerError {
    fn reason(&self) -> Reason {
        match self {
            CostExplorerError::Api(err) => err.reason(),
            CostExplorerError::NotUsd { .. } => Reason::UnsupportedUnit,
            CostExplorerError::BadAmount { .. }
            | CostExplorerError::Malformed(_)
            | CostExplorerError::MalformedPage { .. }
            | CostExplorerError::TokenLoop { .. }
            | CostExplorerError::TooManyPages { .. } => Reason::BadResponse,
        }
    }
}

/// " (request id ...)" when there is one.
fn in_request(request_id: &Option<String>) -> String {
    request_id
        .as_ref()
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

/// AWS errors and malformed pages keep their operation and request id whole; other errors (a
/// page token that loops, an amount in another unit, the daily cap) are short sentences that
/// may lose their middle.
impl ToConcise for CostExplorerError {
    fn concise(&self) -> Concise {
        match self {
            CostExplorerError::Api(err) => err.concise(),
            CostExplorerError::MalformedPage {
                page,
                operation,
                query,
                error,
                request_id,
            } => Concise::default()
                .fixed(format!(
                    "malformed Cost Explorer response: page {page} of {operation}"
                ))
                .elidable(query.strip_prefix(operation).unwrap_or(query))
                .fixed(": ")
                .elidable(error)
                .fixed(in_request(request_id)),
            other => Concise::default().elidable(other.to_string()),
        }
    }
}

/// How finely a query's results are cut in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Daily,
    Monthly,
}

impl Granularity {
    fn sdk(self) -> SdkGranularity {
        match self {
            Granularity::Daily => SdkGranularity::Daily,
            Granularity::Monthly => SdkGranularity::Monthly,
        }
    }
}

/// What a query groups by: a dimension, or a cost-allocation tag key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKey {
    Dimension(Dimension),
    Tag(String),
    /// `RESOURCE_ID`, which only GetCostAndUsageWithResources accepts.
    ResourceId,
}

impl GroupKey {
    fn definition(&self) -> GroupDefinition {
        let (kind, key) = match self {
            GroupKey::Dimension(d) => (GroupDefinitionType::Dimension, d.as_str()),
            GroupKey::Tag(tag) => (GroupDefinitionType::Tag, tag.as_str()),
            GroupKey::ResourceId => (GroupDefinitionType::Dimension, "RESOURCE_ID"),
        };
        GroupDefinition::builder().r#type(kind).key(key).build()
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupKey::Dimension(d) => f.write_str(d.as_str()),
            GroupKey::Tag(tag) => write!(f, "TAG {tag}"),
            GroupKey::ResourceId => f.write_str("RESOURCE_ID"),
        }
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

/// The two operations that return grouped cost: `GetCostAndUsage` and
/// `GetCostAndUsageWithResources` (same parameters, same shapes, distinct SDK types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    CostAndUsage,
    WithResources,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CostAndUsage => "GetCostAndUsage",
            Operation::WithResources => "GetCostAndUsageWithResources",
        }
    }
}

/// One grouped cost query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub operation: Operation,
    pub granularity: Granularity,
    pub start: NaiveDate,
    /// Exclusive, as Cost Explorer has it.
    pub end: NaiveDate,
    /// One or two keys.
    pub group_by: Vec<GroupKey>,
    pub filter: Filter,
}

impl Query {
    /// A `GetCostAndUsage` query.
    pub fn cost(
        granularity: Granularity,
        (start, end): (NaiveDate, NaiveDate),
        group_by: Vec<GroupKey>,
        filter: Filter,
    ) -> Self {
        Self {
            operation: Operation::CostAndUsage,
            granularity,
            start,
            end,
            group_by,
            filter,
        }
    }
}

/// The query as an operator reads it in an error: operation, granularity, period, grouping
/// and filter.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let granularity = match self.granularity {
            Granularity::Daily => "DAILY",
            Granularity::Monthly => "MONTHLY",
        };
        write!(
            f,
            "{} {granularity} {}..{} by ",
            self.operation.as_str(),
            self.start,
            self.end
        )?;
        for (i, key) in self.group_by.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{key}")?;
        }
        for (i, (dimension, values)) in self.filter.iter().enumerate() {
            f.write_str(if i == 0 { " where " } else { " and " })?;
            write!(f, "{dimension} in {values:?}")?;
        }
        Ok(())
    }
}

/// What a query returned besides its groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryStats {
    /// Billed requests (pages).
    pub pages: u32,
    /// The start of every result period AWS marked Estimated.
    pub estimated: BTreeSet<NaiveDate>,
    /// Account id to name, from `DimensionValueAttributes` (when grouped by account).
    pub names: BTreeMap<String, String>,
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
    /// Billed `GetCostAndUsage` requests (pages) made.
    pub requests: u32,
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

/// Month-to-date and data-day cost of one cost-allocation tag key by account and tag value.
#[derive(Debug, Clone)]
pub struct TagData {
    /// Keyed (account id, tag key, tag value); untagged cost has an empty value.
    pub daily: Table<3>,
    pub month: Table<3>,
    pub account_names: BTreeMap<String, String>,
    pub requests: u32,
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

/// A forecast for a period: the mean and, when AWS gives one, the prediction interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastValue {
    pub mean: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

/// The prediction interval level asked of GetCostForecast, in percent.
pub const PREDICTION_INTERVAL_LEVEL: i32 = 80;

/// Requests one page of a grouped cost query, its body taken by `raw` (see [`page`]).
/// `GetCostAndUsage` and `GetCostAndUsageWithResources` take the same parameters and return
/// the same shapes, but through distinct SDK types.
macro_rules! cost_page {
    ($builder:expr, $request:ident, $token:ident, $raw:ident) => {{
        $builder
            .time_period($request.period.clone())
            .granularity($request.granularity.clone())
            .set_metrics(Some($request.metrics.clone()))
            .set_group_by(Some($request.group_by.clone()))
            .set_filter($request.filter.clone())
            .set_next_page_token($token)
            .customize()
            .interceptor($raw.clone())
            .send()
            .await
            .map_err(|e| api_error($request.operation.as_str(), e))?
            .request_id()
            .map(str::to_string)
    }};
}

/// A query's parameters in the SDK's types, built once for all its pages.
struct Request {
    operation: Operation,
    period: DateInterval,
    granularity: SdkGranularity,
    metrics: Vec<String>,
    group_by: Vec<GroupDefinition>,
    filter: Option<Expression>,
}

pub(crate) fn api_error<E>(
    operation: &'static str,
    err: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> CostExplorerError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    CostExplorerError::Api(AwsError::from_sdk(operation, &err))
}

pub(crate) fn date_interval(
    start: NaiveDate,
    end: NaiveDate,
) -> Result<DateInterval, CostExplorerError> {
    DateInterval::builder()
        .start(start.format("%Y-%m-%d").to_string())
        .end(end.format("%Y-%m-%d").to_string())
        .build()
        .map_err(|e| CostExplorerError::Malformed(e.to_string()))
}

/// Pages through one query, a page at a time, guarding against a token that loops.
pub struct Pager<'a> {
    client: &'a Client,
    query: &'a Query,
    bases: &'a [CostBasis],
    request: Request,
    token: Option<String>,
    tokens: Tokens,
    done: bool,
    amounts: Vec<f64>,
    stats: QueryStats,
}

impl<'a> Pager<'a> {
    fn new(
        client: &'a Client,
        query: &'a Query,
        bases: &'a [CostBasis],
    ) -> Result<Self, CostExplorerError> {
        Ok(Self {
            client,
            query,
            bases,
            request: Request {
                operation: query.operation,
                period: date_interval(query.start, query.end)?,
                granularity: query.granularity.sdk(),
                metrics: bases.iter().map(|b| b.metric().to_string()).collect(),
                group_by: query.group_by.iter().map(GroupKey::definition).collect(),
                filter: filter_expression(&query.filter),
            },
            token: None,
            tokens: Tokens::new(query.to_string()),
            done: false,
            amounts: Vec::with_capacity(bases.len()),
            stats: QueryStats::default(),
        })
    }

    /// Whether another page remains.
    pub fn has_more(&self) -> bool {
        !self.done
    }

    /// Fetches the next page and hands each group to `sink` as (result period start, group
    /// keys, one amount per cost basis). Does nothing once the last page is in.
    pub async fn next_page(
        &mut self,
        sink: &mut impl FnMut(NaiveDate, &[&str], &[f64]) -> Result<(), CostExplorerError>,
    ) -> Result<(), CostExplorerError> {
        if self.done {
            return Ok(());
        }
        let token = self.token.take();
        let request = &self.request;
        let raw = page::RawBody::default();
        let request_id = match request.operation {
            Operation::CostAndUsage => {
                cost_page!(self.client.get_cost_and_usage(), request, token, raw)
            }
            Operation::WithResources => cost_page!(
                self.client.get_cost_and_usage_with_resources(),
                request,
                token,
                raw
            ),
        };
        self.stats.pages += 1;
        self.take_page(&raw.take(), request_id.as_deref(), sink)
    }

    /// Handles one page's body as [`Pager::next_page`] does once the SDK has fetched it:
    /// parsing, checking and handing its groups to `sink`, then taking its token. Public only
    /// so that the property tests can feed it arbitrary bytes.
    #[doc(hidden)]
    pub fn take_page(
        &mut self,
        body: &[u8],
        request_id: Option<&str>,
        sink: &mut impl FnMut(NaiveDate, &[&str], &[f64]) -> Result<(), CostExplorerError>,
    ) -> Result<(), CostExplorerError> {
        let page = page::parse(body).map_err(|err| CostExplorerError::MalformedPage {
            page: self.stats.pages,
            operation: self.query.operation.as_str(),
            query: self.query.to_string(),
            error: crate::failure::shorten(&err, 120),
            request_id: request_id.map(str::to_string),
        })?;
        let keys_wanted = self.query.group_by.len();
        let mut keys: Vec<&str> = Vec::with_capacity(keys_wanted);
        for result in &page.results_by_time {
            let start = result
                .time_period
                .as_ref()
                .ok_or_else(|| CostExplorerError::Malformed("a result has no TimePeriod".into()))
                .and_then(|period| parse_date(&period.start))?;
            if result.estimated {
                self.stats.estimated.insert(start);
            }
            for group in &result.groups {
                if group.keys.count() != keys_wanted {
                    return Err(CostExplorerError::Malformed(format!(
                        "a group of {} has {} keys, expected {keys_wanted}",
                        self.query,
                        group.keys.count()
                    )));
                }
                keys.clear();
                keys.extend(group.keys.iter());
                let metrics = group.metrics.as_ref().ok_or_else(|| {
                    CostExplorerError::Malformed(format!("group {keys:?} has no Metrics"))
                })?;
                self.amounts.clear();
                for basis in self.bases {
                    let amount = metrics.get(*basis).ok_or_else(|| {
                        CostExplorerError::Malformed(format!(
                            "a group lacks the requested metric {}",
                            basis.metric()
                        ))
                    })?;
                    self.amounts.push(match amount {
                        page::RawAmount::Usd(value) => *value,
                        page::RawAmount::Refused(written) => {
                            check_amount(basis.metric(), &written.0, &written.1)?
                        }
                    });
                }
                sink(start, &keys, &self.amounts)?;
            }
        }
        for attribute in &page.dimension_value_attributes {
            if let (Some(value), Some(name)) =
                (&attribute.value, attribute.attributes.get("description"))
                && !name.is_empty()
            {
                self.stats
                    .names
                    .entry(value.to_string())
                    .or_insert_with(|| name.to_string());
            }
        }
        match self.tokens.next(page.next_page_token.as_deref())? {
            Some(next) => self.token = Some(next),
            None => self.done = true,
        }
        Ok(())
    }

    /// Fetches every remaining page.
    pub async fn finish(
        mut self,
        sink: &mut impl FnMut(NaiveDate, &[&str], &[f64]) -> Result<(), CostExplorerError>,
    ) -> Result<QueryStats, CostExplorerError> {
        while !self.done {
            self.next_page(sink).await?;
        }
        Ok(self.stats)
    }

    /// What the pages fetched so far returned besides groups.
    pub fn into_stats(self) -> QueryStats {
        self.stats
    }
}

/// Checks that every group of a query belongs to the one period the query asked for, so that
/// no figure of another day or month is ever added in.
fn expect_period(query: &Query, start: NaiveDate) -> Result<(), CostExplorerError> {
    if start == query.start {
        Ok(())
    } else {
        Err(CostExplorerError::Malformed(format!(
            "a result period starting {start} in {query}"
        )))
    }
}

/// The tokens of one paged operation: refuses a token seen before (a loop that would be
/// billed forever) and more than [`MAX_PAGES_PER_QUERY`] pages.
#[derive(Debug)]
pub struct Tokens {
    query: String,
    seen: HashSet<String>,
    pages: u32,
}

impl Tokens {
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            seen: HashSet::new(),
            pages: 0,
        }
    }

    /// Takes a page's token (absent or empty: the last page) and returns the token to ask
    /// for next, if any.
    pub fn next(&mut self, token: Option<&str>) -> Result<Option<String>, CostExplorerError> {
        self.pages += 1;
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if !self.seen.insert(token.to_string()) {
            return Err(CostExplorerError::TokenLoop {
                query: self.query.clone(),
                pages: self.pages,
            });
        }
        if self.pages >= MAX_PAGES_PER_QUERY {
            return Err(CostExplorerError::TooManyPages {
                query: self.query.clone(),
            });
        }
        Ok(Some(token.to_string()))
    }

    /// Pages taken so far.
    pub fn pages(&self) -> u32 {
        self.pages
    }
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

    /// The SDK client, for the operations other modules own.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A pager over `query`'s results.
    pub fn pager<'a>(
        &'a self,
        query: &'a Query,
        bases: &'a [CostBasis],
    ) -> Result<Pager<'a>, CostExplorerError> {
        Pager::new(&self.client, query, bases)
    }

    /// Runs a whole query, handing every group to `sink`.
    pub async fn query(
        &self,
        query: &Query,
        bases: &[CostBasis],
        mut sink: impl FnMut(NaiveDate, &[&str], &[f64]) -> Result<(), CostExplorerError>,
    ) -> Result<QueryStats, CostExplorerError> {
        self.pager(query, bases)?.finish(&mut sink).await
    }

    /// Runs a query of one period (the query's own `start`), handing each group's keys and
    /// amounts to `add`.
    async fn query_period(
        &self,
        query: &Query,
        bases: &[CostBasis],
        mut add: impl FnMut(&[&str], &[f64]),
    ) -> Result<QueryStats, CostExplorerError> {
        self.query(query, bases, |start, keys, amounts| {
            expect_period(query, start)?;
            add(keys, amounts);
            Ok(())
        })
        .await
    }

    /// Cost by account, service and record type: the month to date and the data day.
    pub async fn costs(
        &self,
        period: Period,
        bases: &[CostBasis],
    ) -> Result<CostData, CostExplorerError> {
        let mut data = CostData::new(bases.len());
        let plan = self.discover(period, bases, &mut data).await?;
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
                data.requests += stats.pages;
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
                data.requests += stats.pages;
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
            let stats = self
                .query(&services, bases, |_, keys, _| {
                    record_types
                        .entry(keys[0].to_string())
                        .or_default()
                        .insert(keys[1].to_string());
                    Ok(())
                })
                .await?;
            data.requests += stats.pages;
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
        data.requests += stats.pages;
        data.account_names.extend(stats.names);
        Ok(plan)
    }

    /// Month-to-date and data-day cost by account and value of one cost-allocation tag key,
    /// added to `into` (untagged cost has an empty value).
    pub async fn tag_costs(
        &self,
        period: Period,
        bases: &[CostBasis],
        tag_key: &str,
        into: &mut TagData,
    ) -> Result<(), CostExplorerError> {
        let group_by = vec![
            GroupKey::Dimension(Dimension::LinkedAccount),
            GroupKey::Tag(tag_key.to_string()),
        ];
        let month = (period.month_start(), period.query_end());
        let day = (period.data_day, period.data_day_end());
        for (granularity, range) in [(Granularity::Monthly, month), (Granularity::Daily, day)] {
            let table = match granularity {
                Granularity::Monthly => &mut into.month,
                Granularity::Daily => &mut into.daily,
            };
            let query = Query::cost(granularity, range, group_by.clone(), Vec::new());
            let stats = self
                .query_period(&query, bases, |keys, amounts| {
                    table.add([keys[0], tag_key, tag_value(keys[1])], amounts);
                })
                .await?;
            into.requests += stats.pages;
            for (id, name) in stats.names {
                into.account_names.entry(id).or_insert(name);
            }
        }
        Ok(())
    }

    /// One day's cost by resource for one service, with GetCostAndUsageWithResources, added to
    /// `into` keyed (account id, service, resource id, record type). `accounts` and
    /// `record_types` are those the service had that day: the query splits on the smaller set,
    /// as [`CostExplorer::costs`] does. Returns the pages.
    pub async fn resource_costs(
        &self,
        day: NaiveDate,
        service: &str,
        accounts: &BTreeSet<String>,
        record_types: &BTreeSet<String>,
        bases: &[CostBasis],
        into: &mut Table<4>,
    ) -> Result<u32, CostExplorerError> {
        let plan = plan_split(accounts, record_types);
        let other = match plan.split {
            Dimension::LinkedAccount => Dimension::RecordType,
            _ => Dimension::LinkedAccount,
        };
        let end = day.succ_opt().unwrap_or(day);
        let mut pages = 0;
        for value in &plan.values {
            let query = Query {
                operation: Operation::WithResources,
                granularity: Granularity::Daily,
                start: day,
                end,
                group_by: vec![GroupKey::ResourceId, GroupKey::Dimension(other)],
                filter: vec![
                    (Dimension::Service, vec![service.to_string()]),
                    (plan.split, vec![value.clone()]),
                ],
            };
            let stats = self
                .query_period(&query, bases, |keys, amounts| {
                    let (account, record_type) = match plan.split {
                        Dimension::LinkedAccount => (value.as_str(), keys[1]),
                        _ => (keys[1], value.as_str()),
                    };
                    into.add([account, service, keys[0], record_type], amounts);
                })
                .await?;
            pages += stats.pages;
        }
        Ok(pages)
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
            .granularity(SdkGranularity::Monthly)
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
}

/// The value of a tag group key: Cost Explorer writes `key$value`, and `key$` for untagged.
pub fn tag_value(group_key: &str) -> &str {
    group_key
        .split_once('$')
        .map_or(group_key, |(_, value)| value)
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

/// Parses a decimal amount, refusing any unit but USD.
pub fn parse_amount(metric: &str, value: &MetricValue) -> Result<f64, CostExplorerError> {
    check_amount(
        metric,
        value.amount().unwrap_or_default(),
        value.unit().unwrap_or_default(),
    )
}

/// Parses an amount and its unit, refusing any unit but USD.
fn check_amount(metric: &str, amount: &str, unit: &str) -> Result<f64, CostExplorerError> {
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
pub(crate) fn parse_number(metric: &str, amount: &str) -> Result<f64, CostExplorerError> {
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
