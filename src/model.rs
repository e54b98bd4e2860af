//! The validated configuration: what every other module reads. Built from a file by the
//! `config` module (the common keys) and by each part of a refresh (its own keys); a value of
//! these types is always valid (names unique, account ids of 12 digits, cost bases distinct,
//! budgets on a configured cost basis, ...).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Default refresh interval: Cost Explorer data changes a few times a day.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(6 * 60 * 60);
/// Default `max_data_age`: the longest change detection serves the same cost data without
/// buying the full plan again (changes that move cost between groups without changing any
/// total: a newly activated tag's backfill, an edited cost category rule).
pub const DEFAULT_MAX_DATA_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// `check_interval: auto` checks every hour when the last full plan cost more than this many
/// requests (an organization), else every `refresh_interval` (see [`Checks::interval`]).
pub const AUTO_CHECK_PLAN_REQUESTS: u64 = 5;
/// `check_interval: auto`'s interval for an integration whose full plan costs more than
/// [`AUTO_CHECK_PLAN_REQUESTS`].
pub const AUTO_CHECK_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// The largest part of a scheduled wait that jitter takes off (see `refresh::jittered`).
pub const JITTER: f64 = 0.1;
/// Default delay, in days, of the day the daily gauges describe.
pub const DEFAULT_DATA_DELAY_DAYS: u32 = 1;
/// Cost Explorer's home region.
pub const DEFAULT_REGION: &str = "us-east-1";
/// The largest accepted `data_delay_days`.
pub const MAX_DATA_DELAY_DAYS: u32 = 31;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The daily gauges describe today (UTC) minus this many days.
    pub data_delay_days: u32,
    /// At least one integration, names unique.
    pub integrations: Vec<Integration>,
    /// Which shape the file had.
    pub format: ConfigFormat,
}

/// The shape a configuration file was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// This exporter's own YAML.
    Native,
    /// A Backstage `app-config.yaml` with InfraWallet's AWS integrations.
    InfraWallet,
    /// An electrolux-oss/aws-cost-exporter `exporter_config.yaml`, with its `exporter_port`
    /// (the listen port unless `--web.listen-address` is given).
    Electrolux { exporter_port: Option<u16> },
}

/// One AWS account (a management account covers its members) with its own credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    pub name: String,
    pub account_id: String,
    pub assumed_role_name: Option<String>,
    pub external_id: Option<String>,
    pub static_credentials: Option<StaticCredentials>,
    pub region: String,
    /// Cost Explorer endpoint override.
    pub endpoint_url: Option<String>,
    /// STS endpoint override, used for assuming the role.
    pub sts_endpoint_url: Option<String>,
    /// Non-empty, no duplicates.
    pub cost_basis: Vec<CostBasis>,
    pub refresh_interval: Duration,
    /// Change detection: how often to check whether AWS's cost data changed, and how long the
    /// same data may be served without buying the full plan again.
    pub checks: Checks,
    /// Services whose resource-level daily costs to export (GetCostAndUsageWithResources).
    pub resources: Vec<String>,
    /// Resource series kept per cost basis; the rest fold into `resource_id="__other__"`.
    pub max_resource_series: usize,
    /// Cost-allocation tag keys to break costs down by.
    pub tags: Vec<String>,
    /// Series kept per tag metric and cost basis; the rest fold into `tag_value="__other__"`.
    pub max_tag_series: usize,
    /// Whether to ask GetCostForecast for the month's forecast.
    pub forecast: bool,
    pub budgets: Vec<Budget>,
    /// Whether account names and the member list come from AWS Organizations.
    pub organizations: bool,
    /// Organizations endpoint override.
    pub organizations_endpoint_url: Option<String>,
    /// A hard cap on billed Cost Explorer requests per UTC day.
    pub max_api_requests_per_day: u64,
    /// Whether to export Savings Plans and reservation utilisation, coverage and expiry
    /// (fetched once a UTC day).
    pub commitments: bool,
    /// Whether to export AWS Cost Anomaly Detection's anomalies of the last 90 days.
    pub anomalies: bool,
    /// Anomaly series kept (the largest by impact); the rest are counted as dropped.
    pub max_anomaly_series: usize,
    /// User-defined breakdowns of cost, in configuration order.
    pub views: Vec<View>,
    /// Static labels on every series of the integration, by name.
    pub labels: Vec<(String, String)>,
    /// Whether it serves the cost series (off only for an electrolux-shaped file, whose
    /// metrics are all it serves).
    pub costs: bool,
    /// The metrics of an electrolux-shaped file, for the target accounts this integration's
    /// credentials ask for.
    pub electrolux: Option<Arc<Electrolux>>,
}

/// What an electrolux-oss/aws-cost-exporter file asks of one integration: its metrics, for
/// each of its target accounts.
#[derive(Debug, Clone, PartialEq)]
pub struct Electrolux {
    /// Each target account's labels (`Publisher` and the rest of its keys), by name; every
    /// series of a target carries them.
    pub targets: Vec<Vec<(String, String)>>,
    pub metrics: Vec<ElectroluxMetric>,
}

/// One of an electrolux file's `metrics`: a family of its own name.
#[derive(Debug, Clone, PartialEq)]
pub struct ElectroluxMetric {
    pub name: String,
    pub help: String,
    /// `DAILY`: the day before `today - data_delay_days`; `MONTHLY`: from the first of that
    /// day's month through it.
    pub monthly: bool,
    pub data_delay_days: u32,
    /// The Cost Explorer metric (`AmortizedCost`, ...).
    pub metric_type: CostBasis,
    /// None, one or two keys.
    pub groups: Vec<ElectroluxGroup>,
    /// `RECORD_TYPE` in the record types, and every tag filter and static dimension filter.
    pub filter: FilterExpr,
    /// One query per value, each under its own filter too, with its labels.
    pub iterate: Option<ElectroluxIterate>,
    /// Groups cheaper than `threshold` summed into one series whose every key is `value`.
    pub merge_minor_cost: Option<(f64, String)>,
}

/// One key an electrolux metric groups by.
#[derive(Debug, Clone, PartialEq)]
pub struct ElectroluxGroup {
    pub kind: KeyKind,
    pub key: String,
    pub label: String,
    pub alias: Option<ElectroluxAlias>,
}

/// A second label whose value is the first's mapped (empty when unmapped).
#[derive(Debug, Clone, PartialEq)]
pub struct ElectroluxAlias {
    pub label: String,
    pub map: BTreeMap<String, String>,
}

/// A dimension filter with `iterate: true`.
#[derive(Debug, Clone, PartialEq)]
pub struct ElectroluxIterate {
    pub key: String,
    pub values: Vec<String>,
    pub label: String,
    pub alias: Option<ElectroluxAlias>,
}

/// Every label name the exporter's series carry, besides a view's own keys: a static label
/// must not take one of them.
pub const SERIES_LABELS: [&str; 32] = [
    "account_id",
    "account_name",
    "anomaly_id",
    "aws_service",
    "budget",
    "charge_type",
    "cost_basis",
    "instance_family",
    "instance_type",
    "integration",
    "metric",
    "monitor",
    "on",
    "operation",
    "outcome",
    "payment_option",
    "percent",
    "period",
    "query",
    "reason",
    "region",
    "resource_id",
    "revision",
    "savings_plan_arn",
    "savings_plan_type",
    "state",
    "subscription_id",
    "tag_key",
    "tag_value",
    "term",
    "version",
    "view",
];

/// A Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*), not one of the reserved `__` ones.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// A view: cost grouped by one or two keys of any dimension, tag or cost category, optionally
/// filtered, as `aws_cost_view_daily_usd` and `aws_cost_view_month_to_date_usd`.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Unique in its integration; the `view` label.
    pub name: String,
    /// One or two keys, each with its label name (distinct).
    pub group_by: Vec<ViewKey>,
    pub filter: Option<FilterExpr>,
    /// Non-empty, no duplicates.
    pub cost_basis: Vec<CostBasis>,
    /// Series kept per family and cost basis; the rest fold into `__other__`.
    pub max_series: usize,
}

/// One key a view groups by, and the label its values are served under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewKey {
    pub kind: KeyKind,
    /// A dimension's name (`REGION`), a tag key or a cost category's name.
    pub key: String,
    pub label: String,
}

impl ViewKey {
    /// Whether the key is the linked account, whose values also get an `account_name` label.
    pub fn is_account(&self) -> bool {
        self.kind == KeyKind::Dimension && self.key == "LINKED_ACCOUNT"
    }
}

/// What a key (or a filter's values) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    Dimension,
    Tag,
    CostCategory,
}

/// A Cost Explorer filter `Expression`, as the configuration spells it and Cost Explorer
/// takes it: validated, one root per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterExpr {
    /// At least two operands.
    And(Vec<FilterExpr>),
    /// At least two operands.
    Or(Vec<FilterExpr>),
    Not(Box<FilterExpr>),
    /// `Dimensions`, `Tags` or `CostCategories`.
    Values {
        kind: KeyKind,
        key: String,
        values: Vec<String>,
        match_options: Vec<String>,
    },
}

/// As an operator reads it in an error: `Not(RECORD_TYPE in [Credit, Refund])`.
impl fmt::Display for FilterExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, items: &[FilterExpr]| {
            write!(f, "{name}(")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")?;
            }
            f.write_str(")")
        };
        match self {
            FilterExpr::And(items) => list(f, "And", items),
            FilterExpr::Or(items) => list(f, "Or", items),
            FilterExpr::Not(inner) => write!(f, "Not({inner})"),
            FilterExpr::Values {
                kind,
                key,
                values,
                match_options,
            } => {
                let kind = match kind {
                    KeyKind::Dimension => "",
                    KeyKind::Tag => "tag ",
                    KeyKind::CostCategory => "cost category ",
                };
                write!(f, "{kind}{key} in {values:?}")?;
                if !match_options.is_empty() {
                    write!(f, " {}", match_options.join(","))?;
                }
                Ok(())
            }
        }
    }
}

/// A monthly budget in USD over an integration's costs, optionally filtered.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub name: String,
    pub monthly_usd: f64,
    /// Empty: every account.
    pub accounts: Vec<String>,
    /// Empty: every service.
    pub services: Vec<String>,
    pub cost_basis: CostBasis,
    /// What the budget's alert compares with what: `thresholds` in the file, by default
    /// [`Threshold::DEFAULT`] (100 % of the budget spent, and forecast).
    pub thresholds: Vec<Threshold>,
}

/// What a budget threshold compares with the budget: the month-to-date spend or the month's
/// forecast, as AWS Budgets' `ACTUAL` and `FORECASTED` notifications do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ThresholdOn {
    Actual,
    Forecast,
}

impl ThresholdOn {
    pub const ALL: [ThresholdOn; 2] = [ThresholdOn::Actual, ThresholdOn::Forecast];

    /// The `on` label's value, and the word in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdOn::Actual => "actual",
            ThresholdOn::Forecast => "forecast",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|on| on.as_str() == text)
    }
}

/// One alerting threshold of a budget: `percent` of `monthly_usd`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub percent: f64,
    pub on: ThresholdOn,
}

impl Threshold {
    /// The thresholds of a budget without `thresholds`: the budget spent, and forecast to be.
    pub const DEFAULT: [Threshold; 2] = [
        Threshold {
            percent: 100.0,
            on: ThresholdOn::Actual,
        },
        Threshold {
            percent: 100.0,
            on: ThresholdOn::Forecast,
        },
    ];

    /// The share of the budget, as served in `aws_cost_budget_threshold_ratio`.
    pub fn ratio(&self) -> f64 {
        self.percent / 100.0
    }
}

impl Budget {
    /// Whether a cost in `account_id` for `service` counts against the budget.
    pub fn covers(&self, account_id: &str, service: &str) -> bool {
        (self.accounts.is_empty() || self.accounts.iter().any(|a| a == account_id))
            && (self.services.is_empty() || self.services.iter().any(|s| s == service))
    }

    /// Whether the budget filters at all.
    pub fn is_filtered(&self) -> bool {
        !self.accounts.is_empty() || !self.services.is_empty()
    }
}

/// Default of `max_resource_series` and `max_tag_series`.
pub const DEFAULT_MAX_SERIES: usize = 500;
/// Default of `max_anomaly_series`.
pub const DEFAULT_MAX_ANOMALY_SERIES: usize = 200;
/// Default of `max_api_requests_per_day`: 50 USD a day at most (see the README for the
/// measurement it is based on).
pub const DEFAULT_MAX_API_REQUESTS_PER_DAY: u64 = 5000;

impl Integration {
    /// An integration with every optional setting at its default.
    pub fn new(name: impl Into<String>, account_id: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            account_id: account_id.into(),
            assumed_role_name: None,
            external_id: None,
            static_credentials: None,
            region: DEFAULT_REGION.to_string(),
            endpoint_url: None,
            sts_endpoint_url: None,
            cost_basis: vec![CostBasis::Unblended],
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            checks: Checks::default(),
            resources: Vec::new(),
            max_resource_series: DEFAULT_MAX_SERIES,
            tags: Vec::new(),
            max_tag_series: DEFAULT_MAX_SERIES,
            forecast: true,
            budgets: Vec::new(),
            organizations: false,
            organizations_endpoint_url: None,
            max_api_requests_per_day: DEFAULT_MAX_API_REQUESTS_PER_DAY,
            commitments: false,
            anomalies: false,
            max_anomaly_series: DEFAULT_MAX_ANOMALY_SERIES,
            views: Vec::new(),
            labels: Vec::new(),
            costs: true,
            electrolux: None,
        }
    }

    /// The ARN of the role to assume, when one is configured.
    pub fn role_arn(&self) -> Option<String> {
        self.assumed_role_name
            .as_ref()
            .map(|role| format!("arn:aws:iam::{}:role/{}", self.account_id, role))
    }
}

/// `check_interval`: when to ask Cost Explorer whether the cost data changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckInterval {
    /// Every hour for an integration whose last full plan cost more than
    /// [`AUTO_CHECK_PLAN_REQUESTS`] requests, else every `refresh_interval`.
    #[default]
    Auto,
    /// No change detection: the full plan every `refresh_interval`, as before it existed.
    Off,
    /// Every this long (at most every `refresh_interval`).
    Every(Duration),
}

/// Change detection's settings (`check_interval`, `max_data_age`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    pub interval: CheckInterval,
    /// The longest the same cost data is served without buying the full plan again.
    pub max_data_age: Duration,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            interval: CheckInterval::Auto,
            max_data_age: DEFAULT_MAX_DATA_AGE,
        }
    }
}

impl Checks {
    /// Whether the cost data is checked before the full plan is bought.
    pub fn enabled(&self) -> bool {
        self.interval != CheckInterval::Off
    }

    /// How long to wait between two checks (or, without change detection, two full plans),
    /// given the billed requests of the last full plan (`None` before the first).
    pub fn interval(&self, refresh_interval: Duration, plan_requests: Option<u64>) -> Duration {
        match self.interval {
            CheckInterval::Off => refresh_interval,
            CheckInterval::Every(every) => every.min(refresh_interval),
            CheckInterval::Auto => match plan_requests {
                Some(n) if n > AUTO_CHECK_PLAN_REQUESTS => {
                    AUTO_CHECK_INTERVAL.min(refresh_interval)
                }
                _ => refresh_interval,
            },
        }
    }
}

/// A static access key pair. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .finish()
    }
}

/// A secret string whose `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; only for handing to the AWS SDK.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"** redacted **\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

/// Cost Explorer's cost metrics, named as in the config and the `cost_basis` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CostBasis {
    Unblended,
    Amortized,
    Blended,
    NetUnblended,
    NetAmortized,
}

impl CostBasis {
    pub const ALL: [CostBasis; 5] = [
        CostBasis::Unblended,
        CostBasis::Amortized,
        CostBasis::Blended,
        CostBasis::NetUnblended,
        CostBasis::NetAmortized,
    ];

    /// The config name and `cost_basis` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CostBasis::Unblended => "unblended",
            CostBasis::Amortized => "amortized",
            CostBasis::Blended => "blended",
            CostBasis::NetUnblended => "net_unblended",
            CostBasis::NetAmortized => "net_amortized",
        }
    }

    /// The Cost Explorer metric name.
    pub fn metric(self) -> &'static str {
        match self {
            CostBasis::Unblended => "UnblendedCost",
            CostBasis::Amortized => "AmortizedCost",
            CostBasis::Blended => "BlendedCost",
            CostBasis::NetUnblended => "NetUnblendedCost",
            CostBasis::NetAmortized => "NetAmortizedCost",
        }
    }

    /// The GetCostForecast metric name.
    pub fn forecast_metric(self) -> &'static str {
        match self {
            CostBasis::Unblended => "UNBLENDED_COST",
            CostBasis::Amortized => "AMORTIZED_COST",
            CostBasis::Blended => "BLENDED_COST",
            CostBasis::NetUnblended => "NET_UNBLENDED_COST",
            CostBasis::NetAmortized => "NET_AMORTIZED_COST",
        }
    }

    pub fn parse(name: &str) -> Option<CostBasis> {
        CostBasis::ALL.into_iter().find(|b| b.as_str() == name)
    }

    /// The inverse of [`CostBasis::metric`].
    pub fn from_metric(metric: &str) -> Option<CostBasis> {
        CostBasis::ALL.into_iter().find(|b| b.metric() == metric)
    }
}

impl fmt::Display for CostBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
