//! Configuration: which shape a file has (this exporter's own, a Backstage app-config with
//! InfraWallet's integrations, or an electrolux-oss/aws-cost-exporter file, see
//! [`crate::electrolux`]), the validation of every integration's common keys
//! (name, account, credentials, region, endpoints, cost bases, interval, request cap), then each
//! part's own keys by the part itself ([`crate::parts::PARTS`]), converting the file
//! ([`crate::schema`]) to the model ([`crate::model`]), in the spirit of YACE's per-job-kind
//! `Validate`.
//!
//! Every problem is reported as one [`ConfigError`] naming the file, the line and column
//! (where the parser knows them) and the key, before anything starts.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Location;

pub use crate::model::*;
use crate::parts::{Keys, PARTS};
use crate::schema::{AppConfig, Expander, NativeFile, NativeIntegration, Text, from_yaml};
pub use crate::schema::{ConfigError, expand_env};

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
        Probe::Document(doc) if doc.target_aws_accounts.is_some() => {
            crate::electrolux::parse(text, env)
        }
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
    /// electrolux-oss/aws-cost-exporter's shape.
    target_aws_accounts: Option<serde::de::IgnoredAny>,
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

/// Validates one integration of either shape (InfraWallet's is converted to the native one):
/// its common keys here, then each part's keys by the part ([`PARTS`]); `k` spells the
/// credential keys as the file does.
fn validate_integration(
    raw: &NativeIntegration,
    index: usize,
    k: &KeyNames,
    x: &Expander<'_>,
    defaults: Defaults,
) -> Result<Integration, ConfigError> {
    let key = |field: &str| format!("{}[{}].{}", k.list, index, field);
    let name = x.non_empty(&key(k.name), &raw.name)?;
    let account_id = x.account_id(&key(k.account_id), &raw.account_id)?;
    let mut integration = Integration::new(name, account_id);
    integration.assumed_role_name =
        x.optional_non_empty(&key(k.assumed_role_name), &raw.assumed_role_name)?;
    integration.external_id = x.optional_non_empty(&key(k.external_id), &raw.external_id)?;
    if integration.external_id.is_some() && integration.assumed_role_name.is_none() {
        let at = raw.external_id.as_ref().map(|v| v.referenced);
        return Err(ConfigError::new(
            Some(key(k.external_id)),
            at,
            format!("is only used with {}", k.assumed_role_name),
        ));
    }
    let access_key_id = x.optional_non_empty(&key(k.access_key_id), &raw.access_key_id)?;
    let secret = x.optional_non_empty(&key(k.secret_access_key), &raw.secret_access_key)?;
    integration.static_credentials = match (access_key_id, secret) {
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
    if let Some(region) = &raw.region {
        integration.region = x.non_empty(&key("region"), region)?;
    }
    integration.endpoint_url = x.url(&key("endpoint_url"), &raw.endpoint_url)?;
    integration.sts_endpoint_url = x.url(&key("sts_endpoint_url"), &raw.sts_endpoint_url)?;
    if let Some(list) = &raw.cost_basis {
        integration.cost_basis = x.cost_bases(&key("cost_basis"), list)?;
    }
    integration.refresh_interval = match &raw.refresh_interval {
        Some(value) => x.interval(&key("refresh_interval"), value)?,
        None => defaults.refresh_interval,
    };
    integration.checks = Checks {
        interval: match &raw.check_interval {
            Some(value) => x.check_interval(&key("check_interval"), value)?,
            None => defaults.checks.interval,
        },
        max_data_age: match &raw.max_data_age {
            Some(value) => x.interval(&key("max_data_age"), value)?,
            None => defaults.checks.max_data_age,
        },
    };
    integration.max_api_requests_per_day = match &raw.max_api_requests_per_day {
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
    integration.labels = static_labels(raw, &key, x)?;
    let keys = Keys {
        list: k.list,
        index,
        x,
        data_delay_days: defaults.data_delay_days,
    };
    for part in &PARTS {
        (part.configure)(raw, &keys, &mut integration)?;
    }
    Ok(integration)
}

/// The integration's static labels: the native `labels` map, or InfraWallet's `tags`
/// (`key:value`, each side trimmed, as InfraWallet splits them). Names are label names that no
/// series of the exporter has already; values are not empty. Sorted by name.
fn static_labels(
    raw: &NativeIntegration,
    key: &dyn Fn(&str) -> String,
    x: &Expander<'_>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut labels: Vec<(String, String, String, Location)> = Vec::new();
    if let Some(map) = &raw.labels {
        for (name, value) in &map.value {
            let label_key = format!("{}.{}", key("labels"), name.value);
            let value = x.non_empty(&label_key, value)?;
            labels.push((name.value.clone(), value, label_key, name.referenced));
        }
    }
    for (i, tag) in raw.infrawallet_tags.iter().flatten().enumerate() {
        let tag_key = format!("{}[{i}]", key("tags"));
        let text = x.text(&tag_key, tag)?;
        let mut parts = text.split(':');
        let (name, value) = match (parts.next(), parts.next()) {
            (Some(name), Some(value)) if !value.trim().is_empty() => (name.trim(), value.trim()),
            _ => {
                return Err(ConfigError::new(
                    Some(tag_key),
                    Some(tag.referenced),
                    format!("{text:?} is not key:value"),
                ));
            }
        };
        labels.push((name.to_string(), value.to_string(), tag_key, tag.referenced));
    }
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, _, label_key, at)) in labels.iter().enumerate() {
        let problem = if !is_label_name(name) {
            Some(format!(
                "{name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
            ))
        } else if SERIES_LABELS.contains(&name.as_str()) {
            Some(format!(
                "{name:?} is a label the exporter's series already have ({}); choose another",
                SERIES_LABELS.join(", ")
            ))
        } else if i > 0 && labels[i - 1].0 == *name {
            Some(format!("{name:?} is given twice"))
        } else {
            None
        };
        if let Some(message) = problem {
            return Err(ConfigError::new(
                Some(label_key.clone()),
                Some(*at),
                message,
            ));
        }
    }
    Ok(labels
        .into_iter()
        .map(|(name, value, _, _)| (name, value))
        .collect())
}

/// What an integration takes from the file's top level.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    refresh_interval: Duration,
    checks: Checks,
    data_delay_days: u32,
}

/// Validates every integration, then checks that names are unique.
fn validate_all<'k>(
    list: &[NativeIntegration],
    keys: impl Fn(usize) -> &'k KeyNames,
    x: &Expander<'_>,
    defaults: Defaults,
) -> Result<Vec<Integration>, ConfigError> {
    let integrations = list
        .iter()
        .enumerate()
        .map(|(index, raw)| validate_integration(raw, index, keys(index), x, defaults))
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
    let checks = Checks {
        interval: match &file.check_interval {
            Some(value) => x.check_interval("check_interval", value)?,
            None => CheckInterval::Auto,
        },
        max_data_age: match &file.max_data_age {
            Some(value) => x.interval("max_data_age", value)?,
            None => DEFAULT_MAX_DATA_AGE,
        },
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
    let defaults = Defaults {
        refresh_interval,
        checks,
        data_delay_days,
    };
    let integrations = validate_all(&list.value, |_| &NATIVE_KEYS, &x, defaults)?;
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
        let (native, deprecated) = raw.into_native();
        converted.push(native);
        spelled_deprecated.push(deprecated);
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
        Defaults {
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            checks: Checks::default(),
            data_delay_days: DEFAULT_DATA_DELAY_DAYS,
        },
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

    const THRESHOLDS: &str = r#"
integrations:
  - name: payer
    account_id: "123456789012"
    budgets:
      - name: platform
        monthly_usd: 12000
        thresholds:
          - {percent: 50, on: actual}
          - {percent: 80, on: actual}
          - {percent: 100, on: forecast}
          - {percent: 112.5, on: actual}
      - name: quiet
        monthly_usd: 100
        thresholds: []
      - name: default
        monthly_usd: 100
"#;

    #[test]
    fn budget_thresholds() {
        let config = parse(THRESHOLDS).unwrap();
        let budgets = &config.integrations[0].budgets;
        let actual = |percent| Threshold {
            percent,
            on: ThresholdOn::Actual,
        };
        let forecast = |percent| Threshold {
            percent,
            on: ThresholdOn::Forecast,
        };
        assert_eq!(
            budgets[0].thresholds,
            vec![actual(50.0), actual(80.0), forecast(100.0), actual(112.5)]
        );
        assert_eq!(budgets[0].thresholds[3].ratio(), 1.125);
        assert_eq!(budgets[1].thresholds, vec![]);
        assert_eq!(budgets[2].thresholds, vec![actual(100.0), forecast(100.0)]);
    }

    #[test]
    fn bad_budget_thresholds() {
        let e = err(&THRESHOLDS.replace("{percent: 80, on: actual}", "{percent: 0, on: actual}"));
        assert_eq!(
            e.key.as_deref(),
            Some("integrations[0].budgets[0].thresholds[1].percent")
        );
        assert_eq!(e.position, Some((10, 23)));
        assert_eq!(
            e.message,
            "must be a positive percentage of the budget, such as 80 or 100"
        );
        let e = err(&THRESHOLDS.replace(
            "{percent: 100, on: forecast}",
            "{percent: 100, on: forecasted}",
        ));
        assert_eq!(
            e.key.as_deref(),
            Some("integrations[0].budgets[0].thresholds[2].on")
        );
        assert_eq!(e.position, Some((11, 32)));
        assert_eq!(
            e.message,
            "unknown threshold kind \"forecasted\"; expected actual or forecast"
        );
        let e =
            err(&THRESHOLDS.replace("{percent: 112.5, on: actual}", "{percent: 80, on: actual}"));
        assert_eq!(
            e.key.as_deref(),
            Some("integrations[0].budgets[0].thresholds[3]")
        );
        assert_eq!(e.position, Some((12, 13)));
        assert_eq!(e.message, "duplicate threshold 80% on actual");
        let e = err(&THRESHOLDS.replace("{percent: 50, on: actual}", "{percent: 50, of: actual}"));
        assert!(e.message.contains("unknown field `of`"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(9));
        let e = err(&THRESHOLDS.replace("{percent: 50, on: actual}", "{percent: 50}"));
        assert!(e.message.contains("missing field `on`"), "{e}");
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
    fn change_detection_settings() {
        let config = parse(
            "check_interval: 30m\nmax_data_age: 12h\nintegrations:\n  - name: a\n    account_id: \"123456789012\"\n  - name: b\n    account_id: \"123456789012\"\n    check_interval: off\n  - name: c\n    account_id: \"123456789012\"\n    check_interval: auto\n    max_data_age: 2h\n",
        )
        .unwrap();
        let checks: Vec<Checks> = config.integrations.iter().map(|i| i.checks).collect();
        let (half_hour, twelve, two) = (
            Duration::from_secs(1800),
            Duration::from_secs(12 * 3600),
            Duration::from_secs(7200),
        );
        assert_eq!(
            checks,
            [
                Checks {
                    interval: CheckInterval::Every(half_hour),
                    max_data_age: twelve
                },
                Checks {
                    interval: CheckInterval::Off,
                    max_data_age: twelve
                },
                Checks {
                    interval: CheckInterval::Auto,
                    max_data_age: two
                },
            ]
        );
        let defaults = parse("integrations:\n  - name: a\n    account_id: \"123456789012\"\n")
            .unwrap()
            .integrations[0]
            .checks;
        assert_eq!(defaults, Checks::default());
        assert_eq!(defaults.max_data_age, Duration::from_secs(24 * 3600));
        let e = err(
            "check_interval: sometimes\nintegrations:\n  - name: a\n    account_id: \"123456789012\"\n",
        );
        assert_eq!(
            (e.key.as_deref(), e.position),
            (Some("check_interval"), Some((1, 17)))
        );
        assert!(e.message.contains("not auto, off, or a duration"), "{e}");
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    max_data_age: 0s\n",
        );
        assert_eq!(e.key.as_deref(), Some("integrations[0].max_data_age"));
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    check_interval: 0s\n",
        );
        assert_eq!(e.key.as_deref(), Some("integrations[0].check_interval"));
    }

    #[test]
    fn auto_checks_hourly_for_a_plan_of_more_than_five_requests() {
        let six = Duration::from_secs(6 * 3600);
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        let auto = Checks::default();
        assert_eq!(auto.interval(six, None), six);
        assert_eq!(auto.interval(six, Some(5)), six);
        assert_eq!(auto.interval(six, Some(6)), hour);
        assert_eq!(auto.interval(minute, Some(40)), minute);
        let off = Checks {
            interval: CheckInterval::Off,
            ..Checks::default()
        };
        assert_eq!(off.interval(six, Some(40)), six);
        assert!(!off.enabled() && auto.enabled());
        let every = Checks {
            interval: CheckInterval::Every(Duration::from_secs(600)),
            ..Checks::default()
        };
        assert_eq!(every.interval(six, None), Duration::from_secs(600));
        assert_eq!(every.interval(minute, None), minute);
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
    fn static_labels_native_and_infrawallet() {
        let config = parse(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    labels: {team: platform, env: \"${AWS_KEY}\"}\n",
        )
        .unwrap();
        assert_eq!(
            config.integrations[0].labels,
            vec![
                ("env".to_string(), "AKIAFROMENV".to_string()),
                ("team".to_string(), "platform".to_string())
            ]
        );
        // InfraWallet's tags are `key:value`, each side trimmed.
        let text = APP_CONFIG.replace(
            "        - name: chain\n",
            "        - name: chain\n          tags: [\"team: data \", \"env:prod\"]\n",
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config.integrations[2].labels,
            vec![
                ("env".to_string(), "prod".to_string()),
                ("team".to_string(), "data".to_string())
            ]
        );
        let bad = |labels: &str| {
            err(&format!(
                "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    labels: {labels}\n"
            ))
        };
        let e = bad("{team-name: x}");
        assert_eq!(e.key.as_deref(), Some("integrations[0].labels.team-name"));
        assert_eq!(e.position, Some((4, 14)));
        assert!(e.message.contains("is not a Prometheus label name"), "{e}");
        let e = bad("{a: x, account_id: y}");
        assert_eq!(e.key.as_deref(), Some("integrations[0].labels.account_id"));
        assert!(
            e.message
                .contains("a label the exporter's series already have"),
            "{e}"
        );
        let e = bad("{team: \"\"}");
        assert_eq!(e.key.as_deref(), Some("integrations[0].labels.team"));
        assert!(e.message.contains("must not be empty"), "{e}");
        let e = bad("{__x: y}");
        assert!(e.message.contains("is not a Prometheus label name"), "{e}");
        let e = err(&APP_CONFIG.replace(
            "        - name: chain\n",
            "        - name: chain\n          tags: [team]\n",
        ));
        assert_eq!(
            e.key.as_deref(),
            Some("backend.infraWallet.integrations.aws[2].tags[0]")
        );
        assert!(e.message.contains("\"team\" is not key:value"), "{e}");
        // A view's label must not take a static label's name.
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    labels: {region: eu}\n    views:\n      - name: v\n        group_by: [{dimension: REGION}]\n",
        );
        assert_eq!(
            e.key.as_deref(),
            Some("integrations[0].labels.region"),
            "region is a series label too (commitments): refused as a static label"
        );
        let e = err(
            "integrations:\n  - name: a\n    account_id: \"123456789012\"\n    labels: {zone: eu}\n    views:\n      - name: v\n        group_by: [{dimension: AZ, label: zone}]\n",
        );
        assert_eq!(
            e.key.as_deref(),
            Some("integrations[0].views[0].group_by[0].label")
        );
        assert!(
            e.message.contains("is a static label of the integration"),
            "{e}"
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
