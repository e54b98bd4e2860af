//! electrolux-oss/aws-cost-exporter's configuration (v1.1.4), read as it is: its file shape
//! (`exporter_port`, `polling_interval_seconds`, the credentials, `metrics`,
//! `target_aws_accounts`), its `$VAR|default` environment syntax (envyaml's, applied to the
//! whole text before the YAML is read), its rules (checked in its order, each problem one
//! message with its key, line and column), and its conversion to the model.
//!
//! Each of its metrics becomes a family of its own name ([`ElectroluxMetric`], served by the
//! `electrolux` part), with electrolux's labels and values. The target accounts are grouped by
//! the credentials that ask for them: with `aws_assumed_role_name`, each target is asked as
//! itself (the role in its `Publisher` account), one integration each, named by its
//! `Publisher`; without, every target is asked with the same credentials and gets the same
//! figures, so one integration, `default`, asks once for all of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::model::{
    CheckInterval, Config, ConfigFormat, CostBasis, Electrolux, ElectroluxAlias, ElectroluxGroup,
    ElectroluxIterate, ElectroluxMetric, FilterExpr, Integration, KeyKind, Secret,
    StaticCredentials, is_label_name,
};
use crate::schema::{ConfigError, from_yaml};

/// The integration of the targets asked with the file's own credentials (no role).
pub const DEFAULT_INTEGRATION: &str = "default";

/// The label electrolux puts on every series, always `Usage`.
const CHARGE_TYPE: (&str, &str) = ("ChargeType", "Usage");

/// Its record types (`main.py`'s `valid_record_types`).
const RECORD_TYPES: [&str; 11] = [
    "Credit",
    "DiscountedUsage",
    "Fee",
    "Refund",
    "RIFee",
    "SavingsPlanCoveredUsage",
    "SavingsPlanNegation",
    "SavingsPlanRecurringFee",
    "SavingsPlanUpfrontFee",
    "Tax",
    "Usage",
];

/// The record types a metric of this type sums when it names none (`_get_default_record_types`).
fn default_record_types(metric_type: CostBasis) -> Vec<String> {
    let mut types = vec!["Usage"];
    if matches!(metric_type, CostBasis::Amortized | CostBasis::NetAmortized) {
        types.extend([
            "SavingsPlanCoveredUsage",
            "SavingsPlanRecurringFee",
            "SavingsPlanUpfrontFee",
            "DiscountedUsage",
            "RIFee",
        ]);
    }
    types.into_iter().map(str::to_string).collect()
}

#[derive(Deserialize)]
struct File {
    exporter_port: Option<Spanned<u16>>,
    polling_interval_seconds: Option<Spanned<f64>>,
    aws_access_key: Option<Spanned<Option<String>>>,
    aws_access_secret: Option<Spanned<Option<String>>>,
    aws_assumed_role_name: Option<Spanned<Option<String>>>,
    metrics: Option<Spanned<Vec<Spanned<RawMetric>>>>,
    target_aws_accounts: Option<Spanned<Vec<Spanned<Target>>>>,
}

/// A target account: every key a label, `Publisher` its account id.
type Target = BTreeMap<String, Spanned<Option<String>>>;

#[derive(Deserialize)]
struct RawMetric {
    metric_name: Option<Spanned<String>>,
    metric_description: Option<Spanned<String>>,
    group_by: Option<Spanned<RawGroupBy>>,
    metric_type: Option<Spanned<String>>,
    granularity: Option<Spanned<String>>,
    data_delay_days: Option<Spanned<Delay>>,
    record_types: Option<Spanned<Vec<Spanned<String>>>>,
    tag_filters: Option<Spanned<Vec<Spanned<RawTagFilter>>>>,
    dimension_filters: Option<Spanned<Vec<Spanned<RawDimensionFilter>>>>,
}

/// `data_delay_days`: a count of days, or (as Python's bool is an int) `true` for 1.
#[derive(Deserialize)]
#[serde(untagged)]
enum Delay {
    Days(i64),
    Flag(bool),
}

#[derive(Deserialize)]
struct RawGroupBy {
    enabled: Option<Spanned<bool>>,
    groups: Option<Spanned<Vec<Spanned<RawGroup>>>>,
    merge_minor_cost: Option<Spanned<RawMerge>>,
}

#[derive(Deserialize)]
struct RawGroup {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    label_name: Option<Spanned<String>>,
    alias: Option<Spanned<RawAlias>>,
}

#[derive(Deserialize)]
struct RawAlias {
    label_name: Option<Spanned<String>>,
    /// Keys spanned: a plain key PyYAML reads as a number (or bool, null, date) never matches.
    map: Option<Spanned<HashMap<Spanned<String>, String>>>,
}

#[derive(Deserialize)]
struct RawMerge {
    enabled: Option<Spanned<bool>>,
    threshold: Option<Spanned<f64>>,
    tag_value: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawTagFilter {
    tag_key: Option<Spanned<String>>,
    tag_values: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
struct RawDimensionFilter {
    key: Option<Spanned<String>>,
    values: Option<Spanned<Vec<Spanned<String>>>>,
    iterate: Option<Spanned<bool>>,
    label_name: Option<Spanned<String>>,
    alias: Option<Spanned<RawAlias>>,
}

fn error(key: impl Into<String>, at: Option<Location>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(Some(key.into()), at, message)
}

/// A required key's value, or the error electrolux's `KeyError` stands for.
fn required<'a, T>(
    value: &'a Option<Spanned<T>>,
    key: &str,
    parent: Option<Location>,
) -> Result<&'a Spanned<T>, ConfigError> {
    value
        .as_ref()
        .ok_or_else(|| error(key, parent, "is required"))
}

/// Reads and validates an electrolux-shaped file: `$VAR|default` first, then the YAML.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let strict = env("ENVYAML_STRICT_DISABLE").is_none();
    let text = substitute(text, env, strict)?;
    let file: File = from_yaml(&text)?;
    convert(&file, &text)
}

/// Whether the scalar at `at` in `text` (the substituted text the YAML was read from) is
/// written plain, and PyYAML's `safe_load` (YAML 1.1, electrolux's reader) types it as no
/// string: null, a bool, an int, a float or a timestamp. `value` is the scalar's text.
fn pyyaml_typed(text: &str, at: Location, value: &str) -> bool {
    let quoted = usize::try_from(at.line())
        .ok()
        .and_then(|line| text.lines().nth(line.checked_sub(1)?))
        .and_then(|line| {
            line.chars()
                .nth(usize::try_from(at.column()).ok()?.checked_sub(1)?)
        })
        .is_some_and(|c| matches!(c, '"' | '\'' | '|' | '>'));
    !quoted && yaml11_typed(value)
}

/// PyYAML's implicit resolvers (yaml/resolver.py) for a plain scalar: bool, int, float,
/// null, timestamp. Everything else is a string.
fn yaml11_typed(s: &str) -> bool {
    const BOOLS: [&str; 18] = [
        "yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE",
        "on", "On", "ON", "off", "Off", "OFF",
    ];
    const NULLS: [&str; 5] = ["", "~", "null", "Null", "NULL"];
    const INF_NAN: [&str; 6] = [".inf", ".Inf", ".INF", ".nan", ".NaN", ".NAN"];
    if BOOLS.contains(&s) || NULLS.contains(&s) || INF_NAN.contains(&s) {
        return true;
    }
    let all = |t: &str, f: fn(char) -> bool| !t.is_empty() && t.chars().all(f);
    let digits_ = |c: char| c.is_ascii_digit() || c == '_';
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    // Sexagesimal: [1-9][0-9_]*(:[0-5]?[0-9])+, an int, or a float with a fraction after.
    let sexagesimal = |t: &str| {
        let mut parts = t.split(':');
        let head = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        !rest.is_empty()
            && head.starts_with(|c: char| ('1'..='9').contains(&c))
            && all(head, digits_)
            && rest.iter().all(|p| {
                let b = p.as_bytes();
                match b.len() {
                    1 => b[0].is_ascii_digit(),
                    2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
                    _ => false,
                }
            })
    };
    let int = if let Some(b) = unsigned.strip_prefix("0b") {
        all(b, |c| c == '0' || c == '1' || c == '_')
    } else if let Some(x) = unsigned.strip_prefix("0x") {
        all(x, |c| c.is_ascii_hexdigit() || c == '_')
    } else if let Some(o) = unsigned.strip_prefix('0') {
        o.is_empty() || all(o, |c| ('0'..='7').contains(&c) || c == '_')
    } else {
        (unsigned.starts_with(|c: char| ('1'..='9').contains(&c)) && all(unsigned, digits_))
            || sexagesimal(unsigned)
    };
    // [0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?, and unsigned \.[0-9_]+(...)?, and
    // sexagesimal with a fraction.
    let exponent_ok = |e: &str| {
        e.is_empty()
            || e.strip_prefix(['e', 'E'])
                .and_then(|e| e.strip_prefix(['-', '+']))
                .is_some_and(|d| all(d, |c| c.is_ascii_digit()))
    };
    let float = match unsigned.split_once('.') {
        Some((whole, rest)) => {
            let split = rest.find(['e', 'E']).unwrap_or(rest.len());
            let (fraction, exponent) = rest.split_at(split);
            let fraction_ok = fraction.chars().all(digits_);
            (whole.starts_with(|c: char| c.is_ascii_digit())
                && all(whole, digits_)
                && fraction_ok
                && exponent_ok(exponent))
                || (whole.is_empty()
                    && unsigned.len() == s.len()
                    && all(fraction, digits_)
                    && exponent_ok(exponent))
                || (sexagesimal(whole) && fraction_ok && exponent.is_empty())
        }
        None => false,
    };
    // A date (YYYY-MM-DD), or a date and time (YYYY-M-D[Tt ]...).
    let timestamp = {
        let b = s.as_bytes();
        let date = b.len() >= 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-';
        date && (b.len() == 10
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[7] == b'-'
            && b[8..10].iter().all(u8::is_ascii_digit)
            || s[5..]
                .split_once(['T', 't', ' ', '\t'])
                .is_some_and(|(d, _)| {
                    let mut p = d.split('-');
                    let ok = |x: Option<&str>| {
                        x.is_some_and(|x| {
                            (1..=2).contains(&x.len()) && all(x, |c| c.is_ascii_digit())
                        })
                    };
                    ok(p.next()) && ok(p.next()) && p.next().is_none()
                }))
    };
    int || float || timestamp
}

fn convert(file: &File, text: &str) -> Result<Config, ConfigError> {
    let targets = targets(file)?;
    let labels: BTreeSet<&str> = targets[0].iter().map(|(k, _)| k.as_str()).collect();
    let metrics_list = required(&file.metrics, "metrics", None)?;
    let mut metrics: Vec<ElectroluxMetric> = Vec::with_capacity(metrics_list.value.len());
    for (i, raw) in metrics_list.value.iter().enumerate() {
        let metric = metric(
            &raw.value,
            &format!("metrics[{i}]"),
            raw.referenced,
            &labels,
            text,
        )?;
        if metrics.iter().any(|m| m.name == metric.name) {
            return Err(error(
                format!("metrics[{i}].metric_name"),
                raw.value.metric_name.as_ref().map(|n| n.referenced),
                format!("duplicate metric name {:?}", metric.name),
            ));
        }
        metrics.push(metric);
    }
    let interval = required(
        &file.polling_interval_seconds,
        "polling_interval_seconds",
        None,
    )?;
    let refresh_interval = Duration::try_from_secs_f64(interval.value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            error(
                "polling_interval_seconds",
                Some(interval.referenced),
                format!("{} is not a positive number of seconds", interval.value),
            )
        })?;
    let truthy = |value: &Option<Spanned<Option<String>>>| {
        value
            .as_ref()
            .and_then(|v| v.value.clone())
            .filter(|v| !v.is_empty())
    };
    let static_credentials = match (
        truthy(&file.aws_access_key),
        truthy(&file.aws_access_secret),
    ) {
        (Some(access_key_id), Some(secret)) => Some(StaticCredentials {
            access_key_id,
            secret_access_key: Secret::new(secret),
        }),
        (None, None) => None,
        (key, _) => {
            let (name, other, at) = if key.is_some() {
                ("aws_access_key", "aws_access_secret", &file.aws_access_key)
            } else {
                (
                    "aws_access_secret",
                    "aws_access_key",
                    &file.aws_access_secret,
                )
            };
            return Err(error(
                name,
                at.as_ref().map(|v| v.referenced),
                format!("is set but {other} is not: give both halves of the key pair or neither"),
            ));
        }
    };
    let role = truthy(&file.aws_assumed_role_name);
    let metrics: Arc<[ElectroluxMetric]> = metrics.into();
    let integration = |name: &str, account_id: &str, targets: Vec<Vec<(String, String)>>| {
        let mut integration = Integration::new(name, account_id);
        integration.assumed_role_name = role.clone();
        integration.static_credentials = static_credentials.clone();
        integration.refresh_interval = refresh_interval;
        // Its metrics are asked every polling interval, as electrolux asks them: change
        // detection watches the cost series, which such a file does not serve.
        integration.checks.interval = CheckInterval::Off;
        integration.forecast = false;
        integration.costs = false;
        integration.electrolux = Some(Arc::new(Electrolux {
            targets,
            metrics: metrics.to_vec(),
        }));
        integration
    };
    let publisher = |target: &[(String, String)]| {
        target
            .iter()
            .find(|(k, _)| k == "Publisher")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let integrations = if role.is_some() {
        targets
            .iter()
            .map(|target| {
                let id = publisher(target);
                integration(&id, &id, vec![target.clone()])
            })
            .collect()
    } else {
        vec![integration(
            DEFAULT_INTEGRATION,
            &publisher(&targets[0]),
            targets.clone(),
        )]
    };
    Ok(Config {
        data_delay_days: crate::model::DEFAULT_DATA_DELAY_DAYS,
        integrations,
        format: ConfigFormat::Electrolux {
            exporter_port: file.exporter_port.as_ref().map(|p| p.value),
        },
    })
}

/// `target_aws_accounts`: at least one, each with `Publisher` (a 12-digit account id, each
/// once), all with the same keys, every key a label name other than `ChargeType`.
fn targets(file: &File) -> Result<Vec<Vec<(String, String)>>, ConfigError> {
    let list = required(&file.target_aws_accounts, "target_aws_accounts", None)?;
    let Some(first) = list.value.first() else {
        return Err(error(
            "target_aws_accounts",
            Some(list.referenced),
            "There should be at least one target AWS account defined in the config!",
        ));
    };
    if !first.value.contains_key("Publisher") {
        return Err(error(
            "target_aws_accounts[0]",
            Some(first.referenced),
            "Publisher is a mandatory key in target_aws_accounts!",
        ));
    }
    let keys: Vec<&String> = first.value.keys().collect();
    let mut targets = Vec::with_capacity(list.value.len());
    let mut publishers = BTreeSet::new();
    for (i, target) in list.value.iter().enumerate() {
        let at = format!("target_aws_accounts[{i}]");
        if target.value.keys().collect::<Vec<_>>() != keys {
            return Err(error(
                at,
                Some(target.referenced),
                "All the target AWS accounts should have the same set of keys (labels)!",
            ));
        }
        let mut labels = Vec::with_capacity(keys.len());
        for (name, value) in &target.value {
            let key = format!("{at}.{name}");
            if !is_label_name(name) || name == CHARGE_TYPE.0 {
                return Err(error(
                    key,
                    Some(value.referenced),
                    format!(
                        "{name:?} cannot be a label: a target account's keys are label names ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __, not ChargeType)"
                    ),
                ));
            }
            // Python's str() of YAML's null.
            let text = value.value.clone().unwrap_or_else(|| "None".to_string());
            if name == "Publisher" {
                if text.len() != 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(error(
                        key,
                        Some(value.referenced),
                        format!("{text:?} is not a 12-digit AWS account id"),
                    ));
                }
                if !publishers.insert(text.clone()) {
                    return Err(error(
                        key,
                        Some(value.referenced),
                        format!("{text:?} is the Publisher of another target too"),
                    ));
                }
            }
            labels.push((name.clone(), text));
        }
        targets.push(labels);
    }
    Ok(targets)
}

/// The label names of a metric so far, to keep them distinct.
struct LabelNames<'a> {
    accounts: &'a BTreeSet<&'a str>,
    /// The text the YAML was read from.
    text: &'a str,
    taken: BTreeSet<String>,
}

impl LabelNames<'_> {
    /// Takes `name` for a key of the metric, or says why it cannot be one.
    fn take(&mut self, name: &Spanned<String>, key: String) -> Result<String, ConfigError> {
        let text = name.value.clone();
        let problem = if !is_label_name(&text) {
            Some(format!(
                "{text:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
            ))
        } else if text == CHARGE_TYPE.0 {
            Some("ChargeType is the label every series of the metric has".to_string())
        } else if self.accounts.contains(text.as_str()) {
            Some(format!(
                "{text:?} is a key of the target AWS accounts (their label)"
            ))
        } else if self.taken.contains(&text) {
            Some(format!("{text:?} is another label of the metric"))
        } else {
            None
        };
        match problem {
            Some(message) => Err(error(key, Some(name.referenced), message)),
            None => {
                self.taken.insert(text.clone());
                Ok(text)
            }
        }
    }
}

/// One metric, checked in electrolux's order: group_by, granularity, data_delay_days,
/// metric_type, record_types, tag_filters, dimension_filters.
fn metric(
    raw: &RawMetric,
    at: &str,
    location: Location,
    accounts: &BTreeSet<&str>,
    text: &str,
) -> Result<ElectroluxMetric, ConfigError> {
    let name = required(
        &raw.metric_name,
        &format!("{at}.metric_name"),
        Some(location),
    )?;
    if !is_metric_name(&name.value) {
        return Err(error(
            format!("{at}.metric_name"),
            Some(name.referenced),
            format!(
                "{:?} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                name.value
            ),
        ));
    }
    if crate::parts::FAMILIES.iter().any(|f| f.name == name.value)
        || crate::metrics::NAMES.contains(&name.value.as_str())
    {
        return Err(error(
            format!("{at}.metric_name"),
            Some(name.referenced),
            format!("{:?} is a metric of this exporter's own", name.value),
        ));
    }
    let mut labels = LabelNames {
        accounts,
        text,
        taken: BTreeSet::new(),
    };
    let group_by = required(&raw.group_by, &format!("{at}.group_by"), Some(location))?;
    let gb_at = format!("{at}.group_by");
    let enabled = required(
        &group_by.value.enabled,
        &format!("{gb_at}.enabled"),
        Some(group_by.referenced),
    )?
    .value;
    let mut groups = Vec::new();
    let mut merge_minor_cost = None;
    if enabled {
        let list = required(
            &group_by.value.groups,
            &format!("{gb_at}.groups"),
            Some(group_by.referenced),
        )?;
        if list.value.is_empty() || list.value.len() > 2 {
            return Err(error(
                format!("{gb_at}.groups"),
                Some(list.referenced),
                "If group_by is enabled, there should be at least one group, and at most two groups!",
            ));
        }
        for (j, group) in list.value.iter().enumerate() {
            groups.push(self::group(
                &group.value,
                &format!("{gb_at}.groups[{j}]"),
                group.referenced,
                &mut labels,
            )?);
        }
        let merge = required(
            &group_by.value.merge_minor_cost,
            &format!("{gb_at}.merge_minor_cost"),
            Some(group_by.referenced),
        )?;
        let m_at = format!("{gb_at}.merge_minor_cost");
        let on = required(
            &merge.value.enabled,
            &format!("{m_at}.enabled"),
            Some(merge.referenced),
        )?;
        if on.value {
            let threshold = required(
                &merge.value.threshold,
                &format!("{m_at}.threshold"),
                Some(merge.referenced),
            )?;
            let value = required(
                &merge.value.tag_value,
                &format!("{m_at}.tag_value"),
                Some(merge.referenced),
            )?;
            merge_minor_cost = Some((threshold.value, value.value.clone()));
        }
    }
    let monthly = match &raw.granularity {
        None => false,
        Some(g) if g.value == "DAILY" => false,
        Some(g) if g.value == "MONTHLY" => true,
        Some(g) => {
            return Err(error(
                format!("{at}.granularity"),
                Some(g.referenced),
                format!(
                    "Invalid granularity: {}. It must be one of DAILY, MONTHLY.",
                    g.value
                ),
            ));
        }
    };
    let data_delay_days = match &raw.data_delay_days {
        None => 0,
        Some(d) => match d.value {
            Delay::Flag(flag) => u32::from(flag),
            Delay::Days(days) => u32::try_from(days).ok().filter(|d| *d <= 366).ok_or_else(|| {
                error(
                    format!("{at}.data_delay_days"),
                    Some(d.referenced),
                    format!(
                        "Invalid data_delay_days for metric {}: {days}. It must be a non-negative integer (at most 366).",
                        name.value
                    ),
                )
            })?,
        },
    };
    let metric_type = required(
        &raw.metric_type,
        &format!("{at}.metric_type"),
        Some(location),
    )?;
    let basis = match metric_type.value.as_str() {
        "AmortizedCost" => CostBasis::Amortized,
        "BlendedCost" => CostBasis::Blended,
        "NetAmortizedCost" => CostBasis::NetAmortized,
        "NetUnblendedCost" => CostBasis::NetUnblended,
        "UnblendedCost" => CostBasis::Unblended,
        "NormalizedUsageAmount" | "UsageQuantity" => {
            return Err(error(
                format!("{at}.metric_type"),
                Some(metric_type.referenced),
                format!(
                    "{} is a usage amount, not a cost: this exporter serves costs in USD only (AmortizedCost, BlendedCost, NetAmortizedCost, NetUnblendedCost, UnblendedCost)",
                    metric_type.value
                ),
            ));
        }
        other => {
            return Err(error(
                format!("{at}.metric_type"),
                Some(metric_type.referenced),
                format!(
                    "Invalid metric_type: {other}. It must be one of AmortizedCost, BlendedCost, NetAmortizedCost, NetUnblendedCost, NormalizedUsageAmount, UnblendedCost, UsageQuantity."
                ),
            ));
        }
    };
    let record_types = match &raw.record_types {
        None => default_record_types(basis),
        Some(list) => {
            if list.value.is_empty() {
                return Err(error(
                    format!("{at}.record_types"),
                    Some(list.referenced),
                    "is empty: Cost Explorer refuses a filter without values (remove the key for the default record types)",
                ));
            }
            let mut types = Vec::with_capacity(list.value.len());
            for (j, t) in list.value.iter().enumerate() {
                if !RECORD_TYPES.contains(&t.value.as_str()) {
                    return Err(error(
                        format!("{at}.record_types[{j}]"),
                        Some(t.referenced),
                        format!(
                            "Invalid record_types: {:?}. It must be one of {}.",
                            t.value,
                            RECORD_TYPES.join(", ")
                        ),
                    ));
                }
                types.push(t.value.clone());
            }
            types
        }
    };
    let mut filters = vec![FilterExpr::Values {
        kind: KeyKind::Dimension,
        key: "RECORD_TYPE".into(),
        values: record_types,
        match_options: Vec::new(),
    }];
    for (j, tag) in raw.tag_filters.iter().flat_map(|l| &l.value).enumerate() {
        let t_at = format!("{at}.tag_filters[{j}]");
        let key = required(
            &tag.value.tag_key,
            &format!("{t_at}.tag_key"),
            Some(tag.referenced),
        )?;
        let values = non_empty_values(
            &tag.value.tag_values,
            &format!("{t_at}.tag_values"),
            tag,
            labels.text,
        )?;
        filters.push(FilterExpr::Values {
            kind: KeyKind::Tag,
            key: key.value.clone(),
            values,
            match_options: vec!["EQUALS".into()],
        });
    }
    let mut iterate = None;
    for (j, df) in raw
        .dimension_filters
        .iter()
        .flat_map(|l| &l.value)
        .enumerate()
    {
        let d_at = format!("{at}.dimension_filters[{j}]");
        let key = required(&df.value.key, &format!("{d_at}.key"), Some(df.referenced))?;
        let values =
            non_empty_values(&df.value.values, &format!("{d_at}.values"), df, labels.text)?;
        if df.value.iterate.as_ref().is_some_and(|i| i.value) {
            if iterate.is_some() {
                return Err(error(
                    format!("{d_at}.iterate"),
                    df.value.iterate.as_ref().map(|i| i.referenced),
                    "Only one dimension_filter with iterate=true is supported at a time.",
                ));
            }
            let label_name = df.value.label_name.as_ref().ok_or_else(|| {
                error(
                    format!("{d_at}.label_name"),
                    Some(df.referenced),
                    format!(
                        "dimension_filter with iterate=true must have 'label_name' for key '{}'!",
                        key.value
                    ),
                )
            })?;
            let label = labels.take(label_name, format!("{d_at}.label_name"))?;
            let alias = match &df.value.alias {
                None => None,
                Some(alias) => Some(self::alias(alias, &format!("{d_at}.alias"), &mut labels)?),
            };
            iterate = Some(ElectroluxIterate {
                key: key.value.clone(),
                values,
                label,
                alias,
            });
        } else {
            filters.push(FilterExpr::Values {
                kind: KeyKind::Dimension,
                key: key.value.clone(),
                values,
                match_options: Vec::new(),
            });
        }
    }
    let filter = if filters.len() == 1 {
        filters.remove(0)
    } else {
        FilterExpr::And(filters)
    };
    let help = match &raw.metric_description {
        Some(d) => d.value.clone(),
        None if monthly => "Month-to-date cost of an AWS account in USD".to_string(),
        None => "Daily cost of an AWS account in USD".to_string(),
    };
    Ok(ElectroluxMetric {
        name: name.value.clone(),
        help,
        monthly,
        data_delay_days,
        metric_type: basis,
        groups,
        filter,
        iterate,
        merge_minor_cost,
    })
}

/// A filter's values: a list of at least one (Cost Explorer refuses none), each a string to
/// electrolux too (an unquoted number is an int to PyYAML, which boto3 refuses at every poll).
fn non_empty_values<T>(
    values: &Option<Spanned<Vec<Spanned<String>>>>,
    key: &str,
    parent: &Spanned<T>,
    text: &str,
) -> Result<Vec<String>, ConfigError> {
    let values = required(values, key, Some(parent.referenced))?;
    if values.value.is_empty() {
        return Err(error(
            key,
            Some(values.referenced),
            "cannot be empty: Cost Explorer refuses a filter without values",
        ));
    }
    for (k, value) in values.value.iter().enumerate() {
        if pyyaml_typed(text, value.referenced, &value.value) {
            return Err(error(
                format!("{key}[{k}]"),
                Some(value.referenced),
                format!(
                    "{:?} is not a string to electrolux (YAML 1.1 reads it as a number, bool, null or date, which Cost Explorer's client refuses): quote it",
                    value.value
                ),
            ));
        }
    }
    Ok(values.value.iter().map(|v| v.value.clone()).collect())
}

fn group(
    raw: &RawGroup,
    at: &str,
    location: Location,
    labels: &mut LabelNames<'_>,
) -> Result<ElectroluxGroup, ConfigError> {
    let kind_text = required(&raw.kind, &format!("{at}.type"), Some(location))?;
    let kind = match kind_text.value.as_str() {
        "DIMENSION" => KeyKind::Dimension,
        "TAG" => KeyKind::Tag,
        "COST_CATEGORY" => KeyKind::CostCategory,
        other => {
            return Err(error(
                format!("{at}.type"),
                Some(kind_text.referenced),
                format!(
                    "{other:?} is not a group type Cost Explorer takes (DIMENSION, TAG, COST_CATEGORY)"
                ),
            ));
        }
    };
    let key = required(&raw.key, &format!("{at}.key"), Some(location))?;
    if kind == KeyKind::Dimension
        && !crate::parts::views::GROUP_DIMENSIONS
            .iter()
            .any(|(d, _)| *d == key.value)
    {
        return Err(error(
            format!("{at}.key"),
            Some(key.referenced),
            format!(
                "{:?} is not a dimension Cost Explorer groups by ({})",
                key.value,
                crate::parts::views::GROUP_DIMENSIONS
                    .map(|(d, _)| d)
                    .join(", ")
            ),
        ));
    }
    let label_name = required(&raw.label_name, &format!("{at}.label_name"), Some(location))?;
    let label = labels.take(label_name, format!("{at}.label_name"))?;
    let alias = match &raw.alias {
        None => None,
        Some(alias) if kind != KeyKind::Dimension => {
            return Err(error(
                format!("{at}.alias"),
                Some(alias.referenced),
                "Group with alias must be a dimension!",
            ));
        }
        Some(alias) => Some(self::alias(alias, &format!("{at}.alias"), labels)?),
    };
    Ok(ElectroluxGroup {
        kind,
        key: key.value.clone(),
        label,
        alias,
    })
}

fn alias(
    raw: &Spanned<RawAlias>,
    at: &str,
    labels: &mut LabelNames<'_>,
) -> Result<ElectroluxAlias, ConfigError> {
    let label_name = raw.value.label_name.as_ref().ok_or_else(|| {
        error(
            format!("{at}.label_name"),
            Some(raw.referenced),
            "Group alias must have a label_name!",
        )
    })?;
    let map = raw.value.map.as_ref().ok_or_else(|| {
        error(
            format!("{at}.map"),
            Some(raw.referenced),
            "Group alias must have a mapping!",
        )
    })?;
    // Electrolux looks Cost Explorer's text up in the map: a key PyYAML types as a number (an
    // unquoted account id), bool, null or date never matches.
    let map = map
        .value
        .iter()
        .filter(|(k, _)| !pyyaml_typed(labels.text, k.referenced, &k.value))
        .map(|(k, v)| (k.value.clone(), v.clone()))
        .collect();
    Ok(ElectroluxAlias {
        label: labels.take(label_name, format!("{at}.label_name"))?,
        map,
    })
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// envyaml's substitution, on the whole text before the YAML is read: `$NAME` and `${NAME}`
/// (a name is letters, digits, `_`, `-` and `.`) with an optional default, `$NAME|default`
/// running to the end of the line (a trailing comment included) and `${NAME|default}` to the
/// first `}`; `$$` is a `$`; a set variable wins over the default, even when empty. Lines that
/// start with `#` are left alone. A variable neither set nor defaulted is an error naming it
/// (`strict`), else stays as written.
pub fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    strict: bool,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut missing: Vec<(String, u64, u64)> = Vec::new();
    for (line_index, line) in text.split_inclusive('\n').enumerate() {
        if line.starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let column = (line.len() - rest.len() + dollar) as u64 + 1;
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            // `$` before digits (`$1`) is left as written.
            if after.starts_with(|c: char| c.is_ascii_digit()) {
                out.push('$');
                rest = after;
                continue;
            }
            let (name, default, consumed) = if let Some(body) = after.strip_prefix('{') {
                match body.find('}') {
                    Some(end) => {
                        let inner = &body[..end];
                        match inner.split_once('|') {
                            Some((name, default)) => (name, Some(default), end + 2),
                            None => (inner, None, end + 2),
                        }
                    }
                    None => ("", None, 0),
                }
            } else {
                let len = after
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
                    .unwrap_or(after.len());
                let name = &after[..len];
                match after[len..].strip_prefix('|') {
                    Some(default) => {
                        let default = default.trim_end_matches(['\n', '\r']);
                        (name, Some(default), len + 1 + default.len())
                    }
                    None => (name, None, len),
                }
            };
            // `$` with nothing a name could be: left as written.
            if name.is_empty() {
                out.push('$');
                rest = after;
                continue;
            }
            match env(name).or_else(|| default.map(str::to_string)) {
                Some(value) => out.push_str(&value),
                None => {
                    if !missing.iter().any(|(m, ..)| m == name) {
                        missing.push((name.to_string(), line_index as u64 + 1, column));
                    }
                    out.push('$');
                    out.push_str(&after[..consumed]);
                }
            }
            rest = &after[consumed..];
        }
        out.push_str(rest);
    }
    if strict && let Some((_, line, column)) = missing.first() {
        let names: Vec<String> = missing.iter().map(|(n, ..)| format!("${n}")).collect();
        return Err(ConfigError {
            file: None,
            position: Some((*line, *column)),
            key: None,
            message: format!(
                "environment variable(s) {} not set and without a default (electrolux's $VAR|default syntax; set ENVYAML_STRICT_DISABLE to leave them as written)",
                names.join(", ")
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "EXPORTER_PORT" => Some("8080".into()),
            "EMPTY" => Some(String::new()),
            "AWS_ACCESS_KEY" => Some("AKIAELECTRLX1EXAMPLE".into()),
            "AWS_ACCESS_SECRET" => Some("electrolux-secret".into()),
            _ => None,
        }
    }

    #[test]
    fn envyaml_syntax_as_envyaml_reads_it() {
        let cases = [
            // Set: the value, the default and the trailing comment it swallowed gone.
            ("port: $EXPORTER_PORT|9090 # the port\n", "port: 8080\n"),
            // Unset: the default to the end of the line, comment included.
            ("i: $POLLING|28800 # 8 hours\n", "i: 28800 # 8 hours\n"),
            ("k: $UNSET_KEY|\"\" # null\n", "k: \"\" # null\n"),
            // Set but empty wins over the default.
            ("k: $EMPTY|x\n", "k: \n"),
            ("b: ${UNSET|abc}-x\n", "b: abc-x\n"),
            ("b: ${EXPORTER_PORT}-x\n", "b: 8080-x\n"),
            ("e: $$HOME\n", "e: $HOME\n"),
            ("d: cost$1\n", "d: cost$1\n"),
            // A line starting with # is left alone; an indented comment is not.
            ("# $UNSET_COMMENT\n", "# $UNSET_COMMENT\n"),
            ("n: a.b-c\n", "n: a.b-c\n"),
        ];
        for (text, expected) in cases {
            assert_eq!(substitute(text, &env, true).unwrap(), expected, "{text}");
        }
        let err = substitute("a: 1\n  # $NOPE_VAR\nb: $ALSO-MISSING\n", &env, true).unwrap_err();
        assert_eq!(err.position, Some((2, 5)));
        assert!(err.message.contains("$NOPE_VAR, $ALSO-MISSING"), "{err}");
        assert_eq!(substitute("b: $NOPE\n", &env, false).unwrap(), "b: $NOPE\n");
    }

    #[test]
    fn plain_scalars_are_typed_as_pyyaml_types_them() {
        for typed in [
            "333333333333",
            "+12",
            "-0",
            "0",
            "",
            "0755",
            "0_7",
            "0b101",
            "0x1F",
            "1_000",
            "1:30",
            "190:20:30",
            "1.5",
            "1.",
            "-1.5e+3",
            ".5",
            "1:30.5",
            ".inf",
            "-.Inf",
            ".NaN",
            "yes",
            "Off",
            "TRUE",
            "~",
            "null",
            "2024-01-31",
            "2024-1-2T10:00:00Z",
        ] {
            assert!(yaml11_typed(typed), "{typed:?} is typed");
        }
        for text in [
            "012345678901",
            "08",
            "0o17",
            "1e3",
            "1.5e3",
            "+.5",
            "1:60",
            "-.nan",
            "abc",
            "y",
            "n",
            "2024-1-2",
            "Usage",
            "web \"frontend\"",
            "12ab",
            "0b",
            "0x",
        ] {
            assert!(!yaml11_typed(text), "{text:?} is a string");
        }
        // Quoted in the text: a string whatever it says.
        let text = "a: [333333333333, \"444444444444\", '5']\n";
        let file: BTreeMap<String, Vec<Spanned<String>>> = from_yaml(text).unwrap();
        let typed: Vec<bool> = file["a"]
            .iter()
            .map(|v| pyyaml_typed(text, v.referenced, &v.value))
            .collect();
        assert_eq!(typed, [true, false, false]);
    }
}
