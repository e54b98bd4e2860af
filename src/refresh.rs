//! The refresh scheduler: one task per integration, first at start-up, then every interval.
//!
//! A refresh runs the integration's parts ([`crate::parts::PARTS`]) in order, one fetch and one
//! check of the daily request cap each. Costs come first: without them there is nothing to
//! serve, the refresh fails and the integration keeps serving its last good snapshot. When
//! another part fails, the others still refresh, the failed one keeps its last good series,
//! and the refresh reports the failure. Failures set `aws_cost_refresh_success` to 0, count in
//! `aws_cost_refresh_failures_total` under one [`Reason`], are logged in one line, and are
//! retried with exponential backoff (from [`RETRY_MIN`], never later than the regular interval).
//! A refresh commits what its parts keep only once its snapshot is published.
//!
//! A refresher may start from a stored snapshot (`--storage.path`) or from the state of the
//! integration's previous refresher (a reload that changed its settings): it serves at once
//! the series of every part whose fingerprint is unchanged, fetches at once only the parts
//! owed a fetch (new or changed; those that need the cost rows bring a whole refresh), and
//! refreshes the rest when due: a refresh interval after the served cost data was fetched.
//!
//! Scheduling: an integration's first refresh waits a random part of [`START_SPREAD`] (at most a
//! tenth of its interval), and each later wait is shortened by a random 0-10 %
//! ([`jittered`]), so that integrations (and exporters) started together do not stay in step.
//! A task refreshes one integration, one refresh at a time; a reload stops an integration's
//! task (aborting its request in flight) before its new one starts. A semaphore shared by all
//! integrations caps how many refresh at once (`--refresh.max-concurrency`); one failing or slow
//! integration holds at most one permit, bounded by the SDK's timeouts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::api_budget::{ApiBudget, CapReached};
use crate::change::{self, Verdict};
use crate::clock::{Clock, lock, sleep_until};
use crate::cost_explorer::Period;
use crate::credentials::{Clients, Timeouts};
use crate::exposition::{FamilyDesc, NamedFamily};
use crate::failure::{Classify, Concise, Reason, ToConcise};
use crate::logfmt;
use crate::metrics::Metrics;
use crate::model::Integration;
use crate::parts::{Cx, Encoding, Part, PartError, Parts, Scope, Shared, layout};
use crate::snapshot::{Block, Identity, IntegrationSnapshot, SnapshotStore};
use crate::storage::{Polled, Storage, Stored};

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
pub use crate::model::JITTER;

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

/// The outcome of one refresh that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshSummary {
    pub series: usize,
    /// When it checked the cost data first ([`crate::change`]): the verdict, and whether the
    /// answer differed from the one kept (AWS changed the data, as the exporter sees it).
    pub check: Option<(Verdict, bool)>,
}

/// Why a refresh did not fully succeed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The cost query failed: nothing new was published.
    #[error(transparent)]
    Costs(PartError),
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
        /// The failed parts, in refresh order.
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

/// What a refresher has published and what its parts keep: shared with the exporter, which
/// hands it to the integration's next refresher when a reload changes its settings.
pub struct State {
    snapshot: Option<Arc<IntegrationSnapshot>>,
    parts: Parts,
    /// Whether the last attempt failed: a successor retries at once.
    failing: bool,
    /// Whether the published snapshot has parts whose last fetch failed: a check that finds
    /// the cost data unchanged still runs the whole plan, retrying them.
    partial: bool,
    /// Whether an attempt is in flight (a lease holder does not release the lease then).
    refreshing: bool,
}

/// Marks a refresh attempt in flight in the state, until dropped (also when the attempt is
/// aborted).
struct InFlight<'a>(&'a Mutex<State>);

impl<'a> InFlight<'a> {
    fn mark(state: &'a Mutex<State>) -> Self {
        lock(state).refreshing = true;
        Self(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(self.0).refreshing = false;
    }
}

/// Where a refresher starts from: what it serves at once, and what it keeps.
pub struct Resumed {
    parts: Parts,
    blocks: Vec<Block>,
    fetched_at: DateTime<Utc>,
    period: Period,
    failing: bool,
    /// The enabled parts whose record was written for other settings of the integration.
    pub changed: Vec<&'static str>,
}

impl Resumed {
    /// From a stored snapshot: each enabled part whose record has the integration's current
    /// fingerprint. Decompresses and compresses every block: call it off the async workers.
    pub fn from_stored(stored: &Stored, integration: &Integration, data_delay_days: u32) -> Self {
        let (old, blocks) = Parts::from_records(&stored.records);
        Self::carry(
            &old,
            &blocks,
            stored.fetched_at,
            stored.period,
            false,
            integration,
            data_delay_days,
        )
    }

    /// From the state of the integration's previous refresher; `None` when it never published.
    pub fn from_previous(
        state: &State,
        integration: &Integration,
        data_delay_days: u32,
    ) -> Option<Self> {
        let snapshot = state.snapshot.as_ref()?;
        Some(Self::carry(
            &state.parts,
            snapshot.blocks(),
            snapshot.fetched_at,
            snapshot.period,
            state.failing,
            integration,
            data_delay_days,
        ))
    }

    fn carry(
        old: &Parts,
        blocks: &[Block],
        fetched_at: DateTime<Utc>,
        period: Period,
        failing: bool,
        integration: &Integration,
        data_delay_days: u32,
    ) -> Self {
        let (parts, blocks) = Parts::carry(integration, data_delay_days, old, blocks);
        let changed = parts.changed_from(old).collect();
        Self {
            parts,
            blocks,
            fetched_at,
            period,
            failing,
            changed,
        }
    }

    /// Whether it serves anything.
    pub fn serves_anything(&self) -> bool {
        self.parts.served().next().is_some()
    }

    /// The enabled parts owed a fetch, comma-separated.
    pub fn owed(&self) -> String {
        self.parts
            .owed()
            .map(|part| part.name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Everything one integration's refresh task needs.
pub struct Refresher {
    integration: Integration,
    /// Its snapshots' families.
    layout: (&'static [FamilyDesc], Arc<[NamedFamily]>),
    clients: Clients,
    data_delay_days: u32,
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// What it published and what its parts keep.
    state: Arc<Mutex<State>>,
    options: RefreshOptions,
    /// Shared by every integration: how many refresh at once.
    permits: Option<Arc<Semaphore>>,
    /// The daily cap on billed requests, applied by the Cost Explorer client's interceptor.
    budget: Option<Arc<ApiBudget>>,
    /// Where each published snapshot is written (`--storage.path`).
    storage: Option<Storage>,
    /// When resumed: when its first regular refresh is due.
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
        let parts = Parts::new(&integration, data_delay_days);
        Self {
            layout: layout(&integration),
            integration,
            clients,
            data_delay_days,
            store,
            metrics,
            clock,
            state: Arc::new(Mutex::new(State {
                snapshot: None,
                parts,
                failing: false,
                partial: false,
                refreshing: false,
            })),
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

    /// What it publishes and keeps, for the integration's next refresher.
    pub fn state(&self) -> Arc<Mutex<State>> {
        self.state.clone()
    }

    /// Publishes into and keeps in `state`, another refresher's of the same integration and
    /// settings (with shared storage, each turn as holder or follower gets a new refresher; see
    /// [`crate::lease`]).
    pub fn with_state(mut self, state: Arc<Mutex<State>>) -> Self {
        self.state = state;
        self
    }

    /// Starts from `resumed`: publishes what it serves at once, keeps what its parts keep. The
    /// first regular refresh is due a refresh interval after the served cost data was fetched
    /// (at once when that is past, when costs are not served, or when the predecessor was
    /// failing); parts owed a fetch are fetched before (see [`Refresher::run`]).
    pub fn resume(mut self, resumed: Resumed) -> Self {
        let Resumed {
            parts,
            blocks,
            fetched_at,
            period,
            failing,
            ..
        } = resumed;
        let snapshot = Arc::new(IntegrationSnapshot::new(
            self.integration.name.clone(),
            period,
            fetched_at,
            (self.layout.0, self.layout.1.clone()),
            blocks,
        ));
        // Without cost series (an electrolux-shaped file), the data is its parts'.
        let served = if self.integration.costs {
            parts.is_served("costs")
        } else {
            parts.served().next().is_some() && parts.owed().next().is_none()
        };
        self.first_due = if served && !failing {
            chrono::TimeDelta::from_std(self.interval(&parts))
                .ok()
                .and_then(|interval| fetched_at.checked_add_signed(interval))
        } else {
            Some((self.clock)())
        };
        self.store.publish(snapshot.clone());
        self.metrics
            .record_data_fetched(&self.integration.name, fetched_at);
        self.metrics
            .record_check(&self.integration.name, fetched_at, true, true);
        *lock(&self.state) = State {
            snapshot: Some(snapshot),
            parts,
            failing,
            partial: failing,
            refreshing: false,
        };
        self
    }

    fn record(&self, query: &str, ok: bool) {
        self.metrics.record_query(&self.integration.name, query, ok);
    }

    /// Refreshes every part that is due (a full refresh) and publishes a new snapshot.
    pub async fn refresh_once(&self) -> Result<RefreshSummary, RefreshError> {
        self.refresh(Scope::Full).await
    }

    /// Runs the parts `scope` names, then publishes a new snapshot: the parts that ran and
    /// succeeded with their new series, the others with their last ones.
    async fn refresh(&self, scope: Scope) -> Result<RefreshSummary, RefreshError> {
        let now = (self.clock)();
        let (previous, mut parts, partial) = {
            let state = lock(&self.state);
            (state.snapshot.clone(), state.parts.begin(), state.partial)
        };
        let period = match (scope, &previous) {
            // Parts fetched alone describe the served cost data's dates.
            (Scope::Owed, Some(previous)) => previous.period,
            _ => Period::new(now.date_naive(), self.data_delay_days),
        };
        let refusals = self.check_budget(None)?;
        let mut scope = scope;
        let mut probe = None;
        let mut check = None;
        if scope == Scope::Full && self.checks_cost_data() {
            let answer = self.check(period, &parts, refusals).await?;
            let kept = parts.kept_shared().seen;
            let verdict = match &previous {
                Some(previous) => {
                    let served = change::Served {
                        answer: kept.answer.as_deref(),
                        fetched_at: previous.fetched_at,
                        owed: parts.owed().next().is_some(),
                        partial,
                    };
                    change::verdict(&served, &answer, now, self.integration.checks.max_data_age)
                }
                None => Verdict::First,
            };
            let differs = kept
                .answer
                .as_deref()
                .is_none_or(|kept| kept.shape != answer.shape || kept.body != answer.body);
            if verdict == Verdict::Unchanged {
                scope = Scope::Unchanged;
            }
            check = Some((verdict, differs));
            probe = Some(Arc::new(answer));
        }
        let mut shared = Shared::default();
        let mut failures = Vec::new();
        let mut failed = Vec::new();
        let mut ran = false;
        for mut part in parts.iter_mut() {
            let cx = Cx {
                integration: &self.integration,
                clients: &self.clients,
                period,
                now,
                shared: &shared,
                probe: probe.as_ref(),
                scope,
            };
            if part.runs(scope, &cx) {
                ran = true;
                let result = part.fetch(&cx).await;
                self.record(part.kind.name, result.is_ok());
                self.check_budget(Some(refusals))?;
                match result {
                    Ok(()) => {}
                    Err(err) if part.kind.required => return Err(RefreshError::Costs(err)),
                    Err(err) => {
                        failures.push(err);
                        failed.push(part.kind.name);
                    }
                }
            }
            part.share(&mut shared);
        }
        if let (Scope::Unchanged, false, Some(previous)) = (scope, ran, &previous) {
            // Nothing to fetch: the same snapshot stays served, byte for byte.
            return Ok(RefreshSummary {
                series: previous.series_count(),
                check,
            });
        }
        // Without new cost data, the snapshot still describes the served cost data's fetch
        // (without cost series, that of the last full refresh in which every part succeeded).
        let kept = self.integration.costs || scope == Scope::Owed || !failures.is_empty();
        let (fetched_at, period) = match (&shared.rows, &previous) {
            (None, Some(previous)) if kept => (previous.fetched_at, previous.period),
            _ => (now, period),
        };

        // Encoding and compressing is CPU work: off the async workers, so that no scrape waits.
        let integration = self.integration.clone();
        let (parts, blocks) = tokio::task::spawn_blocking(move || {
            let identity = Identity::of(&integration);
            let cx = Encoding {
                integration: &integration,
                identity: &identity,
                period,
                shared: &shared,
            };
            let blocks = parts.encode(&cx, previous.as_deref().map(IntegrationSnapshot::blocks));
            // What the parts fetched is encoded: only what they keep stays.
            parts.settle();
            (parts, blocks)
        })
        .await
        .map_err(|err| RefreshError::Build(err.to_string()))?;
        let snapshot = Arc::new(IntegrationSnapshot::new(
            self.integration.name.clone(),
            period,
            fetched_at,
            (self.layout.0, self.layout.1.clone()),
            blocks,
        ));
        let summary = RefreshSummary {
            series: snapshot.series_count(),
            check,
        };
        self.store.publish(snapshot.clone());
        self.metrics
            .record_data_fetched(&self.integration.name, fetched_at);
        {
            // Committed only once published: a refresh that stops before commits nothing.
            let mut state = lock(&self.state);
            state.snapshot = Some(snapshot);
            state.parts = parts;
            state.partial = !failures.is_empty();
        }
        self.persist().await;
        match failures.first() {
            None => Ok(summary),
            Some(first) => Err(RefreshError::Partial {
                reason: first.reason,
                failures: failures.into_iter().map(|f| f.text).collect(),
                parts: failed,
                summary,
            }),
        }
    }

    /// Whether refreshes check the cost data before buying the full plan: change detection is
    /// on and the integration serves cost series.
    fn checks_cost_data(&self) -> bool {
        self.integration.costs && self.integration.checks.enabled()
    }

    /// Asks Cost Explorer whether the cost data changed ([`change::probe`]), in the shape the
    /// served data's accounts call for. A failure is the costs part's: the refresh fails with
    /// its reason, and the served data stays.
    async fn check(
        &self,
        period: Period,
        parts: &Parts,
        refusals: u64,
    ) -> Result<change::Answer, RefreshError> {
        let last = parts.kept_shared().seen.answer;
        let result = change::probe(
            &self.clients.cost_explorer,
            period,
            &self.integration.cost_basis,
            last.as_deref(),
        )
        .await;
        if result.is_err() {
            self.record(crate::parts::costs::Costs::NAME, false);
        }
        self.check_budget(Some(refusals))?;
        result.map_err(|err| RefreshError::Costs(PartError::bare(&err)))
    }

    /// How long to wait between two regular refreshes: between two checks with change
    /// detection, else the refresh interval.
    fn interval(&self, parts: &Parts) -> Duration {
        let plan_requests = parts.kept_shared().seen.plan_requests;
        let checks = if self.integration.costs {
            self.integration.checks
        } else {
            crate::model::Checks {
                interval: crate::model::CheckInterval::Off,
                ..self.integration.checks
            }
        };
        checks.interval(self.integration.refresh_interval, plan_requests)
    }

    /// A full refresh, with its metrics and its log line. Returns whether it fully succeeded.
    pub async fn attempt(&self) -> bool {
        self.attempt_scoped(Scope::Full).await
    }

    /// One attempt at `scope`, with its metrics and its log line.
    async fn attempt_scoped(&self, scope: Scope) -> bool {
        let name = &self.integration.name;
        let requests_before = self.metrics.requests_made(name);
        let started = Instant::now();
        let in_flight = InFlight::mark(&self.state);
        let result = self.refresh(scope).await;
        drop(in_flight);
        let elapsed = started.elapsed().as_secs_f64();
        let finished = (self.clock)().timestamp_millis() as f64 / 1000.0;
        // Every AWS request attempt of this refresh: pages, forecasts, STS, retries.
        let requests = self
            .metrics
            .requests_made(name)
            .saturating_sub(requests_before);
        self.metrics
            .record_refresh(name, result.is_ok(), elapsed, finished);
        lock(&self.state).failing = result.is_err();
        // Milliseconds are enough in a log line (the duration metric has the rest).
        let duration_seconds = (elapsed * 1000.0).round() / 1000.0;
        match result {
            Ok(summary) => {
                let at = (self.clock)();
                // (a full refresh, whether AWS changed the data as the exporter sees it):
                // without change detection every full refresh counts as a change.
                let (full, changed) = match summary.check {
                    Some((Verdict::Unchanged, _)) => (false, false),
                    Some((_, differs)) => (true, differs),
                    None => (true, true),
                };
                if summary.check.is_some() || scope == Scope::Full {
                    self.metrics.record_check(name, at, full, changed);
                }
                if full {
                    tracing::info!(
                        integration = %name,
                        duration_seconds,
                        series = summary.series,
                        requests,
                        check = summary.check.map(|(verdict, _)| verdict.as_str()),
                        "refresh finished"
                    );
                } else {
                    tracing::info!(
                        integration = %name,
                        duration_seconds,
                        requests,
                        "cost data unchanged"
                    );
                }
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

    /// One attempt at `scope` holding a permit of the shared semaphore.
    async fn attempt_with_permit(&self, scope: Scope) -> bool {
        // A closed semaphore (never closed here) would only mean no cap.
        let _permit = match &self.permits {
            Some(permits) => permits.clone().acquire_owned().await.ok(),
            None => None,
        };
        self.attempt_scoped(scope).await
    }

    /// What is owed before the first regular refresh of a resumed refresher: nothing, the
    /// owed parts alone (they need neither costs nor their rows, and the served cost data
    /// still describes today's dates), or everything at once.
    fn owed_scope(&self) -> Option<Scope> {
        let state = lock(&self.state);
        state.parts.owed().next()?;
        let today = Period::new((self.clock)().date_naive(), self.data_delay_days);
        let current = state.snapshot.as_ref().is_some_and(|s| s.period == today);
        Some(if state.parts.owed_alone() && current {
            Scope::Owed
        } else {
            Scope::Full
        })
    }

    /// Refreshes soon (after a random part of the start spread; when resumed, the parts owed a
    /// fetch soon and the rest when due), then on schedule, until `shutdown` is cancelled. Each
    /// refresh holds a permit of the shared semaphore.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = self.interval(&lock(&self.state).parts);
        self.metrics.init_failures(&self.integration.name);
        let spread = self.options.start_spread.min(interval / 10);
        let mut delay = spread.mul_f64(fastrand::f64());
        let mut failures: u32 = 0;
        // When resumed: when the first regular refresh is due. Until then only the parts owed a
        // fetch run, alone.
        let mut due = self.first_due;
        loop {
            let scope = match due.map(|at| (at, self.owed_scope())) {
                None => Scope::Full,
                // Owed parts that need costs: everything, at once.
                Some((_, Some(Scope::Full))) => {
                    due = None;
                    Scope::Full
                }
                Some((at, Some(Scope::Owed))) if (self.clock)() < at => Scope::Owed,
                Some((at, _)) => {
                    // Nothing owed: the regular refresh, when due.
                    tokio::select! {
                        _ = sleep_until(&self.clock, at) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    due = None;
                    delay = spread.mul_f64(fastrand::f64());
                    failures = 0;
                    continue;
                }
            };
            // Retrying an owed part never delays the regular refresh.
            let wait = match due {
                Some(at) => delay.min((at - (self.clock)()).to_std().unwrap_or_default()),
                None => delay,
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            if due.is_some_and(|at| (self.clock)() >= at) {
                continue;
            }
            let ok = tokio::select! {
                ok = self.attempt_with_permit(scope) => ok,
                _ = shutdown.cancelled() => return,
            };
            failures = if ok { 0 } else { failures.saturating_add(1) };
            let interval = self.interval(&lock(&self.state).parts);
            delay = jittered(
                backoff(self.options.retry_min, interval, failures),
                fastrand::f64(),
            );
            if self.checks_cost_data() {
                // The data day moves at midnight UTC: check then, a moment after.
                let now = (self.clock)();
                let midnight = now
                    .date_naive()
                    .succ_opt()
                    .and_then(|day| day.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc());
                if let Some(until) = midnight.and_then(|m| (m - now).to_std().ok()) {
                    delay = delay.min(until + spread.mul_f64(fastrand::f64()));
                }
            }
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
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
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
        let Some(storage) = self.storage.clone() else {
            return;
        };
        let stored = {
            let state = lock(&self.state);
            let Some(snapshot) = &state.snapshot else {
                return;
            };
            Stored {
                integration: snapshot.integration.clone(),
                fetched_at: snapshot.fetched_at,
                period: snapshot.period,
                records: state.parts.records(snapshot.blocks()),
            }
        };
        let path = storage.snapshot_location(&self.integration.name);
        let result = tokio::task::spawn_blocking(move || storage.save_snapshot(&stored)).await;
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        tracing::warn!(
            integration = %self.integration.name,
            file = %path,
            error = %error,
            "cannot store the snapshot; a restart will refresh at once"
        );
    }
}

/// Makes a refresher of one integration, with its clients, schedule, daily cap and storage.
pub type MakeRefresher = Arc<dyn Fn() -> Refresher + Send + Sync>;

/// One integration's turns with shared storage ([`crate::lease`]): while another replica holds
/// its lease, serve the records the holder writes; while this one does, run a refresher that
/// starts from what is served. Each turn gets a new refresher, all publishing into one state.
pub struct Turns {
    integration: Integration,
    data_delay_days: u32,
    storage: Storage,
    make: MakeRefresher,
    state: Arc<Mutex<State>>,
    /// The version (ETag) of the records served, when read from storage.
    known: Option<String>,
    /// Whether the last read of the records failed (logged once per streak).
    failing: bool,
    /// The refresher running while the lease is held.
    running: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Turns {
    pub fn new(
        integration: Integration,
        data_delay_days: u32,
        storage: Storage,
        make: MakeRefresher,
        state: Arc<Mutex<State>>,
    ) -> Self {
        Self {
            integration,
            data_delay_days,
            storage,
            make,
            state,
            known: None,
            failing: false,
            running: None,
        }
    }
}

impl crate::lease::Duty for Turns {
    async fn follow(&mut self) -> bool {
        let (storage, name, known) = (
            self.storage.clone(),
            self.integration.name.clone(),
            self.known.clone(),
        );
        let (integration, data_delay_days) = (self.integration.clone(), self.data_delay_days);
        // Reading and decoding records is blocking and CPU work: off the async workers.
        let result = tokio::task::spawn_blocking(move || {
            storage
                .poll_snapshot(&name, known.as_deref())
                .map(|polled| match polled {
                    Polled::Changed(stored, etag) => Some((
                        Resumed::from_stored(&stored, &integration, data_delay_days),
                        etag,
                    )),
                    Polled::Unchanged | Polled::Missing => None,
                })
        })
        .await;
        let error = match result {
            Ok(Ok(changed)) => {
                self.failing = false;
                if let Some((resumed, etag)) = changed {
                    self.known = Some(etag);
                    if resumed.serves_anything() {
                        let refresher = (self.make)().with_state(self.state.clone());
                        let _ = refresher.resume(resumed);
                    }
                }
                return true;
            }
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        if !self.failing {
            tracing::warn!(
                integration = %self.integration.name,
                file = %self.storage.snapshot_location(&self.integration.name),
                error = %error,
                "cannot read the shared records; serving the last ones read"
            );
        }
        self.failing = true;
        false
    }

    fn lead(&mut self) {
        // From what it serves: the records read last, or its own last snapshot.
        let mut refresher = (self.make)().with_state(self.state.clone());
        let resumed =
            Resumed::from_previous(&lock(&self.state), &self.integration, self.data_delay_days);
        if let Some(resumed) = resumed.filter(Resumed::serves_anything) {
            refresher = refresher.resume(resumed);
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(refresher.run(stop.clone()));
        self.running = Some((stop, task));
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    fn busy(&self) -> bool {
        lock(&self.state).refreshing
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
    use crate::cost_explorer::CostExplorerError;
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
        let err = RefreshError::Costs(PartError::bare(&CostExplorerError::Api(denied(
            "GetCostAndUsage",
            "GetCostAndUsage",
            ID,
        ))));
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
            summary: RefreshSummary {
                series: 99_921,
                check: None,
            },
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
        let err = RefreshError::Costs(PartError::bare(&CostExplorerError::Api(denied(
            "GetCostAndUsage",
            "GetCostAndUsage",
            ID,
        ))));
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
