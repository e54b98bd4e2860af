//! Shared test helpers: an HTTP client for the exporter, an exposition parser, and set-ups
//! of the simulated Cost Explorer.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use aws_cost_exporter::config::{self, Config, CostBasis};
use std::collections::BTreeSet;

use aws_cost_exporter::clock::Clock;
use aws_cost_exporter::refresh::RefreshOptions;
use aws_cost_exporter::{Exporter, ExporterOptions};
use aws_cost_simulator::dataset::SimRow;
use aws_cost_simulator::{CostMetric, Dataset, DatasetSpec, Simulator};
use bytes::Bytes;
use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub mod commitments;
pub mod logs;
pub mod parts;
pub mod proxy;
pub mod running;

pub const ORG: &[(&str, &str)] = &[
    ("111111111111", "Management"),
    ("333333333333", "Production"),
    ("444444444444", "Staging"),
    ("555555555555", "Data \"Lake\" \\ Analytics\nTeam"),
];
pub const PAYER_KEY: (&str, &str) = ("AKIATESTPAYR1EXAMPLE", "payer-secret-value");

/// The real AWS SDK's Cost Explorer client at the simulator, signing with `key`: to ask the
/// simulation a question directly, beside what the exporter serves.
pub fn ce_client(sim: &Simulator, key: (&str, &str)) -> aws_sdk_costexplorer::Client {
    let conf = aws_sdk_costexplorer::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            key.0, key.1, None, None, "test",
        ))
        .endpoint_url(sim.endpoint())
        .build();
    aws_sdk_costexplorer::Client::from_conf(conf)
}
pub const BASE_KEY: (&str, &str) = ("AKIATESTBASE1EXAMPLE", "base-secret-value");

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// The simulator's cost metric for one of the exporter's cost bases: the one with the same
/// Cost Explorer name.
pub fn cost_metric(basis: CostBasis) -> CostMetric {
    CostMetric::from_name(basis.metric()).unwrap()
}

pub fn org_dataset(today: NaiveDate, seed: u64) -> Dataset {
    Dataset::generate(&DatasetSpec {
        seed,
        accounts: ORG,
        today,
        history_days: 45,
        estimated_days: 2,
        scale: 1.0,
        idle_accounts: &[("666666666666", "Sandbox (new)")],
    })
}

pub fn single_dataset(account: &'static str, today: NaiveDate, seed: u64) -> Dataset {
    let accounts: &'static [(&'static str, &'static str)] =
        Box::leak(Box::new([(account, "Solo")]));
    Dataset::generate(&DatasetSpec {
        seed,
        accounts,
        today,
        history_days: 45,
        estimated_days: 2,
        scale: 0.2,
        idle_accounts: &[],
    })
}

/// Starts the exporter on 127.0.0.1:0 with a clock pinned to noon UTC of `today`, first
/// refreshes at once.
pub async fn start_exporter(config: Config, today: NaiveDate) -> Exporter {
    start_exporter_with(config, today, test_refresh_options()).await
}

/// Starts the exporter of `yaml` on 127.0.0.1:0, reading `clock`, first refreshes at once
/// (its log lines captured).
pub async fn start_on_clock(yaml: &str, clock: &TestClock) -> Exporter {
    let options = ExporterOptions {
        refresh: test_refresh_options(),
        ..ExporterOptions::default()
    };
    start_on_clock_with(yaml, clock, options).await
}

/// [`start_on_clock`] with `options` but for the listen address, telemetry path and clock.
pub async fn start_on_clock_with(
    yaml: &str,
    clock: &TestClock,
    options: ExporterOptions,
) -> Exporter {
    logs::capture();
    Exporter::start(
        parse_config(yaml),
        ExporterOptions {
            listen_address: "127.0.0.1:0".into(),
            telemetry_path: "/metrics".into(),
            clock: clock.clock(),
            ..options
        },
    )
    .await
    .expect("exporter starts")
}

/// Refresh options for tests: the first refresh at once, the rest as in production.
pub fn test_refresh_options() -> RefreshOptions {
    RefreshOptions {
        start_spread: Duration::ZERO,
        ..RefreshOptions::default()
    }
}

/// [`start_exporter`] with these refresh options.
pub async fn start_exporter_with(
    config: Config,
    today: NaiveDate,
    refresh: RefreshOptions,
) -> Exporter {
    let noon = Utc.from_utc_datetime(&today.and_hms_opt(12, 0, 0).unwrap());
    Exporter::start(
        config,
        ExporterOptions {
            listen_address: "127.0.0.1:0".into(),
            telemetry_path: "/metrics".into(),
            clock: Arc::new(move || noon),
            refresh,
            ..ExporterOptions::default()
        },
    )
    .await
    .expect("exporter starts")
}

/// Parses a configuration. A native file that does not set `check_interval` gets
/// `check_interval: off`: the tests of the query plan count its requests exactly, each refresh
/// buying the whole plan; tests/change_detection.rs sets it, and tests change detection.
pub fn parse_config(yaml: &str) -> Config {
    let native = yaml.lines().any(|line| line.starts_with("integrations:"));
    let yaml = if native && !yaml.contains("check_interval") {
        format!("check_interval: off\n{yaml}")
    } else {
        yaml.to_string()
    };
    config::parse_with_env(&yaml, &|_| None).expect("valid config")
}

pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("utf-8 body")
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    try_request(addr, method, path, headers)
        .await
        .unwrap_or_else(|err| panic!("{path} on {addr}: {err}"))
}

/// One HTTP/1.1 request over a fresh connection, or why it failed.
pub async fn try_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Empty::<Bytes>::new())?)
        .await?;
    let (parts, body) = response.into_parts();
    Ok(HttpResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, Method::GET, path, &[]).await
}

/// A sample from the text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Parses sample lines of either text format (no timestamps, no exemplars).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("bad line {line:?}"),
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                // label name
                let mut label = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    if c == '}' {
                        break;
                    }
                    label.push(c);
                }
                if label.is_empty() {
                    end = chars.peek().map(|(i, _)| *i).unwrap_or(body.len());
                    break;
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "in {line:?}");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            other => panic!("bad escape {other:?} in {line:?}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(label, value);
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((i, '}')) => {
                        end = i + 1;
                        break;
                    }
                    other => panic!("unexpected {other:?} in {line:?}"),
                }
            }
            rest = &body[end..];
        }
        let value_text = rest.trim();
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
        };
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

/// How long a test waits for the exporter (debug builds on a loaded machine are slow).
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `/metrics` until every named integration has finished a refresh attempt.
pub async fn wait_for_refresh(addr: SocketAddr, integrations: &[&str]) -> Vec<Sample> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        let samples = parse_exposition(&get(addr, "/metrics").await.text());
        let done = integrations.iter().all(|name| {
            samples
                .iter()
                .any(|s| s.name == "aws_cost_refresh_success" && s.label("integration") == *name)
        });
        if done {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("integrations {integrations:?} did not refresh within {WAIT:?}");
}

/// Polls until `predicate` holds for the scraped samples.
pub async fn wait_for(
    addr: SocketAddr,
    what: &str,
    predicate: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        let samples = parse_exposition(&get(addr, "/metrics").await.text());
        if predicate(&samples) {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| s.value)
}

/// `aws_cost_refresh_success` of one integration.
pub fn refresh_success(samples: &[Sample], integration: &str) -> Option<f64> {
    value_of(
        samples,
        "aws_cost_refresh_success",
        &[("integration", integration)],
    )
}

/// `a` equals `b` within 1e-9 relative (or 1e-12 absolute near zero).
pub fn assert_close(a: f64, b: f64, what: &str) {
    let tolerance = (a.abs().max(b.abs()) * 1e-9).max(1e-12);
    assert!((a - b).abs() <= tolerance, "{what}: {a} != {b}");
}

/// The simulator with the organization's payer and keys, paging every `page_size` groups.
pub async fn org_simulator(today: NaiveDate, page_size: usize) -> Simulator {
    Simulator::builder()
        .account("111111111111", org_dataset(today, 11))
        .access_key(PAYER_KEY.0, PAYER_KEY.1, "111111111111")
        .page_size(page_size)
        .start()
        .await
        .expect("simulator starts")
}

/// The result periods of a `MONTHLY` query over `[start, end)`: months cut at month boundaries.
pub fn monthly_periods(start: NaiveDate, end: NaiveDate) -> Vec<(NaiveDate, NaiveDate)> {
    let mut periods = Vec::new();
    let mut from = start;
    while from < end {
        let next_month = (from.with_day(1).unwrap() + Months::new(1)).min(end);
        periods.push((from, next_month));
        from = next_month;
    }
    periods
}

/// Distinct keys of the rows in `[start, end)` that `keep` selects.
pub fn distinct(
    dataset: &Dataset,
    (start, end): (NaiveDate, NaiveDate),
    keep: impl Fn(&SimRow) -> bool,
    key: impl Fn(&SimRow) -> String,
) -> BTreeSet<String> {
    dataset
        .rows
        .iter()
        .filter(|r| r.day >= start && r.day < end && keep(r))
        .map(key)
        .collect()
}

/// Pages of one query whose result periods hold these many groups (an empty period is one
/// entry, as Cost Explorer returns it).
pub fn pages_of(groups_per_period: impl IntoIterator<Item = usize>, page_size: usize) -> u32 {
    let entries: usize = groups_per_period.into_iter().map(|g| g.max(1)).sum();
    entries.div_ceil(page_size).max(1) as u32
}

/// The month to date and the data day of a refresh on `today`.
pub fn month_and_day(today: NaiveDate, data_delay_days: u64) -> [(NaiveDate, NaiveDate); 2] {
    let data_day = today - Days::new(data_delay_days);
    [
        (today.with_day(1).unwrap(), today + Days::new(1)),
        (data_day, data_day + Days::new(1)),
    ]
}

/// The billed `GetCostAndUsage` requests the cost query plan makes: discovery (the accounts,
/// and the record types with their services when there is more than one account, accounts
/// paged only while they could still be fewer than the record types' queries), then per value
/// of the split dimension one `MONTHLY` query over the month and one `DAILY` query over the
/// data day, each paged; record types of a single service (two or more of them) share one
/// query per period, grouped by account and record type.
pub fn expected_requests(
    dataset: &Dataset,
    today: NaiveDate,
    data_delay_days: u64,
    page_size: usize,
) -> u32 {
    let [month, day] = month_and_day(today, data_delay_days);
    let discovery = (month.0.min(day.0), month.1);
    let periods = monthly_periods(discovery.0, discovery.1);
    let per_period = |key: fn(&SimRow) -> String| -> Vec<BTreeSet<String>> {
        periods
            .iter()
            .map(|p| distinct(dataset, *p, |_| true, key))
            .collect()
    };
    let accounts = per_period(|r| r.account_id().to_string());
    let pairs = per_period(|r| format!("{}|{}", r.record_type(), r.service()));
    let mut services: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for pair in pairs.iter().flatten() {
        let (record_type, service) = pair.split_once('|').unwrap();
        services
            .entry(record_type.to_string())
            .or_default()
            .insert(service.to_string());
    }
    let single: BTreeSet<String> = services
        .iter()
        .filter(|(_, s)| s.len() == 1)
        .map(|(r, _)| r.clone())
        .collect();
    let merged = single.len() >= 2;
    let record_type_queries = if merged {
        services.len() - single.len() + 1
    } else {
        services.len()
    };
    // The accounts query's entries in order: per period, its accounts (or one empty entry).
    let entries: Vec<Option<&String>> = accounts
        .iter()
        .flat_map(|set| {
            if set.is_empty() {
                vec![None]
            } else {
                set.iter().map(Some).collect()
            }
        })
        .collect();
    let account_pages = entries.len().div_ceil(page_size).max(1);
    let seen = |pages: usize| -> BTreeSet<&String> {
        entries
            .iter()
            .take(pages.saturating_mul(page_size))
            .flatten()
            .copied()
            .collect()
    };
    let mut total = 0;
    let mut fetched = 1;
    let several = account_pages > 1 || seen(1).len() > 1;
    if several {
        total += pages_of(pairs.iter().map(BTreeSet::len), page_size);
        while fetched < account_pages && seen(fetched).len() <= record_type_queries {
            fetched += 1;
        }
    }
    total += fetched as u32;
    let known_accounts = seen(fetched);
    let split_on_accounts = !several || known_accounts.len() <= record_type_queries;
    let values: Vec<String> = if split_on_accounts {
        known_accounts.into_iter().cloned().collect()
    } else {
        services
            .keys()
            .filter(|r| !(merged && single.contains(*r)))
            .cloned()
            .collect()
    };
    for value in &values {
        let keep = |r: &SimRow| {
            value
                == if split_on_accounts {
                    r.account_id()
                } else {
                    r.record_type()
                }
        };
        let others = |r: &SimRow| {
            if split_on_accounts {
                format!("{}|{}", r.service(), r.record_type())
            } else {
                format!("{}|{}", r.account_id(), r.service())
            }
        };
        for period in [month, day] {
            total += pages_of([distinct(dataset, period, keep, others).len()], page_size);
        }
    }
    if !split_on_accounts && merged {
        for period in [month, day] {
            let groups = distinct(
                dataset,
                period,
                |r| single.contains(r.record_type()),
                |r| format!("{}|{}", r.account_id(), r.record_type()),
            );
            total += pages_of([groups.len()], page_size);
        }
    }
    total
}

/// The fewest pages that could carry the cost series: every daily group and every
/// month-to-date group once, in full pages.
pub fn lower_bound(
    dataset: &Dataset,
    today: NaiveDate,
    data_delay_days: u64,
    page_size: usize,
) -> u32 {
    month_and_day(today, data_delay_days)
        .iter()
        .map(|period| {
            let groups = distinct(
                dataset,
                *period,
                |_| true,
                |r| format!("{}|{}|{}", r.account_id(), r.service(), r.record_type()),
            );
            groups.len().div_ceil(page_size) as u32
        })
        .sum()
}

/// A logfmt field's value as `--log.format logfmt` writes it, unquoted and unescaped.
pub fn logfmt_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return Some(rest.split(' ').next()?.to_string());
    };
    let mut value = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                'r' => value.push('\r'),
                't' => value.push('\t'),
                c => value.push(c),
            },
            '"' => return Some(value),
            c => value.push(c),
        }
    }
    None
}

/// The longest line a refresh failure may be logged in (`refresh::MAX_LOG_LINE`).
pub const MAX_FAILURE_LINE: usize = 300;

/// What a logged refresh error ends with, after its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Nothing: no answer to name (a timeout, a page token that loops, another currency).
    Nothing,
    /// ` (request id <id>)`: AWS's request id, whole.
    RequestId,
    /// ` (HTTP <status>, request id <id>)`: the HTTP status and AWS's request id, whole.
    Status(u16),
}

/// Checks one refresh failure's logfmt line: at most [`MAX_FAILURE_LINE`] characters, at
/// warn level, without the exporter's module as target or an `outcome` (the message says it),
/// with `reason`, and an error that holds each of `parts` in order (the operation, AWS's error
/// code: what a budget never cuts), ends as `answered` says, and holds no debug dump. After
/// AWS's status and request id comes nothing when `then` is empty, else `then` and a last
/// `)` (a partial failure's other failed parts, whose names may lose their middle). Returns the
/// error.
pub fn check_failure_line(
    line: &str,
    reason: &str,
    parts: &[&str],
    answered: Answered,
    then: &str,
) -> String {
    assert!(
        line.chars().count() <= MAX_FAILURE_LINE,
        "{} characters: {line}",
        line.chars().count()
    );
    assert!(line.starts_with("ts="), "{line}");
    assert!(
        line.contains(" msg=\"refresh failed\" ")
            || line.contains(" msg=\"refresh partly failed\" "),
        "{line}"
    );
    assert_eq!(
        logfmt_field(line, "level").as_deref(),
        Some("warn"),
        "{line}"
    );
    assert_eq!(logfmt_field(line, "target"), None, "{line}");
    assert_eq!(logfmt_field(line, "outcome"), None, "{line}");
    assert_eq!(
        logfmt_field(line, "reason").as_deref(),
        Some(reason),
        "{line}"
    );
    let error = logfmt_field(line, "error").unwrap_or_else(|| panic!("no error in {line}"));
    let mut rest = error.as_str();
    for part in parts {
        let at = rest
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} not in {error:?} (in order)"));
        rest = &rest[at + part.len()..];
    }
    let check_rest = |rest: &str| {
        if then.is_empty() {
            assert_eq!(rest, "", "after the request id in {error:?}");
        } else {
            assert!(
                rest.starts_with(then) && rest.ends_with(')'),
                "{then:?}...) does not end {error:?}"
            );
        }
    };
    // What follows `prefix`: AWS's request id, whole, then `)` and the rest.
    let request_id = |prefix: &str| {
        let at = error
            .rfind(prefix)
            .unwrap_or_else(|| panic!("{prefix:?} not in {error:?}"));
        let after = &error[at + prefix.len()..];
        let id: String = after.chars().take(36).collect();
        // AWS's form, as the simulator gives it: 8-4-4-4-12 hexadecimal digits.
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert!(
            groups == [8, 4, 4, 4, 12] && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "a request id cut or missing: {id:?} in {error:?}"
        );
        let rest = after[id.len()..]
            .strip_prefix(')')
            .unwrap_or_else(|| panic!("no ')' after the request id: {error:?}"));
        check_rest(rest);
    };
    match answered {
        Answered::Nothing => {
            assert!(
                !error.contains("request id") && !error.contains("(HTTP "),
                "{error:?}"
            );
            assert!(then.is_empty());
        }
        Answered::RequestId => request_id(" (request id "),
        Answered::Status(status) => request_id(&format!(" (HTTP {status}, request id ")),
    }
    for dump in [
        "ServiceError {",
        "raw: Response",
        "headers:",
        "Unhandled(",
        "{ source",
    ] {
        assert!(!error.contains(dump), "{dump:?} in {error}");
    }
    error
}

/// A clock the test sets.
#[derive(Clone)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    pub fn at(time: DateTime<Utc>) -> Self {
        Self(Arc::new(AtomicI64::new(time.timestamp_millis())))
    }

    pub fn clock(&self) -> Clock {
        let millis = self.0.clone();
        Arc::new(move || {
            DateTime::from_timestamp_millis(millis.load(Ordering::SeqCst)).unwrap_or_default()
        })
    }

    pub fn set(&self, time: DateTime<Utc>) {
        self.0.store(time.timestamp_millis(), Ordering::SeqCst);
    }
}
