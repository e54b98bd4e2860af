//! A simulated Cost Explorer (AWS JSON 1.1) and STS (AWS Query) on loopback.
//!
//! It speaks the wire protocols the real AWS SDK uses, so the exporter reaches it through the
//! ordinary SDK code path with an endpoint override. It checks who signed each request (the
//! access key in SigV4's `Credential=` and the session token of temporary credentials), serves
//! each account's own data, pages results, and records every request for the tests.
//!
//! Cost Explorer's commitment and anomaly operations (Savings Plans and reservation
//! utilisation and coverage, anomalies and monitors) are served by [`super::commitments`].
//! Their data is *derived from the cost rows*, not added to them: the Savings Plans' recurring
//! commitment is the `SavingsPlanRecurringFee` rows, the commitment they used and the usage
//! they covered the `SavingsPlanCoveredUsage` rows; a reservation is a resource with `RIFee`
//! rows (its fee), whose used hours' on-demand cost is its `DiscountedUsage` rows; anomalies
//! measure `Usage` rows. So the cost data, and every figure computed from it, is unchanged,
//! and the commitment figures agree with the cost rows exactly; the formulas are in
//! [`super::commitments`]. Every Cost Explorer operation ([`is_billed`]) is billed,
//! each page a request, so [`Simulator::billed_requests`] counts them all; the faults of
//! [`Behavior`] apply to them as to every Cost Explorer operation.
//!
//! # Grouping and filtering
//!
//! `GetCostAndUsage` groups by up to two keys, each a dimension of
//! [`super::dataset::DIMENSIONS`] (`RESOURCE_ID` only in `GetCostAndUsageWithResources`), a tag
//! key (`key$value`, `key$` for untagged rows) or a cost category (`Name$value`, `Name$` for
//! uncategorised rows, as AWS writes them). Its `Filter` (and `GetCostForecast`'s and
//! `GetCostCategories`') is an `Expression` of exactly one root (`And`, `Or` of two or more,
//! `Not`, `Dimensions`, `Tags`, `CostCategories`) with the `MatchOptions` AWS documents for
//! GetCostAndUsage: `EQUALS` and `CASE_SENSITIVE` for dimensions; `EQUALS`, `ABSENT` and
//! `CASE_SENSITIVE` for tags and cost categories. A tag (category) filter with values keeps
//! rows whose value is one of them, a row without one having the empty value; `ABSENT`, or a
//! key without values, keeps rows without one; neither key nor values keeps rows without any.
//! Anything else is refused with a `ValidationException` (the simulator's `Filter::compile`), only when
//! there are rows to filter, as AWS does. `GetCostCategories` lists the cost categories, or one
//! category's values, of the rows of a period.
//!
//! # Publications
//!
//! With a schedule ([`SimulatorBuilder::publications`]), each account's dataset holds every
//! day's final amounts and is served as Cost Explorer would have published it by the time the
//! simulator's clock reads ([`SimulatorBuilder::clock`], [`Simulator::set_time`]): see
//! [`super::publications`]. The published dataset is made when a request (or
//! [`Simulator::dataset`]) first meets a new edition, under the accounts' lock, and every
//! operation reads it; without a schedule, datasets are served as given.
//!
//! Each account can be switched at run time ([`Simulator::set_behavior`]) to one of the faults
//! AWS shows ([`Behavior`]), answered in AWS's own error shapes (`x-amzn-ErrorType` and
//! `__type`, a message, an `x-amzn-RequestId` header on every answer), and back.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{Datelike, Days, NaiveDate};
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::dataset::{
    CostMetric, DIMENSIONS, Dataset, EXTRA_DIMENSIONS, SimRow, basis_index, format_units,
};
use super::publications::{Clock, Edition, Publications, fixed_clock, system_clock};

/// The cost operations the simulator serves; with [`super::commitments::OPERATIONS`], the
/// billed ones (see [`is_billed`]).
pub const COST_OPERATIONS: &[&str] = &[
    "GetCostAndUsage",
    "GetCostAndUsageWithResources",
    "GetCostForecast",
    "GetCostCategories",
];

/// Whether `operation` is one of the billed Cost Explorer operations the simulator serves:
/// every one of them costs 0.01 USD a request (a page). Organizations and STS are free.
pub fn is_billed(operation: &str) -> bool {
    COST_OPERATIONS.contains(&operation) || super::commitments::OPERATIONS.contains(&operation)
}

/// How a simulated account answers Cost Explorer (and Organizations), or STS for its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Serves its dataset.
    Normal,
    /// `AccessDeniedException` (HTTP 400) on every call.
    AccessDenied,
    /// `LimitExceededException` (throttling, HTTP 400) on the next this many calls, then
    /// normal (`usize::MAX`: until the behavior changes).
    Throttled(usize),
    /// Amounts in another currency.
    Currency(String),
    /// Answers normally, but only after this long: a slow answer, or, longer than the client's
    /// timeouts, a hang. A waiting answer ends early when the behavior changes.
    Hang(Duration),
    /// Every `GetCostAndUsage` answer (and every answer of the paged commitment and anomaly
    /// operations) is the first page with the same `NextPageToken` (`NextToken`), so a client
    /// that follows tokens never reaches the end.
    LoopingToken,
    /// HTTP 500 `InternalFailure` on every call.
    ServerError,
    /// HTTP 503 `ServiceUnavailable` on every call.
    ServiceUnavailable,
    /// HTTP 200 with a body that is not JSON.
    MalformedJson,
    /// HTTP 200 whose `Content-Length` promises the whole answer, but only its first half is
    /// sent before the connection closes.
    TruncatedBody,
    /// `ExpiredTokenException` (HTTP 400): the caller's session has expired.
    ExpiredToken,
    /// `UnrecognizedClientException` (HTTP 400): the access key is not known.
    RefusedCredentials,
    /// `InvalidSignatureException` (HTTP 400): the signature does not match (a wrong secret).
    InvalidSignature,
    /// STS refuses every AssumeRole of the account's roles (`AccessDenied`, HTTP 403); its
    /// Cost Explorer answers normally.
    AssumeRoleDenied,
}

#[derive(Debug, Clone)]
struct AccountState {
    /// What every operation serves: `base` as published at `edition` (with publications), or
    /// `base` itself.
    dataset: Arc<Dataset>,
    /// The dataset as given: every day's final amounts.
    base: Arc<Dataset>,
    /// The edition `dataset` was published at (`None`: `base` as given).
    edition: Option<Edition>,
    behavior: Behavior,
    /// Whether resource-level data is enabled (an opt-in in Cost Explorer's preferences).
    resources_enabled: bool,
    /// Operations that fail with (code, message).
    failures: HashMap<String, (String, String)>,
    /// How many more requests `behavior` applies to before it turns `Normal` (`None`: until it
    /// is changed).
    remaining: Option<usize>,
    /// Counts the changes of `behavior`, so that a hanging answer ends when it changes.
    generation: u64,
}

impl AccountState {
    fn new(mut dataset: Dataset) -> Self {
        // Queries find a day's rows by binary search.
        if !dataset.rows.is_sorted_by_key(|r| r.day) {
            dataset.rows.sort_by_key(|r| r.day);
        }
        let dataset = Arc::new(dataset);
        Self {
            base: dataset.clone(),
            dataset,
            edition: None,
            behavior: Behavior::Normal,
            resources_enabled: false,
            failures: HashMap::new(),
            remaining: None,
            generation: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct KeyState {
    secret: String,
    session_token: Option<String>,
    /// The account the identity belongs to.
    account_id: String,
}

#[derive(Debug, Clone)]
struct RoleState {
    external_id: Option<String>,
}

/// One request as it arrived, before it was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub operation: String,
    /// The access key that signed it (empty when unsigned).
    pub access_key_id: String,
    /// How many other requests were being handled when it arrived.
    pub others_in_flight: usize,
}

/// One request the simulator received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GetCostAndUsage`, `AssumeRole`, ...
    pub operation: String,
    /// The access key that signed it (empty when unsigned).
    pub access_key_id: String,
    /// The HTTP status answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct State {
    accounts: Mutex<HashMap<String, AccountState>>,
    keys: Mutex<HashMap<String, KeyState>>,
    roles: HashMap<String, RoleState>,
    page_size: usize,
    log: Mutex<Vec<LoggedRequest>>,
    issued: Mutex<u64>,
    in_flight: std::sync::atomic::AtomicUsize,
    /// The most requests ever handled at once.
    peak_in_flight: std::sync::atomic::AtomicUsize,
    /// Every request, in the order they arrived.
    arrivals: Mutex<Vec<Arrival>>,
    /// Numbers the request ids.
    request_ids: std::sync::atomic::AtomicU64,
    session_duration: Option<Duration>,
    cache: Mutex<QueryCache>,
    /// When Cost Explorer publishes (`None`: each dataset is served as given, at any time).
    publications: Option<Publications>,
    /// The clock publications are read by.
    clock: Mutex<SimClock>,
}

/// The simulator's clock: the system clock unless a test or the demo sets one.
struct SimClock(Clock);

impl Default for SimClock {
    fn default() -> Self {
        SimClock(system_clock())
    }
}

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimClock")
    }
}

impl State {
    /// What the clock reads now.
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let clock = match self.clock.lock() {
            Ok(clock) => clock.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        };
        clock()
    }

    /// The edition published now (`None` without publications).
    fn edition(&self) -> Option<Edition> {
        self.publications.as_ref().map(|p| p.edition_at(self.now()))
    }
}

/// Brings an account's served dataset to `edition` (publishing its base anew only when the
/// edition changed).
fn publish_account(
    publications: Option<&Publications>,
    edition: Option<Edition>,
    account: &mut AccountState,
) {
    let (Some(publications), Some(edition)) = (publications, edition) else {
        return;
    };
    if account.edition != Some(edition) {
        account.dataset = Arc::new(publications.publish(&account.base, edition));
        account.edition = Some(edition);
    }
}

/// Builds a [`Simulator`].
#[derive(Debug, Default)]
pub struct SimulatorBuilder {
    state: State,
}

impl SimulatorBuilder {
    /// An account whose Cost Explorer serves `dataset` (a payer sees its members' rows).
    pub fn account(self, account_id: &str, dataset: Dataset) -> Self {
        if let Ok(mut accounts) = self.state.accounts.lock() {
            accounts.insert(account_id.to_string(), AccountState::new(dataset));
        }
        self
    }

    /// Changes how an account answers Cost Explorer.
    pub fn behavior(self, account_id: &str, behavior: Behavior) -> Self {
        set_behavior(&self.state, account_id, behavior);
        self
    }

    /// Enables resource-level data (GetCostAndUsageWithResources) for an account.
    pub fn resource_level_data(self, account_id: &str) -> Self {
        update_account(&self.state, account_id, |a| a.resources_enabled = true);
        self
    }

    /// Makes one operation fail for an account with an AWS error code and message.
    pub fn fail(self, account_id: &str, operation: &str, code: &str, message: &str) -> Self {
        update_account(&self.state, account_id, |a| {
            a.failures.insert(
                operation.to_string(),
                (code.to_string(), message.to_string()),
            );
        });
        self
    }

    /// A long-lived access key of an IAM user in `account_id`.
    pub fn access_key(self, access_key_id: &str, secret: &str, account_id: &str) -> Self {
        if let Ok(mut keys) = self.state.keys.lock() {
            keys.insert(
                access_key_id.to_string(),
                KeyState {
                    secret: secret.to_string(),
                    session_token: None,
                    account_id: account_id.to_string(),
                },
            );
        }
        self
    }

    /// A role any known identity may assume, requiring `external_id` when given.
    pub fn role(mut self, account_id: &str, role_name: &str, external_id: Option<&str>) -> Self {
        self.state.roles.insert(
            format!("arn:aws:iam::{account_id}:role/{role_name}"),
            RoleState {
                external_id: external_id.map(str::to_string),
            },
        );
        self
    }

    /// Groups per page of `GetCostAndUsage` results.
    pub fn page_size(mut self, groups: usize) -> Self {
        self.state.page_size = groups.max(1);
        self
    }

    /// How long issued sessions last (default: as requested).
    pub fn session_duration(mut self, duration: Duration) -> Self {
        self.state.session_duration = Some(duration);
        self
    }

    /// Cost Explorer publishes on this schedule: every dataset holds every day's final
    /// amounts, and is served as published at the edition the clock reads (see
    /// [`crate::publications`]). Without it, datasets are served as given.
    pub fn publications(mut self, publications: Publications) -> Self {
        self.state.publications = Some(publications);
        self
    }

    /// The clock publications are read by (default: the system clock).
    pub fn clock(self, clock: Clock) -> Self {
        set_clock(&self.state, clock);
        self
    }

    /// Starts serving on 127.0.0.1 on an ephemeral port.
    pub async fn start(self) -> std::io::Result<Simulator> {
        self.start_on("127.0.0.1:0").await
    }

    /// Starts serving on `addr`, such as "127.0.0.1:18080".
    pub async fn start_on(mut self, addr: &str) -> std::io::Result<Simulator> {
        if self.state.page_size == 0 {
            self.state.page_size = 500;
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(self.state);
        let shutdown = CancellationToken::new();
        let task_state = state.clone();
        serve(listener, shutdown.clone(), move |request| {
            let state = task_state.clone();
            async move { handle(&state, request).await }
        });
        Ok(Simulator {
            addr,
            state,
            shutdown,
        })
    }
}

/// Serves HTTP/1 connections from `listener`, each request answered by `handler`, until
/// `shutdown` is cancelled.
pub(crate) fn serve<F, Fut, B>(listener: TcpListener, shutdown: CancellationToken, handler: F)
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                _ = shutdown.cancelled() => return,
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let answer = handler(request);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// A running simulated AWS; stops when dropped.
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: CancellationToken,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Simulator {
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL for both Cost Explorer and STS.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The billed Cost Explorer requests received so far: every request of
    /// [`is_billed`] operations, whatever its answer.
    pub fn billed_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| is_billed(&r.operation))
            .count()
    }

    /// An account's dataset, as served now (with publications: as published at the edition
    /// the clock reads).
    pub fn dataset(&self, account_id: &str) -> Option<Arc<Dataset>> {
        let mut accounts = self.state.accounts.lock().ok()?;
        let account = accounts.get_mut(account_id)?;
        publish_account(
            self.state.publications.as_ref(),
            self.state.edition(),
            account,
        );
        Some(account.dataset.clone())
    }

    /// An account's dataset as given to the builder: every day's final amounts, before any
    /// publication.
    pub fn base_dataset(&self, account_id: &str) -> Option<Arc<Dataset>> {
        let accounts = self.state.accounts.lock().ok()?;
        accounts.get(account_id).map(|a| a.base.clone())
    }

    /// The publication schedule, if any.
    pub fn publications(&self) -> Option<&Publications> {
        self.state.publications.as_ref()
    }

    /// What has been published now: `None` without publications.
    pub fn edition(&self) -> Option<Edition> {
        self.state.edition()
    }

    /// What the simulator's clock reads now.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.state.now()
    }

    /// Replaces the clock publications are read by.
    pub fn set_clock(&self, clock: Clock) {
        set_clock(&self.state, clock);
    }

    /// Pins the clock at `at` (until it is set again).
    pub fn set_time(&self, at: chrono::DateTime<chrono::Utc>) {
        set_clock(&self.state, fixed_clock(at));
    }

    /// Requests being handled right now (a request whose client went away is not).
    pub fn in_flight(&self) -> usize {
        self.state
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most requests that were ever handled at once.
    pub fn peak_in_flight(&self) -> usize {
        self.state
            .peak_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every request received, in arrival order, including those not answered yet and those
    /// whose client went away.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state
            .arrivals
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Every temporary credential the simulated STS has issued so far, in no particular order:
    /// (access key id, secret access key, session token). Tests look for them in the
    /// exporter's output.
    pub fn issued_sessions(&self) -> Vec<(String, String, String)> {
        let Ok(keys) = self.state.keys.lock() else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|(id, key)| {
                let token = key.session_token.clone()?;
                Some((id.clone(), key.secret.clone(), token))
            })
            .collect()
    }

    /// Makes one operation fail for an account with an AWS error code and message from now
    /// on (as [`SimulatorBuilder::fail`]), or, with `None`, answer again.
    pub fn set_failure(&self, account_id: &str, operation: &str, failure: Option<(&str, &str)>) {
        update_account(&self.state, account_id, |a| match failure {
            Some((code, message)) => {
                a.failures.insert(
                    operation.to_string(),
                    (code.to_string(), message.to_string()),
                );
            }
            None => {
                a.failures.remove(operation);
            }
        });
    }

    /// Changes how an account answers Cost Explorer from now on.
    pub fn set_behavior(&self, account_id: &str, behavior: Behavior) {
        set_behavior(&self.state, account_id, behavior);
    }

    /// Changes how an account answers for the next `requests` requests the behavior applies
    /// to (its Cost Explorer and Organizations calls; for [`Behavior::AssumeRoleDenied`], the
    /// AssumeRole calls of its roles), then turns it back to [`Behavior::Normal`]. A fault
    /// that lasts exactly as many requests as one refresh makes (the SDK's retries included)
    /// fails exactly one refresh.
    pub fn set_behavior_for(&self, account_id: &str, behavior: Behavior, requests: usize) {
        update_account(&self.state, account_id, |a| {
            a.behavior = behavior;
            a.remaining = Some(requests);
            a.generation += 1;
        });
    }
}

fn set_clock(state: &State, clock: Clock) {
    match state.clock.lock() {
        Ok(mut current) => current.0 = clock,
        Err(poisoned) => poisoned.into_inner().0 = clock,
    }
}

fn set_behavior(state: &State, account_id: &str, behavior: Behavior) {
    update_account(state, account_id, |a| {
        a.behavior = behavior;
        a.remaining = None;
        a.generation += 1;
    });
}

/// The behavior one request of `account_id` meets, counted against a limited behavior when
/// `applies` says the behavior concerns this request; the behavior's generation.
fn take_behavior(
    state: &State,
    account_id: &str,
    applies: impl Fn(&Behavior) -> bool,
) -> (Behavior, u64) {
    let Ok(mut accounts) = state.accounts.lock() else {
        return (Behavior::Normal, 0);
    };
    let Some(account) = accounts.get_mut(account_id) else {
        return (Behavior::Normal, 0);
    };
    let behavior = account.behavior.clone();
    let generation = account.generation;
    if !applies(&behavior) {
        return (Behavior::Normal, generation);
    }
    if let Some(remaining) = &mut account.remaining {
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            account.behavior = Behavior::Normal;
            account.remaining = None;
        }
    }
    (behavior, generation)
}

/// The account an access key belongs to.
fn account_of(state: &State, access_key_id: &str) -> Option<String> {
    Some(
        state
            .keys
            .lock()
            .ok()?
            .get(access_key_id)?
            .account_id
            .clone(),
    )
}

/// The generation of an account's behavior.
fn generation_of(state: &State, account_id: &str) -> Option<u64> {
    Some(state.accounts.lock().ok()?.get(account_id)?.generation)
}

fn update_account(state: &State, account_id: &str, update: impl FnOnce(&mut AccountState)) {
    if let Ok(mut accounts) = state.accounts.lock() {
        update(
            accounts
                .entry(account_id.to_string())
                .or_insert_with(|| AccountState::new(Dataset::default())),
        );
    }
}

struct Caller {
    account_id: String,
}

/// A response body: whole, or cut short of its `Content-Length`.
#[derive(Debug)]
pub(crate) enum SimBody {
    /// The whole body, of known length.
    Whole(Option<Bytes>),
    /// Part of a body whose `Content-Length` header promises more: of unknown length to the
    /// server. After the part, a pause (so that the server sends what it has), then the end,
    /// short of the promised length, on which the server closes the connection.
    Truncated(Option<Bytes>, std::pin::Pin<Box<tokio::time::Sleep>>),
}

impl SimBody {
    fn truncated(part: Bytes) -> Self {
        SimBody::Truncated(
            Some(part),
            Box::pin(tokio::time::sleep(Duration::from_millis(20))),
        )
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        use std::future::Future;
        use std::task::Poll;
        match self.get_mut() {
            SimBody::Whole(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            SimBody::Truncated(data, pause) => match data.take() {
                Some(part) => Poll::Ready(Some(Ok(Frame::data(part)))),
                None => pause.as_mut().poll(cx).map(|()| None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Whole(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            SimBody::Truncated(..) => SizeHint::default(),
        }
    }
}

/// Counts a request in flight while it lives: a handler dropped because its client went away
/// is no longer in flight.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        use std::sync::atomic::Ordering;
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn handle<B>(state: &State, request: Request<B>) -> Response<SimBody>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _in_flight = InFlight::enter(state);
    let (response, truncate) = handle_request(state, request).await;
    let (mut parts, body) = response.into_parts();
    if truncate && parts.status == StatusCode::OK {
        // The whole length promised, half of it sent.
        parts
            .headers
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        let half = body.slice(..body.len() / 2);
        return Response::from_parts(parts, SimBody::truncated(half));
    }
    Response::from_parts(parts, SimBody::Whole(Some(body)))
}

/// Waits `duration`, or until the account's behavior is changed.
async fn hang(state: &State, account_id: &str, duration: Duration, generation: u64) {
    let deadline = tokio::time::Instant::now() + duration;
    while generation_of(state, account_id) == Some(generation) {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return;
        }
        tokio::time::sleep((deadline - now).min(Duration::from_millis(10))).await;
    }
}

/// A request id in AWS's format, distinct for every request.
fn request_id(state: &State) -> String {
    let serial = state
        .request_ids
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{serial:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        fastrand::u16(..0x1000)
    )
}

/// The answer, and whether its body is to be cut short.
async fn handle_request<B>(state: &State, request: Request<B>) -> (Response<Bytes>, bool)
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, 1 << 20).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return (
                plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
                false,
            );
        }
    };
    let access_key_id = signing_key(&parts.headers).unwrap_or_default();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let id = request_id(state);
    let arrived = |operation: &str| {
        let in_flight = state.in_flight.load(std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut arrivals) = state.arrivals.lock() {
            arrivals.push(Arrival {
                operation: operation.to_string(),
                access_key_id: access_key_id.clone(),
                others_in_flight: in_flight.saturating_sub(1),
            });
        }
    };
    let (operation, mut response, truncate) = match target {
        Some(target) => {
            let operation = target.rsplit('.').next().unwrap_or_default().to_string();
            arrived(&operation);
            let account_id = account_of(state, &access_key_id).unwrap_or_default();
            let (behavior, generation) =
                take_behavior(state, &account_id, |b| *b != Behavior::AssumeRoleDenied);
            if let Behavior::Hang(duration) = behavior {
                hang(state, &account_id, duration, generation).await;
            }
            let truncate = behavior == Behavior::TruncatedBody;
            let response = json_api(
                state,
                &operation,
                &parts.headers,
                &access_key_id,
                &body,
                behavior,
            );
            (operation, response, truncate)
        }
        None => {
            let form: HashMap<String, String> =
                form_urlencoded::parse(&body).into_owned().collect();
            let operation = form.get("Action").cloned().unwrap_or_default();
            arrived(&operation);
            let response = sts(
                state,
                &operation,
                &parts.headers,
                &access_key_id,
                &form,
                &id,
            );
            (operation, response, false)
        }
    };
    if let Ok(value) = http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    if let Ok(mut log) = state.log.lock() {
        log.push(LoggedRequest {
            operation,
            access_key_id,
            status: response.status().as_u16(),
        });
    }
    (response, truncate)
}

/// The access key id from a SigV4 `Authorization` header.
fn signing_key(headers: &http::HeaderMap) -> Option<String> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    Some(credential.split('/').next()?.to_string())
}

/// Who signed: the key must be known, and temporary keys must carry their session token.
fn authenticate(
    state: &State,
    headers: &http::HeaderMap,
    access_key_id: &str,
) -> Result<Caller, (String, String)> {
    let keys = state
        .keys
        .lock()
        .map_err(|_| ("InternalFailure".to_string(), "lock".to_string()))?;
    let Some(key) = keys.get(access_key_id) else {
        return Err((
            "UnrecognizedClientException".into(),
            "The security token included in the request is invalid.".into(),
        ));
    };
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    if key.session_token.as_deref() != token {
        return Err((
            "UnrecognizedClientException".into(),
            "The security token included in the request is invalid.".into(),
        ));
    }
    // Guard against a key whose secret was never handed out.
    if key.secret.is_empty() {
        return Err(("InvalidSignatureException".into(), "bad signature".into()));
    }
    Ok(Caller {
        account_id: key.account_id.clone(),
    })
}

/// Cost Explorer and Organizations, both AWS JSON 1.1.
fn json_api(
    state: &State,
    operation: &str,
    headers: &http::HeaderMap,
    access_key_id: &str,
    body: &[u8],
    behavior: Behavior,
) -> Response<Bytes> {
    let caller = match authenticate(state, headers, access_key_id) {
        Ok(caller) => caller,
        Err((code, message)) => return json_error(StatusCode::BAD_REQUEST, &code, &message),
    };
    let throttled = state.accounts.lock().ok().is_some_and(|mut accounts| {
        match accounts
            .get_mut(&caller.account_id)
            .map(|a| &mut a.behavior)
        {
            Some(Behavior::Throttled(remaining)) if *remaining > 0 => {
                *remaining -= 1;
                true
            }
            _ => false,
        }
    });
    if throttled {
        return json_error(
            StatusCode::BAD_REQUEST,
            "LimitExceededException",
            "Rate exceeded",
        );
    }
    let account = state.accounts.lock().ok().and_then(|mut accounts| {
        let account = accounts.get_mut(&caller.account_id)?;
        // The clock is read under the lock: requests see editions in the clock's order.
        publish_account(state.publications.as_ref(), state.edition(), account);
        Some(account.clone())
    });
    let Some(mut account) = account else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            &format!(
                "User: arn:aws:iam::{}:user/cost-exporter is not authorized to perform: ce:{operation}",
                caller.account_id
            ),
        );
    };
    // What this request meets (a limited behavior may have ended since).
    account.behavior = behavior;
    match &account.behavior {
        Behavior::AccessDenied => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                // As AWS words it today: the identity, the action, the resource, and which kind
                // of policy is missing (long enough that a log line has to cut it).
                &format!(
                    "User: arn:aws:iam::{0}:user/cost-exporter is not authorized to perform: ce:{operation} on resource: arn:aws:ce:us-east-1:{0}:/{operation} because no identity-based policy allows the ce:{operation} action",
                    caller.account_id
                ),
            );
        }
        Behavior::ServerError => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                "The request processing has failed because of an unknown error, exception or failure.",
            );
        }
        Behavior::ServiceUnavailable => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            );
        }
        Behavior::ExpiredToken => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            );
        }
        Behavior::RefusedCredentials => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
        }
        Behavior::InvalidSignature => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
            );
        }
        Behavior::MalformedJson => {
            let mut response = Response::new(Bytes::from_static(
                b"{\"ResultsByTime\":[{\"Estimated\":tru<html>502 Bad Gateway</html>",
            ));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            return response;
        }
        Behavior::Normal
        | Behavior::Currency(_)
        | Behavior::Hang(_)
        | Behavior::Throttled(_)
        | Behavior::LoopingToken
        | Behavior::TruncatedBody
        | Behavior::AssumeRoleDenied => {}
    }
    if let Some((code, message)) = account.failures.get(operation) {
        return json_error(StatusCode::BAD_REQUEST, code, message);
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(err) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                &err.to_string(),
            );
        }
    };
    let unit = match &account.behavior {
        Behavior::Currency(unit) => unit.as_str(),
        _ => "USD",
    };
    let result: Result<String, ApiError> = match operation {
        "GetCostAndUsage" => {
            get_cost_and_usage(state, &caller.account_id, &account, &request, unit, false)
        }
        "GetCostAndUsageWithResources" if !account.resources_enabled => Err(validation(
            "Resource-level data is not enabled for this account. Opt in from the Cost Explorer Settings page.",
        )),
        "GetCostAndUsageWithResources" => {
            get_cost_and_usage(state, &caller.account_id, &account, &request, unit, true)
        }
        "GetCostForecast" => {
            get_cost_forecast(&account.dataset, &request, unit).map(|v| v.to_string())
        }
        "GetCostCategories" => {
            get_cost_categories(state, &account, &request).map(|v| v.to_string())
        }
        other if super::commitments::OPERATIONS.contains(&other) => super::commitments::serve(
            other,
            &super::commitments::Context {
                caller: &caller.account_id,
                dataset: &account.dataset,
                page_size: state.page_size,
                looping: account.behavior == Behavior::LoopingToken,
            },
            &request,
        )
        .map(|v| v.to_string()),
        "ListAccounts" => {
            list_accounts(&caller.account_id, &account.dataset, &request).map(|v| v.to_string())
        }
        other => Err(validation(&format!("operation {other} is not simulated"))),
    };
    match result {
        Ok(body) => {
            let mut response = Response::new(Bytes::from(body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            response
        }
        Err((code, message)) => json_error(StatusCode::BAD_REQUEST, &code, &message),
    }
}

pub(super) type ApiError = (String, String);

pub(super) fn validation(message: &str) -> ApiError {
    ("ValidationException".to_string(), message.to_string())
}

/// A request's required `TimePeriod` as `[Start, End)`, Start before End.
pub(super) fn time_period(request: &Value) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let period = request
        .get("TimePeriod")
        .ok_or_else(|| validation("TimePeriod is required"))?;
    let start = date_field(period, "Start")?;
    let end = date_field(period, "End")?;
    if start >= end {
        return Err(validation(
            "Start date (inclusive) must be before End date (exclusive)",
        ));
    }
    Ok((start, end))
}

pub(super) fn date_field(value: &Value, field: &str) -> Result<NaiveDate, ApiError> {
    let text = value
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| validation(&format!("TimePeriod.{field} is required")))?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| validation(&format!("TimePeriod.{field} {text:?} is invalid")))
}

/// Every dimension of Cost Explorer's API model (its `Dimension` enum): a `Dimensions`
/// expression with another key is refused as AWS refuses a value outside an enum.
const AWS_DIMENSIONS: &[&str] = &[
    "AGREEMENT_END_DATE_TIME_AFTER",
    "AGREEMENT_END_DATE_TIME_BEFORE",
    "ANOMALY_TOTAL_IMPACT_ABSOLUTE",
    "ANOMALY_TOTAL_IMPACT_PERCENTAGE",
    "AZ",
    "BILLING_ENTITY",
    "CACHE_ENGINE",
    "DATABASE_ENGINE",
    "DEPLOYMENT_OPTION",
    "INSTANCE_TYPE",
    "INSTANCE_TYPE_FAMILY",
    "INVOICING_ENTITY",
    "LEGAL_ENTITY_NAME",
    "LINKED_ACCOUNT",
    "LINKED_ACCOUNT_NAME",
    "OPERATING_SYSTEM",
    "OPERATION",
    "PAYER_ACCOUNT",
    "PAYMENT_OPTION",
    "PLATFORM",
    "PRODUCT_ATTRIBUTE",
    "PURCHASE_TYPE",
    "RECORD_TYPE",
    "REGION",
    "RESERVATION_ID",
    "RESOURCE_ID",
    "RIGHTSIZING_TYPE",
    "SAVINGS_PLANS_TYPE",
    "SAVINGS_PLAN_ARN",
    "SCOPE",
    "SERVICE",
    "SERVICE_CODE",
    "SUBSCRIPTION_ID",
    "TENANCY",
    "USAGE_TYPE",
    "USAGE_TYPE_GROUP",
];

/// Every match option of Cost Explorer's API model (its `MatchOption` enum).
const AWS_MATCH_OPTIONS: &[&str] = &[
    "ABSENT",
    "CASE_INSENSITIVE",
    "CASE_SENSITIVE",
    "CONTAINS",
    "ENDS_WITH",
    "EQUALS",
    "GREATER_THAN_OR_EQUAL",
    "STARTS_WITH",
];

/// Every group type of Cost Explorer's API model (its `GroupDefinitionType` enum).
const AWS_GROUP_TYPES: &[&str] = &["COST_CATEGORY", "DIMENSION", "PRODUCT_ATTRIBUTE", "TAG"];

/// The error AWS answers for a value outside one of its model's enums.
fn enum_error(value: &str, path: &str, allowed: &[&str]) -> ApiError {
    validation(&format!(
        "1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: \
         Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    ))
}

/// A dimension the simulator knows: those of [`super::dataset::DIMENSIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dimension {
    LinkedAccount,
    Service,
    RecordType,
    ResourceId,
    /// The dimension of [`EXTRA_DIMENSIONS`] at this index.
    Extra(usize),
}

impl Dimension {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "LINKED_ACCOUNT" => Dimension::LinkedAccount,
            "SERVICE" => Dimension::Service,
            "RECORD_TYPE" => Dimension::RecordType,
            "RESOURCE_ID" => Dimension::ResourceId,
            _ => Dimension::Extra(EXTRA_DIMENSIONS.iter().position(|d| *d == name)?),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Dimension::LinkedAccount => "LINKED_ACCOUNT",
            Dimension::Service => "SERVICE",
            Dimension::RecordType => "RECORD_TYPE",
            Dimension::ResourceId => "RESOURCE_ID",
            Dimension::Extra(index) => EXTRA_DIMENSIONS[index],
        }
    }

    /// The row's value: empty for a row without a resource.
    fn value(self, row: &SimRow) -> &str {
        match self {
            Dimension::LinkedAccount => row.account_id(),
            Dimension::Service => row.service(),
            Dimension::RecordType => row.record_type(),
            Dimension::ResourceId => row.resource_id().unwrap_or_default(),
            Dimension::Extra(index) => row.extra_dimension_interned(index),
        }
    }

    /// The row's interned value (`None`: empty).
    fn interned(self, row: &SimRow) -> Option<&Arc<str>> {
        match self {
            Dimension::LinkedAccount => Some(row.account_id_interned()),
            Dimension::Service => Some(row.service_interned()),
            Dimension::RecordType => Some(row.record_type_interned()),
            Dimension::ResourceId => row.resource_id_interned(),
            Dimension::Extra(index) => Some(row.extra_dimension_interned(index)),
        }
    }
}

/// A `GroupBy` key: a dimension, a tag key, or a cost category.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GroupKey {
    Dimension(Dimension),
    Tag(String),
    CostCategory(String),
}

impl GroupKey {
    /// The row's interned value of this key (`None`: none).
    fn interned<'r>(&self, row: &'r SimRow) -> Option<&'r Arc<str>> {
        match self {
            GroupKey::Dimension(d) => d.interned(row),
            GroupKey::Tag(k) => row.tag_interned(k),
            GroupKey::CostCategory(c) => row.cost_category_interned(c),
        }
    }

    /// What identifies the row's value of this key within a dataset: the address of the
    /// interned string (0: none). Equal strings of one dataset share an address.
    fn identity(&self, row: &SimRow) -> usize {
        self.interned(row).map_or(0, |s| s.as_ptr() as usize)
    }

    /// The `Type` and `Key` of the key's `GroupDefinition`.
    fn definition(&self) -> (&'static str, &str) {
        match self {
            GroupKey::Dimension(d) => ("DIMENSION", d.name()),
            GroupKey::Tag(t) => ("TAG", t),
            GroupKey::CostCategory(c) => ("COST_CATEGORY", c),
        }
    }

    /// A request's `GroupBy` keys, checked as Cost Explorer checks them: at most two, each of
    /// a type of the model; dimensions of [`DIMENSIONS`] (RESOURCE_ID only with resources);
    /// tag keys and cost category names not empty (a key no row has groups every row under
    /// `key$`, as AWS does).
    fn parse_all(request: &Value, with_resources: bool) -> Result<Vec<GroupKey>, ApiError> {
        let Some(groups) = request.get("GroupBy").and_then(Value::as_array) else {
            return Ok(Vec::new());
        };
        if groups.len() > 2 {
            return Err(validation("You can only group by up to two dimensions"));
        }
        let mut keys = Vec::new();
        for (n, group) in groups.iter().enumerate() {
            let kind = group
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let key = group.get("Key").and_then(Value::as_str).unwrap_or_default();
            if !AWS_GROUP_TYPES.contains(&kind) {
                return Err(enum_error(
                    kind,
                    &format!("groupBy.{}.member.type", n + 1),
                    AWS_GROUP_TYPES,
                ));
            }
            keys.push(match (kind, Dimension::parse(key)) {
                ("DIMENSION", Some(d)) if d != Dimension::ResourceId || with_resources => {
                    GroupKey::Dimension(d)
                }
                ("DIMENSION", None) if !AWS_DIMENSIONS.contains(&key) => {
                    return Err(validation(&format!(
                        "Invalid group by dimension key {key:?}: valid values for the DIMENSION \
                         type are {}",
                        DIMENSIONS
                            .iter()
                            .filter(|d| with_resources || **d != "RESOURCE_ID")
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                ("TAG" | "COST_CATEGORY", _) if key.is_empty() => {
                    return Err(validation(&format!("GroupBy {kind} requires a Key")));
                }
                ("TAG", _) => GroupKey::Tag(key.to_string()),
                ("COST_CATEGORY", _) => GroupKey::CostCategory(key.to_string()),
                _ => {
                    return Err(validation(&format!(
                        "GroupBy {kind} {key} is not simulated"
                    )));
                }
            });
        }
        Ok(keys)
    }
}

/// The values of a `Dimensions` expression.
#[derive(Debug)]
enum ValueSet {
    Few(Vec<Box<str>>),
    Many(HashSet<Box<str>>),
}

impl ValueSet {
    fn new(values: Vec<&str>) -> Self {
        if values.len() <= 8 {
            ValueSet::Few(values.into_iter().map(Box::from).collect())
        } else {
            ValueSet::Many(values.into_iter().map(Box::from).collect())
        }
    }

    fn contains(&self, value: &str) -> bool {
        match self {
            ValueSet::Few(values) => values.iter().any(|v| **v == *value),
            ValueSet::Many(values) => values.contains(value),
        }
    }
}

/// What a `Tags` or `CostCategories` expression on one key keeps.
#[derive(Debug)]
enum LabelTest {
    /// Rows whose value of the key is one of these; a row without one has the empty value.
    Equals(ValueSet),
    /// Rows without a value of the key (untagged, or uncategorised).
    Absent,
}

impl LabelTest {
    fn matches(&self, value: Option<&Arc<str>>) -> bool {
        match self {
            LabelTest::Equals(values) => values.contains(value.map_or("", |v| &**v)),
            LabelTest::Absent => value.is_none(),
        }
    }
}

/// The roots an `Expression` may have, as AWS's error message lists them.
const EXPRESSION_ROOTS: &str = "And, Or, Not, Dimensions, Tags, CostCategories";

/// A Cost Explorer filter `Expression`, checked and compiled once per request.
#[derive(Debug)]
enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Dimension(Dimension, ValueSet),
    /// A tag key and its test; `None`: rows without any tag.
    Tag(Option<(Box<str>, LabelTest)>),
    /// A cost category and its test; `None`: rows in no cost category.
    CostCategory(Option<(Box<str>, LabelTest)>),
}

impl Filter {
    /// Checks an expression as Cost Explorer checks GetCostAndUsage's: every error, in the
    /// order the parts appear.
    fn compile(expression: &Value) -> Result<Filter, ApiError> {
        Filter::compile_at(expression, "filter")
    }

    /// Compiles the expression at `path` (as AWS names a member in its validation errors,
    /// such as `filter.and.2.member.dimensions.key`).
    fn compile_at(expression: &Value, path: &str) -> Result<Filter, ApiError> {
        let object = expression
            .as_object()
            .ok_or_else(|| validation("Filter must be an object"))?;
        if object.len() > 1 {
            return Err(validation(&format!(
                "Expression has more than one roots. Only one root operator is allowed for each \
                 expression: {EXPRESSION_ROOTS}"
            )));
        }
        let Some((kind, inner)) = object.iter().next() else {
            return Err(validation(&format!(
                "Expression has no root. One root operator is required for each expression: \
                 {EXPRESSION_ROOTS}"
            )));
        };
        match kind.as_str() {
            "And" | "Or" => {
                let items = inner
                    .as_array()
                    .ok_or_else(|| validation("And/Or takes a list"))?;
                if items.len() < 2 {
                    return Err(validation("And/Or needs at least two expressions"));
                }
                let member = kind.to_lowercase();
                let filters = items
                    .iter()
                    .enumerate()
                    .map(|(n, item)| {
                        Filter::compile_at(item, &format!("{path}.{member}.{}.member", n + 1))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if kind == "And" {
                    Filter::And(filters)
                } else {
                    Filter::Or(filters)
                })
            }
            "Not" => Ok(Filter::Not(Box::new(Filter::compile_at(
                inner,
                &format!("{path}.not"),
            )?))),
            "Dimensions" => {
                let path = format!("{path}.dimensions");
                let key = inner
                    .get("Key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| validation("Dimensions.Key is required"))?;
                if !AWS_DIMENSIONS.contains(&key) {
                    return Err(enum_error(key, &format!("{path}.key"), AWS_DIMENSIONS));
                }
                match_options(inner, &path, "Dimensions", &["EQUALS"])?;
                let dimension = Dimension::parse(key).ok_or_else(|| match key {
                    "LINKED_ACCOUNT_NAME" | "SERVICE_CODE" => validation(&format!(
                        "Dimension {key} can only be used in CostCategoryRule"
                    )),
                    _ => validation(&format!("dimension {key} is not simulated")),
                })?;
                Ok(Filter::Dimension(dimension, ValueSet::new(values(inner))))
            }
            "Tags" | "CostCategories" => {
                let member = if kind == "Tags" {
                    "tags"
                } else {
                    "costCategories"
                };
                let path = format!("{path}.{member}");
                let key = match inner.get("Key") {
                    None => None,
                    Some(key) => Some(
                        key.as_str()
                            .filter(|k| !k.is_empty())
                            .ok_or_else(|| validation(&format!("{kind}.Key must not be empty")))?,
                    ),
                };
                let (equals, absent) = match_options(inner, &path, kind, &["EQUALS", "ABSENT"])?;
                let values = values(inner);
                let test = if equals && absent {
                    return Err(validation(&format!(
                        "MatchOptions EQUALS and ABSENT cannot be combined in {kind}"
                    )));
                } else if absent && !values.is_empty() {
                    return Err(validation(&format!(
                        "{kind} with MatchOptions ABSENT takes no Values"
                    )));
                } else if equals && values.is_empty() {
                    return Err(validation(&format!(
                        "{kind} with MatchOptions EQUALS requires Values"
                    )));
                } else if values.is_empty() {
                    // AWS: without Values, ABSENT applies to the key (or without a key, to all
                    // keys).
                    LabelTest::Absent
                } else {
                    LabelTest::Equals(ValueSet::new(values))
                };
                let keyed = match (key, test) {
                    (Some(key), test) => Some((Box::from(key), test)),
                    (None, LabelTest::Absent) => None,
                    (None, LabelTest::Equals(_)) => {
                        return Err(validation(&format!("{kind}.Key is required with Values")));
                    }
                };
                Ok(if kind == "Tags" {
                    Filter::Tag(keyed)
                } else {
                    Filter::CostCategory(keyed)
                })
            }
            other => Err(validation(&format!("filter {other} is not simulated"))),
        }
    }

    /// Compiles a request's optional `Filter` for the rows it would apply to. Cost Explorer
    /// reports a bad filter only when there is a row to apply it to, so with no rows an
    /// invalid filter is no filter.
    fn for_rows(request: &Value, rows: &[SimRow]) -> Result<Option<Filter>, ApiError> {
        match request.get("Filter").map(Filter::compile) {
            None => Ok(None),
            Some(Ok(filter)) => Ok(Some(filter)),
            Some(Err(err)) if !rows.is_empty() => Err(err),
            Some(Err(_)) => Ok(None),
        }
    }

    fn matches(&self, row: &SimRow) -> bool {
        match self {
            Filter::And(filters) => filters.iter().all(|f| f.matches(row)),
            Filter::Or(filters) => filters.iter().any(|f| f.matches(row)),
            Filter::Not(filter) => !filter.matches(row),
            Filter::Dimension(dimension, values) => values.contains(dimension.value(row)),
            Filter::Tag(Some((key, test))) => test.matches(row.tag_interned(key)),
            Filter::Tag(None) => row.tags().next().is_none(),
            Filter::CostCategory(Some((name, test))) => {
                test.matches(row.cost_category_interned(name))
            }
            Filter::CostCategory(None) => row.cost_categories().next().is_none(),
        }
    }
}

/// The string `Values` of a `Dimensions`, `Tags` or `CostCategories` expression (others are
/// ignored).
fn values(inner: &Value) -> Vec<&str> {
    inner
        .get("Values")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Checks the `MatchOptions` of a `kind` expression at `path`: each of the model's, and of
/// those GetCostAndUsage takes for it: for `Dimensions`, EQUALS and CASE_SENSITIVE; for
/// `Tags` and `CostCategories`, EQUALS, ABSENT and CASE_SENSITIVE. Whether each of `kinds`
/// (the options other than CASE_SENSITIVE) is given, in their order.
fn match_options(
    inner: &Value,
    path: &str,
    kind: &str,
    kinds: &[&str],
) -> Result<(bool, bool), ApiError> {
    let Some(options) = inner.get("MatchOptions") else {
        return Ok((false, false));
    };
    let options = options
        .as_array()
        .ok_or_else(|| validation(&format!("{kind}.MatchOptions takes a list")))?;
    let mut given = (false, false);
    for option in options {
        let option = option.as_str().unwrap_or_default();
        if !AWS_MATCH_OPTIONS.contains(&option) {
            return Err(enum_error(
                option,
                &format!("{path}.matchOptions"),
                AWS_MATCH_OPTIONS,
            ));
        }
        match kinds.iter().position(|k| *k == option) {
            Some(0) => given.0 = true,
            Some(_) => given.1 = true,
            None if option == "CASE_SENSITIVE" => {}
            None => {
                let mut valid: Vec<&str> = kinds.to_vec();
                valid.push("CASE_SENSITIVE");
                return Err(validation(&format!(
                    "MatchOptions {option} is not supported for {kind}: valid values for \
                     MatchOptions for {kind} are {}",
                    valid.join(", ")
                )));
            }
        }
    }
    Ok(given)
}

/// The result periods for `[start, end)`: days, or months cut at month boundaries.
pub(super) fn periods(
    start: NaiveDate,
    end: NaiveDate,
    granularity: &str,
) -> Result<Vec<(NaiveDate, NaiveDate)>, ApiError> {
    let mut out = Vec::new();
    let mut cursor = start;
    while cursor < end {
        let next = match granularity {
            "DAILY" => cursor + Days::new(1),
            "MONTHLY" => {
                let (y, m) = if cursor.month() == 12 {
                    (cursor.year() + 1, 1)
                } else {
                    (cursor.year(), cursor.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)
                    .ok_or_else(|| validation("date out of range"))?
                    .min(end)
            }
            other => return Err(validation(&format!("Granularity {other} is not supported"))),
        };
        out.push((cursor, next));
        cursor = next;
    }
    Ok(out)
}

/// Sums in 1e-10 USD, indexed like [`CostMetric::ALL`] (only the requested bases are summed).
type Sums = [i128; 5];

/// A group's labels, one per `GroupBy` key, and its sums.
type Group = (Box<[Arc<str>]>, Sums);

/// One entry of a query's result, in result order: per period, its groups in key order (or
/// one marker for a period without groups), or its total when ungrouped.
#[derive(Debug)]
enum Entry {
    Empty(usize),
    Group(usize, Box<[Arc<str>]>, Sums),
    Total(usize, Sums),
}

impl Entry {
    fn period(&self) -> usize {
        match self {
            Entry::Empty(i) | Entry::Group(i, ..) | Entry::Total(i, _) => *i,
        }
    }
}

/// A hasher for pairs of interned-string addresses.
#[derive(Debug, Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // Addresses are aligned: mix every bit into the low ones the table indexes by.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Computes a query's entries: only the rows of its periods' days are read; rows are grouped
/// by the identity of their interned values, and the groups' strings made once per group.
fn aggregate(
    dataset: &Dataset,
    periods: &[(NaiveDate, NaiveDate)],
    filter: Option<&Filter>,
    group_keys: &[GroupKey],
    metrics: &[(String, CostMetric)],
) -> Vec<Entry> {
    let mut bases: Vec<usize> = metrics.iter().map(|(_, b)| basis_index(*b)).collect();
    bases.sort_unstable();
    bases.dedup();
    let add = |sums: &mut Sums, row: &SimRow| {
        for &b in &bases {
            sums[b] += i128::from(row.amounts[b]);
        }
    };
    let empty: Arc<str> = Arc::from("");
    // "key$value" labels of tag and cost category groups, by (key, value identity).
    let mut labels: HashMap<(usize, usize), Arc<str>> = HashMap::new();
    let mut entries = Vec::new();
    for (index, &(from, to)) in periods.iter().enumerate() {
        let rows = dataset
            .day_rows(from, to)
            .iter()
            .filter(|r| filter.is_none_or(|f| f.matches(r)));
        if group_keys.is_empty() {
            let mut total = [0; 5];
            for row in rows {
                add(&mut total, row);
            }
            entries.push(Entry::Total(index, total));
            continue;
        }
        let mut groups: HashMap<(usize, usize), Group, _> =
            HashMap::with_hasher(BuildHasherDefault::<AddressHasher>::default());
        for row in rows {
            let first = group_keys[0].identity(row);
            let second = group_keys.get(1).map_or(0, |k| k.identity(row));
            let (_, sums) = groups.entry((first, second)).or_insert_with(|| {
                let labels = group_keys
                    .iter()
                    .enumerate()
                    .map(|(k, key)| match key {
                        GroupKey::Dimension(d) => d.interned(row).unwrap_or(&empty).clone(),
                        GroupKey::Tag(name) | GroupKey::CostCategory(name) => labels
                            .entry((k, key.identity(row)))
                            .or_insert_with(|| {
                                let value = key.interned(row).map_or("", |v| &**v);
                                Arc::from(format!("{name}${value}"))
                            })
                            .clone(),
                    })
                    .collect();
                (labels, [0; 5])
            });
            add(sums, row);
        }
        if groups.is_empty() {
            entries.push(Entry::Empty(index));
            continue;
        }
        let mut groups: Vec<Group> = groups.into_values().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Equal strings from different allocations (never in a generated dataset) are one group.
        groups.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                for (k, l) in kept.1.iter_mut().zip(later.1) {
                    *k += l;
                }
            }
            same
        });
        entries.extend(
            groups
                .into_iter()
                .map(|(keys, sums)| Entry::Group(index, keys, sums)),
        );
    }
    entries
}

/// Computed entries of recent queries, so that paging through a long result computes it
/// once. Only the sums are kept: amounts and units are written per page.
#[derive(Debug, Default)]
struct QueryCache {
    /// Most recently used first.
    queries: VecDeque<CachedQuery>,
}

#[derive(Debug)]
struct CachedQuery {
    account_id: String,
    dataset: Arc<Dataset>,
    with_resources: bool,
    /// The request without its NextPageToken, as fingerprinted.
    source: String,
    entries: Arc<Vec<Entry>>,
}

/// At most this many queries are cached...
const CACHED_QUERIES: usize = 8;
/// ...holding at most this many entries together.
const CACHED_ENTRIES: usize = 1_000_000;

impl QueryCache {
    fn get(
        &mut self,
        account_id: &str,
        dataset: &Arc<Dataset>,
        with_resources: bool,
        source: &str,
    ) -> Option<Arc<Vec<Entry>>> {
        let position = self.queries.iter().position(|q| {
            q.account_id == account_id
                && Arc::ptr_eq(&q.dataset, dataset)
                && q.with_resources == with_resources
                && q.source == source
        })?;
        let query = self.queries.remove(position)?;
        let entries = query.entries.clone();
        self.queries.push_front(query);
        Some(entries)
    }

    fn insert(&mut self, query: CachedQuery) {
        if query.entries.len() > CACHED_ENTRIES {
            return;
        }
        self.queries.push_front(query);
        self.queries.truncate(CACHED_QUERIES);
        while self.queries.iter().map(|q| q.entries.len()).sum::<usize>() > CACHED_ENTRIES {
            self.queries.pop_back();
        }
    }
}

fn get_cost_and_usage(
    state: &State,
    account_id: &str,
    account: &AccountState,
    request: &Value,
    unit: &str,
    with_resources: bool,
) -> Result<String, ApiError> {
    let dataset = &account.dataset;
    let (start, end) = time_period(request)?;
    if with_resources {
        let today = dataset.today.unwrap_or(start);
        if start < today - Days::new(13) {
            return Err(validation(
                "Resource-level data is available only for the last 14 days",
            ));
        }
        if request.get("Filter").is_none() {
            return Err(validation("GetCostAndUsageWithResources requires a Filter"));
        }
    }
    let granularity = request
        .get("Granularity")
        .and_then(Value::as_str)
        .ok_or_else(|| validation("Granularity is required"))?;
    let metric_names: Vec<&str> = request
        .get("Metrics")
        .and_then(Value::as_array)
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if metric_names.is_empty() {
        return Err(validation("Metrics is required"));
    }
    let mut metrics = Vec::new();
    for name in metric_names {
        let basis = CostMetric::from_name(name)
            .ok_or_else(|| validation(&format!("Metric {name} is not supported")))?;
        metrics.push((name.to_string(), basis));
    }
    let group_keys = GroupKey::parse_all(request, with_resources)?;
    let token = request.get("NextPageToken").and_then(Value::as_str);
    let periods = periods(start, end, granularity)?;
    let filter = Filter::for_rows(request, dataset.day_rows(start, end))?;

    let (source, fingerprint) = fingerprint(request);
    let cached = state
        .cache
        .lock()
        .ok()
        .and_then(|mut cache| cache.get(account_id, dataset, with_resources, &source));
    let entries = match cached {
        Some(entries) => entries,
        None => {
            let entries = Arc::new(aggregate(
                dataset,
                &periods,
                filter.as_ref(),
                &group_keys,
                &metrics,
            ));
            // A result of one page is not asked for again by token.
            if entries.len() > state.page_size
                && let Ok(mut cache) = state.cache.lock()
            {
                cache.insert(CachedQuery {
                    account_id: account_id.to_string(),
                    dataset: dataset.clone(),
                    with_resources,
                    source,
                    entries: entries.clone(),
                });
            }
            entries
        }
    };

    let offset = token_offset(token, &fingerprint, entries.len())?;
    // A looping account answers the first page, always with the same token.
    let looping = !with_resources && account.behavior == Behavior::LoopingToken;
    let offset = if looping { 0 } else { offset };
    let page_end = (offset + state.page_size).min(entries.len());
    let token = (looping || page_end < entries.len()).then(|| format!("{page_end}.{fingerprint}"));
    Ok(render_page(
        &Page {
            dataset,
            periods: &periods,
            group_keys: &group_keys,
            metrics: &metrics,
            unit,
        },
        &entries[offset..page_end],
        token.as_deref(),
    ))
}

/// Paging: a token is the offset of a page and the fingerprint of the request it belongs to.
/// The request without its `NextPageToken`, as written, and its fingerprint.
fn fingerprint(request: &Value) -> (String, String) {
    let mut fingerprint_source = request.clone();
    if let Some(object) = fingerprint_source.as_object_mut() {
        object.remove("NextPageToken");
    }
    let source = fingerprint_source.to_string();
    let mut hasher = DefaultHasher::new();
    source.hash(&mut hasher);
    let fingerprint = format!("{:016x}", hasher.finish());
    (source, fingerprint)
}

/// The offset a `NextPageToken` names (0 without one): a token of the request of
/// `fingerprint`, within its `len` entries.
fn token_offset(token: Option<&str>, fingerprint: &str, len: usize) -> Result<usize, ApiError> {
    let offset = match token {
        None => 0,
        Some(token) => {
            let (offset, print) = token
                .split_once('.')
                .ok_or_else(|| validation("invalid NextPageToken"))?;
            if print != fingerprint {
                return Err(validation("NextPageToken does not belong to this request"));
            }
            offset
                .parse::<usize>()
                .map_err(|_| validation("invalid NextPageToken"))?
        }
    };
    if offset > len {
        return Err(validation("invalid NextPageToken"));
    }
    Ok(offset)
}

/// GetCostCategories: the names of the cost categories of the rows of `TimePeriod` that the
/// `Filter` keeps (those with cost: a name or value without a row is not listed), or with
/// `CostCategoryName`, that category's values; in alphabetical order, each `SearchString`
/// (case-insensitive substring) keeps; paged by the simulator's page size (`NextPageToken`),
/// with `ReturnSize` (on the page) and `TotalSize` (all). With `SortBy` (cost metrics, summed
/// over the rows), one page of at most `MaxResults` (1 to 1000, default 1000), without
/// `NextPageToken` or `SearchString`, as AWS documents; without it, `MaxResults` is ignored.
fn get_cost_categories(
    state: &State,
    account: &AccountState,
    request: &Value,
) -> Result<Value, ApiError> {
    let dataset = &account.dataset;
    let (start, end) = time_period(request)?;
    let name = match request.get("CostCategoryName") {
        None => None,
        Some(name) => Some(
            name.as_str()
                .filter(|n| (1..=50).contains(&n.chars().count()))
                .ok_or_else(|| {
                    validation("CostCategoryName must be from 1 to 50 characters long")
                })?,
        ),
    };
    let search = request.get("SearchString").and_then(Value::as_str);
    let token = request.get("NextPageToken").and_then(Value::as_str);
    let max_results = match request.get("MaxResults") {
        None => 1000,
        Some(max) => match max.as_u64() {
            Some(n @ 1..=1000) => n as usize,
            _ => return Err(validation("MaxResults must be from 1 to 1000")),
        },
    };
    // (metric index, descending) of each SortBy definition.
    let mut sort = Vec::new();
    for definition in request
        .get("SortBy")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = definition
            .get("Key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let basis = match key {
            "UsageQuantity" | "NormalizedUsageAmount" => {
                return Err(validation(&format!("SortBy {key} is not simulated")));
            }
            _ => CostMetric::from_name(key).ok_or_else(|| {
                validation(&format!(
                    "SortBy Key {key:?} is invalid: the supported values are BlendedCost, \
                     UnblendedCost, AmortizedCost, NetAmortizedCost, NetUnblendedCost, \
                     UsageQuantity and NormalizedUsageAmount"
                ))
            })?,
        };
        let descending = match definition.get("SortOrder").and_then(Value::as_str) {
            None | Some("ASCENDING") => false,
            Some("DESCENDING") => true,
            Some(other) => {
                return Err(enum_error(
                    other,
                    "sortBy.member.sortOrder",
                    &["ASCENDING", "DESCENDING"],
                ));
            }
        };
        sort.push((basis_index(basis), descending));
    }
    if !sort.is_empty() && (token.is_some() || search.is_some()) {
        return Err(validation(
            "When you use the SortBy value, the NextPageToken and SearchString key values \
             aren't supported",
        ));
    }
    let rows = dataset.day_rows(start, end);
    let filter = Filter::for_rows(request, rows)?;
    let mut objects: BTreeMap<&str, Sums> = BTreeMap::new();
    fn add<'a>(objects: &mut BTreeMap<&'a str, Sums>, object: &'a str, row: &SimRow) {
        let sums = objects.entry(object).or_insert([0; 5]);
        for (sum, amount) in sums.iter_mut().zip(row.amounts) {
            *sum += i128::from(amount);
        }
    }
    for row in rows
        .iter()
        .filter(|r| filter.as_ref().is_none_or(|f| f.matches(r)))
    {
        match name {
            None => {
                for (category, _) in row.cost_categories() {
                    add(&mut objects, category, row);
                }
            }
            Some(name) => {
                if let Some(value) = row.cost_category(name) {
                    add(&mut objects, value, row);
                }
            }
        }
    }
    let search = search.map(str::to_lowercase);
    let mut objects: Vec<(&str, Sums)> = objects
        .into_iter()
        .filter(|(object, _)| {
            search
                .as_ref()
                .is_none_or(|s| object.to_lowercase().contains(s.as_str()))
        })
        .collect();
    let total = objects.len();
    let (objects, next) = if sort.is_empty() {
        let (_, fingerprint) = fingerprint(request);
        let offset = token_offset(token, &fingerprint, total)?;
        let looping = account.behavior == Behavior::LoopingToken;
        let offset = if looping { 0 } else { offset };
        let end = (offset + state.page_size).min(total);
        let next = (looping || end < total).then(|| format!("{end}.{fingerprint}"));
        (&objects[offset..end], next)
    } else {
        objects.sort_by(|a, b| {
            for &(basis, descending) in &sort {
                let order = a.1[basis].cmp(&b.1[basis]);
                let order = if descending { order.reverse() } else { order };
                if order.is_ne() {
                    return order;
                }
            }
            a.0.cmp(b.0)
        });
        (&objects[..total.min(max_results)], None)
    };
    let list: Vec<&str> = objects.iter().map(|(object, _)| *object).collect();
    let mut response = json!({
        "ReturnSize": list.len(),
        "TotalSize": total,
    });
    let field = if name.is_some() {
        "CostCategoryValues"
    } else {
        "CostCategoryNames"
    };
    response[field] = json!(list);
    if let Some(next) = next {
        response["NextPageToken"] = Value::String(next);
    }
    Ok(response)
}

/// What a page of a query's answer is written with.
struct Page<'a> {
    dataset: &'a Dataset,
    periods: &'a [(NaiveDate, NaiveDate)],
    group_keys: &'a [GroupKey],
    metrics: &'a [(String, CostMetric)],
    unit: &'a str,
}

/// Writes one page of a GetCostAndUsage answer: `entries`, the periods they belong to, the
/// names of the accounts they group by, and the token of the next page.
///
/// The JSON is written directly rather than built as a `Value` (which took most of a page's
/// time), exactly as serde_json writes the equivalent `Value`: object keys in sorted order,
/// strings escaped alike.
fn render_page(page: &Page<'_>, entries: &[Entry], token: Option<&str>) -> String {
    // The members of a metrics object in key order, each name once, as they begin: `"Name":
    // {"Amount":"`; the amount follows, then the unit.
    let mut names: Vec<&(String, CostMetric)> = page.metrics.iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    names.dedup_by(|a, b| a.0 == b.0);
    let members: Vec<(String, usize)> = names
        .iter()
        .map(|(name, basis)| {
            let mut member = String::new();
            write_json_str(&mut member, name);
            member.push_str(":{\"Amount\":\"");
            (member, basis_index(*basis))
        })
        .collect();
    let mut unit = String::from("\",\"Unit\":");
    write_json_str(&mut unit, page.unit);
    unit.push('}');
    let write_metrics = |out: &mut String, sums: &Sums| {
        out.push('{');
        for (n, (member, basis)) in members.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(member);
            // Digits, '.', '-' and 'E': nothing to escape.
            out.push_str(&format_units(sums[*basis]));
            out.push_str(&unit);
        }
        out.push('}');
    };

    let mut accounts_seen = std::collections::BTreeSet::new();
    let mut results = String::new();
    let mut start = 0;
    while let Some(first) = entries.get(start) {
        let index = first.period();
        let end = entries[start..]
            .iter()
            .position(|e| e.period() != index)
            .map_or(entries.len(), |n| start + n);
        let (from, to) = page.periods[index];
        // A period is Estimated while any of its days is.
        let estimated = page.dataset.is_estimated(to.pred_opt().unwrap_or(from));
        if start > 0 {
            results.push(',');
        }
        results.push_str(if estimated {
            "{\"Estimated\":true,\"Groups\":["
        } else {
            "{\"Estimated\":false,\"Groups\":["
        });
        let mut total = None;
        let mut groups = 0;
        for entry in &entries[start..end] {
            match entry {
                Entry::Empty(_) => {}
                Entry::Total(_, sums) => total = Some(sums),
                Entry::Group(_, keys, sums) => {
                    for (key, value) in page.group_keys.iter().zip(keys) {
                        if *key == GroupKey::Dimension(Dimension::LinkedAccount) {
                            accounts_seen.insert(&**value);
                        }
                    }
                    if groups > 0 {
                        results.push(',');
                    }
                    groups += 1;
                    results.push_str("{\"Keys\":[");
                    for (n, key) in keys.iter().enumerate() {
                        if n > 0 {
                            results.push(',');
                        }
                        write_json_str(&mut results, key);
                    }
                    results.push_str("],\"Metrics\":");
                    write_metrics(&mut results, sums);
                    results.push('}');
                }
            }
        }
        results.push_str(&format!(
            "],\"TimePeriod\":{{\"End\":\"{}\",\"Start\":\"{}\"}},\"Total\":",
            to.format("%Y-%m-%d"),
            from.format("%Y-%m-%d")
        ));
        match total {
            Some(sums) => write_metrics(&mut results, sums),
            None => results.push_str("{}"),
        }
        results.push('}');
        start = end;
    }

    let mut out = String::with_capacity(results.len() + 256);
    out.push_str("{\"DimensionValueAttributes\":[");
    for (n, id) in accounts_seen.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str("{\"Attributes\":{\"description\":");
        write_json_str(
            &mut out,
            page.dataset.accounts.get(*id).map_or("", String::as_str),
        );
        out.push_str("},\"Value\":");
        write_json_str(&mut out, id);
        out.push('}');
    }
    out.push_str("],\"GroupDefinitions\":[");
    for (n, key) in page.group_keys.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let (kind, name) = key.definition();
        out.push_str("{\"Key\":");
        write_json_str(&mut out, name);
        out.push_str(",\"Type\":");
        write_json_str(&mut out, kind);
        out.push('}');
    }
    out.push(']');
    if let Some(token) = token {
        out.push_str(",\"NextPageToken\":");
        write_json_str(&mut out, token);
    }
    out.push_str(",\"ResultsByTime\":[");
    out.push_str(&results);
    out.push_str("]}");
    out
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it: quote, backslash and
/// control characters only.
fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `i` is a character boundary.
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{byte:04x}"));
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

fn get_cost_forecast(dataset: &Dataset, request: &Value, unit: &str) -> Result<Value, ApiError> {
    let period = request
        .get("TimePeriod")
        .ok_or_else(|| validation("TimePeriod is required"))?;
    let start = date_field(period, "Start")?;
    let end = date_field(period, "End")?;
    let today = dataset.today.ok_or_else(|| validation("no data"))?;
    if start < today {
        return Err(validation(
            "Start date must be equal to or later than the current date",
        ));
    }
    if start >= end {
        return Err(validation(
            "Start date (inclusive) must be before End date (exclusive)",
        ));
    }
    let metric = request
        .get("Metric")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let basis = CostMetric::from_forecast_name(metric)
        .ok_or_else(|| validation(&format!("Metric {metric:?} is not supported")))?;
    let granularity = request
        .get("Granularity")
        .and_then(Value::as_str)
        .unwrap_or("MONTHLY");
    let interval = request
        .get("PredictionIntervalLevel")
        .and_then(Value::as_i64)
        .is_some();
    let filter = Filter::for_rows(request, &dataset.rows)?;
    let keep = |row: &SimRow| filter.as_ref().is_none_or(|f| f.matches(row));
    let mut total = 0i128;
    let mut results = Vec::new();
    for (from, to) in periods(start, end, granularity)? {
        let (mean, lower, upper) = dataset.forecast_units(basis, from, to, keep);
        total += mean;
        let mut result = json!({
            "TimePeriod": {"Start": from.format("%Y-%m-%d").to_string(), "End": to.format("%Y-%m-%d").to_string()},
            "MeanValue": format_units(mean),
        });
        if interval {
            result["PredictionIntervalLowerBound"] = Value::String(format_units(lower));
            result["PredictionIntervalUpperBound"] = Value::String(format_units(upper));
        }
        results.push(result);
    }
    Ok(json!({
        "Total": {"Amount": format_units(total), "Unit": unit},
        "ForecastResultsByTime": results,
    }))
}

/// Organizations' ListAccounts, for a management account: two accounts a page.
fn list_accounts(caller: &str, dataset: &Dataset, request: &Value) -> Result<Value, ApiError> {
    if dataset.accounts.len() < 2 || !dataset.accounts.contains_key(caller) {
        return Err((
            "AWSOrganizationsNotInUseException".into(),
            "Your account is not a member of an organization.".into(),
        ));
    }
    // Organizations serves at most 20 accounts a page (MaxResults, 1 to 20); without it, a
    // smaller page.
    let page = match request.get("MaxResults") {
        None => 2,
        Some(max) => match max.as_u64() {
            Some(n @ 1..=20) => n as usize,
            _ => {
                return Err((
                    "InvalidInputException".to_string(),
                    "MaxResults must be from 1 to 20".to_string(),
                ));
            }
        },
    };
    let offset = match request.get("NextToken").and_then(Value::as_str) {
        None => 0,
        Some(token) => token
            .strip_prefix("accounts-")
            .and_then(|o| o.parse::<usize>().ok())
            .ok_or_else(|| {
                (
                    "InvalidInputException".to_string(),
                    "invalid NextToken".to_string(),
                )
            })?,
    };
    let accounts: Vec<Value> = dataset
        .accounts
        .iter()
        .skip(offset)
        .take(page)
        .map(|(id, name)| {
            json!({
                "Id": id,
                "Arn": format!("arn:aws:organizations::{caller}:account/o-simulated/{id}"),
                "Email": format!("aws+{id}@example.com"),
                "Name": name,
                "Status": "ACTIVE",
                "JoinedMethod": if id == caller { "CREATED" } else { "INVITED" },
                "JoinedTimestamp": 1.7e9,
            })
        })
        .collect();
    let mut response = json!({ "Accounts": accounts });
    if offset + page < dataset.accounts.len() {
        response["NextToken"] = Value::String(format!("accounts-{}", offset + page));
    }
    Ok(response)
}

fn sts(
    state: &State,
    operation: &str,
    headers: &http::HeaderMap,
    access_key_id: &str,
    form: &HashMap<String, String>,
    request_id: &str,
) -> Response<Bytes> {
    let caller = match authenticate(state, headers, access_key_id) {
        Ok(caller) => caller,
        Err((code, message)) => {
            return xml_error(StatusCode::FORBIDDEN, &code, &message, request_id);
        }
    };
    if operation != "AssumeRole" {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("{operation} is not simulated"),
            request_id,
        );
    }
    let role_arn = form.get("RoleArn").cloned().unwrap_or_default();
    let denied = || {
        xml_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            &format!(
                "User: arn:aws:iam::{}:user/exporter is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                caller.account_id
            ),
            request_id,
        )
    };
    let Some(role) = state.roles.get(&role_arn) else {
        return denied();
    };
    let role_account = role_arn.split(':').nth(4).unwrap_or_default();
    let (behavior, _) = take_behavior(state, role_account, |b| *b == Behavior::AssumeRoleDenied);
    if behavior == Behavior::AssumeRoleDenied {
        return denied();
    }
    if role.external_id.is_some() && role.external_id.as_ref() != form.get("ExternalId") {
        return denied();
    }
    let Some(account_id) = role_arn.split(':').nth(4).map(str::to_string) else {
        return denied();
    };
    let requested = form
        .get("DurationSeconds")
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(3600);
    let duration = state
        .session_duration
        .unwrap_or(Duration::from_secs(requested));
    let serial = match state.issued.lock() {
        Ok(mut issued) => {
            *issued += 1;
            *issued
        }
        Err(_) => {
            return xml_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                "lock",
                request_id,
            );
        }
    };
    let access_key = format!("ASIASIMULATED{serial:07}");
    let secret = format!("simulated-secret-{serial}-{}", fastrand::u64(..));
    let token = format!("simulated-session-token-{serial}-{}", fastrand::u64(..));
    if let Ok(mut keys) = state.keys.lock() {
        keys.insert(
            access_key.clone(),
            KeyState {
                secret: secret.clone(),
                session_token: Some(token.clone()),
                account_id: account_id.clone(),
            },
        );
    }
    let expiration = aws_smithy_types::DateTime::from(SystemTime::now() + duration)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default();
    let session = form.get("RoleSessionName").cloned().unwrap_or_default();
    let body = format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <AssumeRoleResult>\n    <AssumedRoleUser>\n      \
         <AssumedRoleId>AROASIMULATED:{session}</AssumedRoleId>\n      <Arn>arn:aws:sts::{account_id}:assumed-role/{}/{session}</Arn>\n    \
         </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>{access_key}</AccessKeyId>\n      <SecretAccessKey>{secret}</SecretAccessKey>\n      \
         <SessionToken>{token}</SessionToken>\n      <Expiration>{expiration}</Expiration>\n    </Credentials>\n  </AssumeRoleResult>\n  \
         <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\n</AssumeRoleResponse>\n",
        role_arn.rsplit('/').next().unwrap_or_default()
    );
    let mut response = Response::new(Bytes::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    response
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Bytes> {
    let body = json!({"__type": code, "Message": message}).to_string();
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(value) = http::HeaderValue::from_str(code) {
        headers.insert("x-amzn-errortype", value);
    }
    response
}

fn xml_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<Bytes> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>Sender</Type>\n    \
         <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{}</RequestId>\n</ErrorResponse>\n",
        escape(code),
        escape(message),
        escape(request_id)
    );
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    response
}

fn plain(status: StatusCode, message: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(message.as_bytes()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Instant;

    use super::*;
    use crate::DatasetSpec;
    use http_body_util::Full;

    const KEY: &str = "AKIATESTPAYR1EXAMPLE";
    const EC2: &str = "Amazon Elastic Compute Cloud - Compute";

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn today() -> NaiveDate {
        day(2026, 11, 23)
    }

    const ORG: &[(&str, &str)] = &[
        ("111111111111", "Management"),
        ("333333333333", "Production"),
        ("444444444444", "Staging"),
        ("555555555555", "Data \"Lake\" \\ Analytics\nTeam\u{1} é"),
    ];

    /// An organization with the demo's cost categories (Team and Environment).
    fn org() -> Dataset {
        Dataset::generate_with_cost_categories(
            &DatasetSpec {
                seed: 11,
                accounts: ORG,
                today: today(),
                history_days: 45,
                estimated_days: 2,
                scale: 1.0,
                idle_accounts: &[("666666666666", "Sandbox")],
            },
            &crate::demo_cost_categories(ORG),
        )
    }

    /// A simulator's state, to call its HTTP handler without a socket.
    fn state(page_size: usize, behavior: Behavior) -> State {
        Simulator::builder()
            .account("111111111111", org())
            .access_key(KEY, "secret", "111111111111")
            .resource_level_data("111111111111")
            .behavior("111111111111", behavior)
            .page_size(page_size)
            .state
    }

    async fn call_with(state: &State, key: &str, operation: &str, body: &Value) -> (u16, Value) {
        let request = Request::post("/")
            .header(
                header::AUTHORIZATION,
                format!(
                    "AWS4-HMAC-SHA256 Credential={key}/20261123/us-east-1/ce/aws4_request, \
                     SignedHeaders=host;x-amz-target, Signature=00"
                ),
            )
            .header(
                "x-amz-target",
                format!("AWSInsightsIndexService.{operation}"),
            )
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = handle(state, request).await;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    async fn call(state: &State, operation: &str, body: &Value) -> (u16, Value) {
        call_with(state, KEY, operation, body).await
    }

    /// Every page of a query, following tokens.
    async fn pages(state: &State, operation: &str, request: &Value) -> Vec<Value> {
        let mut request = request.clone();
        let mut pages = Vec::new();
        loop {
            let (status, page) = call(state, operation, &request).await;
            assert_eq!(status, 200, "{page}");
            let token = page.get("NextPageToken").cloned();
            pages.push(page);
            match token {
                Some(token) => request["NextPageToken"] = token,
                None => return pages,
            }
            assert!(pages.len() < 10_000, "paging does not end");
        }
    }

    fn query(start: &str, end: &str, granularity: &str, group_by: &[(&str, &str)]) -> Value {
        let group_by: Vec<Value> = group_by
            .iter()
            .map(|(kind, key)| json!({"Type": kind, "Key": key}))
            .collect();
        json!({
            "TimePeriod": {"Start": start, "End": end},
            "Granularity": granularity,
            "Metrics": ["UnblendedCost", "AmortizedCost"],
            "GroupBy": group_by,
        })
    }

    /// The filter semantics, walked per row: an independent model of what Cost Explorer keeps
    /// (and refuses), with the messages the simulator answers.
    fn reference_matches(expression: &Value, row: &SimRow) -> Result<bool, ApiError> {
        reference_matches_at(expression, row, "filter")
    }

    fn reference_matches_at(
        expression: &Value,
        row: &SimRow,
        path: &str,
    ) -> Result<bool, ApiError> {
        let roots = "And, Or, Not, Dimensions, Tags, CostCategories";
        let object = expression
            .as_object()
            .ok_or_else(|| validation("Filter must be an object"))?;
        if object.len() > 1 {
            return Err(validation(&format!(
                "Expression has more than one roots. Only one root operator is allowed for each \
                 expression: {roots}"
            )));
        }
        if object.is_empty() {
            return Err(validation(&format!(
                "Expression has no root. One root operator is required for each expression: \
                 {roots}"
            )));
        }
        let (kind, inner) = object.iter().next().unwrap();
        let strings = |field: &str| -> Vec<&str> {
            inner
                .get(field)
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        };
        let option_error = |option: &str, path: &str| {
            validation(&format!(
                "1 validation error detected: Value '{option}' at '{path}.matchOptions' failed to \
                 satisfy constraint: Member must satisfy enum value set: [ABSENT, \
                 CASE_INSENSITIVE, CASE_SENSITIVE, CONTAINS, ENDS_WITH, EQUALS, \
                 GREATER_THAN_OR_EQUAL, STARTS_WITH]"
            ))
        };
        let known_options = [
            "ABSENT",
            "CASE_INSENSITIVE",
            "CASE_SENSITIVE",
            "CONTAINS",
            "ENDS_WITH",
            "EQUALS",
            "GREATER_THAN_OR_EQUAL",
            "STARTS_WITH",
        ];
        match kind.as_str() {
            "And" | "Or" => {
                let items = inner
                    .as_array()
                    .ok_or_else(|| validation("And/Or takes a list"))?;
                if items.len() < 2 {
                    return Err(validation("And/Or needs at least two expressions"));
                }
                let mut results = Vec::new();
                for (n, item) in items.iter().enumerate() {
                    let path = format!("{path}.{}.{}.member", kind.to_lowercase(), n + 1);
                    results.push(reference_matches_at(item, row, &path)?);
                }
                Ok(if kind == "And" {
                    results.iter().all(|r| *r)
                } else {
                    results.iter().any(|r| *r)
                })
            }
            "Not" => Ok(!reference_matches_at(inner, row, &format!("{path}.not"))?),
            "Dimensions" => {
                let path = format!("{path}.dimensions");
                let key = inner
                    .get("Key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| validation("Dimensions.Key is required"))?;
                if !AWS_DIMENSIONS.contains(&key) {
                    return Err(validation(&format!(
                        "1 validation error detected: Value '{key}' at '{path}.key' failed to \
                         satisfy constraint: Member must satisfy enum value set: [{}]",
                        AWS_DIMENSIONS.join(", ")
                    )));
                }
                for option in inner["MatchOptions"].as_array().into_iter().flatten() {
                    let option = option.as_str().unwrap_or_default();
                    if !known_options.contains(&option) {
                        return Err(option_error(option, &path));
                    }
                    if !["EQUALS", "CASE_SENSITIVE"].contains(&option) {
                        return Err(validation(&format!(
                            "MatchOptions {option} is not supported for Dimensions: valid values \
                             for MatchOptions for Dimensions are EQUALS, CASE_SENSITIVE"
                        )));
                    }
                }
                if ["LINKED_ACCOUNT_NAME", "SERVICE_CODE"].contains(&key) {
                    return Err(validation(&format!(
                        "Dimension {key} can only be used in CostCategoryRule"
                    )));
                }
                let actual = row
                    .dimension(key)
                    .ok_or_else(|| validation(&format!("dimension {key} is not simulated")))?;
                Ok(strings("Values").contains(&actual))
            }
            "Tags" | "CostCategories" => {
                let member = if kind == "Tags" {
                    "tags"
                } else {
                    "costCategories"
                };
                let path = format!("{path}.{member}");
                let key = match inner.get("Key") {
                    None => None,
                    Some(Value::String(key)) if !key.is_empty() => Some(key.as_str()),
                    Some(_) => return Err(validation(&format!("{kind}.Key must not be empty"))),
                };
                let mut options = BTreeSet::new();
                for option in inner["MatchOptions"].as_array().into_iter().flatten() {
                    let option = option.as_str().unwrap_or_default();
                    if !known_options.contains(&option) {
                        return Err(option_error(option, &path));
                    }
                    if !["EQUALS", "ABSENT", "CASE_SENSITIVE"].contains(&option) {
                        return Err(validation(&format!(
                            "MatchOptions {option} is not supported for {kind}: valid values for \
                             MatchOptions for {kind} are EQUALS, ABSENT, CASE_SENSITIVE"
                        )));
                    }
                    options.insert(option);
                }
                let values = strings("Values");
                if options.contains("EQUALS") && options.contains("ABSENT") {
                    return Err(validation(&format!(
                        "MatchOptions EQUALS and ABSENT cannot be combined in {kind}"
                    )));
                }
                if options.contains("ABSENT") && !values.is_empty() {
                    return Err(validation(&format!(
                        "{kind} with MatchOptions ABSENT takes no Values"
                    )));
                }
                if options.contains("EQUALS") && values.is_empty() {
                    return Err(validation(&format!(
                        "{kind} with MatchOptions EQUALS requires Values"
                    )));
                }
                let pairs: Vec<(&str, &str)> = if kind == "Tags" {
                    row.tags().collect()
                } else {
                    row.cost_categories().collect()
                };
                match key {
                    // No key: ABSENT for every key.
                    None if values.is_empty() => Ok(pairs.is_empty()),
                    None => Err(validation(&format!("{kind}.Key is required with Values"))),
                    Some(key) => {
                        let value = pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
                        Ok(if values.is_empty() {
                            value.is_none()
                        } else {
                            values.contains(&value.unwrap_or(""))
                        })
                    }
                }
            }
            other => Err(validation(&format!("filter {other} is not simulated"))),
        }
    }

    fn dimension(key: &str, values: &[&str]) -> Value {
        json!({"Dimensions": {"Key": key, "Values": values}})
    }

    fn filters() -> Vec<Value> {
        let many: Vec<String> = (0..40).map(|i| format!("{i:012}")).collect();
        let mut many: Vec<&str> = many.iter().map(String::as_str).collect();
        many.push("444444444444");
        vec![
            dimension("RECORD_TYPE", &["Usage"]),
            dimension("SERVICE", &[EC2, "Tax"]),
            dimension("LINKED_ACCOUNT", &many),
            dimension("RESOURCE_ID", &[""]),
            dimension("RESOURCE_ID", &[]),
            json!({"Dimensions": {"Key": "SERVICE", "Values": [EC2, 7, null]}}),
            json!({"Dimensions": {"Key": "SERVICE"}}),
            json!({"And": [dimension("LINKED_ACCOUNT", &["333333333333"]), dimension("SERVICE", &[EC2])]}),
            json!({"Or": [dimension("RECORD_TYPE", &["Credit"]), {"Not": dimension("LINKED_ACCOUNT", &["111111111111"])}, dimension("SERVICE", &["Tax"])]}),
            json!({"Not": {"And": [dimension("RECORD_TYPE", &["Usage", "Refund"]), {"Or": [dimension("SERVICE", &[EC2]), dimension("LINKED_ACCOUNT", &["555555555555"])]}]}}),
            // Valid since AZ is simulated, and Tags and CostCategories without Key and Values
            // mean ABSENT for every key (untagged, uncategorised rows), as AWS documents.
            json!({"And": [dimension("SERVICE", &[EC2]), {"Tags": {}}]}),
            json!({"And": [dimension("AZ", &["x"]), {"Tags": {}}]}),
            json!({"Not": dimension("AZ", &["x"])}),
            json!({"CostCategories": {}}),
            // The other dimensions.
            dimension("REGION", &["us-east-1", "global"]),
            dimension("REGION", &["NoRegion"]),
            dimension("AZ", &["NoAZ"]),
            dimension("INSTANCE_TYPE", &["m5.large", "db.r6g.large", "t3.medium"]),
            dimension("PURCHASE_TYPE", &["Savings Plans", "Spot Instances"]),
            dimension("PLATFORM", &["Windows"]),
            dimension("TENANCY", &["Shared"]),
            dimension("DATABASE_ENGINE", &["PostgreSQL"]),
            json!({"Dimensions": {"Key": "OPERATION", "Values": ["RunInstances", "Invoke"], "MatchOptions": ["EQUALS", "CASE_SENSITIVE"]}}),
            json!({"Not": {"Dimensions": {"Key": "USAGE_TYPE", "Values": ["NoUsageType"], "MatchOptions": ["CASE_SENSITIVE"]}}}),
            // Tags: a value, the empty value of untagged rows, ABSENT.
            json!({"Tags": {"Key": "team", "Values": ["platform", "web \"frontend\""]}}),
            json!({"Tags": {"Key": "team", "Values": ["data", ""], "MatchOptions": ["EQUALS"]}}),
            json!({"Tags": {"Key": "env", "MatchOptions": ["ABSENT"]}}),
            json!({"Tags": {"Key": "env"}}),
            json!({"Tags": {"Key": "team", "Values": ["Platform"], "MatchOptions": ["CASE_SENSITIVE", "EQUALS"]}}),
            json!({"Tags": {"MatchOptions": ["ABSENT"]}}),
            json!({"And": [{"Tags": {"Key": "nonexistent", "Values": [""]}}, dimension("RECORD_TYPE", &["Credit"])]}),
            // Cost categories likewise.
            json!({"CostCategories": {"Key": "Team", "Values": ["Platform", "Data"]}}),
            json!({"CostCategories": {"Key": "Team", "Values": [""]}}),
            json!({"CostCategories": {"Key": "Environment", "MatchOptions": ["ABSENT"]}}),
            json!({"Not": {"CostCategories": {"Key": "Environment", "Values": ["Production"], "MatchOptions": ["EQUALS", "CASE_SENSITIVE"]}}}),
            json!({"CostCategories": {"Key": "Nonexistent", "Values": ["x"]}}),
            json!({"And": [
                {"Or": [{"Tags": {"Key": "team", "Values": ["platform"]}}, {"CostCategories": {"Key": "Environment", "Values": ["Staging"]}}]},
                {"Not": dimension("REGION", &["global", "NoRegion"])},
                {"CostCategories": {"MatchOptions": ["ABSENT"], "Key": "Nonexistent"}},
            ]}),
            // Invalid expressions.
            json!([1]),
            json!({}),
            json!({"Dimensions": {"Key": "SERVICE", "Values": []}, "Not": {}}),
            json!({"And": 3}),
            json!({"Or": [dimension("SERVICE", &[EC2])]}),
            json!({"And": [dimension("SERVICE", &[EC2]), {"Tags": {"Values": ["x"]}}]}),
            json!({"And": [dimension("BILLING_ENTITY", &["x"]), {"Tags": {}}]}),
            json!({"Not": {"Dimensions": {"Values": ["x"]}}}),
            json!({"Not": dimension("BILLING_ENTITY", &["x"])}),
            json!({"CostCategories": {"Values": ["x"]}}),
            json!({"And": []}),
            json!({"Tags": {"Key": "team", "Values": ["x"]}, "CostCategories": {"Key": "Team", "Values": ["x"]}}),
            dimension("NOT_A_DIMENSION", &["x"]),
            dimension("region", &["us-east-1"]),
            json!({"And": [dimension("SERVICE", &[EC2]), {"Not": {"Or": [dimension("AZ", &["x"]), dimension("Region", &["x"])]}}]}),
            dimension("LINKED_ACCOUNT_NAME", &["Production"]),
            json!({"Dimensions": {"Key": "REGION", "Values": ["us-east-1"], "MatchOptions": ["ABSENT"]}}),
            json!({"Dimensions": {"Key": "REGION", "Values": ["us-"], "MatchOptions": ["STARTS_WITH"]}}),
            json!({"Dimensions": {"Key": "REGION", "Values": ["US-EAST-1"], "MatchOptions": ["CASE_INSENSITIVE"]}}),
            json!({"Dimensions": {"Key": "REGION", "Values": ["x"], "MatchOptions": ["SIMILAR"]}}),
            json!({"Tags": {"Key": "team", "Values": ["x"], "MatchOptions": ["ABSENT"]}}),
            json!({"Tags": {"Key": "team", "MatchOptions": ["EQUALS"]}}),
            json!({"Tags": {"Key": "team", "Values": ["x"], "MatchOptions": ["EQUALS", "ABSENT"]}}),
            json!({"Tags": {"Key": "team", "Values": ["plat"], "MatchOptions": ["CONTAINS"]}}),
            json!({"Tags": {"Key": "team", "Values": ["x"], "MatchOptions": ["GREATER_THAN_OR_EQUAL"]}}),
            json!({"Tags": {"Key": "team", "Values": ["x"], "MatchOptions": ["FUZZY"]}}),
            json!({"Tags": {"Key": "", "Values": ["x"]}}),
            json!({"CostCategories": {"Key": "Team", "Values": ["Data"], "MatchOptions": ["ENDS_WITH"]}}),
            json!({"CostCategories": {"Key": "Team", "MatchOptions": ["ABSENT", "EQUALS"]}}),
            json!({"ProductAttributes": {"Key": "model", "Values": ["x"]}}),
        ]
    }

    #[test]
    fn compiled_filters_agree_with_the_expression_semantics() {
        let dataset = org();
        let rows = dataset.day_rows(day(2026, 11, 20), today());
        assert!(rows.len() > 500);
        let mut valid = 0;
        for expression in filters() {
            match Filter::compile(&expression) {
                Ok(filter) => {
                    valid += 1;
                    let mut kept = 0;
                    for row in rows {
                        let expected = reference_matches(&expression, row).unwrap();
                        assert_eq!(filter.matches(row), expected, "{expression} {row:?}");
                        kept += usize::from(expected);
                    }
                    assert!(
                        kept < rows.len() || expression.get("Not").is_some(),
                        "{expression}"
                    );
                }
                Err(err) => {
                    for row in rows.iter().step_by(50) {
                        assert_eq!(reference_matches(&expression, row), Err(err.clone()));
                    }
                }
            }
        }
        assert_eq!(valid, 37);
    }

    #[test]
    fn filter_errors_surface_only_with_rows_to_filter() {
        let dataset = org();
        let bad = json!({"Filter": dimension("BILLING_ENTITY", &["x"])});
        let err = Filter::for_rows(&bad, &dataset.rows).unwrap_err();
        assert_eq!(err.1, "dimension BILLING_ENTITY is not simulated");
        assert!(Filter::for_rows(&bad, &[]).unwrap().is_none());
        assert!(
            Filter::for_rows(&json!({}), &dataset.rows)
                .unwrap()
                .is_none()
        );
    }

    /// The exact result of a query, from the rows: (period start, keys) to (unblended,
    /// amortized) units.
    fn reference(
        dataset: &Dataset,
        request: &Value,
    ) -> BTreeMap<(String, Vec<String>), (i128, i128)> {
        let start = date_field(&request["TimePeriod"], "Start").unwrap();
        let end = date_field(&request["TimePeriod"], "End").unwrap();
        let granularity = request["Granularity"].as_str().unwrap();
        let keys: Vec<(String, String)> = request["GroupBy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["Type"].as_str().unwrap().to_string(),
                    g["Key"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mut out = BTreeMap::new();
        for (from, to) in periods(start, end, granularity).unwrap() {
            for row in dataset.rows.iter().filter(|r| r.day >= from && r.day < to) {
                if let Some(filter) = request.get("Filter")
                    && !reference_matches(filter, row).unwrap()
                {
                    continue;
                }
                let labels = keys
                    .iter()
                    .map(|(kind, key)| match (kind.as_str(), key.as_str()) {
                        ("TAG", k) => format!("{k}${}", row.tag(k).unwrap_or_default()),
                        ("COST_CATEGORY", k) => {
                            format!("{k}${}", row.cost_category(k).unwrap_or_default())
                        }
                        (_, "LINKED_ACCOUNT") => row.account_id().to_string(),
                        (_, "SERVICE") => row.service().to_string(),
                        (_, "RECORD_TYPE") => row.record_type().to_string(),
                        (_, "RESOURCE_ID") => row.resource_id().unwrap_or_default().to_string(),
                        (_, other) => row.dimension(other).unwrap().to_string(),
                    })
                    .collect();
                let sums = out.entry((from.to_string(), labels)).or_insert((0, 0));
                sums.0 += i128::from(row.amount(CostMetric::Unblended));
                sums.1 += i128::from(row.amount(CostMetric::Amortized));
            }
        }
        out
    }

    /// (period start, keys) to (unblended, amortized) amounts.
    type AnsweredGroups = BTreeMap<(String, Vec<String>), (String, String)>;

    /// The groups of every page, as (period start, keys) to (unblended, amortized) amounts;
    /// checks page sizes and that every period of the query is answered.
    fn collect_groups(pages: &[Value], page_size: usize) -> (AnsweredGroups, BTreeSet<String>) {
        let mut groups = BTreeMap::new();
        let mut periods = BTreeSet::new();
        for page in pages {
            let mut entries = 0;
            for result in page["ResultsByTime"].as_array().unwrap() {
                let start = result["TimePeriod"]["Start"].as_str().unwrap().to_string();
                periods.insert(start.clone());
                let page_groups = result["Groups"].as_array().unwrap();
                entries += page_groups.len().max(1);
                for group in page_groups {
                    let keys: Vec<String> = group["Keys"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|k| k.as_str().unwrap().to_string())
                        .collect();
                    let amount =
                        |m: &str| group["Metrics"][m]["Amount"].as_str().unwrap().to_string();
                    let previous = groups.insert(
                        (start.clone(), keys),
                        (amount("UnblendedCost"), amount("AmortizedCost")),
                    );
                    assert!(previous.is_none(), "a group answered twice");
                }
            }
            assert!(
                entries <= page_size,
                "{entries} entries on a page of {page_size}"
            );
        }
        (groups, periods)
    }

    #[tokio::test]
    async fn grouped_results_are_the_exact_sums_of_the_rows() {
        let page_size = 9;
        let state = state(page_size, Behavior::Normal);
        let dataset = org();
        let mut filtered = query(
            "2026-11-01",
            "2026-11-24",
            "MONTHLY",
            &[("DIMENSION", "LINKED_ACCOUNT"), ("DIMENSION", "SERVICE")],
        );
        filtered["Filter"] = dimension("RECORD_TYPE", &["Usage"]);
        let mut tagged = query(
            "2026-11-10",
            "2026-11-24",
            "DAILY",
            &[("TAG", "team"), ("DIMENSION", "LINKED_ACCOUNT")],
        );
        tagged["Filter"] = json!({"Not": dimension("SERVICE", &["Tax"])});
        let queries = [
            query(
                "2026-10-01",
                "2026-11-24",
                "MONTHLY",
                &[("DIMENSION", "SERVICE")],
            ),
            query("2026-10-01", "2026-11-24", "MONTHLY", &[("TAG", "env")]),
            query(
                "2026-10-01",
                "2026-11-24",
                "MONTHLY",
                &[("TAG", "nonexistent")],
            ),
            filtered,
            tagged,
            query(
                "2026-11-01",
                "2026-11-24",
                "DAILY",
                &[
                    ("DIMENSION", "LINKED_ACCOUNT"),
                    ("DIMENSION", "RECORD_TYPE"),
                ],
            ),
            query(
                "2026-09-25",
                "2026-10-12",
                "DAILY",
                &[("DIMENSION", "RECORD_TYPE")],
            ),
        ];
        for request in &queries {
            let pages = pages(&state, "GetCostAndUsage", request).await;
            let (groups, answered) = collect_groups(&pages, page_size);
            let expected = reference(&dataset, request);
            assert!(!expected.is_empty());
            let expected_groups: BTreeMap<_, _> = expected
                .iter()
                .map(|(k, (u, a))| (k.clone(), (format_units(*u), format_units(*a))))
                .collect();
            assert_eq!(groups, expected_groups, "{request}");
            let start = date_field(&request["TimePeriod"], "Start").unwrap();
            let end = date_field(&request["TimePeriod"], "End").unwrap();
            let all: BTreeSet<String> =
                periods(start, end, request["Granularity"].as_str().unwrap())
                    .unwrap()
                    .iter()
                    .map(|(from, _)| from.to_string())
                    .collect();
            assert_eq!(answered, all, "every period is answered, empty ones too");
        }
    }

    /// Checks every page of `request` against [`reference`]: the exact sums of the rows, every
    /// period answered; the group definitions as asked.
    /// The number of groups expected.
    async fn assert_exact(
        state: &State,
        dataset: &Dataset,
        operation: &str,
        request: &Value,
    ) -> usize {
        let page_size = state.page_size;
        let pages = pages(state, operation, request).await;
        let (groups, answered) = collect_groups(&pages, page_size);
        let expected = reference(dataset, request);
        let expected_groups: BTreeMap<_, _> = expected
            .iter()
            .map(|(k, (u, a))| (k.clone(), (format_units(*u), format_units(*a))))
            .collect();
        assert_eq!(groups, expected_groups, "{request}");
        let start = date_field(&request["TimePeriod"], "Start").unwrap();
        let end = date_field(&request["TimePeriod"], "End").unwrap();
        let all: BTreeSet<String> = periods(start, end, request["Granularity"].as_str().unwrap())
            .unwrap()
            .iter()
            .map(|(from, _)| from.to_string())
            .collect();
        assert_eq!(answered, all, "every period is answered, empty ones too");
        for page in &pages {
            assert_eq!(page["GroupDefinitions"], request["GroupBy"], "{request}");
        }
        expected.len()
    }

    #[tokio::test]
    async fn grouped_by_every_dimension_and_cost_category_the_sums_are_exact() {
        let state = state(23, Behavior::Normal);
        let dataset = org();
        let mut queries = Vec::new();
        for dimension in DIMENSIONS.iter().filter(|d| **d != "RESOURCE_ID") {
            queries.push(query(
                "2026-10-01",
                "2026-11-24",
                "MONTHLY",
                &[("DIMENSION", dimension)],
            ));
            queries.push(query(
                "2026-11-16",
                "2026-11-24",
                "DAILY",
                &[("DIMENSION", dimension), ("COST_CATEGORY", "Team")],
            ));
        }
        for category in ["Team", "Environment", "Nonexistent"] {
            queries.push(query(
                "2026-10-01",
                "2026-11-24",
                "MONTHLY",
                &[("COST_CATEGORY", category)],
            ));
            queries.push(query(
                "2026-11-10",
                "2026-11-24",
                "DAILY",
                &[("COST_CATEGORY", category)],
            ));
        }
        queries.push(query(
            "2026-10-01",
            "2026-11-24",
            "MONTHLY",
            &[("COST_CATEGORY", "Environment"), ("TAG", "team")],
        ));
        let mut both = query(
            "2026-11-01",
            "2026-11-24",
            "DAILY",
            &[("COST_CATEGORY", "Team"), ("COST_CATEGORY", "Environment")],
        );
        both["Filter"] = json!({"Not": {"Tags": {"Key": "env", "MatchOptions": ["ABSENT"]}}});
        queries.push(both);
        let mut regional = query(
            "2026-10-01",
            "2026-11-24",
            "MONTHLY",
            &[("DIMENSION", "REGION"), ("DIMENSION", "AZ")],
        );
        regional["Filter"] = json!({"And": [
            {"CostCategories": {"Key": "Environment", "Values": ["Production", "Staging"]}},
            {"Not": dimension("PURCHASE_TYPE", &["Savings Plans"])},
        ]});
        queries.push(regional);
        let mut uncategorised = query(
            "2026-11-01",
            "2026-11-24",
            "DAILY",
            &[("DIMENSION", "USAGE_TYPE"), ("DIMENSION", "OPERATION")],
        );
        uncategorised["Filter"] = json!({"CostCategories": {"Key": "Team", "Values": [""]}});
        queries.push(uncategorised);
        for request in &queries {
            let groups = assert_exact(&state, &dataset, "GetCostAndUsage", request).await;
            assert!(groups > 0, "{request}");
        }
        // Resources with their instance types.
        let mut resources = query(
            "2026-11-20",
            "2026-11-23",
            "DAILY",
            &[("DIMENSION", "RESOURCE_ID"), ("DIMENSION", "INSTANCE_TYPE")],
        );
        resources["Filter"] = json!({"And": [
            dimension("SERVICE", &[EC2, "Amazon Relational Database Service"]),
            {"Tags": {"Key": "team", "Values": ["platform", "data"]}},
        ]});
        let groups =
            assert_exact(&state, &dataset, "GetCostAndUsageWithResources", &resources).await;
        assert!(groups > 20);
        // The labels as AWS writes them: "Team$Platform", and "Team$" for the uncategorised.
        let by_team = query(
            "2026-11-01",
            "2026-11-24",
            "MONTHLY",
            &[("COST_CATEGORY", "Team")],
        );
        let (_, page) = call(&state, "GetCostAndUsage", &by_team).await;
        let keys: BTreeSet<&str> = page["ResultsByTime"][0]["Groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["Keys"][0].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["Team$", "Team$Data", "Team$Platform", "Team$Web Frontend"])
        );
    }

    #[tokio::test]
    async fn without_cost_categories_every_row_is_uncategorised() {
        let dataset = Dataset::generate(&DatasetSpec {
            seed: 5,
            accounts: &[("111111111111", "Workload")],
            today: today(),
            history_days: 40,
            estimated_days: 2,
            scale: 0.15,
            idle_accounts: &[],
        });
        let state = Simulator::builder()
            .account("111111111111", dataset.clone())
            .access_key(KEY, "secret", "111111111111")
            .page_size(500)
            .state;
        let request = query(
            "2026-11-01",
            "2026-11-24",
            "MONTHLY",
            &[("COST_CATEGORY", "Team"), ("DIMENSION", "REGION")],
        );
        assert_exact(&state, &dataset, "GetCostAndUsage", &request).await;
        let (_, page) = call(&state, "GetCostAndUsage", &request).await;
        for group in page["ResultsByTime"][0]["Groups"].as_array().unwrap() {
            assert_eq!(group["Keys"][0], "Team$");
        }
        let mut absent = query("2026-11-01", "2026-11-24", "MONTHLY", &[]);
        absent["Filter"] = json!({"CostCategories": {"Key": "Team", "MatchOptions": ["ABSENT"]}});
        let (_, all) = call(
            &state,
            "GetCostAndUsage",
            &query("2026-11-01", "2026-11-24", "MONTHLY", &[]),
        )
        .await;
        let (_, kept) = call(&state, "GetCostAndUsage", &absent).await;
        assert_eq!(kept["ResultsByTime"], all["ResultsByTime"]);
    }

    #[tokio::test]
    async fn every_filter_through_the_handler_keeps_what_the_reference_keeps() {
        let state = state(200, Behavior::Normal);
        let dataset = org();
        let mut kept_some = 0;
        for expression in filters() {
            let mut request = query(
                "2026-11-10",
                "2026-11-24",
                "DAILY",
                &[("COST_CATEGORY", "Team"), ("DIMENSION", "REGION")],
            );
            request["Filter"] = expression.clone();
            let row = &dataset.day_rows(day(2026, 11, 10), today())[0];
            match reference_matches(&expression, row) {
                Ok(_) => {
                    let groups = assert_exact(&state, &dataset, "GetCostAndUsage", &request).await;
                    kept_some += usize::from(groups > 0);
                }
                Err((code, message)) => {
                    let (status, error) = call(&state, "GetCostAndUsage", &request).await;
                    assert_eq!(status, 400, "{expression}");
                    assert_eq!(error["__type"], json!(code));
                    assert_eq!(error["Message"], json!(message), "{expression}");
                }
            }
        }
        assert!(kept_some > 30, "{kept_some}");
    }

    /// The names (or values) of every page of a GetCostCategories request, checking each
    /// page's sizes.
    async fn cost_category_pages(state: &State, request: &Value) -> (Vec<String>, usize) {
        let field = if request.get("CostCategoryName").is_some() {
            "CostCategoryValues"
        } else {
            "CostCategoryNames"
        };
        let mut listed = Vec::new();
        let answers = pages(state, "GetCostCategories", request).await;
        let total = answers[0]["TotalSize"].as_u64().unwrap() as usize;
        for page in &answers {
            let list = page[field].as_array().unwrap();
            assert!(list.len() <= state.page_size);
            assert_eq!(page["ReturnSize"], json!(list.len()));
            assert_eq!(page["TotalSize"], json!(total));
            listed.extend(list.iter().map(|v| v.as_str().unwrap().to_string()));
        }
        assert_eq!(listed.len(), total);
        (listed, answers.len())
    }

    #[tokio::test]
    async fn cost_categories_and_their_values_are_listed_and_paged() {
        let state = state(2, Behavior::Normal);
        let dataset = org();
        let period = json!({"Start": "2026-11-01", "End": "2026-11-24"});
        let rows = dataset.day_rows(day(2026, 11, 1), day(2026, 11, 24));
        let expected = |name: Option<&str>, keep: &dyn Fn(&SimRow) -> bool| -> Vec<String> {
            let listed: BTreeSet<String> = rows
                .iter()
                .filter(|r| keep(r))
                .flat_map(|r| {
                    r.cost_categories()
                        .filter_map(|(n, v)| match name {
                            None => Some(n.to_string()),
                            Some(name) => (n == name).then(|| v.to_string()),
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            listed.into_iter().collect()
        };
        // The names, then each one's values, in pages of two.
        let (names, _) = cost_category_pages(&state, &json!({"TimePeriod": period})).await;
        assert_eq!(names, ["Environment", "Team"]);
        assert_eq!(names, expected(None, &|_| true));
        let (teams, count) = cost_category_pages(
            &state,
            &json!({"TimePeriod": period, "CostCategoryName": "Team"}),
        )
        .await;
        assert_eq!(teams, ["Data", "Platform", "Web Frontend"]);
        assert_eq!(teams, expected(Some("Team"), &|_| true));
        assert_eq!(count, 2);
        let (first, _) = {
            let (_, page) = call(
                &state,
                "GetCostCategories",
                &json!({"TimePeriod": period, "CostCategoryName": "Team"}),
            )
            .await;
            (page, ())
        };
        assert_eq!(first["ReturnSize"], 2);
        assert_eq!(first["TotalSize"], 3);
        assert!(first.get("CostCategoryNames").is_none());
        assert!(first["NextPageToken"].is_string());
        // Searched (case-insensitive), and filtered.
        let (found, _) = cost_category_pages(
            &state,
            &json!({"TimePeriod": period, "CostCategoryName": "Team", "SearchString": "FRONT"}),
        )
        .await;
        assert_eq!(found, ["Web Frontend"]);
        let (found, _) = cost_category_pages(
            &state,
            &json!({"TimePeriod": period, "SearchString": "env"}),
        )
        .await;
        assert_eq!(found, ["Environment"]);
        let filter = json!({"Or": [
            dimension("LINKED_ACCOUNT", &["444444444444"]),
            {"Tags": {"Key": "team", "Values": ["platform"]}},
        ]});
        let (environments, _) = cost_category_pages(
            &state,
            &json!({"TimePeriod": period, "CostCategoryName": "Environment", "Filter": filter}),
        )
        .await;
        let keep = |r: &SimRow| reference_matches(&filter, r).unwrap();
        assert_eq!(environments, expected(Some("Environment"), &keep));
        assert!(!environments.is_empty());
        // No cost, no names; an unknown category has no values.
        for request in [
            json!({"TimePeriod": {"Start": "2026-01-01", "End": "2026-02-01"}}),
            json!({"TimePeriod": period, "CostCategoryName": "Nonexistent"}),
            json!({"TimePeriod": period, "Filter": {"CostCategories": {}}}),
        ] {
            let (status, page) = call(&state, "GetCostCategories", &request).await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["TotalSize"], 0, "{request}");
            assert_eq!(page["ReturnSize"], 0);
            assert!(page.get("NextPageToken").is_none());
        }
        // Sorted by cost: one page of at most MaxResults.
        let unblended = |value: &str| {
            dataset.total_units(CostMetric::Unblended, |r| {
                r.day >= day(2026, 11, 1)
                    && r.day < day(2026, 11, 24)
                    && r.cost_category("Team") == Some(value)
            })
        };
        let mut by_cost = teams.clone();
        by_cost.sort_by_key(|t| std::cmp::Reverse(unblended(t)));
        let (status, page) = call(
            &state,
            "GetCostCategories",
            &json!({"TimePeriod": period, "CostCategoryName": "Team", "MaxResults": 2,
                    "SortBy": [{"Key": "UnblendedCost", "SortOrder": "DESCENDING"}]}),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["CostCategoryValues"], json!(by_cost[..2]));
        assert_eq!(
            (page["ReturnSize"].clone(), page["TotalSize"].clone()),
            (json!(2), json!(3))
        );
        assert!(page.get("NextPageToken").is_none());
        let (_, page) = call(
            &state,
            "GetCostCategories",
            &json!({"TimePeriod": period, "CostCategoryName": "Team",
                    "SortBy": [{"Key": "UnblendedCost"}]}),
        )
        .await;
        by_cost.reverse();
        assert_eq!(page["CostCategoryValues"], json!(by_cost));
        // Refused.
        let token = first["NextPageToken"].clone();
        for (request, message) in [
            (
                json!({"CostCategoryName": "Team"}),
                "TimePeriod is required".to_string(),
            ),
            (
                json!({"TimePeriod": period, "CostCategoryName": ""}),
                "CostCategoryName must be from 1 to 50 characters long".into(),
            ),
            (
                json!({"TimePeriod": period, "MaxResults": 1001}),
                "MaxResults must be from 1 to 1000".into(),
            ),
            (
                json!({"TimePeriod": period, "SearchString": "a", "SortBy": [{"Key": "BlendedCost"}]}),
                "When you use the SortBy value, the NextPageToken and SearchString key values \
                 aren't supported"
                    .into(),
            ),
            (
                json!({"TimePeriod": period, "SortBy": [{"Key": "UsageQuantity"}]}),
                "SortBy UsageQuantity is not simulated".into(),
            ),
            (
                json!({"TimePeriod": period, "SortBy": [{"Key": "BlendedCost", "SortOrder": "UP"}]}),
                "1 validation error detected: Value 'UP' at 'sortBy.member.sortOrder' failed to \
                 satisfy constraint: Member must satisfy enum value set: [ASCENDING, DESCENDING]"
                    .into(),
            ),
            (
                json!({"TimePeriod": period, "CostCategoryName": "Environment", "NextPageToken": token}),
                "NextPageToken does not belong to this request".into(),
            ),
            (
                json!({"TimePeriod": period, "Filter": {"Tags": {"Values": ["x"]}}}),
                "Tags.Key is required with Values".into(),
            ),
        ] {
            let (status, error) = call(&state, "GetCostCategories", &request).await;
            assert_eq!(status, 400, "{request}");
            assert_eq!(error["__type"], "ValidationException");
            assert_eq!(error["Message"], json!(message), "{request}");
        }
        // Billed like every Cost Explorer operation, each page a request.
        assert!(is_billed("GetCostCategories"));
        let statuses: Vec<u16> = state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.operation == "GetCostCategories")
            .map(|r| r.status)
            .collect();
        // 12 pages answered, 8 requests refused.
        assert_eq!(statuses.len(), 20);
        assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 8);
        // A looping account answers the first page with the same token, again and again.
        set_behavior(&state, "111111111111", Behavior::LoopingToken);
        let request = json!({"TimePeriod": period, "CostCategoryName": "Team"});
        let (_, looping) = call(&state, "GetCostCategories", &request).await;
        let mut next = request.clone();
        next["NextPageToken"] = looping["NextPageToken"].clone();
        let (_, again) = call(&state, "GetCostCategories", &next).await;
        assert_eq!(again, looping);
        assert_eq!(looping["CostCategoryValues"], first["CostCategoryValues"]);
    }

    #[tokio::test]
    async fn bad_group_by_and_filters_are_refused_as_aws_refuses_them() {
        let state = state(500, Behavior::Normal);
        let refused = |group_by: Value, filter: Option<Value>| {
            let mut request = query("2026-11-01", "2026-11-24", "MONTHLY", &[]);
            request["GroupBy"] = group_by;
            if let Some(filter) = filter {
                request["Filter"] = filter;
            }
            request
        };
        let long = "x".repeat(60);
        let cases: Vec<(Value, Option<Value>, String)> = vec![
            (
                json!([{"Type": "DIMENSION", "Key": "SERVICE"}, {"Type": "TAG", "Key": "team"}, {"Type": "COST_CATEGORY", "Key": "Team"}]),
                None,
                "You can only group by up to two dimensions".into(),
            ),
            (
                json!([{"Type": "DIMENSION", "Key": "SERVICE"}, {"Type": "CATEGORY", "Key": "Team"}]),
                None,
                "1 validation error detected: Value 'CATEGORY' at 'groupBy.2.member.type' failed \
                 to satisfy constraint: Member must satisfy enum value set: [COST_CATEGORY, \
                 DIMENSION, PRODUCT_ATTRIBUTE, TAG]"
                    .into(),
            ),
            (
                json!([{"Type": "DIMENSION", "Key": "NOT_A_DIMENSION"}]),
                None,
                "Invalid group by dimension key \"NOT_A_DIMENSION\": valid values for the \
                 DIMENSION type are LINKED_ACCOUNT, SERVICE, RECORD_TYPE, AZ, INSTANCE_TYPE, \
                 OPERATION, PURCHASE_TYPE, REGION, USAGE_TYPE, PLATFORM, TENANCY, DATABASE_ENGINE"
                    .into(),
            ),
            (
                json!([{"Type": "DIMENSION", "Key": "BILLING_ENTITY"}]),
                None,
                "GroupBy DIMENSION BILLING_ENTITY is not simulated".into(),
            ),
            (
                json!([{"Type": "DIMENSION", "Key": "RESOURCE_ID"}]),
                None,
                "GroupBy DIMENSION RESOURCE_ID is not simulated".into(),
            ),
            (
                json!([{"Type": "COST_CATEGORY", "Key": ""}]),
                None,
                "GroupBy COST_CATEGORY requires a Key".into(),
            ),
            (
                json!([{"Type": "TAG"}]),
                None,
                "GroupBy TAG requires a Key".into(),
            ),
            (
                json!([{"Type": "PRODUCT_ATTRIBUTE", "Key": "model"}]),
                None,
                "GroupBy PRODUCT_ATTRIBUTE model is not simulated".into(),
            ),
            (
                json!([{"Type": "COST_CATEGORY", "Key": "Team"}]),
                Some(json!({"Tags": {"Key": "team", "Values": ["x"], "MatchOptions": ["ABSENT"]}})),
                "Tags with MatchOptions ABSENT takes no Values".into(),
            ),
            (
                json!([]),
                Some(
                    json!({"And": [{"CostCategories": {"Key": "Team", "Values": ["Data"]}}, {"Dimensions": {"Key": "REGION", "Values": ["us-east-1"], "MatchOptions": ["CASE_INSENSITIVE"]}}]}),
                ),
                "MatchOptions CASE_INSENSITIVE is not supported for Dimensions: valid values \
                 for MatchOptions for Dimensions are EQUALS, CASE_SENSITIVE"
                    .into(),
            ),
        ];
        for (group_by, filter, message) in cases {
            let request = refused(group_by, filter);
            let (status, error) = call(&state, "GetCostAndUsage", &request).await;
            assert_eq!(status, 400, "{request}");
            assert_eq!(error["__type"], "ValidationException");
            assert_eq!(error["Message"], message, "{request}");
        }
        // A cost category's name may be long (a GroupBy key is up to 1,024 characters): no
        // row has it.
        let request = query(
            "2026-11-01",
            "2026-11-24",
            "MONTHLY",
            &[("COST_CATEGORY", &long)],
        );
        let (status, page) = call(&state, "GetCostAndUsage", &request).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            page["ResultsByTime"][0]["Groups"][0]["Keys"][0],
            json!(format!("{long}$"))
        );
        // A bad filter is reported only when there are rows to filter.
        let mut before = query(
            "2026-01-01",
            "2026-02-01",
            "MONTHLY",
            &[("COST_CATEGORY", "Team")],
        );
        before["Filter"] = json!({"Tags": {"Key": "team", "MatchOptions": ["EQUALS"]}});
        let (status, page) = call(&state, "GetCostAndUsage", &before).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["ResultsByTime"][0]["Groups"], json!([]));
        let mut during = before.clone();
        during["TimePeriod"] = json!({"Start": "2026-11-01", "End": "2026-11-02"});
        let (status, error) = call(&state, "GetCostAndUsage", &during).await;
        assert_eq!(status, 400);
        assert_eq!(
            error["Message"],
            "Tags with MatchOptions EQUALS requires Values"
        );
    }

    #[tokio::test]
    async fn one_group_key_and_monthly_granularity() {
        let state = state(500, Behavior::Normal);
        let dataset = org();
        let request = query(
            "2026-10-01",
            "2026-11-24",
            "MONTHLY",
            &[("DIMENSION", "SERVICE")],
        );
        let (status, page) = call(&state, "GetCostAndUsage", &request).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.get("NextPageToken").is_none());
        assert_eq!(
            page["GroupDefinitions"],
            json!([{"Type": "DIMENSION", "Key": "SERVICE"}])
        );
        assert_eq!(page["DimensionValueAttributes"], json!([]));
        let results = page["ResultsByTime"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(
            results[0]["TimePeriod"],
            json!({"Start": "2026-10-01", "End": "2026-11-01"})
        );
        assert_eq!(
            results[1]["TimePeriod"],
            json!({"Start": "2026-11-01", "End": "2026-11-24"})
        );
        assert_eq!(results[0]["Estimated"], json!(false));
        assert_eq!(results[1]["Estimated"], json!(true));
        for (result, (from, to)) in results.iter().zip([
            (day(2026, 10, 1), day(2026, 11, 1)),
            (day(2026, 11, 1), day(2026, 11, 24)),
        ]) {
            assert_eq!(result["Total"], json!({}));
            let groups = result["Groups"].as_array().unwrap();
            let services: BTreeSet<&str> = dataset
                .day_rows(from, to)
                .iter()
                .map(|r| r.service())
                .collect();
            assert_eq!(groups.len(), services.len());
            for (group, service) in groups.iter().zip(&services) {
                assert_eq!(group["Keys"], json!([service]));
                let units = dataset.total_units(CostMetric::Amortized, |r| {
                    r.day >= from && r.day < to && r.service() == *service
                });
                assert_eq!(
                    group["Metrics"]["AmortizedCost"],
                    json!({"Amount": format_units(units), "Unit": "USD"})
                );
            }
        }
        // Grouped by account alone, the accounts' names come along.
        let request = query(
            "2026-11-01",
            "2026-11-24",
            "MONTHLY",
            &[("DIMENSION", "LINKED_ACCOUNT")],
        );
        let (_, page) = call(&state, "GetCostAndUsage", &request).await;
        let groups = page["ResultsByTime"][0]["Groups"].as_array().unwrap();
        assert_eq!(groups.len(), 4);
        assert_eq!(
            page["DimensionValueAttributes"][3],
            json!({"Value": "555555555555", "Attributes": {"description": "Data \"Lake\" \\ Analytics\nTeam\u{1} é"}})
        );
        // Ungrouped: the total of each period.
        let request = query("2026-10-01", "2026-11-24", "MONTHLY", &[]);
        let (_, page) = call(&state, "GetCostAndUsage", &request).await;
        let units = dataset.total_units(CostMetric::Unblended, |r| r.day >= day(2026, 11, 1));
        assert_eq!(
            page["ResultsByTime"][1]["Total"]["UnblendedCost"]["Amount"],
            json!(format_units(units))
        );
        assert_eq!(page["ResultsByTime"][1]["Groups"], json!([]));
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut samples: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        samples.extend(
            [
                "",
                "plain",
                "web \"frontend\"",
                "a\\b\nc\u{7f}",
                "é 日本 \u{2028} 🦀",
                "\u{1}x\u{1f}",
            ]
            .map(String::from),
        );
        for sample in samples {
            let mut written = String::new();
            write_json_str(&mut written, &sample);
            assert_eq!(
                written,
                Value::String(sample.clone()).to_string(),
                "{sample:?}"
            );
        }
    }

    /// How pages were written before: a `Value` built per group, then serialized.
    fn reference_page(page: &Page<'_>, entries: &[Entry], token: Option<&str>) -> String {
        let metric_map = |sums: &Sums| {
            let mut map = serde_json::Map::new();
            for (name, basis) in page.metrics {
                map.insert(
                    name.clone(),
                    json!({"Amount": format_units(sums[basis_index(*basis)]), "Unit": page.unit}),
                );
            }
            Value::Object(map)
        };
        let mut results: Vec<Value> = Vec::new();
        let mut current: Option<(usize, Vec<Value>, Option<Value>)> = None;
        let mut accounts_seen = BTreeSet::new();
        let flush = |current: &mut Option<(usize, Vec<Value>, Option<Value>)>,
                     results: &mut Vec<Value>| {
            if let Some((index, groups, total)) = current.take() {
                let (from, to) = page.periods[index];
                let estimated = page.dataset.is_estimated(to.pred_opt().unwrap_or(from));
                results.push(json!({
                    "TimePeriod": {"Start": from.format("%Y-%m-%d").to_string(), "End": to.format("%Y-%m-%d").to_string()},
                    "Total": total.unwrap_or_else(|| json!({})),
                    "Groups": groups,
                    "Estimated": estimated,
                }));
            }
        };
        for entry in entries {
            let index = entry.period();
            if current.as_ref().is_some_and(|(i, ..)| *i != index) {
                flush(&mut current, &mut results);
            }
            let slot = current.get_or_insert_with(|| (index, Vec::new(), None));
            match entry {
                Entry::Empty(_) => {}
                Entry::Total(_, sums) => slot.2 = Some(metric_map(sums)),
                Entry::Group(_, keys, sums) => {
                    for (key, value) in page.group_keys.iter().zip(keys) {
                        if *key == GroupKey::Dimension(Dimension::LinkedAccount) {
                            accounts_seen.insert(value.to_string());
                        }
                    }
                    let keys: Vec<&str> = keys.iter().map(|k| &**k).collect();
                    slot.1
                        .push(json!({"Keys": keys, "Metrics": metric_map(sums)}));
                }
            }
        }
        flush(&mut current, &mut results);
        let group_definitions: Vec<Value> = page
            .group_keys
            .iter()
            .map(|key| match key {
                GroupKey::Dimension(d) => json!({"Type": "DIMENSION", "Key": d.name()}),
                GroupKey::Tag(t) => json!({"Type": "TAG", "Key": t}),
                GroupKey::CostCategory(c) => json!({"Type": "COST_CATEGORY", "Key": c}),
            })
            .collect();
        let attributes: Vec<Value> = accounts_seen
            .iter()
            .map(|id| {
                let name = page.dataset.accounts.get(id).cloned().unwrap_or_default();
                json!({"Value": id, "Attributes": {"description": name}})
            })
            .collect();
        let mut response = json!({
            "GroupDefinitions": group_definitions,
            "ResultsByTime": results,
            "DimensionValueAttributes": attributes,
        });
        if let Some(token) = token {
            response["NextPageToken"] = Value::String(token.to_string());
        }
        response.to_string()
    }

    #[test]
    fn pages_are_written_as_serde_json_writes_them() {
        let dataset = org();
        // (start, end, granularity, group keys, metrics)
        type Case<'a> = (&'a str, &'a str, &'a str, &'a [GroupKey], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                "2026-11-01",
                "2026-11-24",
                "DAILY",
                &[
                    GroupKey::Dimension(Dimension::LinkedAccount),
                    GroupKey::Dimension(Dimension::RecordType),
                ],
                &["UnblendedCost", "AmortizedCost"],
            ),
            (
                "2026-10-01",
                "2026-11-24",
                "MONTHLY",
                &[
                    GroupKey::Tag("team".into()),
                    GroupKey::Dimension(Dimension::LinkedAccount),
                ],
                &["NetUnblendedCost", "BlendedCost", "NetUnblendedCost"],
            ),
            (
                "2026-09-28",
                "2026-10-12",
                "DAILY",
                &[GroupKey::Dimension(Dimension::Service)],
                &["AmortizedCost"],
            ),
            (
                "2026-09-28",
                "2026-11-24",
                "MONTHLY",
                &[],
                &["UnblendedCost", "NetAmortizedCost"],
            ),
            (
                "2026-11-20",
                "2026-11-23",
                "DAILY",
                &[
                    GroupKey::Dimension(Dimension::ResourceId),
                    GroupKey::Dimension(Dimension::LinkedAccount),
                ],
                &["UnblendedCost"],
            ),
            (
                "2026-10-01",
                "2026-11-24",
                "MONTHLY",
                &[
                    GroupKey::CostCategory("Team".into()),
                    GroupKey::Dimension(Dimension::LinkedAccount),
                ],
                &["AmortizedCost", "UnblendedCost"],
            ),
            (
                "2026-11-10",
                "2026-11-24",
                "DAILY",
                &[
                    GroupKey::Dimension(Dimension::parse("USAGE_TYPE").unwrap()),
                    GroupKey::CostCategory("Environment".into()),
                ],
                &["NetAmortizedCost"],
            ),
            (
                "2026-11-01",
                "2026-11-24",
                "MONTHLY",
                &[
                    GroupKey::Dimension(Dimension::parse("REGION").unwrap()),
                    GroupKey::Dimension(Dimension::parse("INSTANCE_TYPE").unwrap()),
                ],
                &["BlendedCost"],
            ),
        ];
        for (start, end, granularity, group_keys, metric_names) in cases {
            let periods = periods(
                NaiveDate::parse_from_str(start, "%Y-%m-%d").unwrap(),
                NaiveDate::parse_from_str(end, "%Y-%m-%d").unwrap(),
                granularity,
            )
            .unwrap();
            let metrics: Vec<(String, CostMetric)> = metric_names
                .iter()
                .map(|m| (m.to_string(), CostMetric::from_name(m).unwrap()))
                .collect();
            let entries = aggregate(&dataset, &periods, None, group_keys, &metrics);
            assert!(entries.len() >= 3);
            for unit in ["USD", "EUR"] {
                let page = Page {
                    dataset: &dataset,
                    periods: &periods,
                    group_keys,
                    metrics: &metrics,
                    unit,
                };
                for size in [1, 7, 500] {
                    for (n, chunk) in entries.chunks(size).enumerate() {
                        let token = format!("{}.0123456789abcdef", (n + 1) * size);
                        let token = (n % 2 == 0).then_some(token.as_str());
                        assert_eq!(
                            render_page(&page, chunk, token),
                            reference_page(&page, chunk, token)
                        );
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn cached_results_serve_the_same_pages() {
        let state = state(7, Behavior::Normal);
        let request = query(
            "2026-11-01",
            "2026-11-24",
            "DAILY",
            &[
                ("DIMENSION", "LINKED_ACCOUNT"),
                ("DIMENSION", "RECORD_TYPE"),
            ],
        );
        let cached = pages(&state, "GetCostAndUsage", &request).await;
        assert!(cached.len() > 20);
        {
            let cache = state.cache.lock().unwrap();
            assert_eq!(cache.queries.len(), 1, "one computation for every page");
            assert_eq!(Arc::strong_count(&cache.queries[0].entries), 1);
        }
        // The same pages, computed afresh for each.
        let mut request_page = request.clone();
        for page in &cached {
            state.cache.lock().unwrap().queries.clear();
            let (status, fresh) = call(&state, "GetCostAndUsage", &request_page).await;
            assert_eq!(status, 200);
            assert_eq!(&fresh, page);
            if let Some(token) = page.get("NextPageToken") {
                request_page["NextPageToken"] = token.clone();
            }
        }
        // A later page from the cache, in the currency the account answers in now.
        let (_, first) = call(&state, "GetCostAndUsage", &request).await;
        set_behavior(&state, "111111111111", Behavior::Currency("EUR".into()));
        let mut later = request.clone();
        later["NextPageToken"] = first["NextPageToken"].clone();
        let (_, page) = call(&state, "GetCostAndUsage", &later).await;
        assert_eq!(
            page.to_string(),
            cached[1].to_string().replace("\"USD\"", "\"EUR\"")
        );
        // One page is not cached; the cache keeps a bounded number of queries.
        state.cache.lock().unwrap().queries.clear();
        let single = query("2026-10-01", "2026-11-24", "MONTHLY", &[]);
        call(&state, "GetCostAndUsage", &single).await;
        assert!(state.cache.lock().unwrap().queries.is_empty());
        for d in 1..=12 {
            let request = query(
                &format!("2026-11-{d:02}"),
                "2026-11-24",
                "DAILY",
                &[("DIMENSION", "SERVICE")],
            );
            call(&state, "GetCostAndUsage", &request).await;
        }
        assert_eq!(state.cache.lock().unwrap().queries.len(), CACHED_QUERIES);
        // Another account's identical query is not served from this one's cache.
        let mut cache = QueryCache::default();
        let dataset = Arc::new(Dataset::default());
        cache.insert(CachedQuery {
            account_id: "111111111111".into(),
            dataset: dataset.clone(),
            with_resources: false,
            source: "q".into(),
            entries: Arc::new(vec![Entry::Empty(0)]),
        });
        assert!(cache.get("111111111111", &dataset, false, "q").is_some());
        assert!(cache.get("222222222222", &dataset, false, "q").is_none());
        assert!(cache.get("111111111111", &dataset, true, "q").is_none());
        assert!(
            cache
                .get("111111111111", &Arc::new(Dataset::default()), false, "q")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_looping_token_never_ends_the_pages() {
        let state = state(7, Behavior::LoopingToken);
        let request = query(
            "2026-11-01",
            "2026-11-24",
            "DAILY",
            &[
                ("DIMENSION", "LINKED_ACCOUNT"),
                ("DIMENSION", "RECORD_TYPE"),
            ],
        );
        let (status, first) = call(&state, "GetCostAndUsage", &request).await;
        assert_eq!(status, 200);
        let token = first["NextPageToken"].clone();
        assert!(token.is_string());
        let mut next = request.clone();
        for _ in 0..5 {
            next["NextPageToken"] = token.clone();
            let (status, page) = call(&state, "GetCostAndUsage", &next).await;
            assert_eq!(status, 200);
            assert_eq!(page, first, "the first page again, with the same token");
        }
        // Even a result of one page carries the token.
        let single = query("2026-11-01", "2026-11-24", "MONTHLY", &[]);
        let (_, page) = call(&state, "GetCostAndUsage", &single).await;
        let token = page["NextPageToken"].clone();
        let mut next = single.clone();
        next["NextPageToken"] = token.clone();
        let (_, again) = call(&state, "GetCostAndUsage", &next).await;
        assert_eq!(again, page);
        // A token of another request is still refused.
        next["Granularity"] = json!("DAILY");
        let (status, error) = call(&state, "GetCostAndUsage", &next).await;
        assert_eq!(status, 400);
        assert_eq!(
            error["Message"],
            "NextPageToken does not belong to this request"
        );
        // Resource queries are not affected.
        let mut resources = query(
            "2026-11-20",
            "2026-11-23",
            "DAILY",
            &[("DIMENSION", "RESOURCE_ID")],
        );
        resources["Filter"] = dimension("SERVICE", &[EC2]);
        let resource_pages = pages(&state, "GetCostAndUsageWithResources", &resources).await;
        assert!(resource_pages.len() > 1);
        // Back to normal, the pages end; the looping page was the first of them.
        set_behavior(&state, "111111111111", Behavior::Normal);
        let normal = pages(&state, "GetCostAndUsage", &request).await;
        assert!(normal.len() > 1);
        assert_eq!(normal[0], first);
    }

    #[tokio::test]
    async fn forecasts_filter_like_cost_queries() {
        let state = state(500, Behavior::Normal);
        let dataset = org();
        let request = json!({
            "TimePeriod": {"Start": "2026-11-24", "End": "2026-12-01"},
            "Metric": "UNBLENDED_COST",
            "Granularity": "MONTHLY",
            "Filter": {"And": [dimension("LINKED_ACCOUNT", &["333333333333"]), dimension("SERVICE", &[EC2])]},
        });
        let (status, forecast) = call(&state, "GetCostForecast", &request).await;
        assert_eq!(status, 200, "{forecast}");
        let week = dataset.total_units(CostMetric::Unblended, |r| {
            r.day >= day(2026, 11, 16)
                && r.day < today()
                && r.account_id() == "333333333333"
                && r.service() == EC2
        });
        assert_eq!(
            forecast["Total"]["Amount"],
            json!(format_units(week * 7 / 7))
        );
        let mut bad = request.clone();
        bad["Filter"] = dimension("BILLING_ENTITY", &["x"]);
        let (status, error) = call(&state, "GetCostForecast", &bad).await;
        assert_eq!(status, 400);
        assert_eq!(
            error["Message"],
            "dimension BILLING_ENTITY is not simulated"
        );
    }

    /// Generates the 1,500-account demo organization and times a query through the handler.
    /// Run in release: `cargo test --release -p aws-cost-simulator --lib -- --ignored --nocapture
    /// large_organization`.
    #[tokio::test]
    #[ignore = "a benchmark: run in release"]
    async fn large_organization_benchmark() {
        fn status_kb(field: &str) -> String {
            std::fs::read_to_string("/proc/self/status")
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with(field))
                .map(|l| l.trim_start_matches(field).trim().to_string())
                .unwrap_or_else(|| "?".into())
        }
        let today = chrono::Utc::now().date_naive();
        let started = Instant::now();
        let builder = crate::demo_simulator(today, 1_500).page_size(500);
        let generation = started.elapsed();
        let state = builder.state;
        let rows = state.accounts.lock().unwrap()["111111111111"]
            .dataset
            .rows
            .len();
        eprintln!("generation of 1,500 accounts: {generation:.2?}, {rows} rows of the payer");
        eprintln!(
            "RSS after generation: {} (peak {})",
            status_kb("VmRSS:"),
            status_kb("VmHWM:")
        );
        let month_start = today.with_day(1).unwrap();
        let key = "AKIAIOSFODNN7EXAMPLE";
        for granularity in ["MONTHLY", "DAILY"] {
            let mut request = json!({
                "TimePeriod": {"Start": month_start.to_string(), "End": (today + Days::new(1)).to_string()},
                "Granularity": granularity,
                "Metrics": ["UnblendedCost", "AmortizedCost", "NetUnblendedCost"],
                "Filter": dimension("RECORD_TYPE", &["Usage"]),
                "GroupBy": [{"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"}, {"Type": "DIMENSION", "Key": "SERVICE"}],
            });
            let started = Instant::now();
            let (status, first) = call_with(&state, key, "GetCostAndUsage", &request).await;
            let cold = started.elapsed();
            assert_eq!(status, 200, "{first}");
            let entries = state.cache.lock().unwrap().queries[0].entries.len();
            eprintln!(
                "{granularity}, Usage, by LINKED_ACCOUNT and SERVICE: first page (cold) {cold:.2?}; \
                 {entries} entries, {} pages of 500",
                entries.div_ceil(500)
            );
            let mut page = first;
            let mut warm = Vec::new();
            while let Some(token) = page.get("NextPageToken").cloned() {
                request["NextPageToken"] = token;
                let started = Instant::now();
                let (status, next) = call_with(&state, key, "GetCostAndUsage", &request).await;
                warm.push(started.elapsed());
                assert_eq!(status, 200);
                page = next;
            }
            let mean = warm.iter().sum::<Duration>() / warm.len().max(1) as u32;
            let max = warm.iter().max().copied().unwrap_or_default();
            eprintln!(
                "  later pages (warm): {} pages, mean {mean:.2?}, max {max:.2?}",
                warm.len()
            );
        }
        // A view: grouped by a cost category and a dimension, under a tag filter.
        let request = json!({
            "TimePeriod": {"Start": month_start.to_string(), "End": (today + Days::new(1)).to_string()},
            "Granularity": "DAILY",
            "Metrics": ["UnblendedCost"],
            "Filter": {"And": [
                {"Tags": {"Key": "team", "MatchOptions": ["ABSENT"]}},
                {"Not": dimension("REGION", &["global", "NoRegion"])},
            ]},
            "GroupBy": [{"Type": "COST_CATEGORY", "Key": "Environment"}, {"Type": "DIMENSION", "Key": "USAGE_TYPE"}],
        });
        let started = Instant::now();
        let (status, page) = call_with(&state, key, "GetCostAndUsage", &request).await;
        assert_eq!(status, 200, "{page}");
        eprintln!(
            "DAILY, untagged, by Environment and USAGE_TYPE: first page (cold) {:.2?}",
            started.elapsed()
        );
        eprintln!(
            "RSS at the end: {} (peak {})",
            status_kb("VmRSS:"),
            status_kb("VmHWM:")
        );
    }
}

#[cfg(test)]
mod publication_tests;
