//! Configuration: the native YAML shape, InfraWallet's Backstage `app-config.yaml` shape,
//! `${VAR}` expansion and validation.
//!
//! Every problem is reported as one [`ConfigError`] naming the file, the line and column
//! (where the parser knows them) and the key, before anything starts.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

/// Default refresh interval: Cost Explorer data changes a few times a day.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(6 * 60 * 60);
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
    /// A hard cap on billed Cost Explorer requests per UTC day (see [`crate::api_budget`]).
    pub max_api_requests_per_day: u64,
    /// Whether to export Savings Plans and reservation utilisation, coverage and expiry
    /// (fetched once a UTC day; see [`crate::commitments`]).
    pub commitments: bool,
    /// Whether to export AWS Cost Anomaly Detection's anomalies of the last 90 days.
    pub anomalies: bool,
    /// Anomaly series kept (the largest by impact); the rest are counted as dropped.
    pub max_anomaly_series: usize,
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
        }
    }

    /// The parts of a refresh this integration runs, as `aws_cost_query_success` names them.
    pub fn queries(&self) -> Vec<&'static str> {
        let mut queries = vec!["costs"];
        if !self.tags.is_empty() {
            queries.push("tags");
        }
        if !self.resources.is_empty() {
            queries.push("resources");
        }
        if self.forecast {
            queries.push("forecast");
        }
        if self.organizations {
            queries.push("organizations");
        }
        if self.commitments {
            queries.push("commitments");
        }
        if self.anomalies {
            queries.push("anomalies");
        }
        queries
    }

    /// The ARN of the role to assume, when one is configured.
    pub fn role_arn(&self) -> Option<String> {
        self.assumed_role_name
            .as_ref()
            .map(|role| format!("arn:aws:iam::{}:role/{}", self.account_id, role))
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

/// A configuration problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file, when the config came from one.
    pub file: Option<PathBuf>,
    /// 1-based line and column, when known.
    pub position: Option<(u64, u64)>,
    /// The key (dotted path) the problem is about, when there is one.
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    fn new(key: Option<String>, location: Option<Location>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            position: location.and_then(position_of),
            key,
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        render_problem(
            "invalid configuration",
            self.file.as_deref(),
            self.position,
            self.key.as_deref(),
            &self.message,
        )
    }
}

/// `WHAT [FILE] [at line L column C]: [KEY: ]MESSAGE`, the shape of every configuration error
/// (this file's and `--web.config.file`'s).
pub(crate) fn render_problem(
    what: &str,
    file: Option<&std::path::Path>,
    position: Option<(u64, u64)>,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut out = String::from(what);
    if let Some(file) = file {
        out.push_str(&format!(" {}", file.display()));
    }
    if let Some((line, column)) = position {
        out.push_str(&format!(" at line {line} column {column}"));
    }
    if let Some(key) = key {
        out.push_str(&format!(": {key}"));
    }
    out.push_str(": ");
    out.push_str(message);
    out
}

fn position_of(location: Location) -> Option<(u64, u64)> {
    (location != Location::UNKNOWN && location.line() > 0)
        .then(|| (location.line(), location.column()))
}

/// Reads and validates a configuration file of either shape.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        file: Some(path.to_path_buf()),
        position: None,
        key: None,
        message: format!("cannot read file: {err}"),
    })?;
    parse_with_env(&text, &|name| std::env::var(name).ok()).map_err(|mut err| {
        err.file = Some(path.to_path_buf());
        err
    })
}

/// Parses and validates configuration text, expanding `${VAR}` from the process environment.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, &|name| std::env::var(name).ok())
}

/// Parses and validates configuration text with `${VAR}` looked up through `env`.
pub fn parse_with_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let probe: Probe = from_yaml(text)?;
    match probe {
        Probe::Document(doc) if doc.backend.is_some() => parse_infrawallet(text, env),
        // A document that is not a mapping (a scalar, a list) is the native shape's to refuse,
        // with its position; see `Probe::Other`.
        Probe::Document(_) | Probe::Other(_) => parse_native(text, env),
        Probe::Empty => Err(ConfigError::new(
            None,
            None,
            "the file is empty: no integrations",
        )),
    }
}

/// Decides the shape without judging the content.
#[derive(Deserialize)]
#[serde(untagged)]
enum Probe {
    Document(ProbeDocument),
    Empty,
    /// Anything else. Without it a scalar or a list as the whole file was refused as "data
    /// did not match any variant of untagged enum Probe", with no position (found by
    /// tests/properties.rs).
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct ProbeDocument {
    backend: Option<serde::de::IgnoredAny>,
}

/// Deserializes YAML, keeping the parser's line and column and the path of the failing key.
pub(crate) fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let mut path = None;
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|err| {
            path = Some(key_path(err.path()));
            err.into_inner()
        })
    });
    result.map_err(|err| {
        let mut error = parser_error(err);
        // Spanned<T> adds a `value` step to the path; it is not a key of the file.
        error.key = path
            .map(|p| p.replace(".value[", "[").replace(".value.", "."))
            .map(|p| p.strip_suffix(".value").map(str::to_string).unwrap_or(p))
            .filter(|p| !p.is_empty() && p != "." && p != "?");
        error
    })
}

/// Keys whose values are secrets, in both file shapes.
const SECRET_KEYS: [&str; 5] = [
    "secret_access_key",
    "secretAccessKey",
    "accessKeySecret",
    "external_id",
    "externalId",
];

/// The failing key's path as serde_path_to_error writes it (`a.b[0].c`), but ending at a
/// secret's key: below it, the parser's steps are made of the secret's own text (a secret
/// written as `[secret: {` is a flow mapping whose key is the secret; found by
/// tests/secrets.rs).
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        if !out.is_empty() && !matches!(segment, Segment::Seq { .. }) {
            out.push('.');
        }
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push_str(key);
                if SECRET_KEYS.contains(&key.as_str()) {
                    break;
                }
            }
            Segment::Unknown => out.push('?'),
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

fn parser_error(err: serde_saphyr::Error) -> ConfigError {
    let location = err.location();
    let rendered = err.to_string();
    // serde-saphyr may render a location and a snippet into its message; keep one line
    // without the location, which the ConfigError renders itself.
    let mut message = rendered.lines().next().unwrap_or_default().trim();
    message = message.strip_prefix("error: ").unwrap_or(message);
    if let Some((line, column)) = location.and_then(position_of) {
        let prefix = format!("line {line} column {column}: ");
        message = message.strip_prefix(prefix.as_str()).unwrap_or(message);
        // The scanner's errors say it at the end ("unexpected character: ... at line 2,
        // column 1"), which repeated it (found by tests/properties.rs).
        let suffix = format!(" at line {line}, column {column}");
        message = message.strip_suffix(suffix.as_str()).unwrap_or(message);
    }
    ConfigError::new(None, location, message)
}

type Text = Spanned<String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeFile {
    refresh_interval: Option<Text>,
    data_delay_days: Option<Spanned<u32>>,
    integrations: Option<Spanned<Vec<NativeIntegration>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeIntegration {
    name: Text,
    account_id: Text,
    assumed_role_name: Option<Text>,
    external_id: Option<Text>,
    access_key_id: Option<Text>,
    secret_access_key: Option<Text>,
    region: Option<Text>,
    endpoint_url: Option<Text>,
    sts_endpoint_url: Option<Text>,
    cost_basis: Option<Spanned<Vec<Text>>>,
    refresh_interval: Option<Text>,
    resources: Option<Spanned<Vec<Text>>>,
    max_resource_series: Option<Spanned<usize>>,
    tags: Option<Spanned<Vec<Text>>>,
    max_tag_series: Option<Spanned<usize>>,
    forecast: Option<bool>,
    budgets: Option<Vec<RawBudget>>,
    organizations: Option<bool>,
    organizations_endpoint_url: Option<Text>,
    max_api_requests_per_day: Option<Spanned<u64>>,
    commitments: Option<bool>,
    anomalies: Option<bool>,
    max_anomaly_series: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    name: Text,
    monthly_usd: Spanned<f64>,
    accounts: Option<Vec<Text>>,
    services: Option<Vec<Text>>,
    cost_basis: Option<Text>,
}

/// The part of a Backstage `app-config.yaml` the exporter reads; the rest is ignored.
#[derive(Deserialize)]
struct AppConfig {
    backend: Option<AppBackend>,
}

#[derive(Deserialize)]
struct AppBackend {
    #[serde(rename = "infraWallet")]
    infra_wallet: Option<InfraWalletSection>,
}

#[derive(Deserialize)]
struct InfraWalletSection {
    integrations: Option<InfraWalletIntegrations>,
}

#[derive(Deserialize)]
struct InfraWalletIntegrations {
    aws: Option<Spanned<Vec<InfraWalletAws>>>,
}

/// InfraWallet's AWS integration. Keys InfraWallet uses for other purposes are ignored.
#[derive(Deserialize)]
struct InfraWalletAws {
    name: Text,
    #[serde(rename = "accountId")]
    account_id: Text,
    #[serde(rename = "assumedRoleName")]
    assumed_role_name: Option<Text>,
    #[serde(rename = "externalId")]
    external_id: Option<Text>,
    #[serde(rename = "accessKeyId")]
    access_key_id: Option<Text>,
    #[serde(rename = "accessKeySecret")]
    access_key_secret: Option<Text>,
    #[serde(rename = "secretAccessKey")]
    secret_access_key: Option<Text>,
}

/// Expands values with their location at hand, so that every error can point at the value.
struct Expander<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Expander<'_> {
    fn text(&self, key: &str, value: &Text) -> Result<String, ConfigError> {
        expand_env(&value.value, self.env).map_err(|message| {
            ConfigError::new(Some(key.to_string()), Some(value.referenced), message)
        })
    }

    fn non_empty(&self, key: &str, value: &Text) -> Result<String, ConfigError> {
        let text = self.text(key, value)?;
        if text.trim().is_empty() {
            return Err(ConfigError::new(
                Some(key.to_string()),
                Some(value.referenced),
                "must not be empty",
            ));
        }
        Ok(text)
    }

    fn optional_non_empty(
        &self,
        key: &str,
        value: &Option<Text>,
    ) -> Result<Option<String>, ConfigError> {
        value.as_ref().map(|v| self.non_empty(key, v)).transpose()
    }

    fn interval(&self, key: &str, value: &Text) -> Result<Duration, ConfigError> {
        let text = self.text(key, value)?;
        let err = |message: String| {
            ConfigError::new(Some(key.to_string()), Some(value.referenced), message)
        };
        let duration = humantime::parse_duration(text.trim())
            .map_err(|e| err(format!("{text:?} is not a duration such as 6h or 90m: {e}")))?;
        if duration.is_zero() {
            return Err(err("must be greater than zero".to_string()));
        }
        Ok(duration)
    }

    fn cost_basis(&self, key: &str, value: &Text) -> Result<CostBasis, ConfigError> {
        let text = self.text(key, value)?;
        CostBasis::parse(text.trim()).ok_or_else(|| {
            ConfigError::new(
                Some(key.to_string()),
                Some(value.referenced),
                format!(
                    "unknown cost basis {text:?}; expected one of {}",
                    CostBasis::ALL.map(CostBasis::as_str).join(", ")
                ),
            )
        })
    }

    /// A list of non-empty, distinct strings (absent: empty).
    fn unique_list(
        &self,
        key: &str,
        value: &Option<Spanned<Vec<Text>>>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut out: Vec<String> = Vec::new();
        for (i, item) in value.iter().flat_map(|list| list.value.iter()).enumerate() {
            let item_key = format!("{key}[{i}]");
            let text = self.non_empty(&item_key, item)?;
            if out.contains(&text) {
                return Err(ConfigError::new(
                    Some(item_key),
                    Some(item.referenced),
                    format!("{text:?} is listed twice"),
                ));
            }
            out.push(text);
        }
        Ok(out)
    }

    fn account_id(&self, key: &str, value: &Text) -> Result<String, ConfigError> {
        let text = self.text(key, value)?;
        if text.len() != 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::new(
                Some(key.to_string()),
                Some(value.referenced),
                format!(
                    "{text:?} is not an AWS account id (exactly 12 digits, quoted as a string)"
                ),
            ));
        }
        Ok(text)
    }

    fn url(&self, key: &str, value: &Option<Text>) -> Result<Option<String>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        let text = self.text(key, value)?;
        match text.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() =>
            {
                Ok(Some(text))
            }
            _ => Err(ConfigError::new(
                Some(key.to_string()),
                Some(value.referenced),
                format!("{text:?} is not an http:// or https:// URL"),
            )),
        }
    }
}

/// Replaces `${NAME}` with the variable's value; `$${` stands for a literal `${`.
pub fn expand_env(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {input:?}"))?;
            let name = &after[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "${{{name}}} is not a valid environment variable reference"
                ));
            }
            let value =
                env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

struct KeyNames {
    list: &'static str,
    name: &'static str,
    account_id: &'static str,
    assumed_role_name: &'static str,
    external_id: &'static str,
    access_key_id: &'static str,
    secret_access_key: &'static str,
}

const NATIVE_KEYS: KeyNames = KeyNames {
    list: "integrations",
    name: "name",
    account_id: "account_id",
    assumed_role_name: "assumed_role_name",
    external_id: "external_id",
    access_key_id: "access_key_id",
    secret_access_key: "secret_access_key",
};

const INFRAWALLET_KEYS: KeyNames = KeyNames {
    list: "backend.infraWallet.integrations.aws",
    name: "name",
    account_id: "accountId",
    assumed_role_name: "assumedRoleName",
    external_id: "externalId",
    access_key_id: "accessKeyId",
    secret_access_key: "secretAccessKey",
};

/// Validates one integration of either shape (InfraWallet's is converted to the native one);
/// `k` spells the keys as the file does.
fn validate_integration(
    raw: &NativeIntegration,
    index: usize,
    k: &KeyNames,
    x: &Expander<'_>,
    default_interval: Duration,
) -> Result<Integration, ConfigError> {
    let key = |field: &str| format!("{}[{}].{}", k.list, index, field);
    let name = x.non_empty(&key(k.name), &raw.name)?;
    let account_id = x.account_id(&key(k.account_id), &raw.account_id)?;
    let assumed_role_name =
        x.optional_non_empty(&key(k.assumed_role_name), &raw.assumed_role_name)?;
    let external_id = x.optional_non_empty(&key(k.external_id), &raw.external_id)?;
    if external_id.is_some() && assumed_role_name.is_none() {
        let at = raw.external_id.as_ref().map(|v| v.referenced);
        return Err(ConfigError::new(
            Some(key(k.external_id)),
            at,
            format!("is only used with {}", k.assumed_role_name),
        ));
    }
    let access_key_id = x.optional_non_empty(&key(k.access_key_id), &raw.access_key_id)?;
    let secret = x.optional_non_empty(&key(k.secret_access_key), &raw.secret_access_key)?;
    let static_credentials = match (access_key_id, secret) {
        (Some(access_key_id), Some(secret)) => Some(StaticCredentials {
            access_key_id,
            secret_access_key: Secret::new(secret),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                Some(key(k.access_key_id)),
                raw.access_key_id.as_ref().map(|v| v.referenced),
                format!(
                    "is set but {} is not: give both halves of the key pair or neither",
                    k.secret_access_key
                ),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                Some(key(k.secret_access_key)),
                raw.secret_access_key.as_ref().map(|v| v.referenced),
                format!(
                    "is set but {} is not: give both halves of the key pair or neither",
                    k.access_key_id
                ),
            ));
        }
    };
    let region = match &raw.region {
        Some(region) => x.non_empty(&key("region"), region)?,
        None => DEFAULT_REGION.to_string(),
    };
    let endpoint_url = x.url(&key("endpoint_url"), &raw.endpoint_url)?;
    let sts_endpoint_url = x.url(&key("sts_endpoint_url"), &raw.sts_endpoint_url)?;
    let cost_basis = match &raw.cost_basis {
        None => vec![CostBasis::Unblended],
        Some(list) => {
            if list.value.is_empty() {
                return Err(ConfigError::new(
                    Some(key("cost_basis")),
                    Some(list.referenced),
                    "must name at least one cost basis",
                ));
            }
            let mut bases = Vec::with_capacity(list.value.len());
            for (i, item) in list.value.iter().enumerate() {
                let item_key = format!("{}[{i}]", key("cost_basis"));
                let basis = x.cost_basis(&item_key, item)?;
                if bases.contains(&basis) {
                    return Err(ConfigError::new(
                        Some(item_key),
                        Some(item.referenced),
                        format!("{basis} is listed twice"),
                    ));
                }
                bases.push(basis);
            }
            bases
        }
    };
    let refresh_interval = match &raw.refresh_interval {
        Some(value) => x.interval(&key("refresh_interval"), value)?,
        None => default_interval,
    };
    let resources = x.unique_list(&key("resources"), &raw.resources)?;
    let tags = x.unique_list(&key("tags"), &raw.tags)?;
    let max_resource_series = positive(
        &key("max_resource_series"),
        &raw.max_resource_series,
        DEFAULT_MAX_SERIES,
    )?;
    let max_tag_series = positive(
        &key("max_tag_series"),
        &raw.max_tag_series,
        DEFAULT_MAX_SERIES,
    )?;
    let max_anomaly_series = positive(
        &key("max_anomaly_series"),
        &raw.max_anomaly_series,
        DEFAULT_MAX_ANOMALY_SERIES,
    )?;
    let mut budgets: Vec<Budget> = Vec::new();
    for (i, budget) in raw.budgets.iter().flatten().enumerate() {
        let budget_key = |field: &str| format!("{}[{i}].{field}", key("budgets"));
        let name = x.non_empty(&budget_key("name"), &budget.name)?;
        if budgets.iter().any(|b| b.name == name) {
            return Err(ConfigError::new(
                Some(budget_key("name")),
                Some(budget.name.referenced),
                format!("duplicate budget name {name:?}"),
            ));
        }
        let amount = &budget.monthly_usd;
        if !(amount.value.is_finite() && amount.value > 0.0) {
            return Err(ConfigError::new(
                Some(budget_key("monthly_usd")),
                Some(amount.referenced),
                "must be a positive amount of USD",
            ));
        }
        let mut accounts = Vec::new();
        for (j, account) in budget.accounts.iter().flatten().enumerate() {
            accounts.push(x.account_id(&format!("{}[{j}]", budget_key("accounts")), account)?);
        }
        let mut services = Vec::new();
        for (j, service) in budget.services.iter().flatten().enumerate() {
            services.push(x.non_empty(&format!("{}[{j}]", budget_key("services")), service)?);
        }
        let budget_basis = match &budget.cost_basis {
            None => cost_basis[0],
            Some(text) => {
                let k = budget_key("cost_basis");
                let basis = x.cost_basis(&k, text)?;
                if !cost_basis.contains(&basis) {
                    return Err(ConfigError::new(
                        Some(k),
                        Some(text.referenced),
                        format!("{basis} is not in the integration's cost_basis; add it there"),
                    ));
                }
                basis
            }
        };
        budgets.push(Budget {
            name,
            monthly_usd: amount.value,
            accounts,
            services,
            cost_basis: budget_basis,
        });
    }
    let organizations_endpoint_url = x.url(
        &key("organizations_endpoint_url"),
        &raw.organizations_endpoint_url,
    )?;
    let max_api_requests_per_day = match &raw.max_api_requests_per_day {
        None => DEFAULT_MAX_API_REQUESTS_PER_DAY,
        Some(v) if v.value >= 1 => v.value,
        Some(v) => {
            return Err(ConfigError::new(
                Some(key("max_api_requests_per_day")),
                Some(v.referenced),
                "must be a positive number of requests",
            ));
        }
    };
    Ok(Integration {
        name,
        account_id,
        assumed_role_name,
        external_id,
        static_credentials,
        region,
        endpoint_url,
        sts_endpoint_url,
        cost_basis,
        refresh_interval,
        resources,
        max_resource_series,
        tags,
        max_tag_series,
        forecast: raw.forecast.unwrap_or(true),
        budgets,
        organizations: raw.organizations.unwrap_or(false),
        organizations_endpoint_url,
        max_api_requests_per_day,
        commitments: raw.commitments.unwrap_or(false),
        anomalies: raw.anomalies.unwrap_or(false),
        max_anomaly_series,
    })
}

/// A count that must be at least 1 (absent: `default`).
fn positive(
    key: &str,
    value: &Option<Spanned<usize>>,
    default: usize,
) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.value >= 1 => Ok(v.value),
        Some(v) => Err(ConfigError::new(
            Some(key.to_string()),
            Some(v.referenced),
            "must be at least 1",
        )),
    }
}

/// Validates every integration, then checks that names are unique.
fn validate_all<'k>(
    list: &[NativeIntegration],
    keys: impl Fn(usize) -> &'k KeyNames,
    x: &Expander<'_>,
    default_interval: Duration,
) -> Result<Vec<Integration>, ConfigError> {
    let integrations = list
        .iter()
        .enumerate()
        .map(|(index, raw)| validate_integration(raw, index, keys(index), x, default_interval))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<&Text> = list.iter().map(|r| &r.name).collect();
    check_unique_names(&integrations, &names, keys(0).list)?;
    Ok(integrations)
}

fn check_unique_names(
    integrations: &[Integration],
    names: &[&Text],
    list_key: &str,
) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, integration) in integrations.iter().enumerate() {
        if let Some(first) = seen.insert(integration.name.as_str(), i) {
            return Err(ConfigError::new(
                Some(format!("{list_key}[{i}].name")),
                Some(names[i].referenced),
                format!(
                    "duplicate integration name {:?} (also used by {list_key}[{first}]); names must be unique",
                    integration.name
                ),
            ));
        }
    }
    Ok(())
}

fn no_integrations(list_key: &str, location: Option<Location>) -> ConfigError {
    ConfigError::new(
        Some(list_key.to_string()),
        location,
        "no integrations configured; at least one is required",
    )
}

fn parse_native(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let file: NativeFile = from_yaml(text)?;
    let x = Expander { env };
    let refresh_interval = match &file.refresh_interval {
        Some(value) => x.interval("refresh_interval", value)?,
        None => DEFAULT_REFRESH_INTERVAL,
    };
    let data_delay_days = match file.data_delay_days {
        Some(days) if days.value > MAX_DATA_DELAY_DAYS => {
            return Err(ConfigError::new(
                Some("data_delay_days".into()),
                Some(days.referenced),
                format!("{} is more than {MAX_DATA_DELAY_DAYS}", days.value),
            ));
        }
        Some(days) => days.value,
        None => DEFAULT_DATA_DELAY_DAYS,
    };
    let list = match &file.integrations {
        Some(list) if !list.value.is_empty() => list,
        other => {
            return Err(no_integrations(
                "integrations",
                other.as_ref().map(|l| l.referenced),
            ));
        }
    };
    let integrations = validate_all(&list.value, |_| &NATIVE_KEYS, &x, refresh_interval)?;
    // AWS serves resource-level data for the last 14 days only.
    if data_delay_days >= 14
        && let Some(index) = integrations.iter().position(|i| !i.resources.is_empty())
    {
        return Err(ConfigError::new(
            Some(format!("integrations[{index}].resources")),
            list.value[index].resources.as_ref().map(|r| r.referenced),
            format!(
                "resource-level data covers only the last 14 days, but data_delay_days is {data_delay_days}"
            ),
        ));
    }
    Ok(Config {
        data_delay_days,
        integrations,
        format: ConfigFormat::Native,
    })
}

fn parse_infrawallet(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file: AppConfig = from_yaml(text)?;
    let list_key = INFRAWALLET_KEYS.list;
    let list = file
        .backend
        .and_then(|b| b.infra_wallet)
        .and_then(|iw| iw.integrations)
        .and_then(|i| i.aws);
    let list = match list {
        Some(list) if !list.value.is_empty() => list,
        other => return Err(no_integrations(list_key, other.map(|l| l.referenced))),
    };
    let x = Expander { env };
    let mut converted = Vec::with_capacity(list.value.len());
    let mut spelled_deprecated = Vec::with_capacity(list.value.len());
    for raw in list.value {
        // InfraWallet reads `secretAccessKey`, and the deprecated `accessKeySecret` only when
        // the former is absent; so does the exporter.
        let secret = match (raw.secret_access_key, raw.access_key_secret) {
            (Some(preferred), _) => {
                spelled_deprecated.push(false);
                Some(preferred)
            }
            (None, deprecated) => {
                spelled_deprecated.push(deprecated.is_some());
                deprecated
            }
        };
        converted.push(NativeIntegration {
            name: raw.name,
            account_id: raw.account_id,
            assumed_role_name: raw.assumed_role_name,
            external_id: raw.external_id,
            access_key_id: raw.access_key_id,
            secret_access_key: secret,
            region: None,
            endpoint_url: None,
            sts_endpoint_url: None,
            cost_basis: None,
            refresh_interval: None,
            resources: None,
            max_resource_series: None,
            tags: None,
            max_tag_series: None,
            forecast: None,
            budgets: None,
            organizations: None,
            organizations_endpoint_url: None,
            max_api_requests_per_day: None,
            commitments: None,
            anomalies: None,
            max_anomaly_series: None,
        });
    }
    const DEPRECATED_SPELLING: KeyNames = KeyNames {
        secret_access_key: "accessKeySecret",
        ..INFRAWALLET_KEYS
    };
    let integrations = validate_all(
        &converted,
        |index| {
            if spelled_deprecated[index] {
                &DEPRECATED_SPELLING
            } else {
                &INFRAWALLET_KEYS
            }
        },
        &x,
        DEFAULT_REFRESH_INTERVAL,
    )?;
    Ok(Config {
        data_delay_days: DEFAULT_DATA_DELAY_DAYS,
        integrations,
        format: ConfigFormat::InfraWallet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "AWS_KEY" => Some("AKIAFROMENV".into()),
            "AWS_SECRET" => Some("secret-from-env".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_with_env(text, &env)
    }

    fn err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn a_syntax_error_inside_a_secret_does_not_show_it() {
        for (key, value) in [
            ("secret_access_key", "[s3cret-text-1: {"),
            ("external_id", "{s3cret-text-2: [1"),
        ] {
            let text = format!(
                "integrations:\n  - name: payer\n    account_id: \"123456789012\"\n    access_key_id: AKIAEXAMPLE\n    {key}: {value}\n"
            );
            let e = err(&text);
            assert_eq!(
                e.key.as_deref(),
                Some(format!("integrations[0].{key}").as_str())
            );
            assert!(!e.to_string().contains("s3cret-text"), "{e}");
        }
    }

    const FULL: &str = r#"
refresh_interval: 2h
data_delay_days: 2
integrations:
  - name: payer
    account_id: "123456789012"
    assumed_role_name: CostExporter
    external_id: "ext-1"
    access_key_id: ${AWS_KEY}
    secret_access_key: ${AWS_SECRET}
    region: eu-west-1
    endpoint_url: http://127.0.0.1:4566
    sts_endpoint_url: https://sts.example.test
    cost_basis: [unblended, amortized, blended, net_unblended, net_amortized]
  - name: member
    account_id: 012345678901
    refresh_interval: 90m
"#;

    #[test]
    fn full_native_config() {
        let config = parse(FULL).unwrap();
        assert_eq!(config.format, ConfigFormat::Native);
        assert_eq!(config.data_delay_days, 2);
        let payer = &config.integrations[0];
        assert_eq!(payer.name, "payer");
        assert_eq!(payer.account_id, "123456789012");
        assert_eq!(
            payer.role_arn().as_deref(),
            Some("arn:aws:iam::123456789012:role/CostExporter")
        );
        assert_eq!(payer.external_id.as_deref(), Some("ext-1"));
        let keys = payer.static_credentials.as_ref().unwrap();
        assert_eq!(keys.access_key_id, "AKIAFROMENV");
        assert_eq!(keys.secret_access_key.expose(), "secret-from-env");
        assert_eq!(payer.region, "eu-west-1");
        assert_eq!(payer.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(
            payer.sts_endpoint_url.as_deref(),
            Some("https://sts.example.test")
        );
        assert_eq!(payer.cost_basis, CostBasis::ALL.to_vec());
        assert_eq!(payer.refresh_interval, Duration::from_secs(7200));
        let member = &config.integrations[1];
        // An unquoted id keeps its leading zero: the scalar is read as text.
        assert_eq!(member.account_id, "012345678901");
        assert_eq!(member.region, DEFAULT_REGION);
        assert_eq!(member.cost_basis, vec![CostBasis::Unblended]);
        assert_eq!(member.refresh_interval, Duration::from_secs(5400));
        assert!(member.static_credentials.is_none() && member.role_arn().is_none());
    }

    const BREADTH: &str = r#"
integrations:
  - name: payer
    account_id: "123456789012"
    cost_basis: [unblended, amortized]
    resources: ["Amazon Elastic Compute Cloud - Compute"]
    max_resource_series: 50
    tags: [team, env]
    max_tag_series: 20
    forecast: false
    organizations: true
    organizations_endpoint_url: http://127.0.0.1:1
    budgets:
      - name: platform
        monthly_usd: 12000
        accounts: ["123456789012"]
        services: ["Amazon Elastic Compute Cloud - Compute"]
      - name: everything
        monthly_usd: 50000.5
        cost_basis: amortized
"#;

    #[test]
    fn breadth_settings() {
        let config = parse(BREADTH).unwrap();
        let i = &config.integrations[0];
        assert_eq!(i.resources, vec!["Amazon Elastic Compute Cloud - Compute"]);
        assert_eq!((i.max_resource_series, i.max_tag_series), (50, 20));
        assert_eq!(i.tags, vec!["team", "env"]);
        assert!(!i.forecast && i.organizations);
        assert_eq!(
            i.organizations_endpoint_url.as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(i.budgets.len(), 2);
        assert_eq!(
            i.budgets[0].cost_basis,
            CostBasis::Unblended,
            "defaults to the first basis"
        );
        assert!(i.budgets[0].covers("123456789012", "Amazon Elastic Compute Cloud - Compute"));
        assert!(!i.budgets[0].covers("123456789012", "Amazon S3"));
        assert!(!i.budgets[0].covers("999999999999", "Amazon Elastic Compute Cloud - Compute"));
        assert_eq!(i.budgets[1].cost_basis, CostBasis::Amortized);
        assert_eq!(i.budgets[1].monthly_usd, 50000.5);
        assert!(i.budgets[1].covers("any", "thing") && !i.budgets[1].is_filtered());
        let defaults =
            parse("integrations:\n  - name: a\n    account_id: \"123456789012\"\n").unwrap();
        let d = &defaults.integrations[0];
        assert!(d.forecast && !d.organizations && d.tags.is_empty() && d.resources.is_empty());
        assert_eq!(
            (d.max_resource_series, d.max_tag_series),
            (DEFAULT_MAX_SERIES, DEFAULT_MAX_SERIES)
        );
    }

    #[test]
    fn bad_breadth_settings() {
        let e = err(&BREADTH.replace("monthly_usd: 12000", "monthly_usd: -5"));
        assert_eq!(
            e.key.as_deref(),
            Some("integrations[0].budgets[0].monthly_usd")
        );
        assert_eq!(e.position.map(|p| p.0), Some(15));
        let e = err(&BREADTH.replace("cost_basis: amortized", "cost_basis: blended"));
        assert_eq!(
            e.key.as_deref(),
            Some("integrations[0].budgets[1].cost_basis")
        );
        assert!(
            e.message.contains("not in the integration's cost_basis"),
            "{e}"
        );
        let e = err(&BREADTH.replace("name: everything", "name: platform"));
        assert!(e.message.contains("duplicate budget name"), "{e}");
        let e = err(&BREADTH.replace("accounts: [\"123456789012\"]", "accounts: [\"1234\"]"));
        assert_eq!(
            e.key.as_deref(),
            Some("integrations[0].budgets[0].accounts[0]")
        );
        let e = err(&BREADTH.replace("tags: [team, env]", "tags: [team, team]"));
        assert_eq!(e.key.as_deref(), Some("integrations[0].tags[1]"));
        let e = err(&BREADTH.replace("max_tag_series: 20", "max_tag_series: 0"));
        assert_eq!(e.key.as_deref(), Some("integrations[0].max_tag_series"));
        let e = err(&BREADTH.replace("forecast: false", "forecast: sometimes"));
        assert_eq!(e.key.as_deref(), Some("integrations[0].forecast"));
        let e = err(&BREADTH.replace(
            "        monthly_usd: 12000\n",
            "        monthly_usd: 12000\n        limit: 3\n",
        ));
        assert!(e.message.contains("unknown field `limit`"), "{e}");
        let e = err(&format!("data_delay_days: 14\n{BREADTH}"));
        assert_eq!(e.key.as_deref(), Some("integrations[0].resources"));
        assert!(e.message.contains("last 14 days"), "{e}");
    }

    #[test]
    fn defaults() {
        let config =
            parse("integrations:\n  - name: a\n    account_id: \"123456789012\"\n").unwrap();
        assert_eq!(
            config.integrations[0].refresh_interval,
            DEFAULT_REFRESH_INTERVAL
        );
        assert_eq!(config.data_delay_days, 1);
    }

    #[test]
    fn unknown_key() {
        let e =
            err("integrations:\n  - name: a\n    account_id: \"123456789012\"\n    acount: 1\n");
        assert_eq!(e.position, Some((4, 5)));
        assert_eq!(e.key.as_deref(), Some("integrations[0].acount"));
        assert!(e.message.contains("unknown field `acount`"), "{e}");
        let top = err("refresh: 1h\nintegrations: []\n");
        assert!(top.message.contains("unknown field `refresh`"), "{top}");
    }

    #[test]
    fn wrong_types() {
        let e = err("integrations:\n  - name: [a, b]\n    account_id: \"123456789012\"\n");
        assert_eq!(e.position, Some((2, 11)));
        assert_eq!(e.key.as_deref(), Some("integrations[0].name"));
        let e = err(
            "data_delay_days: many\nintegrations:\n  - name: a\n    account_id: \"123456789012\"\n",
        );
        assert_eq!(e.key.as_deref(), Some("data_delay_days"));
        assert_eq!(e.position, Some((1, 18)));
        let e = err("integrations: payer\n");
        assert_eq!(e.key.as_deref(), Some("integrations"));
        assert_eq!(e.position.map(|p| p.0), Some(1));
    }

    #[test]
    fn max_api_requests_per_day() {
        let yaml = |value: &str| {
            format!(
                "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    max_api_requests_per_day: {value}\n"
            )
        };
        let config = parse(&yaml("120")).unwrap();
        assert_eq!(config.integrations[0].max_api_requests_per_day, 120);
        let defaults =
            parse("integrations:\n  - name: a\n    account_id: \"123456789012\"\n").unwrap();
        assert_eq!(
            defaults.integrations[0].max_api_requests_per_day,
            DEFAULT_MAX_API_REQUESTS_PER_DAY
        );
        for bad in ["0", "-3", "many", "1.5", "[1]"] {
            let e = err(&yaml(bad));
            assert_eq!(
                e.key.as_deref(),
                Some("integrations[0].max_api_requests_per_day"),
                "{bad}: {e}"
            );
            assert_eq!(e.position, Some((4, 31)), "{bad}: {e}");
        }
        assert!(err(&yaml("0")).message.contains("positive"));
    }

    #[test]
    fn duplicate_names() {
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n  - name: a\n    account_id: \"210987654321\"\n",
        );
        assert_eq!(e.position, Some((4, 11)));
        assert_eq!(e.key.as_deref(), Some("integrations[1].name"));
        assert!(
            e.message.contains("duplicate integration name \"a\""),
            "{e}"
        );
    }

    #[test]
    fn account_ids() {
        for bad in [
            "\"12345678901\"",
            "\"1234567890123\"",
            "\"12345678901a\"",
            "\"\"",
        ] {
            let e = err(&format!(
                "integrations:\n  - name: a\n    account_id: {bad}\n"
            ));
            assert_eq!(
                e.key.as_deref(),
                Some("integrations[0].account_id"),
                "{bad}"
            );
            assert_eq!(e.position, Some((3, 17)), "{bad}");
            assert!(e.message.contains("12 digits"), "{e}");
        }
    }

    #[test]
    fn half_key_pair() {
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    access_key_id: AKIA\n",
        );
        assert_eq!(e.key.as_deref(), Some("integrations[0].access_key_id"));
        assert_eq!(e.position, Some((4, 20)));
        assert!(e.message.contains("secret_access_key is not"), "{e}");
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    secret_access_key: s3cr3t\n",
        );
        assert_eq!(e.key.as_deref(), Some("integrations[0].secret_access_key"));
        // The error names the key, never the secret.
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn unknown_cost_basis() {
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    cost_basis: [unblended, list_price]\n",
        );
        assert_eq!(e.key.as_deref(), Some("integrations[0].cost_basis[1]"));
        assert_eq!(e.position, Some((4, 29)));
        assert!(
            e.message.contains("unknown cost basis \"list_price\""),
            "{e}"
        );
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    cost_basis: []\n",
        );
        assert!(e.message.contains("at least one"), "{e}");
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    cost_basis: [blended, blended]\n",
        );
        assert!(e.message.contains("listed twice"), "{e}");
    }

    #[test]
    fn intervals() {
        let e = err(
            "refresh_interval: 0s\nintegrations:\n  - name: a\n    account_id: \"123456789012\"\n",
        );
        assert_eq!(
            (e.key.as_deref(), e.position),
            (Some("refresh_interval"), Some((1, 19)))
        );
        assert!(e.message.contains("greater than zero"));
        let e = err(
            "refresh_interval: soon\nintegrations:\n  - name: a\n    account_id: \"123456789012\"\n",
        );
        assert!(e.message.contains("\"soon\" is not a duration"), "{e}");
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    refresh_interval: 0m\n",
        );
        assert_eq!(e.key.as_deref(), Some("integrations[0].refresh_interval"));
    }

    #[test]
    fn no_integrations() {
        assert!(err("").message.contains("no integrations"));
        assert!(
            err("refresh_interval: 1h\n")
                .message
                .contains("no integrations")
        );
        let e = err("integrations: []\n");
        assert_eq!(e.key.as_deref(), Some("integrations"));
        assert!(e.message.contains("no integrations"));
    }

    #[test]
    fn environment_expansion() {
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    region: ${NOPE}\n",
        );
        assert_eq!(e.key.as_deref(), Some("integrations[0].region"));
        assert_eq!(e.message, "environment variable NOPE is not set");
        assert_eq!(
            expand_env("a${AWS_KEY}b$${AWS_KEY}$c", &env).unwrap(),
            "aAKIAFROMENVb${AWS_KEY}$c"
        );
        assert!(expand_env("${AWS_KEY", &env).is_err());
        assert!(expand_env("${1X}", &env).is_err());
    }

    #[test]
    fn yaml_syntax_errors_have_a_position() {
        let e = err("integrations:\n  - name: a\n   account_id: [\n");
        assert!(e.position.is_some(), "{e}");
    }

    #[test]
    fn error_message_names_file_line_column_and_key() {
        let dir = std::env::temp_dir().join(format!("ace-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.yaml");
        std::fs::write(
            &path,
            "integrations:\n  - name: a\n    account_id: \"42\"\n",
        )
        .unwrap();
        let e = load_file(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "invalid configuration {} at line 3 column 17: integrations[0].account_id: \"42\" is not an AWS account id (exactly 12 digits, quoted as a string)",
                path.display()
            )
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    const APP_CONFIG: &str = r#"
app:
  title: Backstage
  baseUrl: http://localhost:3000
backend:
  baseUrl: http://localhost:7007
  database:
    client: better-sqlite3
    connection: ':memory:'
  infraWallet:
    integrations:
      aws:
        - name: payer
          accountId: '123456789012'
          assumedRoleName: InfraWalletRole
          accessKeyId: ${AWS_KEY}
          accessKeySecret: ${AWS_SECRET}
          filters:
            - type: exclude
              attribute: Service
              pattern: ^Tax$
        - name: member
          accountId: '210987654321'
          accessKeyId: AKIAOTHER
          secretAccessKey: other-secret
        - name: chain
          accountId: '333333333333'
      azure:
        - name: ignored
          subscriptionId: ${UNSET_BUT_IGNORED}
"#;

    #[test]
    fn infrawallet_app_config() {
        let config = parse(APP_CONFIG).unwrap();
        assert_eq!(config.format, ConfigFormat::InfraWallet);
        assert_eq!(config.integrations.len(), 3);
        let payer = &config.integrations[0];
        assert_eq!(
            payer.role_arn().as_deref(),
            Some("arn:aws:iam::123456789012:role/InfraWalletRole")
        );
        assert_eq!(
            payer
                .static_credentials
                .as_ref()
                .unwrap()
                .secret_access_key
                .expose(),
            "secret-from-env"
        );
        let member = &config.integrations[1];
        assert_eq!(
            member
                .static_credentials
                .as_ref()
                .unwrap()
                .secret_access_key
                .expose(),
            "other-secret"
        );
        assert!(config.integrations[2].static_credentials.is_none());
        assert_eq!(
            config.integrations[2].refresh_interval,
            DEFAULT_REFRESH_INTERVAL
        );
        assert!(
            config
                .integrations
                .iter()
                .all(|i| i.max_api_requests_per_day == DEFAULT_MAX_API_REQUESTS_PER_DAY)
        );
    }

    #[test]
    fn infrawallet_errors_use_its_key_names() {
        let text = APP_CONFIG.replace("'210987654321'", "'2109'");
        let e = err(&text);
        assert_eq!(
            e.key.as_deref(),
            Some("backend.infraWallet.integrations.aws[1].accountId")
        );
        assert_eq!(e.position, Some((23, 22)));
        // Both spellings of the secret: InfraWallet prefers secretAccessKey, and so do we.
        let both = APP_CONFIG.replace(
            "          accessKeySecret: ${AWS_SECRET}\n",
            "          accessKeySecret: ${AWS_SECRET}\n          secretAccessKey: newer-secret\n",
        );
        let config = parse(&both).unwrap();
        let keys = config.integrations[0].static_credentials.as_ref().unwrap();
        assert_eq!(keys.secret_access_key.expose(), "newer-secret");
        let e = err("backend:\n  baseUrl: x\n");
        assert_eq!(
            e.message,
            "no integrations configured; at least one is required"
        );
        assert_eq!(
            e.key.as_deref(),
            Some("backend.infraWallet.integrations.aws")
        );
    }

    #[test]
    fn shipped_examples_parse() {
        let env = |name: &str| Some(format!("value-of-{name}"));
        for file in [
            "examples/aws-cost-exporter.yaml",
            "examples/app-config.yaml",
            "examples/demo.yaml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace("${AWS_COST_EXPORTER_DEMO_ENDPOINT}", "http://127.0.0.1:1");
            parse_with_env(&text, &env).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}
