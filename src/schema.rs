//! The configuration file as written: its two shapes (the exporter's own YAML, and a Backstage
//! `app-config.yaml` with InfraWallet's AWS integrations), read with the line and column of
//! every value; `${VAR}` expansion; and the one error that points at a key.
//!
//! The `config` module validates these shapes common key by common key, and each part of a
//! refresh (`parts/`) its own keys, converting them to the model ([`crate::model`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::model::{CheckInterval, CostBasis};

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
    pub fn new(
        key: Option<String>,
        location: Option<Location>,
        message: impl Into<String>,
    ) -> Self {
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
pub fn render_problem(
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
        out.push_str(": ");
        push_one_line(&mut out, key);
    }
    out.push_str(": ");
    push_one_line(&mut out, message);
    out
}

/// Appends `text` with its control characters escaped (`\n`, `\r`, `\u{1b}`, ...): a key or a
/// value quoted from the file can hold a line break (a plain scalar folded over lines, a
/// quoted `"\n"`), and a problem is always one line.
fn push_one_line(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

fn position_of(location: Location) -> Option<(u64, u64)> {
    (location != Location::UNKNOWN && location.line() > 0)
        .then(|| (location.line(), location.column()))
}

/// Deserializes YAML, keeping the parser's line and column and the path of the failing key.
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
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

/// Keys whose values are secrets, in every file shape.
const SECRET_KEYS: [&str; 6] = [
    "aws_access_secret",
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

pub type Text = Spanned<String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeFile {
    pub refresh_interval: Option<Text>,
    pub check_interval: Option<Text>,
    pub max_data_age: Option<Text>,
    pub data_delay_days: Option<Spanned<u32>>,
    pub integrations: Option<Spanned<Vec<NativeIntegration>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeIntegration {
    pub name: Text,
    pub account_id: Text,
    pub assumed_role_name: Option<Text>,
    pub external_id: Option<Text>,
    pub access_key_id: Option<Text>,
    pub secret_access_key: Option<Text>,
    pub region: Option<Text>,
    pub endpoint_url: Option<Text>,
    pub sts_endpoint_url: Option<Text>,
    pub cost_basis: Option<Spanned<Vec<Text>>>,
    pub refresh_interval: Option<Text>,
    pub check_interval: Option<Text>,
    pub max_data_age: Option<Text>,
    pub resources: Option<Spanned<Vec<Text>>>,
    pub max_resource_series: Option<Spanned<usize>>,
    pub tags: Option<Spanned<Vec<Text>>>,
    pub max_tag_series: Option<Spanned<usize>>,
    pub forecast: Option<bool>,
    pub budgets: Option<Vec<RawBudget>>,
    pub organizations: Option<bool>,
    pub organizations_endpoint_url: Option<Text>,
    pub max_api_requests_per_day: Option<Spanned<u64>>,
    pub commitments: Option<bool>,
    pub anomalies: Option<bool>,
    pub max_anomaly_series: Option<Spanned<usize>>,
    pub views: Option<Spanned<Vec<Spanned<RawView>>>>,
    /// Static labels, by name.
    pub labels: Option<Spanned<HashMap<Spanned<String>, Text>>>,
    /// InfraWallet's `tags` (`key:value`), which become static labels; never in a native file.
    #[serde(skip)]
    pub infrawallet_tags: Option<Vec<Text>>,
}

/// A view as written (see the views part).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawView {
    pub name: Text,
    pub group_by: Spanned<Vec<Spanned<RawGroup>>>,
    pub filter: Option<Spanned<RawExpression>>,
    pub cost_basis: Option<Spanned<Vec<Text>>>,
    pub max_series: Option<Spanned<usize>>,
}

/// One `group_by` entry of a view: exactly one of its kinds, and an optional label name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub dimension: Option<Text>,
    pub tag: Option<Text>,
    pub cost_category: Option<Text>,
    pub label: Option<Text>,
}

/// A Cost Explorer filter `Expression`, spelled as the API spells it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpression {
    #[serde(rename = "And")]
    pub and: Option<Spanned<Vec<Spanned<RawExpression>>>>,
    #[serde(rename = "Or")]
    pub or: Option<Spanned<Vec<Spanned<RawExpression>>>>,
    #[serde(rename = "Not")]
    pub not: Option<Box<Spanned<RawExpression>>>,
    #[serde(rename = "Dimensions")]
    pub dimensions: Option<Spanned<RawValues>>,
    #[serde(rename = "Tags")]
    pub tags: Option<Spanned<RawValues>>,
    #[serde(rename = "CostCategories")]
    pub cost_categories: Option<Spanned<RawValues>>,
}

/// The `Dimensions`, `Tags` or `CostCategories` of a filter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValues {
    #[serde(rename = "Key")]
    pub key: Text,
    #[serde(rename = "Values")]
    pub values: Option<Vec<Text>>,
    #[serde(rename = "MatchOptions")]
    pub match_options: Option<Vec<Text>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub name: Text,
    pub monthly_usd: Spanned<f64>,
    pub accounts: Option<Vec<Text>>,
    pub services: Option<Vec<Text>>,
    pub cost_basis: Option<Text>,
    pub thresholds: Option<Spanned<Vec<Spanned<RawThreshold>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThreshold {
    pub percent: Spanned<f64>,
    pub on: Text,
}

/// The part of a Backstage `app-config.yaml` the exporter reads; the rest is ignored.
#[derive(Deserialize)]
pub struct AppConfig {
    pub backend: Option<AppBackend>,
}

#[derive(Deserialize)]
pub struct AppBackend {
    #[serde(rename = "infraWallet")]
    pub infra_wallet: Option<InfraWalletSection>,
}

#[derive(Deserialize)]
pub struct InfraWalletSection {
    pub integrations: Option<InfraWalletIntegrations>,
}

#[derive(Deserialize)]
pub struct InfraWalletIntegrations {
    pub aws: Option<Spanned<Vec<InfraWalletAws>>>,
}

/// InfraWallet's AWS integration. Keys InfraWallet uses for other purposes are ignored.
#[derive(Deserialize)]
pub struct InfraWalletAws {
    pub name: Text,
    #[serde(rename = "accountId")]
    pub account_id: Text,
    #[serde(rename = "assumedRoleName")]
    pub assumed_role_name: Option<Text>,
    #[serde(rename = "externalId")]
    pub external_id: Option<Text>,
    #[serde(rename = "accessKeyId")]
    pub access_key_id: Option<Text>,
    #[serde(rename = "accessKeySecret")]
    pub access_key_secret: Option<Text>,
    #[serde(rename = "secretAccessKey")]
    pub secret_access_key: Option<Text>,
    /// `key:value` strings InfraWallet adds to the integration's reports.
    pub tags: Option<Vec<Text>>,
}

impl InfraWalletAws {
    /// The integration in the native shape (InfraWallet's keys are only its identity and
    /// credentials: every other key is absent), and whether its secret used the deprecated
    /// spelling: InfraWallet reads `secretAccessKey`, and the deprecated `accessKeySecret` only
    /// when the former is absent; so does the exporter.
    pub fn into_native(self) -> (NativeIntegration, bool) {
        let (secret, deprecated) = match (self.secret_access_key, self.access_key_secret) {
            (Some(preferred), _) => (Some(preferred), false),
            (None, deprecated) => {
                let spelled = deprecated.is_some();
                (deprecated, spelled)
            }
        };
        let native = NativeIntegration {
            name: self.name,
            account_id: self.account_id,
            assumed_role_name: self.assumed_role_name,
            external_id: self.external_id,
            access_key_id: self.access_key_id,
            secret_access_key: secret,
            region: None,
            endpoint_url: None,
            sts_endpoint_url: None,
            cost_basis: None,
            refresh_interval: None,
            check_interval: None,
            max_data_age: None,
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
            views: None,
            labels: None,
            infrawallet_tags: self.tags,
        };
        (native, deprecated)
    }
}

/// Expands values with their location at hand, so that every error can point at the value.
pub struct Expander<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Expander<'_> {
    pub fn text(&self, key: &str, value: &Text) -> Result<String, ConfigError> {
        expand_env(&value.value, self.env).map_err(|message| {
            ConfigError::new(Some(key.to_string()), Some(value.referenced), message)
        })
    }

    pub fn non_empty(&self, key: &str, value: &Text) -> Result<String, ConfigError> {
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

    pub fn optional_non_empty(
        &self,
        key: &str,
        value: &Option<Text>,
    ) -> Result<Option<String>, ConfigError> {
        value.as_ref().map(|v| self.non_empty(key, v)).transpose()
    }

    pub fn interval(&self, key: &str, value: &Text) -> Result<Duration, ConfigError> {
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

    /// `check_interval`: `auto`, `off`, or a duration such as 1h.
    pub fn check_interval(&self, key: &str, value: &Text) -> Result<CheckInterval, ConfigError> {
        let text = self.text(key, value)?;
        match text.trim() {
            "auto" => Ok(CheckInterval::Auto),
            "off" => Ok(CheckInterval::Off),
            _ => humantime::parse_duration(text.trim())
                .ok()
                .filter(|d| !d.is_zero())
                .map(CheckInterval::Every)
                .ok_or_else(|| {
                    ConfigError::new(
                        Some(key.to_string()),
                        Some(value.referenced),
                        format!("{text:?} is not auto, off, or a duration such as 1h or 30m"),
                    )
                }),
        }
    }

    pub fn cost_basis(&self, key: &str, value: &Text) -> Result<CostBasis, ConfigError> {
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
    pub fn unique_list(
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

    /// A non-empty list of distinct cost bases.
    pub fn cost_bases(
        &self,
        key: &str,
        list: &Spanned<Vec<Text>>,
    ) -> Result<Vec<CostBasis>, ConfigError> {
        if list.value.is_empty() {
            return Err(ConfigError::new(
                Some(key.to_string()),
                Some(list.referenced),
                "must name at least one cost basis",
            ));
        }
        let mut bases = Vec::with_capacity(list.value.len());
        for (i, item) in list.value.iter().enumerate() {
            let item_key = format!("{key}[{i}]");
            let basis = self.cost_basis(&item_key, item)?;
            if bases.contains(&basis) {
                return Err(ConfigError::new(
                    Some(item_key),
                    Some(item.referenced),
                    format!("{basis} is listed twice"),
                ));
            }
            bases.push(basis);
        }
        Ok(bases)
    }

    pub fn account_id(&self, key: &str, value: &Text) -> Result<String, ConfigError> {
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

    pub fn url(&self, key: &str, value: &Option<Text>) -> Result<Option<String>, ConfigError> {
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

/// A count that must be at least 1 (absent: `default`).
pub fn positive(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_one_line_whatever_its_key_holds() {
        assert_eq!(
            render_problem(
                "invalid configuration",
                None,
                Some((3, 15)),
                Some("integrations.integrations\nintegrations"),
                "unclosed bracket '['\r\tx",
            ),
            "invalid configuration at line 3 column 15: integrations.integrations\\nintegrations: unclosed bracket '['\\r\\tx"
        );
    }
}
