//! The Cost Explorer client: queries, paging (with a token-loop guard) and response parsing.
//!
//! Every request is billed: each query is paged to its end exactly once, and every page's
//! token is guarded against a loop ([`Tokens`]). What is asked, and when, is each part's
//! (its module under `parts/`); this module knows requests and rows, not Prometheus.
//!
//! Pages are parsed straight into the aggregate ([`crate::aggregate::Table`]); a page's typed response is dropped
//! as soon as its groups are added.

pub(crate) mod page;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use aws_sdk_costexplorer::Client;
use aws_sdk_costexplorer::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_costexplorer::operation::RequestId;
use aws_sdk_costexplorer::types::{
    CostCategoryValues, DateInterval, Dimension as SdkDimension, DimensionValues, Expression,
    Granularity as SdkGranularity, GroupDefinition, GroupDefinitionType, MatchOption, MetricValue,
    TagValues,
};
use chrono::{Datelike, NaiveDate};

use crate::failure::{AwsError, Classify, Concise, Reason, ToConcise};
use crate::model::{CostBasis, FilterExpr, KeyKind};

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

/// What a query groups by: a dimension, a cost-allocation tag key or a cost category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKey {
    Dimension(Dimension),
    Tag(String),
    /// `RESOURCE_ID`, which only GetCostAndUsageWithResources accepts.
    ResourceId,
    /// Any dimension, by Cost Explorer's name (`REGION`, `USAGE_TYPE`, ...).
    Named(String),
    /// A cost category, by name: its values come as `Name$value` (`Name$` uncategorised).
    CostCategory(String),
}

impl GroupKey {
    /// The key of a view's `group_by` entry.
    pub fn of(kind: KeyKind, key: &str) -> Self {
        match kind {
            KeyKind::Dimension => GroupKey::Named(key.to_string()),
            KeyKind::Tag => GroupKey::Tag(key.to_string()),
            KeyKind::CostCategory => GroupKey::CostCategory(key.to_string()),
        }
    }

    fn definition(&self) -> GroupDefinition {
        let (kind, key) = match self {
            GroupKey::Dimension(d) => (GroupDefinitionType::Dimension, d.as_str()),
            GroupKey::Tag(tag) => (GroupDefinitionType::Tag, tag.as_str()),
            GroupKey::ResourceId => (GroupDefinitionType::Dimension, "RESOURCE_ID"),
            GroupKey::Named(name) => (GroupDefinitionType::Dimension, name.as_str()),
            GroupKey::CostCategory(name) => (GroupDefinitionType::CostCategory, name.as_str()),
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
            GroupKey::Named(name) => f.write_str(name),
            GroupKey::CostCategory(name) => write!(f, "COST_CATEGORY {name}"),
        }
    }
}

/// A filter: each dimension must match one of its values (an empty filter matches everything).
pub type Filter = Vec<(Dimension, Vec<String>)>;

/// The Cost Explorer `Expression` for a filter.
pub fn filter_expression(filter: &[(Dimension, Vec<String>)]) -> Option<Expression> {
    all_of(
        filter
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
            .collect(),
    )
}

/// `None` for no expression, the expression itself for one, their `And` for more.
fn all_of(mut parts: Vec<Expression>) -> Option<Expression> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Expression::builder().set_and(Some(parts)).build()),
    }
}

/// The Cost Explorer `Expression` of a configured filter.
pub fn expression(filter: &FilterExpr) -> Expression {
    let list = |items: &[FilterExpr]| Some(items.iter().map(expression).collect());
    match filter {
        FilterExpr::And(items) => Expression::builder().set_and(list(items)).build(),
        FilterExpr::Or(items) => Expression::builder().set_or(list(items)).build(),
        FilterExpr::Not(inner) => Expression::builder().not(expression(inner)).build(),
        FilterExpr::Values {
            kind,
            key,
            values,
            match_options,
        } => {
            let values = Some(values.clone());
            let options = (!match_options.is_empty()).then(|| {
                match_options
                    .iter()
                    .map(|o| MatchOption::from(o.as_str()))
                    .collect()
            });
            match kind {
                KeyKind::Dimension => Expression::builder()
                    .dimensions(
                        DimensionValues::builder()
                            .key(SdkDimension::from(key.as_str()))
                            .set_values(values)
                            .set_match_options(options)
                            .build(),
                    )
                    .build(),
                KeyKind::Tag => Expression::builder()
                    .tags(
                        TagValues::builder()
                            .key(key)
                            .set_values(values)
                            .set_match_options(options)
                            .build(),
                    )
                    .build(),
                KeyKind::CostCategory => Expression::builder()
                    .cost_categories(
                        CostCategoryValues::builder()
                            .key(key)
                            .set_values(values)
                            .set_match_options(options)
                            .build(),
                    )
                    .build(),
            }
        }
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
    /// A configured filter, and-ed with `filter`.
    pub expression: Option<FilterExpr>,
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
            expression: None,
        }
    }

    /// The same query under a configured filter too.
    pub fn with_expression(mut self, expression: Option<FilterExpr>) -> Self {
        self.expression = expression;
        self
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
        if let Some(expression) = &self.expression {
            let word = if self.filter.is_empty() {
                "where"
            } else {
                "and"
            };
            write!(f, " {word} {expression}")?;
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
    /// Every page's body as Cost Explorer sent it, one after the other: only for a pager
    /// told to keep them ([`Pager::keeping_bodies`]).
    pub bodies: Vec<u8>,
}

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
    keep_bodies: bool,
}

impl<'a> Pager<'a> {
    /// Keeps every page's body in [`QueryStats::bodies`] (change detection compares them).
    pub fn keeping_bodies(mut self) -> Self {
        self.keep_bodies = true;
        self
    }

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
                filter: all_of(
                    filter_expression(&query.filter)
                        .into_iter()
                        .chain(query.expression.as_ref().map(expression))
                        .collect(),
                ),
            },
            token: None,
            tokens: Tokens::new(query.to_string()),
            done: false,
            amounts: Vec::with_capacity(bases.len()),
            stats: QueryStats::default(),
            keep_bodies: false,
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
        let body = raw.take();
        if self.keep_bodies {
            self.stats.bodies.extend_from_slice(&body);
        }
        self.take_page(&body, request_id.as_deref(), sink)
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
            if keys_wanted == 0 {
                // Ungrouped: the period's total, as one group without keys.
                if let Some(total) = &result.total {
                    self.amounts.clear();
                    for basis in self.bases {
                        self.amounts.push(amount_of(total, *basis)?);
                    }
                    sink(start, &[], &self.amounts)?;
                }
                continue;
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
                    self.amounts.push(amount_of(metrics, *basis)?);
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

/// One requested cost metric's amount in a group (or a total).
fn amount_of(metrics: &page::RawMetrics, basis: CostBasis) -> Result<f64, CostExplorerError> {
    let amount = metrics.get(basis).ok_or_else(|| {
        CostExplorerError::Malformed(format!(
            "a group lacks the requested metric {}",
            basis.metric()
        ))
    })?;
    match amount {
        page::RawAmount::Usd(value) => Ok(*value),
        page::RawAmount::Refused(written) => check_amount(basis.metric(), &written.0, &written.1),
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
    pub(crate) async fn query_period(
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
}

/// The value of a tag group key: Cost Explorer writes `key$value`, and `key$` for untagged.
pub fn tag_value(group_key: &str) -> &str {
    group_key
        .split_once('$')
        .map_or(group_key, |(_, value)| value)
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
