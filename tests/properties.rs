//! Property tests over the exporter's input: the configuration file (native and InfraWallet
//! shapes), `${VAR}` expansion, and Cost Explorer's response pages. Arbitrary input yields a
//! value or a clear error, never a panic; generated valid input parses to exactly what was
//! generated; generated mistakes give the documented error at the right key and line.
//!
//! Each property runs a fixed number of cases (`PROPTEST_CASES` raises it); failing cases are
//! recorded in `proptest-regressions/properties.txt` and replayed first on every run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_cost_exporter::config::{
    Budget, Config, ConfigError, ConfigFormat, CostBasis, DEFAULT_MAX_ANOMALY_SERIES,
    DEFAULT_MAX_API_REQUESTS_PER_DAY, DEFAULT_MAX_SERIES, DEFAULT_REGION, Integration, Secret,
    StaticCredentials, Threshold, expand_env, parse_with_env,
};
use aws_cost_exporter::cost_explorer::{
    CostExplorer, CostExplorerError, Dimension, Granularity, GroupKey, Query, parse_date, tag_value,
};
use chrono::NaiveDate;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;

/// `cases` per property unless `PROPTEST_CASES` says otherwise; failures persisted in one file.
fn cases(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/properties.txt"
        )))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------------

/// A piece of text that YAML, `${VAR}` expansion or JSON might trip over.
fn piece() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => "[a-zA-Z0-9 _./:-]{1,8}",
        2 => "\\PC{1,4}",
        1 => any::<char>().prop_map(String::from),
        2 => select(vec![
            "$", "${", "}", "$${", "{", "\"", "'", "\\", "#", ": ", "- ", " #", "\n", "\t", "~",
            "null", "true", "0x1F", "&a", "*a", "!tag", "%", "@", "`", "\u{feff}", "\u{2028}",
            "\u{85}", "é", "日本", "🦀",
        ])
        .prop_map(String::from),
    ]
}

/// Text that is not blank (what every name and list item must be).
fn text() -> impl Strategy<Value = String> + Clone {
    vec(piece(), 1..4)
        .prop_map(|pieces| pieces.concat())
        .prop_filter("not blank", |s| !s.trim().is_empty())
}

/// An environment variable name.
fn var_name() -> impl Strategy<Value = String> + Clone {
    "[A-Z_][A-Z0-9_]{0,8}"
}

/// Writes `value` so that `${VAR}` expansion gives it back: every `${` becomes `$${`.
fn escape_env(value: &str) -> String {
    value.replace("${", "$${")
}

/// A YAML double-quoted scalar holding exactly `value`.
fn yaml_quoted(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A YAML scalar for `value` in one of three styles (plain only where YAML reads it as text).
fn yaml_scalar(value: &str, style: u8) -> String {
    let plain = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !matches!(
            value.to_ascii_lowercase().as_str(),
            "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "nan" | "inf"
        );
    let single = !value.chars().any(|c| {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
            )
    }) && !value.starts_with(' ')
        && !value.ends_with(' ');
    match style % 3 {
        0 if plain => value.to_string(),
        1 if single => format!("'{}'", value.replace('\'', "''")),
        _ => yaml_quoted(value),
    }
}

/// A string value of the configuration: literal, or a reference to an environment variable.
#[derive(Debug, Clone)]
enum Str {
    Lit(String),
    Env(String, String),
}

impl Str {
    /// What the configuration must read.
    fn value(&self, env: &HashMap<String, String>) -> String {
        match self {
            Str::Lit(s) => s.clone(),
            Str::Env(name, _) => env[name].clone(),
        }
    }

    /// The scalar as written in the file.
    fn yaml(&self, style: u8) -> String {
        match self {
            Str::Lit(s) => yaml_scalar(&escape_env(s), style),
            Str::Env(name, _) => yaml_scalar(&format!("${{{name}}}"), style),
        }
    }
}

/// A string value satisfying `valid`, written literally or through the environment.
fn str_of(strategy: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Str> {
    prop_oneof![
        3 => strategy.clone().prop_map(Str::Lit),
        1 => (var_name(), strategy).prop_map(|(name, value)| Str::Env(name, value)),
    ]
}

// ---------------------------------------------------------------------------------------------
// A YAML document we write ourselves, remembering where every key went
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Node {
    /// Already written as YAML.
    Scalar(String),
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
}

/// Where a key and its value were written (1-based).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pos {
    line: u64,
    key_column: u64,
    value_column: u64,
}

#[derive(Default)]
struct Doc {
    text: String,
    line: u64,
    at: HashMap<String, Pos>,
}

impl Doc {
    fn render(root: &[(String, Node)]) -> Doc {
        let mut doc = Doc::default();
        doc.map(root, 0, "", false);
        doc
    }

    fn push_line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        self.line += 1;
    }

    /// A mapping at `indent`; the first entry follows a list's `- ` when `in_list`.
    fn map(&mut self, entries: &[(String, Node)], indent: usize, path: &str, in_list: bool) {
        for (i, (key, value)) in entries.iter().enumerate() {
            let lead = if in_list && i == 0 {
                format!("{}- ", " ".repeat(indent - 2))
            } else {
                " ".repeat(indent)
            };
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let pos = Pos {
                line: self.line + 1,
                key_column: indent as u64 + 1,
                value_column: (indent + key.chars().count() + 2) as u64 + 1,
            };
            self.at.insert(child.clone(), pos);
            match value {
                Node::Scalar(s) => self.push_line(&format!("{lead}{key}: {s}")),
                Node::Map(e) if e.is_empty() => self.push_line(&format!("{lead}{key}: {{}}")),
                Node::List(l) if l.is_empty() => self.push_line(&format!("{lead}{key}: []")),
                Node::Map(e) => {
                    self.push_line(&format!("{lead}{key}:"));
                    self.map(e, indent + 2, &child, false);
                }
                Node::List(l) => {
                    self.push_line(&format!("{lead}{key}:"));
                    self.list(l, indent + 2, &child);
                }
            }
        }
    }

    fn list(&mut self, items: &[Node], indent: usize, path: &str) {
        for (i, item) in items.iter().enumerate() {
            let child = format!("{path}[{i}]");
            let pos = Pos {
                line: self.line + 1,
                key_column: indent as u64 + 1,
                value_column: indent as u64 + 3,
            };
            self.at.insert(child.clone(), pos);
            match item {
                Node::Scalar(s) => self.push_line(&format!("{}- {s}", " ".repeat(indent))),
                Node::Map(e) if e.is_empty() => {
                    self.push_line(&format!("{}- {{}}", " ".repeat(indent)))
                }
                Node::Map(e) => self.map(e, indent + 2, &child, true),
                Node::List(l) => {
                    // Not written by the generators; a flow list keeps the renderer simple.
                    let items: Vec<String> = l
                        .iter()
                        .map(|n| match n {
                            Node::Scalar(s) => s.clone(),
                            _ => "x".into(),
                        })
                        .collect();
                    self.push_line(&format!("{}- [{}]", " ".repeat(indent), items.join(", ")));
                }
            }
        }
    }
}

/// The entries of the mapping at `path` (dotted keys and `[i]`), if there is one.
fn map_at<'a>(
    root: &'a mut Vec<(String, Node)>,
    path: &str,
) -> Option<&'a mut Vec<(String, Node)>> {
    let mut entries = root;
    if path.is_empty() {
        return Some(entries);
    }
    for step in path.split('.') {
        let (key, index) = match step.split_once('[') {
            Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (step, None),
        };
        let node = &mut entries.iter_mut().find(|(k, _)| k == key)?.1;
        let node = match (node, index) {
            (Node::List(items), Some(i)) => items.get_mut(i)?,
            (node, None) => node,
            _ => return None,
        };
        match node {
            Node::Map(e) => entries = e,
            _ => return None,
        }
    }
    Some(entries)
}

// ---------------------------------------------------------------------------------------------
// Native configuration: a generated, valid configuration and what it must parse to
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct GenBudget {
    name: Str,
    monthly_usd: f64,
    /// Written as an integer when it is one.
    integral: bool,
    accounts: Option<Vec<String>>,
    services: Option<Vec<Str>>,
    /// Index into the integration's bases.
    cost_basis: Option<usize>,
}

#[derive(Debug, Clone)]
struct GenIntegration {
    name: Str,
    account_id: String,
    role: Option<(Str, Option<Str>)>,
    keys: Option<(Str, Str)>,
    region: Option<Str>,
    endpoint_url: Option<String>,
    sts_endpoint_url: Option<String>,
    cost_basis: Option<Vec<CostBasis>>,
    refresh_interval: Option<(String, Duration)>,
    tags: Option<Vec<Str>>,
    resources: Option<Vec<Str>>,
    max_tag_series: Option<usize>,
    max_resource_series: Option<usize>,
    forecast: Option<bool>,
    organizations: Option<bool>,
    organizations_endpoint_url: Option<String>,
    budgets: Option<Vec<GenBudget>>,
    commitments: Option<bool>,
    anomalies: Option<bool>,
    max_anomaly_series: Option<usize>,
}

#[derive(Debug, Clone)]
struct GenConfig {
    refresh_interval: Option<(String, Duration)>,
    data_delay_days: Option<u32>,
    integrations: Vec<GenIntegration>,
    /// Picks quoting styles and key order.
    style: u64,
}

fn account_id() -> impl Strategy<Value = String> + Clone {
    "[0-9]{12}"
}

/// A humantime duration and its value; never zero.
fn interval() -> impl Strategy<Value = (String, Duration)> {
    let units: [(&str, u64); 7] = [
        ("d", 86_400),
        ("h", 3_600),
        ("hours", 3_600),
        ("m", 60),
        ("min", 60),
        ("s", 1),
        ("sec", 1),
    ];
    vec((1u64..10_000, select(units.to_vec())), 1..3).prop_map(|parts| {
        let text: Vec<String> = parts.iter().map(|(n, (u, _))| format!("{n}{u}")).collect();
        let secs = parts.iter().map(|(n, (_, s))| n * s).sum();
        (text.join(" "), Duration::from_secs(secs))
    })
}

fn url() -> impl Strategy<Value = String> {
    (
        select(vec!["http", "https"]),
        prop_oneof![
            "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,6}){0,2}",
            Just("127.0.0.1".to_string())
        ],
        proptest::option::of(1u16..),
        "(/[a-zA-Z0-9_.-]{0,8}){0,2}",
    )
        .prop_map(|(scheme, host, port, path)| match port {
            Some(port) => format!("{scheme}://{host}:{port}{path}"),
            None => format!("{scheme}://{host}{path}"),
        })
}

/// A list without repeats, in generated order.
fn dedup<T: Clone>(items: Vec<T>, key: impl Fn(&T) -> String) -> Vec<T> {
    let mut seen = BTreeSet::new();
    items.into_iter().filter(|i| seen.insert(key(i))).collect()
}

fn str_list(n: std::ops::Range<usize>) -> impl Strategy<Value = Option<Vec<Str>>> {
    proptest::option::of(vec(str_of(text()), n))
}

fn budget() -> impl Strategy<Value = GenBudget> {
    (
        str_of(text()),
        prop_oneof![
            (1u64..10_000_000).prop_map(|n| (n as f64, true)),
            (1e-6f64..1e12).prop_map(|f| (f, false)),
            any::<f64>()
                .prop_filter("positive and finite", |f| f.is_finite() && *f > 0.0)
                .prop_map(|f| (f, false)),
        ],
        proptest::option::of(vec(account_id(), 0..3)),
        str_list(0..3),
        proptest::option::of(any::<usize>()),
    )
        .prop_map(
            |(name, (monthly_usd, integral), accounts, services, cost_basis)| GenBudget {
                name,
                monthly_usd,
                integral,
                accounts,
                services,
                cost_basis,
            },
        )
}

fn integration() -> impl Strategy<Value = GenIntegration> {
    let identity = (
        str_of(text()),
        account_id(),
        proptest::option::of((str_of(text()), proptest::option::of(str_of(text())))),
        proptest::option::of((str_of(text()), str_of(text()))),
        proptest::option::of(str_of(text())),
        proptest::option::of(url()),
        proptest::option::of(url()),
    );
    let breadth = (
        proptest::option::of(
            proptest::sample::subsequence(CostBasis::ALL.to_vec(), 1..=5).prop_shuffle(),
        ),
        proptest::option::of(interval()),
        str_list(0..4),
        str_list(0..4),
        proptest::option::of(1usize..100_000),
        proptest::option::of(1usize..100_000),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(url()),
        proptest::option::of(vec(budget(), 0..3)),
    );
    let commitments = (
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(1usize..100_000),
    );
    (identity, breadth, commitments).prop_map(
        |(
            (name, account_id, role, keys, region, endpoint_url, sts_endpoint_url),
            (
                cost_basis,
                refresh_interval,
                tags,
                resources,
                max_tag_series,
                max_resource_series,
                forecast,
                organizations,
                organizations_endpoint_url,
                budgets,
            ),
            (commitments, anomalies, max_anomaly_series),
        )| GenIntegration {
            name,
            account_id,
            role,
            keys,
            region,
            endpoint_url,
            sts_endpoint_url,
            cost_basis,
            refresh_interval,
            tags,
            resources,
            max_tag_series,
            max_resource_series,
            forecast,
            organizations,
            organizations_endpoint_url,
            budgets,
            commitments,
            anomalies,
            max_anomaly_series,
        },
    )
}

impl GenIntegration {
    /// Every string value, in file order.
    fn strs(&mut self, f: &mut dyn FnMut(&mut Str)) {
        f(&mut self.name);
        if let Some((role, external)) = &mut self.role {
            f(role);
            external.iter_mut().for_each(&mut *f);
        }
        if let Some((id, secret)) = &mut self.keys {
            f(id);
            f(secret);
        }
        self.region.iter_mut().for_each(&mut *f);
        self.tags.iter_mut().flatten().for_each(&mut *f);
        self.resources.iter_mut().flatten().for_each(&mut *f);
        for b in self.budgets.iter_mut().flatten() {
            f(&mut b.name);
            b.services.iter_mut().flatten().for_each(&mut *f);
        }
    }
}

/// Gives every reference to a variable the value of its first one, and returns that
/// environment.
fn settle_env(strs: impl FnOnce(&mut dyn FnMut(&mut Str))) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = HashMap::new();
    strs(&mut |s: &mut Str| {
        if let Str::Env(name, value) = s {
            *value = env
                .entry(name.clone())
                .or_insert_with(|| value.clone())
                .clone();
        }
    });
    env
}

/// The environment the generated references read.
fn env_of(config: &GenConfig) -> HashMap<String, String> {
    settle_env(|f| {
        for i in &mut config.integrations.clone() {
            i.strs(f);
        }
    })
}

/// Makes a generated configuration valid where the parts depend on each other: unique names
/// (as the environment resolves them), unique tags and resources, and no resources with a
/// data day older than AWS keeps them. (Budgets pick their basis among the integration's.)
fn normalize(mut config: GenConfig) -> GenConfig {
    let env = settle_env(|f| {
        for i in &mut config.integrations {
            i.strs(f);
        }
    });
    config.integrations = dedup(config.integrations, |i| i.name.value(&env));
    for i in &mut config.integrations {
        let unique = |list: &mut Option<Vec<Str>>| {
            if let Some(items) = list.take() {
                *list = Some(dedup(items, |s| s.value(&env)));
            }
        };
        unique(&mut i.tags);
        unique(&mut i.resources);
        if let Some(budgets) = i.budgets.take() {
            i.budgets = Some(dedup(budgets, |b| b.name.value(&env)));
        }
        if config.data_delay_days.is_some_and(|d| d >= 14) {
            i.resources = None;
        }
    }
    config
}

fn native_config() -> impl Strategy<Value = GenConfig> {
    (
        proptest::option::of(interval()),
        proptest::option::of(0u32..=31),
        vec(integration(), 1..4),
        any::<u64>(),
    )
        .prop_map(|(refresh_interval, data_delay_days, integrations, style)| {
            normalize(GenConfig {
                refresh_interval,
                data_delay_days,
                integrations,
                style,
            })
        })
}

/// Hands out the generated quoting styles one value at a time.
struct Styles(u64);

impl Styles {
    fn next(&mut self) -> u8 {
        self.0 = self.0.rotate_left(5).wrapping_add(0x9e37_79b9);
        (self.0 >> 7) as u8
    }
}

fn scalar_list(items: &[Str], s: &mut Styles) -> Node {
    Node::List(
        items
            .iter()
            .map(|i| Node::Scalar(i.yaml(s.next())))
            .collect(),
    )
}

impl GenConfig {
    fn tree(&self) -> Vec<(String, Node)> {
        let s = &mut Styles(self.style);
        let mut root = Vec::new();
        if let Some((text, _)) = &self.refresh_interval {
            root.push((
                "refresh_interval".into(),
                Node::Scalar(yaml_scalar(text, s.next())),
            ));
        }
        if let Some(days) = self.data_delay_days {
            root.push(("data_delay_days".into(), Node::Scalar(days.to_string())));
        }
        let list = self
            .integrations
            .iter()
            .map(|i| Node::Map(i.tree(s)))
            .collect();
        root.push(("integrations".into(), Node::List(list)));
        if s.next().is_multiple_of(2) {
            root.reverse();
        }
        root
    }

    fn expected(&self) -> Config {
        let env = env_of(self);
        let refresh_interval = self
            .refresh_interval
            .as_ref()
            .map_or(Duration::from_secs(6 * 3600), |(_, d)| *d);
        Config {
            data_delay_days: self.data_delay_days.unwrap_or(1),
            integrations: self
                .integrations
                .iter()
                .map(|i| i.expected(&env, refresh_interval))
                .collect(),
            format: ConfigFormat::Native,
        }
    }
}

impl GenIntegration {
    fn tree(&self, s: &mut Styles) -> Vec<(String, Node)> {
        let mut m: Vec<(String, Node)> = Vec::new();
        let mut put = |key: &str, node: Node| m.push((key.to_string(), node));
        put("name", Node::Scalar(self.name.yaml(s.next())));
        // Digits read as text even unquoted (the scalar keeps its leading zeros).
        let id = if s.next().is_multiple_of(2) {
            self.account_id.clone()
        } else {
            yaml_quoted(&self.account_id)
        };
        put("account_id", Node::Scalar(id));
        if let Some((role, external)) = &self.role {
            put("assumed_role_name", Node::Scalar(role.yaml(s.next())));
            if let Some(external) = external {
                put("external_id", Node::Scalar(external.yaml(s.next())));
            }
        }
        if let Some((id, secret)) = &self.keys {
            put("access_key_id", Node::Scalar(id.yaml(s.next())));
            put("secret_access_key", Node::Scalar(secret.yaml(s.next())));
        }
        if let Some(region) = &self.region {
            put("region", Node::Scalar(region.yaml(s.next())));
        }
        for (key, url) in [
            ("endpoint_url", &self.endpoint_url),
            ("sts_endpoint_url", &self.sts_endpoint_url),
            (
                "organizations_endpoint_url",
                &self.organizations_endpoint_url,
            ),
        ] {
            if let Some(url) = url {
                put(key, Node::Scalar(yaml_scalar(url, s.next())));
            }
        }
        if let Some(bases) = &self.cost_basis {
            let items = bases
                .iter()
                .map(|b| Node::Scalar(b.as_str().into()))
                .collect();
            put("cost_basis", Node::List(items));
        }
        if let Some((text, _)) = &self.refresh_interval {
            put(
                "refresh_interval",
                Node::Scalar(yaml_scalar(text, s.next())),
            );
        }
        if let Some(tags) = &self.tags {
            put("tags", scalar_list(tags, s));
        }
        if let Some(resources) = &self.resources {
            put("resources", scalar_list(resources, s));
        }
        // Plain scalars: counts and switches, in this order.
        let scalars = [
            ("max_tag_series", self.max_tag_series.map(|n| n.to_string())),
            (
                "max_resource_series",
                self.max_resource_series.map(|n| n.to_string()),
            ),
            ("forecast", self.forecast.map(|b| b.to_string())),
            ("organizations", self.organizations.map(|b| b.to_string())),
            ("commitments", self.commitments.map(|b| b.to_string())),
            ("anomalies", self.anomalies.map(|b| b.to_string())),
            (
                "max_anomaly_series",
                self.max_anomaly_series.map(|n| n.to_string()),
            ),
        ];
        for (key, value) in scalars {
            if let Some(value) = value {
                put(key, Node::Scalar(value));
            }
        }
        if let Some(budgets) = &self.budgets {
            let bases = self.bases();
            let items = budgets
                .iter()
                .map(|b| Node::Map(b.tree(&bases, s)))
                .collect();
            put("budgets", Node::List(items));
        }
        // Any order of keys, the name first or not.
        let rot = s.next() as usize % m.len();
        m.rotate_left(rot);
        m
    }

    fn bases(&self) -> Vec<CostBasis> {
        self.cost_basis
            .clone()
            .unwrap_or_else(|| vec![CostBasis::Unblended])
    }

    fn expected(&self, env: &HashMap<String, String>, interval: Duration) -> Integration {
        let bases = self.bases();
        let list =
            |l: &Option<Vec<Str>>| l.iter().flatten().map(|s| s.value(env)).collect::<Vec<_>>();
        Integration {
            name: self.name.value(env),
            account_id: self.account_id.clone(),
            assumed_role_name: self.role.as_ref().map(|(r, _)| r.value(env)),
            external_id: self
                .role
                .as_ref()
                .and_then(|(_, e)| e.as_ref())
                .map(|e| e.value(env)),
            static_credentials: self.keys.as_ref().map(|(id, secret)| StaticCredentials {
                access_key_id: id.value(env),
                secret_access_key: Secret::new(secret.value(env)),
            }),
            region: self
                .region
                .as_ref()
                .map_or(DEFAULT_REGION.to_string(), |r| r.value(env)),
            endpoint_url: self.endpoint_url.clone(),
            sts_endpoint_url: self.sts_endpoint_url.clone(),
            cost_basis: bases.clone(),
            refresh_interval: self.refresh_interval.as_ref().map_or(interval, |(_, d)| *d),
            checks: Default::default(),
            resources: list(&self.resources),
            max_resource_series: self.max_resource_series.unwrap_or(DEFAULT_MAX_SERIES),
            tags: list(&self.tags),
            max_tag_series: self.max_tag_series.unwrap_or(DEFAULT_MAX_SERIES),
            // Not generated: the default (tests/storage.rs and config's unit tests set it).
            max_api_requests_per_day: DEFAULT_MAX_API_REQUESTS_PER_DAY,
            forecast: self.forecast.unwrap_or(true),
            budgets: self
                .budgets
                .iter()
                .flatten()
                .map(|b| Budget {
                    name: b.name.value(env),
                    monthly_usd: b.monthly_usd,
                    accounts: b.accounts.clone().unwrap_or_default(),
                    services: list(&b.services),
                    cost_basis: b.cost_basis.map_or(bases[0], |i| bases[i % bases.len()]),
                    thresholds: Threshold::DEFAULT.to_vec(),
                })
                .collect(),
            organizations: self.organizations.unwrap_or(false),
            organizations_endpoint_url: self.organizations_endpoint_url.clone(),
            commitments: self.commitments.unwrap_or(false),
            anomalies: self.anomalies.unwrap_or(false),
            max_anomaly_series: self
                .max_anomaly_series
                .unwrap_or(DEFAULT_MAX_ANOMALY_SERIES),
            views: Vec::new(),
            labels: Vec::new(),
            costs: true,
            electrolux: None,
        }
    }
}

impl GenBudget {
    fn tree(&self, bases: &[CostBasis], s: &mut Styles) -> Vec<(String, Node)> {
        let mut m: Vec<(String, Node)> = vec![
            ("name".into(), Node::Scalar(self.name.yaml(s.next()))),
            (
                "monthly_usd".into(),
                Node::Scalar(if self.integral {
                    format!("{}", self.monthly_usd as u64)
                } else {
                    format!("{:?}", self.monthly_usd)
                }),
            ),
        ];
        if let Some(accounts) = &self.accounts {
            let items = accounts
                .iter()
                .map(|a| Node::Scalar(yaml_quoted(a)))
                .collect();
            m.push(("accounts".into(), Node::List(items)));
        }
        if let Some(services) = &self.services {
            m.push(("services".into(), scalar_list(services, s)));
        }
        if let Some(i) = self.cost_basis {
            let basis = bases[i % bases.len()];
            m.push(("cost_basis".into(), Node::Scalar(basis.as_str().into())));
        }
        let rot = s.next() as usize % m.len();
        m.rotate_left(rot);
        m
    }
}

// ---------------------------------------------------------------------------------------------
// What every configuration error must look like
// ---------------------------------------------------------------------------------------------

/// A clear error: a non-blank one-line message; the position, when there is one, 1-based,
/// within the text and shown as "line L column C"; the key, when there is one, shown.
fn check_clear(e: &ConfigError, text: &str) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(!e.message.trim().is_empty(), "blank message: {shown:?}");
    prop_assert!(!shown.contains('\n'), "more than one line: {shown:?}");
    prop_assert!(
        !e.message.contains("untagged enum"),
        "serde's words for an operator: {shown:?}"
    );
    if let Some((line, column)) = e.position {
        prop_assert!(line >= 1 && column >= 1, "{shown:?}");
        for said in [
            format!("line {line}, column {column}"),
            format!("line {line} column {column}"),
        ] {
            prop_assert!(
                !e.message.contains(&said),
                "the position said twice: {shown:?}"
            );
        }
        // YAML breaks lines at \r\n, \r and \n.
        let lines = text.replace("\r\n", "\n").split(['\r', '\n']).count();
        prop_assert!(
            line as usize <= lines,
            "line {line} past the text's end: {shown:?}"
        );
        let where_ = format!(" at line {line} column {column}");
        prop_assert!(shown.contains(&where_), "{shown:?}");
    }
    if let Some(key) = &e.key {
        prop_assert!(!key.trim().is_empty(), "{shown:?}");
        // Shown with its control characters escaped, on the one line.
        let escaped: String = key
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect();
        prop_assert!(shown.contains(escaped.as_str()), "{shown:?}");
    }
    Ok(())
}

/// YAML the parser itself refuses (before any shape is applied).
fn is_bad_yaml(text: &str) -> bool {
    serde_saphyr::from_str::<serde::de::IgnoredAny>(text).is_err()
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Parses `text`: a configuration, or an error that is clear and, for YAML the parser
/// refuses, says where.
fn parse_checked(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(), TestCaseError> {
    if let Err(e) = parse_with_env(text, env) {
        check_clear(&e, text)?;
        if is_bad_yaml(text) {
            prop_assert!(e.position.is_some(), "a YAML error without a position: {e}");
        }
    }
    Ok(())
}

/// YAML-ish text: the keys the exporter knows, indentation, indicators and odd scalars.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        3 => select(vec![
            "integrations", "name", "account_id", "backend", "infraWallet", "aws", "accountId",
            "refresh_interval", "data_delay_days", "cost_basis", "budgets", "monthly_usd",
            "tags", "resources", "max_tag_series", "forecast", "secretAccessKey",
            "accessKeySecret", "accessKeyId", "region", "endpoint_url",
        ])
        .prop_map(String::from),
        3 => select(vec![
            ": ", ":", "\n", "\n  ", "\n    ", "- ", "  - ", "[", "]", "{", "}", ", ", "\"", "'",
            "#", "&a ", "*a", "!!str ", "!!int ", "? ", "|\n", ">-\n", "---\n", "...\n", "<<: ",
            "~", "null", "true", "1e999", "-1", "0", "4294967296", "18446744073709551616",
            ".nan", "-.inf", "\"123456789012\"", "123456789012", "${X}", "${", "$${X}", "\t",
            "\r\n", "%YAML 1.2\n", "\u{feff}",
        ])
        .prop_map(String::from),
        1 => piece(),
    ];
    vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any bytes (as the file's text, lossily decoded): a configuration or a clear error.
    #[test]
    fn config_from_arbitrary_bytes(bytes in vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        parse_checked(&text, &no_env)?;
    }

    /// Any string: a configuration or a clear error.
    #[test]
    fn config_from_arbitrary_text(text in any::<String>()) {
        parse_checked(&text, &no_env)?;
    }

    /// YAML-shaped noise built from the exporter's own keys reaches deeper.
    #[test]
    fn config_from_yamlish_text(text in yamlish()) {
        parse_checked(&text, &|name| (name == "X").then(|| "x".to_string()))?;
    }

    /// A generated valid configuration parses to exactly what was generated.
    #[test]
    fn native_config_round_trips(config in native_config()) {
        let doc = Doc::render(&config.tree());
        let env = env_of(&config);
        let parsed = parse_with_env(&doc.text, &|name| env.get(name).cloned());
        match parsed {
            Ok(parsed) => prop_assert_eq!(parsed, config.expected(), "{}", doc.text),
            Err(e) => prop_assert!(false, "refused: {e}\n{}", doc.text),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Native configuration: one mistake at a time, and the documented error for each
// ---------------------------------------------------------------------------------------------

/// One mistake in an otherwise valid configuration.
#[derive(Debug, Clone)]
enum Mistake {
    /// A required key of integration `i` left out.
    Missing { i: usize, key: &'static str },
    /// An unknown key added to the mapping at `path` (index picks one of the mappings).
    UnknownKey { at: usize, key: String },
    /// A value of the wrong type: a list where a scalar belongs, or a word for a number.
    WrongType { field: usize, list: bool },
    /// `data_delay_days` too large, as a u32 or beyond.
    DelayTooLarge(u64),
    /// A series cap of zero.
    ZeroCap { i: usize, tags: bool },
    /// A budget of zero, negative, infinite or not a number.
    BadBudget { i: usize, value: String },
    /// An account id that is not 12 digits.
    BadAccount { i: usize, id: String },
    /// A refresh interval of zero.
    ZeroInterval { i: Option<usize>, text: String },
    /// A cost basis that does not exist.
    UnknownBasis { i: usize, name: String },
    /// Integration `i` named like integration 0.
    DuplicateName { i: usize },
    /// An unset environment variable referenced by integration `i`'s region.
    UnsetVariable { i: usize, name: String },
}

fn mistake() -> impl Strategy<Value = Mistake> {
    let i = 0usize..8;
    prop_oneof![
        (i.clone(), select(vec!["name", "account_id"]))
            .prop_map(|(i, key)| Mistake::Missing { i, key }),
        (any::<usize>(), "x_[a-z_]{0,10}").prop_map(|(at, key)| Mistake::UnknownKey { at, key }),
        (any::<usize>(), any::<bool>())
            .prop_map(|(field, list)| Mistake::WrongType { field, list }),
        prop_oneof![32u64..=u32::MAX as u64, (u32::MAX as u64 + 1)..]
            .prop_map(Mistake::DelayTooLarge),
        (i.clone(), any::<bool>()).prop_map(|(i, tags)| Mistake::ZeroCap { i, tags }),
        (
            i.clone(),
            prop_oneof![
                Just("0".to_string()),
                Just("-0.0".to_string()),
                Just(".inf".to_string()),
                Just(".nan".to_string()),
                Just("-.inf".to_string()),
                (1u32..1_000_000).prop_map(|n| format!("-{n}")),
                (1e-9f64..1e9).prop_map(|f| format!("{:?}", -f)),
            ]
        )
            .prop_map(|(i, value)| Mistake::BadBudget { i, value }),
        (
            i.clone(),
            prop_oneof![
                "[0-9]{0,11}",
                "[0-9]{13,20}",
                "[0-9]{5}[a-z ][0-9]{6}",
                "\\PC{1,12}"
            ]
            .prop_filter("not an account id", |s| s.len() != 12
                || !s.bytes().all(|b| b.is_ascii_digit()))
        )
            .prop_map(|(i, id)| Mistake::BadAccount { i, id }),
        (
            proptest::option::of(i.clone()),
            select(vec!["0s", "0m", "0h", "0d", "0 s", " 0s "])
        )
            .prop_map(|(i, text)| Mistake::ZeroInterval {
                i,
                text: text.to_string()
            }),
        (
            i.clone(),
            "[a-z_]{1,14}".prop_filter("not a basis", |s| CostBasis::parse(s).is_none())
        )
            .prop_map(|(i, name)| Mistake::UnknownBasis { i, name }),
        (1usize..8).prop_map(|i| Mistake::DuplicateName { i }),
        (i, "UNSET_[A-Z0-9_]{0,8}").prop_map(|(i, name)| Mistake::UnsetVariable { i, name }),
    ]
}

/// The fields whose type `WrongType` breaks: (path within an integration or the file, whether
/// the value is a number or a boolean (a word breaks it) or a string (a list breaks it)).
const TYPED_FIELDS: [(&str, bool); 10] = [
    ("data_delay_days", true),
    ("refresh_interval", false),
    ("integrations[0].name", false),
    ("integrations[0].account_id", false),
    ("integrations[0].region", false),
    ("integrations[0].forecast", true),
    ("integrations[0].organizations", true),
    ("integrations[0].max_tag_series", true),
    ("integrations[0].max_resource_series", true),
    ("integrations[0].endpoint_url", false),
];

/// What the error must say: the key and a part of the message, and whether its position is
/// the key's line (`Key`), the value's (`Value`), or some line of the document (`Any`).
#[derive(Debug)]
enum At {
    Key,
    Value,
    Any,
}

/// Applies a mistake to the tree; returns the key the error must name, a part of its
/// message, and where its position must be.
fn apply(
    mistake: &Mistake,
    root: &mut Vec<(String, Node)>,
    n: usize,
) -> Option<(String, String, At)> {
    let int = |i: usize| format!("integrations[{}]", i % n);
    let set = |root: &mut Vec<(String, Node)>, path: &str, key: &str, node: Node| {
        let map = map_at(root, path)?;
        match map.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = node,
            None => map.push((key.to_string(), node)),
        }
        Some(())
    };
    Some(match mistake {
        Mistake::Missing { i, key } => {
            let path = int(*i);
            map_at(root, &path)?.retain(|(k, _)| k != key);
            (path, format!("missing field `{key}`"), At::Any)
        }
        Mistake::UnknownKey { at, key } => {
            let mut paths = vec![String::new()];
            paths.extend((0..n).map(int));
            let path = paths[at % paths.len()].clone();
            let map = map_at(root, &path)?;
            map.insert(
                at % (map.len() + 1),
                (key.clone(), Node::Scalar("1".into())),
            );
            let full = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            (full, format!("unknown field `{key}`"), At::Key)
        }
        Mistake::WrongType { field, list } => {
            let (path, numeric) = TYPED_FIELDS[field % TYPED_FIELDS.len()];
            let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
            // A flow list, so that the value starts on the key's line.
            let node = Node::Scalar(if numeric && !list { "many" } else { "[a]" }.into());
            set(root, parent, key, node)?;
            (path.to_string(), String::new(), At::Value)
        }
        Mistake::DelayTooLarge(days) => {
            set(root, "", "data_delay_days", Node::Scalar(days.to_string()))?;
            let message = if *days <= u32::MAX as u64 {
                format!("{days} is more than 31")
            } else {
                String::new()
            };
            ("data_delay_days".into(), message, At::Value)
        }
        Mistake::ZeroCap { i, tags } => {
            let key = if *tags {
                "max_tag_series"
            } else {
                "max_resource_series"
            };
            set(root, &int(*i), key, Node::Scalar("0".into()))?;
            (
                format!("{}.{key}", int(*i)),
                "must be at least 1".into(),
                At::Value,
            )
        }
        Mistake::BadBudget { i, value } => {
            let budget = Node::Map(vec![
                ("name".into(), Node::Scalar("\"extra budget\"".into())),
                ("monthly_usd".into(), Node::Scalar(value.clone())),
            ]);
            let path = int(*i);
            let map = map_at(root, &path)?;
            let index = match map.iter_mut().find(|(k, _)| k == "budgets") {
                Some((_, Node::List(items))) => {
                    items.push(budget);
                    items.len() - 1
                }
                _ => {
                    map.push(("budgets".into(), Node::List(vec![budget])));
                    0
                }
            };
            // YAML's infinities and NaN are refused by the parser itself, in its words.
            let message = if value.contains("inf") || value.contains("nan") {
                "non-finite float"
            } else {
                "must be a positive amount of USD"
            };
            (
                format!("{path}.budgets[{index}].monthly_usd"),
                message.into(),
                At::Value,
            )
        }
        Mistake::BadAccount { i, id } => {
            set(
                root,
                &int(*i),
                "account_id",
                Node::Scalar(yaml_quoted(&escape_env(id))),
            )?;
            (
                format!("{}.account_id", int(*i)),
                "exactly 12 digits".into(),
                At::Value,
            )
        }
        Mistake::ZeroInterval { i, text } => {
            let path = i.map(int).unwrap_or_default();
            set(
                root,
                &path,
                "refresh_interval",
                Node::Scalar(yaml_quoted(text)),
            )?;
            let key = if path.is_empty() {
                "refresh_interval".to_string()
            } else {
                format!("{path}.refresh_interval")
            };
            (key, "must be greater than zero".into(), At::Value)
        }
        Mistake::UnknownBasis { i, name } => {
            let list = Node::List(vec![
                Node::Scalar("unblended".into()),
                Node::Scalar(name.clone()),
            ]);
            let path = int(*i);
            set(root, &path, "cost_basis", list)?;
            // Budgets name bases too; the basis list is read first.
            (
                format!("{path}.cost_basis[1]"),
                format!("unknown cost basis {name:?}"),
                At::Value,
            )
        }
        Mistake::DuplicateName { i } => {
            if n < 2 {
                return None;
            }
            let first = match map_at(root, &int(0))?.iter().find(|(k, _)| k == "name") {
                Some((_, node)) => node.clone(),
                None => return None,
            };
            let path = int(*i % (n - 1) + 1);
            set(root, &path, "name", first)?;
            (
                format!("{path}.name"),
                "duplicate integration name".into(),
                At::Value,
            )
        }
        Mistake::UnsetVariable { i, name } => {
            let path = int(*i);
            set(
                root,
                &path,
                "region",
                Node::Scalar(format!("\"eu-${{{name}}}\"")),
            )?;
            (
                format!("{path}.region"),
                format!("environment variable {name} is not set"),
                At::Value,
            )
        }
    })
}

/// Whether the mistake is the only one: validation goes integration by integration, key by key,
/// so an earlier problem would be reported first. Generated configurations have none.
fn expected_position(doc: &Doc, key: &str, at: &At) -> Option<(u64, u64)> {
    let pos = doc.at.get(key)?;
    match at {
        At::Key => Some((pos.line, pos.key_column)),
        At::Value => Some((pos.line, pos.value_column)),
        At::Any => None,
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// Each kind of mistake in a valid configuration gives its documented error, naming the
    /// key and (where the parser knows it) the line and column of the offending value.
    #[test]
    fn native_config_mistakes(config in native_config(), mistake in mistake()) {
        let mut root = config.tree();
        let n = config.integrations.len();
        let env = env_of(&config);
        if let Mistake::UnsetVariable { name, .. } = &mistake && env.contains_key(name) {
            return Ok(());
        }
        let Some((key, message, at)) = apply(&mistake, &mut root, n) else {
            return Ok(());
        };
        let doc = Doc::render(&root);
        let e = match parse_with_env(&doc.text, &|name| env.get(name).cloned()) {
            Ok(c) => return Err(TestCaseError::fail(format!("accepted {mistake:?}: {c:?}\n{}", doc.text))),
            Err(e) => e,
        };
        check_clear(&e, &doc.text)?;
        prop_assert_eq!(e.key.as_deref(), Some(key.as_str()), "{}\n{}", e, doc.text);
        prop_assert!(e.message.contains(&message), "{} lacks {:?}\n{}", e, message, doc.text);
        match expected_position(&doc, &key, &at) {
            Some(pos) => prop_assert_eq!(e.position, Some(pos), "{}\n{}", e, doc.text),
            None => prop_assert!(e.position.is_some(), "{}\n{}", e, doc.text),
        }
    }

    /// Secrets from the environment never appear in an error about another problem.
    #[test]
    fn secrets_stay_out_of_errors(
        config in native_config(),
        mistake in mistake(),
        secret in "[A-Za-z0-9/+]{40}",
        key_id in "AKIA[A-Z0-9]{16}",
        external in "[a-zA-Z0-9-]{24}",
    ) {
        let mut config = config;
        for i in &mut config.integrations {
            i.keys = Some((
                Str::Env("SECRET_KEY_ID".into(), key_id.clone()),
                Str::Env("SECRET_ACCESS_KEY".into(), secret.clone()),
            ));
            i.role = Some((Str::Lit("Role".into()), Some(Str::Env("SECRET_EXTERNAL_ID".into(), external.clone()))));
        }
        let mut root = config.tree();
        if apply(&mistake, &mut root, config.integrations.len()).is_none() {
            return Ok(());
        }
        let doc = Doc::render(&root);
        let env = env_of(&config);
        if let Err(e) = parse_with_env(&doc.text, &|name| env.get(name).cloned()) {
            let shown = format!("{e} {e:?}");
            for value in [&secret, &external] {
                prop_assert!(!shown.contains(value.as_str()), "{shown}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `${VAR}` expansion against a model of the documented rules
// ---------------------------------------------------------------------------------------------

/// What the model says expansion gives.
#[derive(Debug, PartialEq)]
enum Expanded {
    Text(String),
    Unset(String),
    Invalid(String),
    Unterminated,
}

/// The documented rules, read character by character: `$${` is a literal `${`; `${NAME}` with
/// NAME a letter or `_` then letters, digits or `_` is the variable's value (unset: an error
/// naming it); `${` without a `}` is an error; any other `$` is itself.
fn model(input: &str, env: &BTreeMap<String, String>) -> Expanded {
    let chars: Vec<char> = input.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let at = |k: usize| chars.get(i + k).copied();
        if at(0) == Some('$') && at(1) == Some('$') && at(2) == Some('{') {
            out.push_str("${");
            i += 3;
        } else if at(0) == Some('$') && at(1) == Some('{') {
            let Some(close) = chars[i + 2..].iter().position(|c| *c == '}') else {
                return Expanded::Unterminated;
            };
            let name: String = chars[i + 2..i + 2 + close].iter().collect();
            let mut name_chars = name.chars();
            let valid = matches!(name_chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
                && name_chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
            if !valid {
                return Expanded::Invalid(name);
            }
            match env.get(&name) {
                Some(value) => out.push_str(value),
                None => return Expanded::Unset(name),
            }
            i += 2 + close + 1;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    Expanded::Text(out)
}

fn expansion_input() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        3 => select(vec!["$", "${", "}", "$${", "{", "$$", "${}", "${A}", "${_}", "${B_1}", "${1X}",
                         "${A-B}", "${ A}", "${A${B}}", "${${A}}", "$${A}", "$$${A}", "${ä}", "}}"])
            .prop_map(String::from),
        2 => "[AB_1]{1,3}",
        2 => "\\PC{1,3}",
        1 => any::<String>(),
    ];
    vec(part, 0..12).prop_map(|p| p.concat())
}

fn environment() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(
        prop_oneof![
            select(vec!["A", "B", "_", "B_1", "AB", "A1"]).prop_map(String::from),
            var_name()
        ],
        prop_oneof![
            Just(String::new()),
            any::<String>(),
            select(vec!["${A}", "$${", "}", "$"]).prop_map(String::from)
        ],
        0..5,
    )
}

proptest! {
    #![proptest_config(cases(512))]

    /// Expansion gives exactly what the model gives, or the error the model names.
    #[test]
    fn expansion_matches_the_model(input in expansion_input(), env in environment()) {
        let got = expand_env(&input, &|name| env.get(name).cloned());
        match (model(&input, &env), got) {
            (Expanded::Text(want), Ok(got)) => prop_assert_eq!(got, want),
            (Expanded::Unset(name), Err(message)) => {
                prop_assert_eq!(message, format!("environment variable {name} is not set"));
            }
            (Expanded::Invalid(name), Err(message)) => {
                prop_assert!(message.contains(&format!("${{{name}}}")), "{message}");
                prop_assert!(message.contains("not a valid environment variable reference"), "{message}");
            }
            (Expanded::Unterminated, Err(message)) => {
                prop_assert!(message.starts_with("unterminated ${"), "{message}");
            }
            (want, got) => prop_assert!(false, "model {want:?}, got {got:?}"),
        }
    }

    /// Escaping every `${` as `$${` writes any text literally.
    #[test]
    fn escaped_text_expands_to_itself(text in expansion_input()) {
        prop_assert_eq!(expand_env(&escape_env(&text), &|_| None), Ok(text));
    }

    /// A variable's value is never itself expanded, and never shows in an error about another
    /// variable or about the text's syntax.
    #[test]
    fn values_are_inserted_verbatim_and_kept_out_of_errors(
        input in expansion_input(),
        secret in "[A-Za-z0-9/+]{40}",
    ) {
        let env = |name: &str| (name == "SECRET").then(|| secret.clone());
        for text in [format!("{input}${{SECRET}}"), format!("${{SECRET}}{input}")] {
            if let Err(message) = expand_env(&text, &env) {
                prop_assert!(!message.contains(&secret), "{message}");
            }
        }
        // A `$` just before a reference would make it `$${`, the escape: there is no way to
        // write a literal `$` right before a reference.
        if !input.ends_with('$') {
            let literal = format!("{}${{SECRET}}", escape_env(&input));
            prop_assert_eq!(expand_env(&literal, &env), Ok(format!("{input}{secret}")));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// InfraWallet's Backstage app-config.yaml
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct GenWallet {
    name: Str,
    account_id: String,
    role: Option<(Str, Option<Str>)>,
    /// Key id, `secretAccessKey`, `accessKeySecret` (at least one of the two when present).
    keys: Option<(Str, Option<Str>, Option<Str>)>,
    /// InfraWallet's own keys the exporter ignores.
    extras: bool,
}

fn wallet_integration() -> impl Strategy<Value = GenWallet> {
    let secrets = (
        proptest::option::of(str_of(text())),
        proptest::option::of(str_of(text())),
    )
        .prop_map(|(a, b)| match (a, b) {
            (None, None) => (Some(Str::Lit("s".into())), None),
            other => other,
        });
    (
        str_of(text()),
        account_id(),
        proptest::option::of((str_of(text()), proptest::option::of(str_of(text())))),
        proptest::option::of((str_of(text()), secrets)),
        any::<bool>(),
    )
        .prop_map(|(name, account_id, role, keys, extras)| GenWallet {
            name,
            account_id,
            role,
            keys: keys.map(|(id, (new, old))| (id, new, old)),
            extras,
        })
}

#[derive(Debug, Clone)]
struct GenAppConfig {
    integrations: Vec<GenWallet>,
    style: u64,
}

fn app_config() -> impl Strategy<Value = GenAppConfig> {
    (vec(wallet_integration(), 1..4), any::<u64>()).prop_map(|(integrations, style)| {
        let mut config = GenAppConfig {
            integrations,
            style,
        };
        let env = settle_env(|f| {
            for i in &mut config.integrations {
                i.strs(f);
            }
        });
        config.integrations = dedup(config.integrations, |i| i.name.value(&env));
        config
    })
}

impl GenWallet {
    fn strs(&mut self, f: &mut dyn FnMut(&mut Str)) {
        f(&mut self.name);
        if let Some((role, external)) = &mut self.role {
            f(role);
            external.iter_mut().for_each(&mut *f);
        }
        if let Some((id, new, old)) = &mut self.keys {
            f(id);
            new.iter_mut().for_each(&mut *f);
            old.iter_mut().for_each(&mut *f);
        }
    }
}

impl GenAppConfig {
    fn env(&self) -> HashMap<String, String> {
        settle_env(|f| {
            for i in &mut self.integrations.clone() {
                i.strs(f);
            }
        })
    }

    fn tree(&self) -> Vec<(String, Node)> {
        let s = &mut Styles(self.style);
        let aws = self
            .integrations
            .iter()
            .map(|i| {
                let mut m = vec![
                    ("name".to_string(), Node::Scalar(i.name.yaml(s.next()))),
                    (
                        "accountId".to_string(),
                        Node::Scalar(yaml_quoted(&i.account_id)),
                    ),
                ];
                if let Some((role, external)) = &i.role {
                    m.push(("assumedRoleName".into(), Node::Scalar(role.yaml(s.next()))));
                    if let Some(external) = external {
                        m.push(("externalId".into(), Node::Scalar(external.yaml(s.next()))));
                    }
                }
                if let Some((id, new, old)) = &i.keys {
                    m.push(("accessKeyId".into(), Node::Scalar(id.yaml(s.next()))));
                    if let Some(old) = old {
                        m.push(("accessKeySecret".into(), Node::Scalar(old.yaml(s.next()))));
                    }
                    if let Some(new) = new {
                        m.push(("secretAccessKey".into(), Node::Scalar(new.yaml(s.next()))));
                    }
                }
                if i.extras {
                    // InfraWallet's `key:value` tags become static labels.
                    m.push((
                        "tags".into(),
                        Node::List(vec![Node::Scalar("\"team: platform\"".into())]),
                    ));
                    m.push((
                        "filters".into(),
                        Node::List(vec![Node::Map(vec![
                            ("type".into(), Node::Scalar("exclude".into())),
                            ("attribute".into(), Node::Scalar("Service".into())),
                            // Keys the exporter ignores are not expanded either.
                            ("pattern".into(), Node::Scalar("'${NOT_EXPANDED}'".into())),
                        ])]),
                    ));
                }
                let rot = s.next() as usize % m.len();
                m.rotate_left(rot);
                Node::Map(m)
            })
            .collect();
        let azure = Node::List(vec![Node::Map(vec![
            ("name".into(), Node::Scalar("ignored".into())),
            (
                "subscriptionId".into(),
                Node::Scalar("${UNSET_BUT_IGNORED}".into()),
            ),
        ])]);
        let mut providers = vec![("aws".to_string(), Node::List(aws))];
        if s.next().is_multiple_of(2) {
            providers.push(("azure".into(), azure));
        }
        let mut backend = vec![
            (
                "baseUrl".to_string(),
                Node::Scalar("http://localhost:7007".into()),
            ),
            (
                "infraWallet".to_string(),
                Node::Map(vec![("integrations".into(), Node::Map(providers))]),
            ),
        ];
        if s.next().is_multiple_of(2) {
            backend.reverse();
        }
        vec![
            (
                "app".to_string(),
                Node::Map(vec![("title".into(), Node::Scalar("Backstage".into()))]),
            ),
            ("backend".to_string(), Node::Map(backend)),
        ]
    }

    fn expected(&self) -> Config {
        let env = self.env();
        Config {
            data_delay_days: 1,
            integrations: self
                .integrations
                .iter()
                .map(|i| {
                    let mut out = Integration::new(i.name.value(&env), i.account_id.clone());
                    out.assumed_role_name = i.role.as_ref().map(|(r, _)| r.value(&env));
                    out.external_id = i
                        .role
                        .as_ref()
                        .and_then(|(_, e)| e.as_ref())
                        .map(|e| e.value(&env));
                    out.static_credentials = i.keys.as_ref().map(|(id, new, old)| {
                        // secretAccessKey wins, as in InfraWallet.
                        let secret = new.as_ref().or(old.as_ref()).map(|s| s.value(&env));
                        StaticCredentials {
                            access_key_id: id.value(&env),
                            secret_access_key: Secret::new(secret.unwrap_or_default()),
                        }
                    });
                    if i.extras {
                        out.labels = vec![("team".into(), "platform".into())];
                    }
                    out
                })
                .collect(),
            format: ConfigFormat::InfraWallet,
        }
    }
}

/// A change to the text of a file: any of them may make it invalid, none may make it panic.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    Indent(usize, usize),
    Dedent(usize),
    Insert(usize, String),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), 1usize..4).prop_map(|(l, n)| Edit::Indent(l, n)),
        any::<usize>().prop_map(Edit::Dedent),
        (any::<usize>(), prop_oneof![piece(), yamlish()]).prop_map(|(at, s)| Edit::Insert(at, s)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply_edit(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let n = lines.len().max(1);
    match edit {
        Edit::DeleteLine(l) => {
            if !lines.is_empty() {
                lines.remove(l % n);
            }
        }
        Edit::DuplicateLine(l) => {
            if let Some(line) = lines.get(l % n).cloned() {
                lines.insert(l % n, line);
            }
        }
        Edit::Indent(l, k) => {
            if let Some(line) = lines.get_mut(l % n) {
                *line = format!("{}{line}", " ".repeat(*k));
            }
        }
        Edit::Dedent(l) => {
            if let Some(line) = lines.get_mut(l % n) {
                *line = line.trim_start().to_string();
            }
        }
        Edit::Insert(at, s) => {
            let boundaries: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            let at = boundaries[at % boundaries.len()];
            return format!("{}{s}{}", &text[..at], &text[at..]);
        }
        Edit::Truncate(at) => {
            let boundaries: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            return text[..boundaries[at % boundaries.len()]].to_string();
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

proptest! {
    #![proptest_config(cases(256))]

    /// A generated app-config.yaml parses to the generated integrations, with defaults for the
    /// rest, whatever else the file holds.
    #[test]
    fn infrawallet_round_trips(config in app_config()) {
        let doc = Doc::render(&config.tree());
        let env = config.env();
        match parse_with_env(&doc.text, &|name| env.get(name).cloned()) {
            Ok(parsed) => prop_assert_eq!(parsed, config.expected(), "{}", doc.text),
            Err(e) => prop_assert!(false, "refused: {e}\n{}", doc.text),
        }
    }

    /// Edited app-config.yaml files (and native ones): a configuration or a clear error.
    #[test]
    fn edited_configs_never_panic(
        wallet in app_config(),
        native in native_config(),
        edits in vec(edit(), 1..4),
        which in any::<bool>(),
    ) {
        let (mut text, env) = if which {
            (Doc::render(&wallet.tree()).text, wallet.env())
        } else {
            (Doc::render(&native.tree()).text, env_of(&native))
        };
        for e in &edits {
            text = apply_edit(&text, e);
        }
        parse_checked(&text, &|name| env.get(name).cloned())?;
    }

    /// InfraWallet mistakes are reported with InfraWallet's own key names.
    #[test]
    fn infrawallet_mistakes_use_its_key_names(config in app_config(), which in 0usize..8, bad in "[0-9]{1,11}") {
        let mut config = config;
        let i = which % config.integrations.len();
        let list = "backend.infraWallet.integrations.aws";
        config.integrations[i].account_id = bad.clone();
        let doc = Doc::render(&config.tree());
        let env = config.env();
        let e = match parse_with_env(&doc.text, &|name| env.get(name).cloned()) {
            Ok(c) => return Err(TestCaseError::fail(format!("accepted {c:?}"))),
            Err(e) => e,
        };
        check_clear(&e, &doc.text)?;
        // An earlier integration may have another problem first: none are generated.
        let key = format!("{list}[{i}].accountId");
        prop_assert_eq!(e.key.as_deref(), Some(key.as_str()), "{}", e);
        let pos = doc.at[&key];
        prop_assert_eq!(e.position, Some((pos.line, pos.value_column)), "{}\n{}", e, doc.text);
        prop_assert!(e.message.contains(&format!("{bad:?}")), "{}", e);
    }
}

// ---------------------------------------------------------------------------------------------
// Cost Explorer pages
// ---------------------------------------------------------------------------------------------

static EXPLORER: LazyLock<CostExplorer> = LazyLock::new(|| {
    let conf = aws_sdk_costexplorer::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .build();
    CostExplorer::new(aws_sdk_costexplorer::Client::from_conf(conf))
});

fn query(keys: usize) -> Query {
    let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or_default();
    let group_by = [Dimension::LinkedAccount, Dimension::Service]
        .into_iter()
        .take(keys)
        .map(GroupKey::Dimension)
        .collect();
    Query::cost(
        Granularity::Daily,
        (day, day.succ_opt().unwrap_or(day)),
        group_by,
        vec![],
    )
}

/// What the sink saw: each group's period start, keys and amounts.
type Seen = Vec<(NaiveDate, Vec<String>, Vec<u64>)>;

/// Feeds one page body to a fresh pager, as the SDK's answer would be.
fn feed(
    body: &[u8],
    keys: usize,
    bases: &[CostBasis],
) -> (
    Result<(), CostExplorerError>,
    Seen,
    bool,
    aws_cost_exporter::cost_explorer::QueryStats,
) {
    let query = query(keys);
    let mut pager = match EXPLORER.pager(&query, bases) {
        Ok(pager) => pager,
        Err(e) => return (Err(e), Vec::new(), false, Default::default()),
    };
    let mut seen = Seen::new();
    let result = pager.take_page(body, None, &mut |day, keys, amounts| {
        seen.push((
            day,
            keys.iter().map(|k| k.to_string()).collect(),
            amounts.iter().map(|a| a.to_bits()).collect(),
        ));
        Ok(())
    });
    let more = pager.has_more();
    (result, seen, more, pager.into_stats())
}

/// A JSON string literal for `s`, escaping more than needed when `escape_all`.
fn json_str(s: &str, escape_all: bool) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if escape_all => out.push_str("\\/"),
            '\n' if escape_all => out.push_str("\\n"),
            c if (c as u32) < 0x20 || (escape_all && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An amount as Cost Explorer might write it, or any other text.
fn amount_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => (
            select(vec!["", "-", "+"]),
            "[0-9]{1,22}",
            proptest::option::of("[0-9]{0,22}"),
            proptest::option::of((select(vec!["e", "E"]), select(vec!["", "+", "-"]), 0u32..400)),
        )
            .prop_map(|(sign, int, frac, exp)| {
                let mut s = format!("{sign}{int}");
                if let Some(frac) = frac {
                    s = format!("{s}.{frac}");
                }
                if let Some((e, es, n)) = exp {
                    s = format!("{s}{e}{es}{n}");
                }
                s
            }),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
        1 => select(vec!["0", "-0", "0E-10", "-2.61E-8", ".5", "5.", " 1.5", "1.5 ", "NaN", "inf",
                         "-Infinity", "", "1,5", "1.2.3", "0x10", "1e", "--1", "١٢"])
            .prop_map(String::from),
        1 => any::<String>(),
    ]
}

/// What the exporter must make of an amount: the number, or an error naming what is wrong.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    Usd(f64),
    NotUsd,
    Bad,
}

fn want(amount: Option<&str>, unit: Option<&str>) -> Want {
    if unit != Some("USD") {
        return Want::NotUsd;
    }
    match amount.unwrap_or_default().trim().parse::<f64>() {
        Ok(value) if value.is_finite() => Want::Usd(value),
        _ => Want::Bad,
    }
}

#[derive(Debug, Clone)]
struct GenAmount {
    amount: Option<String>,
    unit: Option<String>,
}

fn usd_amount() -> impl Strategy<Value = GenAmount> + Clone {
    amount_text().prop_map(|a| GenAmount {
        amount: Some(a),
        unit: Some("USD".into()),
    })
}

fn any_amount() -> impl Strategy<Value = GenAmount> + Clone {
    prop_oneof![
        6 => usd_amount(),
        1 => (proptest::option::of(amount_text()), proptest::option::of(prop_oneof![
            select(vec!["EUR", "usd", "USD ", "", "N/A", "Hrs"]).prop_map(String::from),
            any::<String>(),
        ])).prop_map(|(amount, unit)| GenAmount { amount, unit }),
    ]
}

#[derive(Debug, Clone)]
struct GenGroup {
    keys: Vec<String>,
    /// Per cost basis in `CostBasis::ALL` order; the page writes the requested ones and maybe
    /// others.
    amounts: Vec<GenAmount>,
}

#[derive(Debug, Clone)]
struct GenResult {
    start: NaiveDate,
    with_time: bool,
    estimated: Option<bool>,
    groups: Vec<GenGroup>,
}

#[derive(Debug, Clone)]
struct GenPage {
    keys: usize,
    bases: Vec<CostBasis>,
    results: Vec<GenResult>,
    /// (value, description) pairs of DimensionValueAttributes.
    attributes: Vec<(Option<String>, Option<String>)>,
    token: Option<String>,
    escape_all: bool,
    /// Writes the metrics of every basis, not just the requested ones.
    all_metrics: bool,
}

fn page(
    amount: impl Strategy<Value = GenAmount> + Clone + 'static,
) -> impl Strategy<Value = GenPage> {
    (
        1usize..=2,
        proptest::sample::subsequence(CostBasis::ALL.to_vec(), 1..=5).prop_shuffle(),
    )
        .prop_flat_map(move |(keys, bases)| {
            let group = (vec(any::<String>(), keys), vec(amount.clone(), 5))
                .prop_map(|(keys, amounts)| GenGroup { keys, amounts });
            let result = (
                (0i64..60_000).prop_map(|d| {
                    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default()
                        + chrono::Duration::days(d)
                }),
                any::<bool>(),
                proptest::option::of(any::<bool>()),
                vec(group, 0..6),
            )
                .prop_map(|(start, with_time, estimated, groups)| GenResult {
                    start,
                    with_time,
                    estimated,
                    groups,
                });
            (
                Just(keys),
                Just(bases),
                vec(result, 0..4),
                vec(
                    (
                        proptest::option::of(prop_oneof![account_id(), any::<String>()]),
                        proptest::option::of(prop_oneof![Just(String::new()), any::<String>()]),
                    ),
                    0..4,
                ),
                proptest::option::of(prop_oneof![Just(String::new()), any::<String>()]),
                any::<bool>(),
                any::<bool>(),
            )
        })
        .prop_map(
            |(keys, bases, results, attributes, token, escape_all, all_metrics)| GenPage {
                keys,
                bases,
                results,
                attributes,
                token,
                escape_all,
                all_metrics,
            },
        )
}

impl GenPage {
    fn json(&self) -> String {
        let q = |s: &str| json_str(s, self.escape_all);
        let mut results = Vec::new();
        for r in &self.results {
            let start = if r.with_time {
                format!("{}T00:00:00Z", r.start)
            } else {
                r.start.to_string()
            };
            let groups: Vec<String> = r
                .groups
                .iter()
                .map(|g| {
                    let keys: Vec<String> = g.keys.iter().map(|k| q(k)).collect();
                    let metrics: Vec<String> = CostBasis::ALL
                        .iter()
                        .zip(&g.amounts)
                        .filter(|(b, _)| self.all_metrics || self.bases.contains(b))
                        .map(|(b, a)| {
                            let mut fields = Vec::new();
                            if let Some(amount) = &a.amount {
                                fields.push(format!("\"Amount\":{}", q(amount)));
                            }
                            if let Some(unit) = &a.unit {
                                fields.push(format!("\"Unit\":{}", q(unit)));
                            }
                            format!("{}:{{{}}}", q(b.metric()), fields.join(","))
                        })
                        .chain(
                            ["\"UsageQuantity\":{\"Amount\":\"3\",\"Unit\":\"N/A\"}".to_string()],
                        )
                        .collect();
                    format!(
                        "{{\"Keys\":[{}],\"Metrics\":{{{}}}}}",
                        keys.join(","),
                        metrics.join(",")
                    )
                })
                .collect();
            let mut fields = vec![
                format!(
                    "\"TimePeriod\":{{\"Start\":{},\"End\":\"2100-01-01\"}}",
                    q(&start)
                ),
                "\"Total\":{}".to_string(),
                format!("\"Groups\":[{}]", groups.join(",")),
            ];
            if let Some(estimated) = r.estimated {
                fields.push(format!("\"Estimated\":{estimated}"));
            }
            results.push(format!("{{{}}}", fields.join(",")));
        }
        let attributes: Vec<String> = self
            .attributes
            .iter()
            .map(|(value, description)| {
                let mut fields = Vec::new();
                if let Some(value) = value {
                    fields.push(format!("\"Value\":{}", q(value)));
                }
                let mut attrs = vec![format!("\"other\":{}", q("x"))];
                if let Some(d) = description {
                    attrs.push(format!("\"description\":{}", q(d)));
                }
                fields.push(format!("\"Attributes\":{{{}}}", attrs.join(",")));
                format!("{{{}}}", fields.join(","))
            })
            .collect();
        let mut top = vec![
            "\"GroupDefinitions\":[{\"Type\":\"DIMENSION\",\"Key\":\"LINKED_ACCOUNT\"}]"
                .to_string(),
            format!("\"ResultsByTime\":[{}]", results.join(",")),
            format!("\"DimensionValueAttributes\":[{}]", attributes.join(",")),
        ];
        if let Some(token) = &self.token {
            top.push(format!("\"NextPageToken\":{}", q(token)));
        }
        format!("{{{}}}", top.join(","))
    }

    /// The groups the sink must see, in order, up to the first refused amount (and that one).
    fn expected(&self) -> (Seen, Option<(CostBasis, Want, GenAmount)>) {
        let mut seen = Seen::new();
        for r in &self.results {
            for g in &r.groups {
                let mut amounts = Vec::new();
                for basis in &self.bases {
                    let index = CostBasis::ALL.iter().position(|b| b == basis).unwrap_or(0);
                    let a = &g.amounts[index];
                    match want(a.amount.as_deref(), a.unit.as_deref()) {
                        Want::Usd(value) => amounts.push(value.to_bits()),
                        other => return (seen, Some((*basis, other, a.clone()))),
                    }
                }
                seen.push((r.start, g.keys.clone(), amounts));
            }
        }
        (seen, None)
    }
}

/// Arbitrary JSON, its object keys mostly Cost Explorer's.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let key = prop_oneof![
        4 => select(vec![
            "ResultsByTime", "Groups", "Keys", "Metrics", "UnblendedCost", "AmortizedCost",
            "BlendedCost", "NetUnblendedCost", "NetAmortizedCost", "Amount", "Unit", "TimePeriod",
            "Start", "End", "Estimated", "NextPageToken", "DimensionValueAttributes", "Value",
            "Attributes", "description", "Total",
        ])
        .prop_map(String::from),
        1 => any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            select(vec![
                "USD",
                "EUR",
                "1.5",
                "-2.61E-8",
                "NaN",
                "2026-11-01",
                "2026-13-45",
                "",
                "111111111111",
                "2026-11-01T00:00:00Z",
                "é"
            ])
            .prop_map(String::from),
            any::<String>(),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key.clone(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Every error the page handler gives is one of these, with a message that says something.
fn check_page_error(e: &CostExplorerError) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(shown.len() > 20, "{shown:?}");
    prop_assert!(
        matches!(
            e,
            CostExplorerError::Malformed(_)
                | CostExplorerError::MalformedPage { .. }
                | CostExplorerError::NotUsd { .. }
                | CostExplorerError::BadAmount { .. }
        ),
        "{e:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any bytes as a page: groups or an error, never a panic.
    #[test]
    fn pages_from_arbitrary_bytes(bytes in vec(any::<u8>(), 0..300), keys in 1usize..=2) {
        if let (Err(e), ..) = feed(&bytes, keys, &CostBasis::ALL) {
            check_page_error(&e)?;
        }
    }

    /// Any JSON value as a page: groups or an error, never a panic.
    #[test]
    fn pages_from_arbitrary_json(value in json_value(), keys in 1usize..=2, wrap in any::<bool>()) {
        // Wrapped, so that the noise lands inside a result rather than at the top.
        let value = if wrap {
            serde_json::json!({"ResultsByTime": [value]})
        } else {
            value
        };
        let body = value.to_string();
        if let (Err(e), ..) = feed(body.as_bytes(), keys, &CostBasis::ALL) {
            check_page_error(&e)?;
        }
    }

    /// A well-formed USD page: every group's keys and amounts exactly as written (each amount
    /// as Rust parses its text), the Estimated periods, the account names, and whether
    /// another page follows.
    #[test]
    fn wellformed_pages_parse_exactly(page in page(usd_amount())) {
        let body = page.json();
        let (result, seen, more, stats) = feed(body.as_bytes(), page.keys, &page.bases);
        let (want_seen, refused) = page.expected();
        match refused {
            None => {
                prop_assert!(result.is_ok(), "{:?}\n{}", result, body);
                prop_assert_eq!(&seen, &want_seen);
                let estimated: BTreeSet<NaiveDate> = page
                    .results
                    .iter()
                    .filter(|r| r.estimated == Some(true))
                    .map(|r| r.start)
                    .collect();
                prop_assert_eq!(stats.estimated, estimated);
                let mut names = BTreeMap::new();
                for (value, description) in &page.attributes {
                    if let (Some(v), Some(d)) = (value, description) && !d.is_empty() {
                        names.entry(v.clone()).or_insert_with(|| d.clone());
                    }
                }
                prop_assert_eq!(stats.names, names);
                prop_assert_eq!(more, page.token.as_ref().is_some_and(|t| !t.is_empty()));
            }
            Some((basis, want, _)) => {
                prop_assert_eq!(want, Want::Bad);
                prop_assert_eq!(&seen, &want_seen, "groups before the bad amount are kept");
                match result {
                    Err(CostExplorerError::BadAmount { metric, .. }) => {
                        prop_assert_eq!(metric, basis.metric());
                    }
                    other => prop_assert!(false, "{other:?}"),
                }
            }
        }
    }

    /// Any unit but USD is the unsupported-unit error and an unparsable amount the bad-amount
    /// error, naming the metric, the unit and the amount as written, at the first such amount.
    #[test]
    fn refused_amounts_are_named(page in page(any_amount())) {
        let body = page.json();
        let (result, seen, _, _) = feed(body.as_bytes(), page.keys, &page.bases);
        let (want_seen, refused) = page.expected();
        prop_assert_eq!(&seen, &want_seen);
        match (refused, result) {
            (None, Ok(())) => {}
            (Some((basis, Want::NotUsd, a)), Err(CostExplorerError::NotUsd { metric, unit, amount })) => {
                prop_assert_eq!(metric, basis.metric());
                prop_assert_eq!(unit, a.unit.unwrap_or_default());
                prop_assert_eq!(amount, a.amount.unwrap_or_default());
            }
            (Some((basis, Want::Bad, a)), Err(CostExplorerError::BadAmount { metric, amount })) => {
                prop_assert_eq!(metric, basis.metric());
                prop_assert_eq!(amount, a.amount.unwrap_or_default());
            }
            (want, got) => prop_assert!(false, "want {want:?}, got {got:?}\n{body}"),
        }
    }

    /// A group with the wrong number of keys, or without a requested metric, is malformed, and
    /// the first group is checked before any amount is read.
    #[test]
    fn misshapen_groups_are_malformed(page in page(usd_amount()), drop_metric in any::<bool>()) {
        let mut page = page;
        let Some(first) = page.results.iter_mut().find(|r| !r.groups.is_empty()) else {
            return Ok(());
        };
        if drop_metric {
            page.all_metrics = false;
            let missing = page.bases.remove(0);
            let body = page.json();
            let asked = [&[missing][..], &page.bases].concat();
            match feed(body.as_bytes(), page.keys, &asked) {
                (Err(CostExplorerError::Malformed(message)), seen, ..) => {
                    prop_assert!(message.contains(missing.metric()), "{message}");
                    prop_assert!(seen.is_empty());
                }
                (other, ..) => prop_assert!(false, "{other:?}"),
            }
        } else {
            first.groups[0].keys.push("extra".into());
            let body = page.json();
            match feed(body.as_bytes(), page.keys, &page.bases) {
                (Err(CostExplorerError::Malformed(message)), seen, ..) => {
                    let said = format!("has {} keys, expected {}", page.keys + 1, page.keys);
                    prop_assert!(message.contains(&said), "{message}");
                    prop_assert!(seen.is_empty());
                }
                (other, ..) => prop_assert!(false, "{other:?}"),
            }
        }
    }

    /// A token already returned is a loop: the second page with it is an error.
    #[test]
    fn a_repeated_token_is_a_loop(token in any::<String>().prop_filter("non-empty", |t| !t.is_empty())) {
        let query = query(1);
        let mut pager = EXPLORER.pager(&query, &[CostBasis::Unblended]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let body = format!("{{\"ResultsByTime\":[],\"NextPageToken\":{}}}", json_str(&token, false));
        let mut sink = |_: NaiveDate, _: &[&str], _: &[f64]| Ok(());
        prop_assert!(pager.take_page(body.as_bytes(), None, &mut sink).is_ok());
        prop_assert!(pager.has_more());
        let again = pager.take_page(body.as_bytes(), None, &mut sink);
        prop_assert!(matches!(again, Err(CostExplorerError::TokenLoop { .. })), "{again:?}");
    }
}

proptest! {
    #![proptest_config(cases(512))]

    /// Result period dates: any text is a date or the malformed error; Cost Explorer's own
    /// forms (with or without a time) give the date written.
    #[test]
    fn period_dates(text in any::<String>(), days in 0i64..100_000, time in "(T[0-9:Z]{0,9})?") {
        if let Err(e) = parse_date(&text) {
            prop_assert!(matches!(e, CostExplorerError::Malformed(_)), "{e:?}");
        }
        let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default() + chrono::Duration::days(days);
        prop_assert_eq!(parse_date(&format!("{date}{time}")).ok(), Some(date));
    }

    /// A tag group key `key$value` gives the value as written, whatever either holds.
    #[test]
    fn tag_values(key in "[^$]*", value in any::<String>()) {
        let group_key = format!("{key}${value}");
        prop_assert_eq!(tag_value(&group_key), value.as_str());
    }
}

/// What the properties found, kept as plain examples.
#[test]
fn a_file_that_is_not_a_mapping_is_refused_plainly() {
    for (text, line) in [
        ("integrations\n", 1),
        ("®", 1),
        ("# a comment\n- name: a\n", 2),
    ] {
        let e = match parse_with_env(text, &no_env) {
            Ok(c) => panic!("accepted {text:?}: {c:?}"),
            Err(e) => e,
        };
        assert!(e.message.contains("mapping"), "{text:?}: {e}");
        assert_eq!(e.position.map(|p| p.0), Some(line), "{text:?}: {e}");
    }
}

#[test]
fn a_scanner_error_says_its_position_once() {
    let e = match parse_with_env(" \r\0", &no_env) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    };
    assert_eq!(
        e.to_string(),
        "invalid configuration at line 2 column 1: unexpected character: `\\u{0}'"
    );
}
