//! The refresh scheduler: one task per integration, first at start-up, then every interval.
//!
//! A refresh first asks for the cost by account, service and charge type. Without those there
//! is nothing to serve: the refresh fails and the integration keeps serving its last good
//! snapshot. The optional queries (tags, resources, forecasts, Organizations) come next; when
//! one fails, the others still refresh, the failed one keeps its last good data, and the refresh
//! reports the failure. Failures set `aws_cost_refresh_success` to 0, count in
//! `aws_cost_refresh_failures_total` under one [`Reason`], are logged in one line, and are
//! retried with exponential backoff (from [`RETRY_MIN`], never later than the regular interval).
//!
//! Scheduling: an integration's first refresh waits a random part of [`START_SPREAD`] (at most a
//! tenth of its interval), and each later wait is shortened by a random 0-10 %
//! ([`jittered`]), so that integrations (and exporters) started together do not stay in step.
//! A task refreshes one integration, one refresh at a time; a reload stops an integration's
//! task (aborting its request in flight) before its new one starts. A semaphore shared by all
//! integrations caps how many refresh at once (`--refresh.max-concurrency`); one failing or slow
//! integration holds at most one permit, bounded by the SDK's timeouts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::aggregate::Table;
use crate::anomalies::AnomalyData;
use crate::api_budget::{ApiBudget, CapReached};
use crate::clock::{Clock, lock, sleep_until};
use crate::commitments::{self, Wanted};
use crate::config::{CostBasis, Integration};
use crate::cost_explorer::{
    CostData, CostExplorerError, Dimension, ForecastValue, Period, TagData,
};
use crate::credentials::{Clients, Timeouts};
use crate::failure::{Classify, Concise, Reason, ToConcise};
use crate::logfmt;
use crate::metrics::Metrics;
use crate::snapshot::{IntegrationSnapshot, RefreshData, SnapshotStore};
use crate::storage::{Fallback, Storage};

/// The first retry delay after a failed refresh.
pub const RETRY_MIN: Duration = Duration::from_secs(60);
/// The most an integration's first refresh waits, spreading integrations started together
/// (never more than a tenth of the interval).
pub const START_SPREAD: Duration = Duration::from_secs(5);
/// How many integrations refresh at once, by default (`--refresh.max-concurrency`).
pub const MAX_CONCURRENCY: usize = 4;
/// The longest line a refresh failure is logged in (`--log.format logfmt`), in characters: the
/// error's elidable parts (AWS's message, an error chain, the name of a failed part) lose their
/// middle to fit; its operation, AWS error code, HTTP status and request id never do, so only
/// absurdly long integration names or fixed parts make a line longer.
pub const MAX_LOG_LINE: usize = 300;
/// The largest part of a wait that jitter takes off.
pub const JITTER: f64 = 0.1;

/// How often the organization's account list is fetched again.
pub const ORGANIZATIONS_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// How far back AWS serves resource-level data.
pub const RESOURCE_DAYS: u64 = 14;

/// How refreshes are scheduled and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOptions {
    /// SDK timeouts of each AWS request.
    pub timeouts: Timeouts,
    /// The first retry delay after a failure ([`RETRY_MIN`]; tests shorten it).
    pub retry_min: Duration,
    /// The most a first refresh waits ([`START_SPREAD`]).
    pub start_spread: Duration,
    /// How many integrations refresh at once (at least 1).
    pub max_concurrency: usize,
}

impl Default for RefreshOptions {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            retry_min: RETRY_MIN,
            start_spread: START_SPREAD,
            max_concurrency: MAX_CONCURRENCY,
        }
    }
}

/// The niceness of the refresh threads: 10, where scrapes run at the process's own (0).
///
/// Linux's scheduler shares a contested core by weight: 1024 at nice 0, 110 at nice 10, 15 at
/// nice 19. Against one busy thread at nice 0 a refresh thread gets 110/1134, about 10 % of the
/// core, and a scrape thread the rest: a refresh slows a scrape it competes with by at most
/// about a tenth of one core, and a flood of scrapes (at most one busy serving thread per core)
/// slows a refresh by a bounded factor, about ten, without starving it. At nice 19 the refresh
/// got 15/1039, 1.4 %: under a flood that kept both cores of the soak busy, a refresh of 1.2 s
/// of CPU took two minutes. Other busy programs at nice 0 on the same cores each add their
/// weight, and slow a refresh further.
pub const REFRESH_NICENESS: i32 = 10;

/// The runtime refreshes run on, apart from the one that answers scrapes: parsing pages and
/// building snapshots is CPU work, so it gets one worker thread (and its blocking threads),
/// at [`REFRESH_NICENESS`], and a refresh never occupies a thread a scrape is waiting for: when
/// both want a core, the scrape gets about nine tenths of it; a refresh gets all the rest.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("aws-cost-refresh")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
}

/// Lowers the calling thread's scheduling priority to [`REFRESH_NICENESS`] (never raises it: a
/// process started at a higher niceness keeps its own). Lowering needs no privilege.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: gettid, getpriority and setpriority only read and set the calling thread's own
    // niceness; a failure leaves the priority as it was (getpriority's -1 on a failure only
    // means the niceness is set).
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        if libc::getpriority(libc::PRIO_PROCESS, tid) < REFRESH_NICENESS {
            libc::setpriority(libc::PRIO_PROCESS, tid, REFRESH_NICENESS);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// The outcome of one refresh that published a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshSummary {
    pub series: usize,
}

/// Why a refresh did not fully succeed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The cost query failed: nothing new was published.
    #[error(transparent)]
    Costs(#[from] CostExplorerError),
    /// `max_api_requests_per_day` refused a request: the refresh stops, nothing new is
    /// published.
    #[error(transparent)]
    ApiBudget(#[from] CapReached),
    /// Optional queries failed; a snapshot with everything else was published. Said as the
    /// first failure, naming the other parts that failed.
    #[error("{}{}", .failures.first().map(ToString::to_string).unwrap_or_default(), also_failed(.parts))]
    Partial {
        /// Each failed part's error, in refresh order.
        failures: Vec<Concise>,
        /// The failed parts (`tags`, `resources`, `forecast`, `organizations`), in order.
        parts: Vec<&'static str>,
        /// The reason of the first failed part.
        reason: Reason,
        summary: RefreshSummary,
    },
    /// The snapshot could not be built (the runtime is shutting down).
    #[error("building the snapshot: {0}")]
    Build(String),
}

/// " (also failed: forecast, organizations)" after the first failed part, when others failed.
fn also_failed(parts: &[&'static str]) -> String {
    match parts.get(1..) {
        Some(rest) if !rest.is_empty() => format!(" (also failed: {})", rest.join(", ")),
        _ => String::new(),
    }
}

impl Classify for RefreshError {
    fn reason(&self) -> Reason {
        match self {
            RefreshError::Costs(err) => err.reason(),
            RefreshError::ApiBudget(_) => Reason::ApiBudget,
            RefreshError::Partial { reason, .. } => *reason,
            RefreshError::Build(_) => Reason::BadResponse,
        }
    }
}

impl ToConcise for RefreshError {
    fn concise(&self) -> Concise {
        match self {
            RefreshError::Costs(err) => err.concise(),
            RefreshError::Partial {
                failures, parts, ..
            } => {
                let first = failures.first().cloned().unwrap_or_default();
                match parts.get(1..) {
                    Some(rest) if !rest.is_empty() => first
                        .fixed(" (also failed: ")
                        .elidable(rest.join(", "))
                        .fixed(")"),
                    _ => first,
                }
            }
            RefreshError::ApiBudget(_) | RefreshError::Build(_) => {
                Concise::default().elidable(self.to_string())
            }
        }
    }
}

/// One optional part's failure: its reason and what to log.
#[derive(Debug)]
struct PartError {
    reason: Reason,
    text: Concise,
}

impl PartError {
    /// `err` under a context such as `tag "team"`.
    fn new(context: &str, err: &(impl Classify + ToConcise)) -> Self {
        Self {
            reason: err.reason(),
            text: Concise::default()
                .elidable(context)
                .fixed(": ")
                .then(err.concise()),
        }
    }
}

/// What a refresh keeps for the next one to fall back on when an optional part fails: the
/// published snapshot (whose encoded tag and resource series it reuses) and the few figures the
/// snapshot is computed from. Never the month's cost rows.
#[derive(Debug, Clone, Default)]
struct Last {
    snapshot: Option<Arc<IntegrationSnapshot>>,
    forecasts: BTreeMap<CostBasis, Option<ForecastValue>>,
    budget_forecasts: BTreeMap<String, Option<ForecastValue>>,
    organization_accounts: BTreeMap<String, String>,
}

/// The anomaly monitors' names as last fetched.
#[derive(Debug, Clone)]
struct Monitors {
    day: NaiveDate,
    names: BTreeMap<String, String>,
    known: BTreeSet<String>,
}

/// Rest-of-month forecasts per cost basis and per filtered budget.
type Forecasts = (
    BTreeMap<CostBasis, Option<ForecastValue>>,
    BTreeMap<String, Option<ForecastValue>>,
);

/// Everything one integration's refresh task needs.
pub struct Refresher {
    integration: Integration,
    clients: Clients,
    data_delay_days: u32,
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// What the last refresh published, for parts whose next query fails.
    last: Mutex<Last>,
    /// When the organization's accounts were last fetched.
    organizations_fetched: Mutex<Option<DateTime<Utc>>>,
    /// The UTC day the published commitments were fetched, and what the cost rows then showed.
    commitments_fetched: Mutex<Option<(NaiveDate, Wanted)>>,
    /// The anomaly monitors' names, the UTC day they were fetched, and every monitor ARN known
    /// then (named or not): a new ARN fetches them again.
    monitors: Mutex<Option<Monitors>>,
    options: RefreshOptions,
    /// Shared by every integration: how many refresh at once.
    permits: Option<Arc<Semaphore>>,
    /// The daily cap on billed requests, applied by the Cost Explorer client's interceptor.
    budget: Option<Arc<ApiBudget>>,
    /// Where each published snapshot is written (`--storage.path`), with the fingerprint of
    /// the configuration that shaped it.
    storage: Option<(Storage, u64)>,
    /// When a stored snapshot is served: when the first refresh is due.
    first_due: Option<DateTime<Utc>>,
}

impl Refresher {
    pub fn new(
        integration: Integration,
        clients: Clients,
        data_delay_days: u32,
        store: Arc<SnapshotStore>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Self {
            integration,
            clients,
            data_delay_days,
            store,
            metrics,
            clock,
            last: Mutex::new(Last::default()),
            organizations_fetched: Mutex::new(None),
            commitments_fetched: Mutex::new(None),
            monitors: Mutex::new(None),
            options: RefreshOptions::default(),
            permits: None,
            budget: None,
            storage: None,
            first_due: None,
        }
    }

    /// Schedules with `options`, each refresh holding a permit of `permits` (shared by the
    /// integrations whose concurrent refreshes it caps).
    pub fn with_schedule(mut self, options: RefreshOptions, permits: Arc<Semaphore>) -> Self {
        self.options = options;
        self.permits = Some(permits);
        self
    }

    fn record(&self, query: &str, ok: bool) {
        self.metrics.record_query(&self.integration.name, query, ok);
    }

    /// Queries AWS and publishes a new snapshot.
    pub async fn refresh_once(&self) -> Result<RefreshSummary, RefreshError> {
        let now = (self.clock)();
        let period = Period::new(now.date_naive(), self.data_delay_days);
        let bases = &self.integration.cost_basis;
        let ce = &self.clients.cost_explorer;
        let last = lock(&self.last).clone();
        let refusals = self.check_budget(None)?;

        let costs = ce.costs(period, bases).await;
        self.record("costs", costs.is_ok());
        self.check_budget(Some(refusals))?;
        let mut data = RefreshData::new(costs?);
        let mut outcome = Outcome {
            refresher: self,
            failures: Vec::new(),
            parts: Vec::new(),
        };
        if !self.integration.tags.is_empty() {
            let result = self.tags(period).await;
            data.tags = outcome.settle("tags", result.map(Some), || None);
            self.check_budget(Some(refusals))?;
        }
        if !self.integration.resources.is_empty() {
            let result = self.resources(period, &data.costs).await;
            data.resources = outcome.settle("resources", result.map(Some), || None);
            self.check_budget(Some(refusals))?;
        }
        if self.integration.forecast {
            let result = self.forecasts(period).await;
            (data.forecasts, data.budget_forecasts) = outcome.settle("forecast", result, || {
                (last.forecasts.clone(), last.budget_forecasts.clone())
            });
            self.check_budget(Some(refusals))?;
        }
        if let Some(organizations) = &self.clients.organizations {
            let fetched = *lock(&self.organizations_fetched);
            data.organization_accounts =
                if fetched.is_none_or(|at| now - at >= ORGANIZATIONS_INTERVAL) {
                    let result = organizations
                        .accounts()
                        .await
                        .map(|(accounts, _pages)| accounts)
                        .map_err(|err| PartError::new("organizations", &err));
                    if result.is_ok() {
                        *lock(&self.organizations_fetched) = Some(now);
                    }
                    outcome.settle("organizations", result, || {
                        last.organization_accounts.clone()
                    })
                } else {
                    last.organization_accounts.clone()
                };
        }
        // Commitment data changes once a day: fetched on the first refresh of a UTC day, or
        // when the cost rows show commitments they did not before.
        let mut commitments_fetched = None;
        if self.integration.commitments {
            let wanted = Wanted::from_costs(&data.costs);
            let today = now.date_naive();
            let due = lock(&self.commitments_fetched)
                .as_ref()
                .is_none_or(|(day, last)| *day != today || *last != wanted);
            if due {
                let result = self
                    .clients
                    .cost_explorer
                    .commitments(&wanted, commitments::window(period))
                    .await
                    .map_err(|err| PartError::new("commitments", &err));
                if result.is_ok() {
                    commitments_fetched = Some((today, wanted));
                }
                data.commitments = outcome.settle("commitments", result.map(Some), || None);
                self.check_budget(Some(refusals))?;
            }
        }
        if self.integration.anomalies {
            let result = self.anomalies(now.date_naive()).await;
            data.anomalies = outcome.settle("anomalies", result.map(Some), || None);
            self.check_budget(Some(refusals))?;
        }
        let failures = outcome.failures;
        let parts = outcome.parts;

        // Encoding and compressing is CPU work: off the async workers, so that no scrape waits.
        let integration = self.integration.clone();
        let previous = last.snapshot;
        let (snapshot, data) = tokio::task::spawn_blocking(move || {
            let snapshot =
                IntegrationSnapshot::build(&integration, &data, period, previous.as_deref());
            (snapshot, data)
        })
        .await
        .map_err(|err| RefreshError::Build(err.to_string()))?;
        let snapshot = Arc::new(snapshot.fetched(now));
        let summary = RefreshSummary {
            series: snapshot.series_count(),
        };
        self.store.publish(snapshot.clone());
        self.metrics
            .record_data_fetched(&self.integration.name, now);
        *lock(&self.last) = Last {
            snapshot: Some(snapshot),
            forecasts: data.forecasts,
            budget_forecasts: data.budget_forecasts,
            organization_accounts: data.organization_accounts,
        };
        if commitments_fetched.is_some() {
            // Only once they are published: a refresh that stops before fetches them again.
            *lock(&self.commitments_fetched) = commitments_fetched;
        }
        self.persist().await;
        match failures.first() {
            None => Ok(summary),
            Some(first) => Err(RefreshError::Partial {
                reason: first.reason,
                failures: failures.into_iter().map(|f| f.text).collect(),
                parts,
                summary,
            }),
        }
    }

    /// Two queries per tag key: the month to date and the data day.
    async fn tags(&self, period: Period) -> Result<TagData, PartError> {
        let bases = &self.integration.cost_basis;
        let mut tags = TagData {
            daily: Table::new(bases.len()),
            month: Table::new(bases.len()),
            account_names: BTreeMap::new(),
            requests: 0,
        };
        for key in &self.integration.tags {
            self.clients
                .cost_explorer
                .tag_costs(period, bases, key, &mut tags)
                .await
                .map_err(|err| PartError::new(&format!("tag {key:?}"), &err))?;
        }
        Ok(tags)
    }

    /// The data day's resource-level costs of each configured service that had cost that day.
    async fn resources(&self, period: Period, costs: &CostData) -> Result<Table<4>, PartError> {
        if period.data_day + Days::new(RESOURCE_DAYS) <= period.today {
            return Err(PartError {
                reason: Reason::AwsError,
                text: Concise::default().elidable(format!(
                    "resource-level costs: AWS serves only the last {RESOURCE_DAYS} days; lower data_delay_days"
                )),
            });
        }
        let mut rows = Table::new(self.integration.cost_basis.len());
        for service in &self.integration.resources {
            let mut accounts = BTreeSet::new();
            let mut record_types = BTreeSet::new();
            for (key, _) in costs.daily.iter().filter(|(key, _)| key[1] == service) {
                accounts.insert(key[0].to_string());
                record_types.insert(key[2].to_string());
            }
            if accounts.is_empty() {
                continue;
            }
            self.clients
                .cost_explorer
                .resource_costs(
                    period.data_day,
                    service,
                    &accounts,
                    &record_types,
                    &self.integration.cost_basis,
                    &mut rows,
                )
                .await
                .map_err(|err| {
                    let mut part = PartError::new(&format!("resources of {service:?}"), &err);
                    if matches!(&err, CostExplorerError::Api(aws) if aws.code() == Some("ValidationException")) {
                        // What the operator has to do, briefly.
                        part.text = part.text.elidable(
                            "; enable 'Resource-level data at daily granularity' for it in the management account's Cost Management preferences",
                        );
                    }
                    part
                })?;
        }
        Ok(rows)
    }

    /// The rest-of-month forecast per cost basis and per filtered budget (none on the last day).
    async fn forecasts(&self, period: Period) -> Result<Forecasts, PartError> {
        let ce = &self.clients.cost_explorer;
        let mut forecasts = BTreeMap::new();
        let mut budgets = BTreeMap::new();
        let filtered = self.integration.budgets.iter().filter(|b| b.is_filtered());
        let Some((start, end)) = period.forecast_period() else {
            for basis in &self.integration.cost_basis {
                forecasts.insert(*basis, None);
            }
            for budget in filtered {
                budgets.insert(budget.name.clone(), None);
            }
            return Ok((forecasts, budgets));
        };
        for basis in &self.integration.cost_basis {
            let forecast = ce
                .forecast(start, end, *basis, &[])
                .await
                .map_err(|err| PartError::new(&format!("forecast ({basis})"), &err))?;
            forecasts.insert(*basis, Some(forecast));
        }
        for budget in filtered {
            let mut filter = Vec::new();
            if !budget.accounts.is_empty() {
                filter.push((Dimension::LinkedAccount, budget.accounts.clone()));
            }
            if !budget.services.is_empty() {
                filter.push((Dimension::Service, budget.services.clone()));
            }
            let forecast = ce
                .forecast(start, end, budget.cost_basis, &filter)
                .await
                .map_err(|err| {
                    PartError::new(&format!("forecast of budget {:?}", budget.name), &err)
                })?;
            budgets.insert(budget.name.clone(), Some(forecast));
        }
        Ok((forecasts, budgets))
    }

    /// The anomalies of the last 90 days, and the names of their monitors (asked once a day,
    /// or again when an anomaly names a monitor not known then).
    async fn anomalies(&self, today: NaiveDate) -> Result<AnomalyData, PartError> {
        let ce = &self.clients.cost_explorer;
        let anomalies = ce
            .anomalies(today)
            .await
            .map_err(|err| PartError::new("anomalies", &err))?;
        let cached = lock(&self.monitors).clone().filter(|cached| {
            cached.day == today
                && anomalies
                    .iter()
                    .all(|a| cached.known.contains(&a.monitor_arn))
        });
        let names = match cached {
            Some(cached) => cached.names,
            None => {
                let names = ce
                    .anomaly_monitors()
                    .await
                    .map_err(|err| PartError::new("anomaly monitors", &err))?;
                let mut known: BTreeSet<String> = names.keys().cloned().collect();
                known.extend(anomalies.iter().map(|a| a.monitor_arn.clone()));
                *lock(&self.monitors) = Some(Monitors {
                    day: today,
                    names: names.clone(),
                    known,
                });
                names
            }
        };
        Ok(AnomalyData {
            today,
            anomalies,
            monitors: names,
        })
    }

    /// One attempt, with its metrics and its log line. Returns whether it fully succeeded.
    pub async fn attempt(&self) -> bool {
        let name = &self.integration.name;
        let requests_before = self.metrics.requests_made(name);
        let started = Instant::now();
        let result = self.refresh_once().await;
        let elapsed = started.elapsed().as_secs_f64();
        let finished = (self.clock)().timestamp_millis() as f64 / 1000.0;
        // Every AWS request attempt of this refresh: pages, forecasts, STS, retries.
        let requests = self
            .metrics
            .requests_made(name)
            .saturating_sub(requests_before);
        self.metrics
            .record_refresh(name, result.is_ok(), elapsed, finished);
        // Milliseconds are enough in a log line (the duration metric has the rest).
        let duration_seconds = (elapsed * 1000.0).round() / 1000.0;
        match result {
            Ok(summary) => {
                tracing::info!(
                    integration = %name,
                    duration_seconds,
                    series = summary.series,
                    requests,
                    "refresh finished"
                );
                true
            }
            Err(err) => {
                let reason = err.reason();
                self.metrics.record_failure(name, reason);
                log_failure(name, &err, duration_seconds, requests);
                false
            }
        }
    }

    /// Refreshes soon (after a random part of the start spread; serving a stored snapshot,
    /// when it is due), then on schedule, until `shutdown` is cancelled. Each refresh holds a
    /// permit of the shared semaphore.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Some(due) = self.first_due {
            tokio::select! {
                _ = sleep_until(&self.clock, due) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        let interval = self.integration.refresh_interval;
        self.metrics.init_failures(&self.integration.name);
        let spread = self.options.start_spread.min(interval / 10);
        let mut delay = spread.mul_f64(fastrand::f64());
        let mut failures: u32 = 0;
        loop {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            let refresh = async {
                // A closed semaphore (never closed here) would only mean no cap.
                let _permit = match &self.permits {
                    Some(permits) => permits.clone().acquire_owned().await.ok(),
                    None => None,
                };
                self.attempt().await
            };
            let ok = tokio::select! {
                ok = refresh => ok,
                _ = shutdown.cancelled() => return,
            };
            failures = if ok { 0 } else { failures.saturating_add(1) };
            delay = jittered(
                backoff(self.options.retry_min, interval, failures),
                fastrand::f64(),
            );
            if let Some(at) = self.budget_wait(ok, delay) {
                // The day's cap is spent: nothing until the next UTC day.
                tokio::select! {
                    _ = sleep_until(&self.clock, at) => {}
                    _ = shutdown.cancelled() => return,
                }
                delay = Duration::ZERO;
            }
        }
    }
}

/// `--storage.path` and `max_api_requests_per_day` (see [`crate::storage`] and
/// [`crate::api_budget`]).
impl Refresher {
    /// Applies the daily request cap (installed as the Cost Explorer client's interceptor).
    pub fn with_budget(mut self, budget: Arc<ApiBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Writes every published snapshot to `storage`.
    pub fn with_storage(mut self, storage: Storage, fingerprint: u64) -> Self {
        self.storage = Some((storage, fingerprint));
        self
    }

    /// Starts from a stored snapshot (already published): its parts are what failed parts
    /// fall back on, and the first refresh is due a refresh interval after its data was
    /// fetched (at once when that is past).
    pub fn with_stored(self, snapshot: Arc<IntegrationSnapshot>, fallback: Fallback) -> Self {
        let due = chrono::TimeDelta::from_std(self.integration.refresh_interval)
            .ok()
            .and_then(|interval| snapshot.fetched_at.checked_add_signed(interval));
        *lock(&self.last) = Last {
            snapshot: Some(snapshot),
            forecasts: fallback.forecasts,
            budget_forecasts: fallback.budget_forecasts,
            organization_accounts: fallback.organization_accounts,
        };
        Self {
            first_due: due,
            ..self
        }
    }

    /// Fails the refresh when the daily cap refused a request since `refusals_before` (or,
    /// with `None`, when today's allowance is already spent); returns the refusals so far.
    fn check_budget(&self, refusals_before: Option<u64>) -> Result<u64, RefreshError> {
        let Some(budget) = &self.budget else {
            return Ok(0);
        };
        let refusals = budget.refusals();
        let stop = match refusals_before {
            Some(before) => refusals > before,
            None => budget.exhausted(),
        };
        if stop {
            return Err(CapReached {
                limit: budget.limit(),
            }
            .into());
        }
        Ok(refusals)
    }

    /// With today's allowance spent: when to try again (the next UTC day, and after a
    /// success not before the regular delay either).
    fn budget_wait(&self, ok: bool, delay: Duration) -> Option<DateTime<Utc>> {
        let budget = self.budget.as_ref().filter(|b| b.exhausted())?;
        let next_day = budget.next_day();
        let regular = chrono::TimeDelta::from_std(delay)
            .ok()
            .and_then(|delay| (self.clock)().checked_add_signed(delay));
        Some(match regular {
            Some(regular) if ok => regular.max(next_day),
            _ => next_day,
        })
    }

    /// Writes the published snapshot to `--storage.path`, off the async workers. A failure
    /// is logged; the refresh stands.
    async fn persist(&self) {
        let Some((storage, fingerprint)) = self.storage.clone() else {
            return;
        };
        let last = lock(&self.last).clone();
        let Some(snapshot) = last.snapshot else {
            return;
        };
        let fallback = Fallback {
            forecasts: last.forecasts,
            budget_forecasts: last.budget_forecasts,
            organization_accounts: last.organization_accounts,
        };
        let path = storage.snapshot_path(&self.integration.name);
        let result = tokio::task::spawn_blocking(move || {
            storage.save_snapshot(&snapshot, fingerprint, &fallback)
        })
        .await;
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        tracing::warn!(
            integration = %self.integration.name,
            file = %path.display(),
            error = %error,
            "cannot store the snapshot; a restart will refresh at once"
        );
    }
}

/// Gathers the outcome of a refresh's optional parts.
struct Outcome<'a> {
    refresher: &'a Refresher,
    failures: Vec<PartError>,
    parts: Vec<&'static str>,
}

impl Outcome<'_> {
    /// A part's data on success; on failure, the reason noted and the last good data.
    /// Records the part's success either way.
    fn settle<T>(
        &mut self,
        query: &'static str,
        result: Result<T, PartError>,
        previous: impl FnOnce() -> T,
    ) -> T {
        self.refresher.record(query, result.is_ok());
        match result {
            Ok(value) => value,
            Err(err) => {
                self.failures.push(err);
                self.parts.push(query);
                previous()
            }
        }
    }
}

/// Logs a refresh failure in one line (`refresh failed`, or `refresh partly failed` with the
/// series still published) of at most [`MAX_LOG_LINE`] characters in logfmt: see
/// [`logged_error`].
fn log_failure(name: &str, err: &RefreshError, duration_seconds: f64, requests: u64) {
    let reason = err.reason();
    let series = match err {
        RefreshError::Partial { summary, .. } => Some(summary.series),
        _ => None,
    };
    let message = match series {
        Some(_) => "refresh partly failed",
        None => "refresh failed",
    };
    let mut fields = vec![
        ("integration", name.to_string()),
        ("reason", reason.as_str().to_string()),
        ("duration_seconds", format!("{duration_seconds:?}")),
        ("requests", requests.to_string()),
    ];
    fields.extend(series.map(|series| ("series", series.to_string())));
    let error = logged_error(err, message, &fields);
    // `series` is recorded only when there is one (a partial failure).
    tracing::warn!(
        integration = %name,
        reason = reason.as_str(),
        duration_seconds,
        series,
        requests,
        error = %error,
        "{message}"
    );
}

/// A refresh failure's error as its log line carries it: the error's own words (operation, AWS
/// code and message, HTTP status, request id; never a `Debug` dump), its elidable parts cut in
/// their middle so that the whole logfmt line, with its `message` and other `fields`, takes at
/// most [`MAX_LOG_LINE`] characters.
fn logged_error(err: &RefreshError, message: &str, fields: &[(&str, String)]) -> String {
    let others = logfmt::head_len(tracing::Level::WARN, message)
        + fields
            .iter()
            .map(|(key, value)| logfmt::entry_len(key, value))
            .sum::<usize>();
    // ` error=""`: an error always holds a space, so it is quoted.
    let room = MAX_LOG_LINE.saturating_sub(others + logfmt::entry_len("error", ""));
    err.concise().within(room, logfmt::quoted_char_len)
}

/// The wait before the next attempt: the interval after a success, else a backoff doubling
/// from `retry_min` and never longer than the interval.
pub fn backoff(retry_min: Duration, interval: Duration, consecutive_failures: u32) -> Duration {
    if consecutive_failures == 0 {
        return interval;
    }
    let factor = 1u32
        .checked_shl(consecutive_failures - 1)
        .unwrap_or(u32::MAX);
    retry_min.saturating_mul(factor).min(interval)
}

/// `delay` shortened by `random` (from 0 to 1) times [`JITTER`]: a wait of the interval becomes
/// a wait of 90 to 100 % of it.
pub fn jittered(delay: Duration, random: f64) -> Duration {
    delay.mul_f64(1.0 - JITTER * random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{AwsError, AwsErrorKind};

    /// The lines `log` writes through the binary's logfmt formatter.
    fn logfmt_lines(log: impl FnOnce()) -> Vec<String> {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(logfmt::Logfmt)
            .fmt_fields(logfmt::Logfmt)
            .with_writer(move || Sink(writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(lock(&buffer).clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn denied(operation: &'static str, action: &str, id: &str) -> AwsError {
        AwsError {
            operation,
            kind: AwsErrorKind::Service {
                code: "AccessDeniedException".into(),
                message: format!(
                    "User: arn:aws:iam::123456789012:user/platform/cost-exporter is not authorized to perform: ce:{action} on resource: arn:aws:ce:us-east-1:123456789012:/{action} because no identity-based policy allows the ce:{action} action"
                ),
            },
            status: Some(400),
            request_id: Some(id.into()),
        }
    }

    const ID: &str = "c3fbaf66-bc1f-42fb-80a8-3a5e1b6f0d24";

    #[test]
    fn a_failure_is_logged_in_300_characters_with_its_code_status_and_request_id() {
        let err = RefreshError::Costs(CostExplorerError::Api(denied(
            "GetCostAndUsage",
            "GetCostAndUsage",
            ID,
        )));
        let lines = logfmt_lines(|| log_failure("payer", &err, 0.032, 1));
        let line = &lines[0];
        assert_eq!(
            line.split_at(3 + logfmt::TIMESTAMP_LEN).1,
            " level=warn msg=\"refresh failed\" integration=payer reason=access_denied \
             duration_seconds=0.032 requests=1 error=\"GetCostAndUsage: AccessDeniedException: \
             User: arn:aws:iam::123456789012:user/pl…CostAndUsage action (HTTP 400, request id \
             c3fbaf66-bc1f-42fb-80a8-3a5e1b6f0d24)\""
        );
        assert_eq!(line.chars().count(), MAX_LOG_LINE);
    }

    #[test]
    fn a_partial_failure_of_several_parts_fits_too() {
        let part = |context: &str, err: AwsError| {
            PartError::new(context, &CostExplorerError::Api(err)).text
        };
        let resources = AwsError {
            operation: "GetCostAndUsageWithResources",
            kind: AwsErrorKind::Service {
                code: "ValidationException".into(),
                message:
                    "Resource-level data is not enabled for Amazon Elastic Compute Cloud - Compute"
                        .into(),
            },
            status: Some(400),
            request_id: Some("5d2e1c7a-0b44-4c1e-9a51-6f0e2d3c4b5a".into()),
        };
        let err = RefreshError::Partial {
            failures: vec![
                part(
                    "resources of \"Amazon Elastic Compute Cloud - Compute\"",
                    resources,
                )
                .elidable("; enable 'Resource-level data at daily granularity' for it in the management account's Cost Management preferences"),
                part("forecast (unblended)", denied("GetCostForecast", "GetCostForecast", ID)),
            ],
            parts: vec!["resources", "forecast", "organizations"],
            reason: Reason::AwsError,
            summary: RefreshSummary { series: 99_921 },
        };
        let lines = logfmt_lines(|| log_failure("payer", &err, 1.685, 60));
        let line = &lines[0];
        assert!(line.chars().count() <= MAX_LOG_LINE, "{line}");
        assert!(
            line.contains(
                " msg=\"refresh partly failed\" integration=payer reason=aws_error \
                 duration_seconds=1.685 series=99921 requests=60 error=\""
            ),
            "{line}"
        );
        assert!(
            line.contains(": GetCostAndUsageWithResources: ValidationException: ")
                && line.contains(" (HTTP 400, request id 5d2e1c7a-0b44-4c1e-9a51-6f0e2d3c4b5a)")
                && line.ends_with(")\""),
            "{line}"
        );
        assert!(line.contains(" (also failed: "), "{line}");
    }

    #[test]
    fn only_a_very_long_name_makes_a_failure_line_longer() {
        let err = RefreshError::Costs(CostExplorerError::Api(denied(
            "GetCostAndUsage",
            "GetCostAndUsage",
            ID,
        )));
        let name = "n".repeat(200);
        let lines = logfmt_lines(|| log_failure(&name, &err, 0.032, 1));
        // The message is down to an ellipsis; the operation, code, status and request id stay.
        assert!(
            lines[0].ends_with(
                " error=\"GetCostAndUsage: AccessDeniedException: … (HTTP 400, request id \
                 c3fbaf66-bc1f-42fb-80a8-3a5e1b6f0d24)\""
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].chars().count() > MAX_LOG_LINE);
    }

    /// The refresh runtime's workers and its blocking threads (where snapshots are built) run at
    /// nice 10 (or the caller's, when higher); the caller's priority is untouched.
    #[cfg(target_os = "linux")]
    #[test]
    fn refresh_threads_run_at_nice_10() {
        // SAFETY: getpriority reads the calling thread's niceness.
        let nice =
            || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = nice();
        let runtime = runtime().unwrap();
        let (worker, blocking) = runtime.block_on(async move {
            let worker = tokio::spawn(async move { nice() }).await.unwrap();
            let blocking = tokio::task::spawn_blocking(nice).await.unwrap();
            (worker, blocking)
        });
        let expected = before.max(REFRESH_NICENESS);
        assert_eq!(REFRESH_NICENESS, 10);
        assert_eq!((worker, blocking), (expected, expected));
        assert_eq!(nice(), before);
    }

    #[test]
    fn jitter_takes_off_up_to_a_tenth() {
        let six_hours = Duration::from_secs(6 * 3600);
        assert_eq!(jittered(six_hours, 0.0), six_hours);
        assert_eq!(
            jittered(six_hours, 0.5),
            Duration::from_secs(6 * 3600 - 1080)
        );
        assert_eq!(
            jittered(six_hours, 1.0),
            Duration::from_secs(6 * 3600 - 2160)
        );
        assert_eq!(jittered(six_hours, 7.0), jittered(six_hours, 1.0));
        assert_eq!(
            backoff(Duration::from_millis(100), six_hours, 3),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let six_hours = Duration::from_secs(6 * 3600);
        assert_eq!(backoff(RETRY_MIN, six_hours, 0), six_hours);
        assert_eq!(backoff(RETRY_MIN, six_hours, 1), Duration::from_secs(60));
        assert_eq!(backoff(RETRY_MIN, six_hours, 2), Duration::from_secs(120));
        assert_eq!(backoff(RETRY_MIN, six_hours, 5), Duration::from_secs(960));
        assert_eq!(backoff(RETRY_MIN, six_hours, 40), six_hours);
        assert_eq!(
            backoff(RETRY_MIN, Duration::from_secs(30), 1),
            Duration::from_secs(30)
        );
    }
}
