//! The exporter's own metrics, registered in one place with prometheus-client, and the
//! AWS SDK interceptor that counts every Cost Explorer and STS request.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::clock::{Clock, lock, system_clock};
use crate::exposition::{Format, GROUP_LEVEL, Piece, openmetrics_to_classic};
use crate::failure::Reason;

/// The crate version, for `aws_cost_exporter_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from (set by `build.rs`).
pub const REVISION: &str = env!("AWS_COST_EXPORTER_REVISION");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
}

/// The exporter's own families as the page names them (an electrolux metric may not take one).
pub const NAMES: [&str; 17] = [
    "aws_cost_exporter_build_info",
    "aws_cost_refresh_success",
    "aws_cost_refresh_failures_total",
    "aws_cost_refresh_last_success_timestamp_seconds",
    "aws_cost_refresh_duration_seconds",
    "aws_cost_api_requests_total",
    "aws_cost_query_success",
    "aws_cost_exporter_config_last_reload_successful",
    "aws_cost_exporter_config_last_reload_success_timestamp_seconds",
    "aws_cost_data_age_seconds",
    "aws_cost_exporter_records_age_seconds",
    "aws_cost_data_last_checked_timestamp_seconds",
    "aws_cost_data_last_changed_timestamp_seconds",
    "aws_cost_data_checks_unchanged_total",
    "aws_cost_api_budget_exhausted",
    "aws_cost_exporter_lease_held",
    "aws_cost_exporter_lease_takeovers_total",
];

/// The labels of one integration's series: `integration`, its static labels, then the
/// series' own.
type Labels = Vec<(String, String)>;

/// The exporter's own metrics.
#[derive(Debug)]
pub struct Metrics {
    /// The families before `aws_cost_data_age_seconds`, that family alone, and the families
    /// after it: the first and last are encoded again only when the metrics changed (or the
    /// UTC day did), the data age for every tick of [`AGE_TICK_MILLIS`] that a scrape asks in.
    registry: Registry,
    age_registry: Registry,
    after_registry: Registry,
    refresh_success: Family<Labels, Gauge>,
    refresh_failures: Family<Labels, Counter>,
    refresh_last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    refresh_duration: Family<Labels, Gauge<f64, AtomicU64>>,
    api_requests: Family<Labels, Counter>,
    query_success: Family<Labels, Gauge>,
    reload_success: Gauge,
    reload_timestamp: Gauge<f64, AtomicU64>,
    /// Request attempts per integration, for the refresh log line.
    request_totals: Mutex<HashMap<String, u64>>,
    data_age: Family<Labels, Gauge<f64, AtomicU64>>,
    data_checked: Family<Labels, Gauge<f64, AtomicU64>>,
    data_changed: Family<Labels, Gauge<f64, AtomicU64>>,
    checks_unchanged: Family<Labels, Counter>,
    api_budget_exhausted: Family<Labels, Gauge>,
    lease_held: Family<Labels, Gauge>,
    lease_takeovers: Family<Labels, Counter>,
    records_age: Family<Labels, Gauge<f64, AtomicU64>>,
    /// What the scrape-time gauges are computed from, with the clock they are computed by.
    scrape_time: Mutex<ScrapeTime>,
    clock: ScrapeClock,
    /// Per integration: its static labels, and the parts whose `aws_cost_query_success` it has.
    integrations: Mutex<HashMap<String, Known>>,
    /// Counts the changes to what the metrics say (apart from the passing of time).
    generation: AtomicU64,
    /// The last encoding of each format (classic, OpenMetrics).
    own: [ArcSwapOption<OwnLines>; 2],
    /// The last encoding of each format's families other than the data age.
    stable: [ArcSwapOption<StableLines>; 2],
}

/// How often the scrape-time gauges (the data age) move on, in milliseconds: every scrape in one
/// tick of the clock sends the same own lines, encoded at the tick's start, so under a flood of
/// scrapes they are encoded and compressed again at most ten times a second, not for each. The
/// ages read at most this much less than at the scrape's instant, on ages of minutes to hours.
pub const AGE_TICK_MILLIS: i64 = 100;

/// The exporter's own lines in one format, as encoded for one state of the metrics at the start
/// of one tick of the clock ([`AGE_TICK_MILLIS`]): every scrape in that tick sends the same
/// bytes.
#[derive(Debug)]
pub struct OwnLines {
    generation: u64,
    /// The tick's start, in Unix milliseconds.
    tick: i64,
    pub text: Bytes,
    /// The families around the data age, as encoded for this state of the metrics and day.
    stable: Arc<StableLines>,
    /// `aws_cost_data_age_seconds`, as of `tick`.
    age: Bytes,
    pieces: OnceLock<[Piece; 3]>,
}

impl OwnLines {
    /// The lines as three pieces compressed alone (the families before the data age, the data
    /// age, the families after it): only the data age's is compressed by the first gzip scrape
    /// that sends it; the others were when the metrics last changed.
    pub fn pieces(&self) -> &[Piece] {
        self.pieces.get_or_init(|| {
            [
                self.stable.before.clone(),
                Piece::compressed(self.age.clone(), GROUP_LEVEL),
                self.stable.after.clone(),
            ]
        })
    }
}

/// The exporter's families other than the data age, in one format, as encoded for one state of
/// the metrics on one UTC day (`aws_cost_api_budget_exhausted` reads the day).
#[derive(Debug)]
struct StableLines {
    generation: u64,
    day: chrono::NaiveDate,
    before: Piece,
    after: Piece,
}

/// What the metrics know of an integration.
#[derive(Debug, Default)]
struct Known {
    labels: Vec<(String, String)>,
    queries: BTreeSet<String>,
    /// The (operation, outcome) of its request counters.
    requests: BTreeSet<(String, &'static str)>,
}

/// Per integration: when its served data was fetched, and the UTC day its daily request cap
/// ran out (if it did).
#[derive(Debug, Default)]
struct ScrapeTime {
    fetched_at: HashMap<String, chrono::DateTime<chrono::Utc>>,
    exhausted_on: HashMap<String, Option<chrono::NaiveDate>>,
    /// With shared storage: when the replica last knew its records to be the latest.
    records_confirmed: HashMap<String, chrono::DateTime<chrono::Utc>>,
}

struct ScrapeClock(Clock);

impl std::fmt::Debug for ScrapeClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_clock(system_clock())
    }

    /// Metrics whose scrape-time gauges (`aws_cost_data_age_seconds`,
    /// `aws_cost_api_budget_exhausted`) read `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        let mut registry = Registry::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: VERSION.to_string(),
                revision: REVISION.to_string(),
            })
            .set(1);
        registry.register(
            "aws_cost_exporter_build_info",
            "The exporter's version and git revision; always 1",
            build_info,
        );
        let refresh_success = Family::<Labels, Gauge>::default();
        registry.register(
            "aws_cost_refresh_success",
            "1 if the integration's last refresh succeeded, else 0",
            refresh_success.clone(),
        );
        let refresh_failures = Family::<Labels, Counter>::default();
        registry.register(
            "aws_cost_refresh_failures",
            "Failed refresh attempts (a partial failure counts once, with the reason of its first failed part), by reason: access_denied, throttled, aws_error, timeout, bad_response, unsupported_unit, credentials, api_budget",
            refresh_failures.clone(),
        );
        let refresh_last_success = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "aws_cost_refresh_last_success_timestamp_seconds",
            "Unix time of the integration's last successful refresh",
            refresh_last_success.clone(),
        );
        let refresh_duration = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "aws_cost_refresh_duration_seconds",
            "Duration of the integration's last refresh attempt",
            refresh_duration.clone(),
        );
        let api_requests = Family::<Labels, Counter>::default();
        registry.register(
            "aws_cost_api_requests",
            "AWS API requests made (each Cost Explorer request is billed 0.01 USD), by operation and outcome",
            api_requests.clone(),
        );
        let query_success = Family::<Labels, Gauge>::default();
        registry.register(
            "aws_cost_query_success",
            "1 if the integration's last attempt at the part of a refresh named by query succeeded, else 0",
            query_success.clone(),
        );
        let reload_success = Gauge::default();
        reload_success.set(1);
        registry.register(
            "aws_cost_exporter_config_last_reload_successful",
            "1 if the last configuration reload (SIGHUP, POST /-/reload or a change of the file) succeeded, else 0",
            reload_success.clone(),
        );
        let reload_timestamp = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "aws_cost_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            reload_timestamp.clone(),
        );
        let mut age_registry = Registry::default();
        let data_age = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        age_registry.register(
            "aws_cost_data_age_seconds",
            "How old the integration's served data is: now minus when it was fetched from AWS (computed at scrape time)",
            data_age.clone(),
        );
        // Computed at scrape time like the data age: encoded with it, for every tick.
        let records_age = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        age_registry.register(
            "aws_cost_exporter_records_age_seconds",
            "With shared storage: how long since this replica last knew the integration's records it serves to be the latest in storage (its lease renewed, or a poll of the records answered); grows while storage is unreachable (computed at scrape time)",
            records_age.clone(),
        );
        let mut after_registry = Registry::default();
        let data_checked = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        after_registry.register(
            "aws_cost_data_last_checked_timestamp_seconds",
            "Unix time the integration last looked at AWS's cost data successfully: a check that found it unchanged, or a refresh that fetched it",
            data_checked.clone(),
        );
        let data_changed = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        after_registry.register(
            "aws_cost_data_last_changed_timestamp_seconds",
            "Unix time the integration last saw AWS's cost data change (with check_interval off, every refresh that fetched it)",
            data_changed.clone(),
        );
        let checks_unchanged = Family::<Labels, Counter>::default();
        after_registry.register(
            "aws_cost_data_checks_unchanged",
            "Checks of the cost data that found it unchanged, so that the full query plan was not bought",
            checks_unchanged.clone(),
        );
        let api_budget_exhausted = Family::<Labels, Gauge>::default();
        after_registry.register(
            "aws_cost_api_budget_exhausted",
            "1 while the integration's daily cap of billed Cost Explorer requests (max_api_requests_per_day) is reached, until the next UTC day; else 0",
            api_budget_exhausted.clone(),
        );
        let lease_held = Family::<Labels, Gauge>::default();
        after_registry.register(
            "aws_cost_exporter_lease_held",
            "With shared storage (--storage.path s3://...): 1 on the replica that holds the integration's lease and refreshes it, 0 on the others",
            lease_held.clone(),
        );
        let lease_takeovers = Family::<Labels, Counter>::default();
        after_registry.register(
            "aws_cost_exporter_lease_takeovers",
            "With shared storage: leases this replica took over from a holder that had stopped renewing (expired), not released",
            lease_takeovers.clone(),
        );
        Self {
            registry,
            lease_held,
            lease_takeovers,
            records_age,
            age_registry,
            after_registry,
            data_age,
            data_checked,
            data_changed,
            checks_unchanged,
            api_budget_exhausted,
            scrape_time: Mutex::new(ScrapeTime::default()),
            clock: ScrapeClock(clock),
            query_success,
            reload_success,
            reload_timestamp,
            request_totals: Mutex::new(HashMap::new()),
            integrations: Mutex::new(HashMap::new()),
            refresh_success,
            refresh_failures,
            refresh_last_success,
            refresh_duration,
            api_requests,
            generation: AtomicU64::new(0),
            own: Default::default(),
            stable: Default::default(),
        }
    }

    /// Marks a change to what the metrics say, after it is made.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The labels of a series of `integration` with its own `extra` labels.
    fn labels(&self, integration: &str, extra: &[(&str, &str)]) -> Labels {
        let known = lock(&self.integrations);
        let mut labels = vec![("integration".to_string(), integration.to_string())];
        labels.extend(
            known
                .get(integration)
                .into_iter()
                .flat_map(|k| k.labels.clone()),
        );
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        labels
    }

    /// Sets an integration's static labels (on start and on reload). When they change, its
    /// series under the old ones go: they are other series now.
    pub fn set_labels(&self, integration: &str, labels: &[(String, String)]) {
        let changed = lock(&self.integrations)
            .get(integration)
            .is_some_and(|known| known.labels != labels);
        if changed {
            self.forget(integration);
            // The request counters too: under other labels they are other series.
            let requests = std::mem::take(
                &mut lock(&self.integrations)
                    .entry(integration.to_string())
                    .or_default()
                    .requests,
            );
            for (operation, outcome) in requests {
                self.api_requests.remove(&self.labels(
                    integration,
                    &[("operation", &operation), ("outcome", outcome)],
                ));
            }
        }
        lock(&self.integrations)
            .entry(integration.to_string())
            .or_default()
            .labels = labels.to_vec();
        self.changed();
    }

    /// Records a refresh attempt's outcome.
    pub fn record_refresh(
        &self,
        integration: &str,
        success: bool,
        duration_seconds: f64,
        finished_unix: f64,
    ) {
        let labels = self.labels(integration, &[]);
        self.refresh_success
            .get_or_create(&labels)
            .set(i64::from(success));
        self.refresh_duration
            .get_or_create(&labels)
            .set(duration_seconds);
        if success {
            self.refresh_last_success
                .get_or_create(&labels)
                .set(finished_unix);
        }
        self.changed();
    }

    /// Starts an integration's failure counters at 0 for every reason, so that the first
    /// failure is an increase Prometheus sees.
    pub fn init_failures(&self, integration: &str) {
        for reason in Reason::ALL {
            let _ = self
                .refresh_failures
                .get_or_create(&self.labels(integration, &[("reason", reason.as_str())]));
        }
        self.changed();
    }

    /// Counts one failed refresh attempt.
    pub fn record_failure(&self, integration: &str, reason: Reason) {
        self.refresh_failures
            .get_or_create(&self.labels(integration, &[("reason", reason.as_str())]))
            .inc();
        self.changed();
    }

    /// Records whether one part of a refresh succeeded.
    pub fn record_query(&self, integration: &str, query: &str, success: bool) {
        self.query_success
            .get_or_create(&self.labels(integration, &[("query", query)]))
            .set(i64::from(success));
        lock(&self.integrations)
            .entry(integration.to_string())
            .or_default()
            .queries
            .insert(query.to_string());
        self.changed();
    }

    /// Records a configuration load (at start-up or on reload).
    pub fn record_config_load(&self, success: bool, unix: f64) {
        self.reload_success.set(i64::from(success));
        if success {
            self.reload_timestamp.set(unix);
        }
        self.changed();
    }

    /// Drops every per-integration gauge and failure counter of an integration (a reload
    /// removed it, or changed its static labels), so that no stale `aws_cost_refresh_success`
    /// or `aws_cost_query_success` remains. Its request counters stay: they only grow.
    pub fn forget(&self, integration: &str) {
        let labels = self.labels(integration, &[]);
        self.refresh_success.remove(&labels);
        self.refresh_last_success.remove(&labels);
        self.refresh_duration.remove(&labels);
        for reason in Reason::ALL {
            self.refresh_failures
                .remove(&self.labels(integration, &[("reason", reason.as_str())]));
        }
        // Under the lock a scrape sets them under, so that no scrape brings them back.
        let mut scrape_time = self.scrape_time();
        scrape_time.fetched_at.remove(integration);
        scrape_time.exhausted_on.remove(integration);
        scrape_time.records_confirmed.remove(integration);
        self.records_age.remove(&labels);
        self.lease_held.remove(&labels);
        self.data_age.remove(&labels);
        self.data_checked.remove(&labels);
        self.data_changed.remove(&labels);
        self.checks_unchanged.remove(&labels);
        self.api_budget_exhausted.remove(&labels);
        drop(scrape_time);
        let queries = lock(&self.integrations)
            .get(integration)
            .map(|known| known.queries.clone())
            .unwrap_or_default();
        for query in queries {
            self.forget_query(integration, &query);
        }
        self.changed();
    }

    /// Drops `aws_cost_query_success` for a part of the refresh a reload turned off.
    pub fn forget_query(&self, integration: &str, query: &str) {
        self.query_success
            .remove(&self.labels(integration, &[("query", query)]));
        if let Some(known) = lock(&self.integrations).get_mut(integration) {
            known.queries.remove(query);
        }
        self.changed();
    }

    /// Counts one AWS request.
    pub fn record_api_request(&self, integration: &str, operation: &str, outcome: Outcome) {
        self.api_requests
            .get_or_create(&self.labels(
                integration,
                &[("operation", operation), ("outcome", outcome.as_str())],
            ))
            .inc();
        lock(&self.integrations)
            .entry(integration.to_string())
            .or_default()
            .requests
            .insert((operation.to_string(), outcome.as_str()));
        let mut totals = lock(&self.request_totals);
        *totals.entry(integration.to_string()).or_default() += 1;
        self.changed();
    }

    /// Every request attempt counted so far for one integration, all operations and outcomes.
    pub fn requests_made(&self, integration: &str) -> u64 {
        let totals = lock(&self.request_totals);
        totals.get(integration).copied().unwrap_or_default()
    }

    fn scrape_time(&self) -> std::sync::MutexGuard<'_, ScrapeTime> {
        lock(&self.scrape_time)
    }

    /// Records when the data an integration now serves was fetched from AWS.
    pub fn record_data_fetched(&self, integration: &str, at: chrono::DateTime<chrono::Utc>) {
        self.scrape_time()
            .fetched_at
            .insert(integration.to_string(), at);
        self.changed();
    }

    /// Records a successful look at the cost data at `at`: a check that found it unchanged
    /// (`full` false), or a refresh that fetched it, `changed` when AWS's data differed from
    /// what the served data's check saw.
    pub fn record_check(
        &self,
        integration: &str,
        at: chrono::DateTime<chrono::Utc>,
        full: bool,
        changed: bool,
    ) {
        let labels = self.labels(integration, &[]);
        let unix = at.timestamp_millis() as f64 / 1000.0;
        self.data_checked.get_or_create(&labels).set(unix);
        if changed {
            self.data_changed.get_or_create(&labels).set(unix);
        }
        if full {
            // The counter exists from the first refresh on, at 0.
            self.checks_unchanged.get_or_create(&labels).inc_by(0);
        } else {
            self.checks_unchanged.get_or_create(&labels).inc();
        }
        self.changed();
    }

    /// Records the UTC day an integration's daily request cap ran out (`None`: it has not).
    pub fn record_api_budget_exhausted(&self, integration: &str, day: Option<chrono::NaiveDate>) {
        self.scrape_time()
            .exhausted_on
            .insert(integration.to_string(), day);
        self.changed();
    }

    /// With shared storage: whether this replica holds the integration's lease.
    pub fn record_lease_held(&self, integration: &str, held: bool) {
        self.lease_held
            .get_or_create(&self.labels(integration, &[]))
            .set(i64::from(held));
        // The counter exists from the first lease decision on, at 0.
        self.lease_takeovers
            .get_or_create(&self.labels(integration, &[]))
            .inc_by(0);
        self.changed();
    }

    /// Counts a lease taken over from a holder that stopped renewing.
    pub fn record_takeover(&self, integration: &str) {
        self.lease_takeovers
            .get_or_create(&self.labels(integration, &[]))
            .inc();
        self.changed();
    }

    /// With shared storage: the replica knew at `at` that the records it serves are the latest.
    pub fn record_records_confirmed(&self, integration: &str, at: chrono::DateTime<chrono::Utc>) {
        self.scrape_time()
            .records_confirmed
            .insert(integration.to_string(), at);
        self.changed();
    }

    /// Sets the gauges that depend on the time of the scrape.
    fn update_scrape_time_gauges(&self, now: chrono::DateTime<chrono::Utc>) {
        let scrape_time = self.scrape_time();
        for (integration, fetched_at) in &scrape_time.fetched_at {
            let age = (now - *fetched_at).num_milliseconds() as f64 / 1000.0;
            self.data_age
                .get_or_create(&self.labels(integration, &[]))
                .set(age);
        }
        for (integration, at) in &scrape_time.records_confirmed {
            let age = (now - *at).num_milliseconds() as f64 / 1000.0;
            self.records_age
                .get_or_create(&self.labels(integration, &[]))
                .set(age.max(0.0));
        }
        for (integration, day) in &scrape_time.exhausted_on {
            self.api_budget_exhausted
                .get_or_create(&self.labels(integration, &[]))
                .set(i64::from(*day == Some(now.date_naive())));
        }
    }

    /// Encodes the metrics in `format`, without OpenMetrics' closing `# EOF`.
    pub fn encode(&self, format: Format) -> String {
        self.encode_at(format, (self.clock.0)())
    }

    /// The metrics in `format` as a scrape sends them: encoded again only when they changed or
    /// the clock moved on to another tick ([`AGE_TICK_MILLIS`]) since the last encoding (under
    /// a flood of scrapes, most of them send the previous one's bytes); and then only the data
    /// age, unless the rest changed too (or the UTC day did).
    pub fn own_lines(&self, format: Format) -> Arc<OwnLines> {
        let generation = self.generation.load(Ordering::Acquire);
        let millis = (self.clock.0)().timestamp_millis();
        let tick = millis - millis.rem_euclid(AGE_TICK_MILLIS);
        let index = usize::from(format == Format::OpenMetrics);
        let slot = &self.own[index];
        if let Some(cached) = slot.load_full()
            && cached.generation == generation
            && cached.tick == tick
        {
            return cached;
        }
        // Encoded at the start of the tick, so that every scrape in it says the same.
        let now = chrono::DateTime::from_timestamp_millis(tick).unwrap_or_default();
        self.update_scrape_time_gauges(now);
        let day = now.date_naive();
        let stable = match self.stable[index].load_full() {
            Some(stable) if stable.generation == generation && stable.day == day => stable,
            _ => {
                // Compressed now, for gzip scrapes: this happens when the metrics change, not
                // for every tick. At the short pieces' level, as they are seldom made.
                let stable = Arc::new(StableLines {
                    generation,
                    day,
                    before: Piece::compressed(encode(&self.registry, format), GROUP_LEVEL),
                    after: Piece::compressed(encode(&self.after_registry, format), GROUP_LEVEL),
                });
                self.stable[index].store(Some(stable.clone()));
                stable
            }
        };
        let age = Bytes::from(encode(&self.age_registry, format));
        let text = [&stable.before.text, &age, &stable.after.text]
            .map(|part| &part[..])
            .concat();
        let lines = Arc::new(OwnLines {
            generation,
            tick,
            text: Bytes::from(text),
            stable,
            age,
            pieces: OnceLock::new(),
        });
        slot.store(Some(lines.clone()));
        lines
    }

    /// Encodes the metrics in `format` as they are at `now`.
    fn encode_at(&self, format: Format, now: chrono::DateTime<chrono::Utc>) -> String {
        self.update_scrape_time_gauges(now);
        [&self.registry, &self.age_registry, &self.after_registry]
            .map(|registry| encode(registry, format))
            .concat()
    }
}

/// Encodes a registry's metrics in `format`, without OpenMetrics' closing `# EOF`.
fn encode(registry: &Registry, format: Format) -> String {
    let mut openmetrics = String::with_capacity(2048);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(&mut openmetrics, registry);
    match format {
        Format::OpenMetrics => openmetrics,
        Format::Classic => openmetrics_to_classic(&openmetrics),
    }
}

/// How an AWS request attempt ended, by HTTP status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Success,
    /// 4xx: refused (access denied, validation, throttling).
    ClientError,
    /// 5xx.
    ServerError,
    /// No response: connection, DNS or timeout.
    TransportError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::TransportError => "transport_error",
        }
    }
}

/// An SDK interceptor counting every attempt (retries included) of every operation on the
/// client it is installed on, under one integration's name.
#[derive(Debug, Clone)]
pub struct RequestCounter {
    integration: String,
    metrics: Arc<Metrics>,
}

impl RequestCounter {
    pub fn new(integration: impl Into<String>, metrics: Arc<Metrics>) -> Self {
        Self {
            integration: integration.into(),
            metrics,
        }
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "aws-cost-exporter request counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let outcome = match context.response().map(|r| r.status().as_u16()) {
            Some(200..=299) => Outcome::Success,
            Some(500..) => Outcome::ServerError,
            Some(_) => Outcome::ClientError,
            None => match context.output_or_error() {
                Some(Err(err)) if err.is_connector_error() || err.is_timeout_error() => {
                    Outcome::TransportError
                }
                // The attempt never reached the wire (for example, credentials failed to
                // load): not a request.
                _ => return Ok(()),
            },
        };
        let operation = cfg
            .load::<Metadata>()
            .map(Metadata::name)
            .unwrap_or("unknown");
        self.metrics
            .record_api_request(&self.integration, operation, outcome);
        Ok(())
    }
}

#[cfg(test)]
mod names {
    use super::*;

    /// [`NAMES`] is every family the registry serves: a family added there fails here.
    #[test]
    fn names_are_the_registry_families() {
        let metrics = Metrics::new();
        metrics.init_failures("a");
        metrics.record_refresh("a", true, 1.0, 2.0);
        metrics.record_api_request("a", "GetCostAndUsage", Outcome::Success);
        metrics.record_query("a", "costs", true);
        metrics.record_data_fetched("a", chrono::Utc::now());
        metrics.record_check("a", chrono::Utc::now(), true, true);
        metrics.record_api_budget_exhausted("a", None);
        metrics.record_lease_held("a", true);
        metrics.record_records_confirmed("a", chrono::Utc::now());
        let text = metrics.encode(Format::Classic);
        let served: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        assert_eq!(served, NAMES);
    }

    /// Scrapes in one tick of the clock share one encoding, which is what a fresh one would be
    /// at the tick's start; a change to the metrics or another tick encodes again.
    #[test]
    fn own_lines_are_shared_until_they_change() {
        let now = Arc::new(Mutex::new(
            chrono::DateTime::parse_from_rfc3339("2026-12-05T10:00:00.000250Z")
                .unwrap()
                .to_utc(),
        ));
        let clock_now = now.clone();
        let metrics = Metrics::with_clock(Arc::new(move || *lock(&clock_now)));
        metrics.record_data_fetched("a", *lock(&now) - chrono::Duration::seconds(90));
        let first = metrics.own_lines(Format::Classic);
        // 10:00:00.099250, the tick's last millisecond.
        *lock(&now) += chrono::Duration::milliseconds(99);
        let same_tick = metrics.own_lines(Format::Classic);
        assert!(Arc::ptr_eq(&first, &same_tick));
        // As encoded at the start of the tick, 10:00:00.000: the data age reads 99 ms less
        // than at the clock's instant here.
        let start = chrono::DateTime::parse_from_rfc3339("2026-12-05T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            first.text,
            metrics.encode_at(Format::Classic, start).as_bytes()
        );
        assert!(String::from_utf8_lossy(&first.text).contains("{integration=\"a\"} 89.999\n"));
        assert!(!Arc::ptr_eq(
            &first,
            &metrics.own_lines(Format::OpenMetrics)
        ));
        // A change to the metrics.
        metrics.record_query("a", "costs", false);
        let changed = metrics.own_lines(Format::Classic);
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(
            String::from_utf8_lossy(&changed.text)
                .contains("aws_cost_query_success{integration=\"a\",query=\"costs\"} 0")
        );
        // The clock moves on to another tick, 10:00:01.599250: the data is older, as of
        // 10:00:01.500.
        *lock(&now) += chrono::Duration::milliseconds(1500);
        let later = metrics.own_lines(Format::Classic);
        assert!(!Arc::ptr_eq(&changed, &later));
        assert!(
            String::from_utf8_lossy(&later.text)
                .contains("aws_cost_data_age_seconds{integration=\"a\"} 91.499\n")
        );
        // One millisecond on, 10:00:01.600250, is the next tick.
        *lock(&now) += chrono::Duration::milliseconds(1);
        let next_tick = metrics.own_lines(Format::Classic);
        assert!(!Arc::ptr_eq(&later, &next_tick));
        assert!(
            String::from_utf8_lossy(&next_tick.text)
                .contains("aws_cost_data_age_seconds{integration=\"a\"} 91.599\n")
        );
        // The compressed pieces are made once and hold the text. Only the data age's is new
        // for a new tick; the others are the ones compressed when the metrics changed.
        assert!(std::ptr::eq(later.pieces(), later.pieces()));
        let texts: Vec<&[u8]> = later.pieces().iter().map(|p| &p.text[..]).collect();
        assert_eq!(texts.concat(), later.text);
        assert!(String::from_utf8_lossy(texts[1]).starts_with("# HELP aws_cost_data_age_seconds"));
        assert!(Arc::ptr_eq(&later.stable, &changed.stable));
        for piece in later.pieces() {
            let mut decoder = flate2::read::DeflateDecoder::new(&piece.deflate[..]);
            let mut text = Vec::new();
            // A sync-flushed piece ends without a final block: read what it holds.
            let _ = std::io::Read::read_to_end(&mut decoder, &mut text);
            assert_eq!(text, piece.text);
        }
        // A new UTC day encodes the rest again (aws_cost_api_budget_exhausted reads it).
        *lock(&now) += chrono::Duration::days(1);
        let next_day = metrics.own_lines(Format::Classic);
        assert!(!Arc::ptr_eq(&next_day.stable, &later.stable));
    }
}
