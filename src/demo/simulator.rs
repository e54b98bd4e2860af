//! A simulated Cost Explorer (AWS JSON 1.1) and STS (AWS Query) on loopback.
//!
//! It speaks the wire protocols the real AWS SDK uses, so the exporter reaches it through the
//! ordinary SDK code path with an endpoint override. It checks who signed each request (the
//! access key in SigV4's `Credential=` and the session token of temporary credentials), serves
//! each account's own data, pages results, and records every request for the tests.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{Datelike, Days, NaiveDate};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::dataset::{Dataset, SimRow, format_units};
use crate::config::CostBasis;

/// How a simulated account answers Cost Explorer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Serves its dataset.
    Normal,
    /// `AccessDeniedException` on every Cost Explorer call.
    AccessDenied,
    /// `LimitExceededException` (throttling) on the next this many calls, then normal.
    Throttled(usize),
    /// Amounts in another currency.
    Currency(String),
    /// Answers normally, but only after this long.
    Hang(Duration),
}

#[derive(Debug, Clone)]
struct AccountState {
    dataset: Arc<Dataset>,
    behavior: Behavior,
    /// Whether resource-level data is enabled (an opt-in in Cost Explorer's preferences).
    resources_enabled: bool,
    /// Operations that fail with (code, message).
    failures: HashMap<String, (String, String)>,
}

impl AccountState {
    fn new(dataset: Dataset) -> Self {
        Self {
            dataset: Arc::new(dataset),
            behavior: Behavior::Normal,
            resources_enabled: false,
            failures: HashMap::new(),
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
    session_duration: Option<Duration>,
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

    /// Starts serving on 127.0.0.1 on an ephemeral port.
    pub async fn start(mut self) -> std::io::Result<Simulator> {
        if self.state.page_size == 0 {
            self.state.page_size = 500;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(self.state);
        let shutdown = CancellationToken::new();
        let task_state = state.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = token.cancelled() => return,
                };
                let state = task_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Simulator {
            addr,
            state,
            shutdown,
        })
    }
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

    /// An account's dataset.
    pub fn dataset(&self, account_id: &str) -> Option<Arc<Dataset>> {
        let accounts = self.state.accounts.lock().ok()?;
        accounts.get(account_id).map(|a| a.dataset.clone())
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.state
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Changes how an account answers Cost Explorer from now on.
    pub fn set_behavior(&self, account_id: &str, behavior: Behavior) {
        set_behavior(&self.state, account_id, behavior);
    }
}

fn set_behavior(state: &State, account_id: &str, behavior: Behavior) {
    update_account(state, account_id, |a| a.behavior = behavior);
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
    access_key_id: String,
    account_id: String,
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    use std::sync::atomic::Ordering;
    state.in_flight.fetch_add(1, Ordering::SeqCst);
    let response = handle_request(state, request).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

/// How long Cost Explorer makes this caller wait, by its account's behavior.
fn hang_for(state: &State, access_key_id: &str) -> Option<Duration> {
    let account_id = state
        .keys
        .lock()
        .ok()?
        .get(access_key_id)?
        .account_id
        .clone();
    match state.accounts.lock().ok()?.get(&account_id)?.behavior {
        Behavior::Hang(duration) => Some(duration),
        _ => None,
    }
}

async fn handle_request(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, 1 << 20).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let access_key_id = signing_key(&parts.headers).unwrap_or_default();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (operation, response) = match target {
        Some(target) => {
            if let Some(delay) = hang_for(state, &access_key_id) {
                tokio::time::sleep(delay).await;
            }
            let operation = target.rsplit('.').next().unwrap_or_default().to_string();
            let response = json_api(state, &operation, &parts.headers, &access_key_id, &body);
            (operation, response)
        }
        None => {
            let form: HashMap<String, String> =
                form_urlencoded::parse(&body).into_owned().collect();
            let operation = form.get("Action").cloned().unwrap_or_default();
            let response = sts(state, &operation, &parts.headers, &access_key_id, &form);
            (operation, response)
        }
    };
    if let Ok(mut log) = state.log.lock() {
        log.push(LoggedRequest {
            operation,
            access_key_id,
            status: response.status().as_u16(),
        });
    }
    response
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
        access_key_id: access_key_id.to_string(),
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
) -> Response<Full<Bytes>> {
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
    let account = state
        .accounts
        .lock()
        .ok()
        .and_then(|a| a.get(&caller.account_id).cloned());
    let Some(account) = account else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            &format!(
                "User: arn:aws:iam::{}:user/{} is not authorized to perform: ce:{operation}",
                caller.account_id, caller.access_key_id
            ),
        );
    };
    match &account.behavior {
        Behavior::AccessDenied => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                &format!("User is not authorized to perform: ce:{operation}"),
            );
        }
        Behavior::Normal | Behavior::Currency(_) | Behavior::Hang(_) | Behavior::Throttled(_) => {}
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
    let result = match operation {
        "GetCostAndUsage" => get_cost_and_usage(state, &account.dataset, &request, unit, false),
        "GetCostAndUsageWithResources" if !account.resources_enabled => Err(validation(
            "Resource-level data is not enabled for this account. Opt in from the Cost Explorer Settings page.",
        )),
        "GetCostAndUsageWithResources" => {
            get_cost_and_usage(state, &account.dataset, &request, unit, true)
        }
        "GetCostForecast" => get_cost_forecast(&account.dataset, &request, unit),
        "ListAccounts" => list_accounts(&caller.account_id, &account.dataset, &request),
        other => Err(validation(&format!("operation {other} is not simulated"))),
    };
    match result {
        Ok(value) => {
            let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            response
        }
        Err((code, message)) => json_error(StatusCode::BAD_REQUEST, &code, &message),
    }
}

type ApiError = (String, String);

fn validation(message: &str) -> ApiError {
    ("ValidationException".to_string(), message.to_string())
}

fn date_field(value: &Value, field: &str) -> Result<NaiveDate, ApiError> {
    let text = value
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| validation(&format!("TimePeriod.{field} is required")))?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| validation(&format!("TimePeriod.{field} {text:?} is invalid")))
}

/// A `GroupBy` key: a dimension, or a tag key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GroupKey {
    Dimension(String),
    Tag(String),
}

fn group_value(key: &GroupKey, row: &SimRow) -> String {
    match key {
        GroupKey::Dimension(d) => dimension_value(d, row).unwrap_or_default(),
        GroupKey::Tag(k) => format!("{k}${}", row.tag(k).unwrap_or_default()),
    }
}

fn dimension_value(dimension: &str, row: &SimRow) -> Option<String> {
    Some(match dimension {
        "LINKED_ACCOUNT" => row.account_id().to_string(),
        "SERVICE" => row.service().to_string(),
        "RECORD_TYPE" => row.record_type().to_string(),
        "RESOURCE_ID" => row.resource_id().unwrap_or_default().to_string(),
        _ => return None,
    })
}

/// Evaluates a Cost Explorer filter `Expression` against a row.
fn matches(expression: &Value, row: &SimRow) -> Result<bool, ApiError> {
    let object = expression
        .as_object()
        .ok_or_else(|| validation("Filter must be an object"))?;
    let present: Vec<&String> = object.keys().collect();
    if present.len() != 1 {
        return Err(validation(
            "an Expression must have exactly one of And, Or, Not, Dimensions",
        ));
    }
    let (kind, inner) = object
        .iter()
        .next()
        .ok_or_else(|| validation("empty Expression"))?;
    match kind.as_str() {
        "And" | "Or" => {
            let items = inner
                .as_array()
                .ok_or_else(|| validation("And/Or takes a list"))?;
            if items.len() < 2 {
                return Err(validation("And/Or needs at least two expressions"));
            }
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                results.push(matches(item, row)?);
            }
            Ok(if kind == "And" {
                results.iter().all(|r| *r)
            } else {
                results.iter().any(|r| *r)
            })
        }
        "Not" => Ok(!matches(inner, row)?),
        "Dimensions" => {
            let key = inner
                .get("Key")
                .and_then(Value::as_str)
                .ok_or_else(|| validation("Dimensions.Key is required"))?;
            let values: Vec<&str> = inner
                .get("Values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let actual = dimension_value(key, row)
                .ok_or_else(|| validation(&format!("dimension {key} is not simulated")))?;
            Ok(values.contains(&actual.as_str()))
        }
        other => Err(validation(&format!("filter {other} is not simulated"))),
    }
}

/// The result periods for `[start, end)`: days, or months cut at month boundaries.
fn periods(
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

fn metric_map(metrics: &[(String, CostBasis)], sums: &[i128], unit: &str) -> Value {
    let mut map = serde_json::Map::new();
    for ((name, _), sum) in metrics.iter().zip(sums) {
        map.insert(
            name.clone(),
            json!({"Amount": format_units(*sum), "Unit": unit}),
        );
    }
    Value::Object(map)
}

fn get_cost_and_usage(
    state: &State,
    dataset: &Dataset,
    request: &Value,
    unit: &str,
    with_resources: bool,
) -> Result<Value, ApiError> {
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
        let basis = CostBasis::from_metric(name)
            .ok_or_else(|| validation(&format!("Metric {name} is not supported")))?;
        metrics.push((name.to_string(), basis));
    }
    let mut group_keys = Vec::new();
    if let Some(groups) = request.get("GroupBy").and_then(Value::as_array) {
        if groups.len() > 2 {
            return Err(validation("You can only group by up to two dimensions"));
        }
        for group in groups {
            let kind = group
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let key = group.get("Key").and_then(Value::as_str).unwrap_or_default();
            match kind {
                "DIMENSION" if matches!(key, "LINKED_ACCOUNT" | "SERVICE" | "RECORD_TYPE") => {
                    group_keys.push(GroupKey::Dimension(key.to_string()));
                }
                "DIMENSION" if key == "RESOURCE_ID" && with_resources => {
                    group_keys.push(GroupKey::Dimension(key.to_string()));
                }
                "TAG" if !key.is_empty() => group_keys.push(GroupKey::Tag(key.to_string())),
                _ => {
                    return Err(validation(&format!(
                        "GroupBy {kind} {key} is not simulated"
                    )));
                }
            }
        }
    }
    let filter = request.get("Filter");
    let token = request.get("NextPageToken").and_then(Value::as_str);

    // Entries in result order: per period, its groups (or one empty marker).
    enum Entry {
        Empty(usize),
        Group(usize, Vec<String>, Vec<i128>),
        Total(usize, Vec<i128>),
    }
    let periods = periods(start, end, granularity)?;
    let mut entries = Vec::new();
    for (index, (from, to)) in periods.iter().enumerate() {
        let mut groups: BTreeMap<Vec<String>, Vec<i128>> = BTreeMap::new();
        let mut total = vec![0i128; metrics.len()];
        for row in dataset
            .rows
            .iter()
            .filter(|r| r.day >= *from && r.day < *to)
        {
            if let Some(filter) = filter
                && !matches(filter, row)?
            {
                continue;
            }
            let sums = if group_keys.is_empty() {
                &mut total
            } else {
                let keys = group_keys.iter().map(|k| group_value(k, row)).collect();
                groups.entry(keys).or_insert_with(|| vec![0; metrics.len()])
            };
            for (sum, (_, basis)) in sums.iter_mut().zip(&metrics) {
                *sum += i128::from(row.amount(*basis));
            }
        }
        if group_keys.is_empty() {
            entries.push(Entry::Total(index, total));
        } else if groups.is_empty() {
            entries.push(Entry::Empty(index));
        } else {
            entries.extend(
                groups
                    .into_iter()
                    .map(|(keys, sums)| Entry::Group(index, keys, sums)),
            );
        }
    }

    // Paging: a token is the offset and a fingerprint of the query it belongs to.
    let mut fingerprint_source = request.clone();
    if let Some(object) = fingerprint_source.as_object_mut() {
        object.remove("NextPageToken");
    }
    let mut hasher = DefaultHasher::new();
    fingerprint_source.to_string().hash(&mut hasher);
    let fingerprint = format!("{:016x}", hasher.finish());
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
    if offset > entries.len() {
        return Err(validation("invalid NextPageToken"));
    }
    let page_end = (offset + state.page_size).min(entries.len());
    let mut results: Vec<Value> = Vec::new();
    let mut current: Option<(usize, Vec<Value>, Option<Value>)> = None;
    let mut accounts_seen = std::collections::BTreeSet::new();
    let flush = |current: &mut Option<(usize, Vec<Value>, Option<Value>)>,
                 results: &mut Vec<Value>| {
        if let Some((index, groups, total)) = current.take() {
            let (from, to) = periods[index];
            // A period is Estimated while any of its days is.
            let estimated = dataset.is_estimated(to.pred_opt().unwrap_or(from));
            results.push(json!({
                "TimePeriod": {"Start": from.format("%Y-%m-%d").to_string(), "End": to.format("%Y-%m-%d").to_string()},
                "Total": total.unwrap_or_else(|| json!({})),
                "Groups": groups,
                "Estimated": estimated,
            }));
        }
    };
    for entry in &entries[offset..page_end] {
        let index = match entry {
            Entry::Empty(i) | Entry::Group(i, ..) | Entry::Total(i, _) => *i,
        };
        if current.as_ref().is_some_and(|(i, ..)| *i != index) {
            flush(&mut current, &mut results);
        }
        let slot = current.get_or_insert_with(|| (index, Vec::new(), None));
        match entry {
            Entry::Empty(_) => {}
            Entry::Total(_, sums) => slot.2 = Some(metric_map(&metrics, sums, unit)),
            Entry::Group(_, keys, sums) => {
                for (key, value) in group_keys.iter().zip(keys) {
                    if *key == GroupKey::Dimension("LINKED_ACCOUNT".into()) {
                        accounts_seen.insert(value.clone());
                    }
                }
                slot.1
                    .push(json!({"Keys": keys, "Metrics": metric_map(&metrics, sums, unit)}));
            }
        }
    }
    flush(&mut current, &mut results);
    let group_definitions: Vec<Value> = group_keys
        .iter()
        .map(|key| match key {
            GroupKey::Dimension(d) => json!({"Type": "DIMENSION", "Key": d}),
            GroupKey::Tag(t) => json!({"Type": "TAG", "Key": t}),
        })
        .collect();
    let attributes: Vec<Value> = accounts_seen
        .iter()
        .map(|id| {
            let name = dataset.accounts.get(id).cloned().unwrap_or_default();
            json!({"Value": id, "Attributes": {"description": name}})
        })
        .collect();
    let mut response = json!({
        "GroupDefinitions": group_definitions,
        "ResultsByTime": results,
        "DimensionValueAttributes": attributes,
    });
    if page_end < entries.len() {
        response["NextPageToken"] = Value::String(format!("{page_end}.{fingerprint}"));
    }
    Ok(response)
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
    let basis = CostBasis::ALL
        .into_iter()
        .find(|b| b.forecast_metric() == metric)
        .ok_or_else(|| validation(&format!("Metric {metric:?} is not supported")))?;
    let granularity = request
        .get("Granularity")
        .and_then(Value::as_str)
        .unwrap_or("MONTHLY");
    let interval = request
        .get("PredictionIntervalLevel")
        .and_then(Value::as_i64)
        .is_some();
    let filter = request.get("Filter");
    let keep = |row: &SimRow| filter.is_none_or(|f| matches(f, row).unwrap_or(false));
    if let Some(f) = filter {
        // Surface filter errors as AWS would.
        if let Some(row) = dataset.rows.first() {
            matches(f, row)?;
        }
    }
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
    const PAGE: usize = 2;
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
        .take(PAGE)
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
    if offset + PAGE < dataset.accounts.len() {
        response["NextToken"] = Value::String(format!("accounts-{}", offset + PAGE));
    }
    Ok(response)
}

fn sts(
    state: &State,
    operation: &str,
    headers: &http::HeaderMap,
    access_key_id: &str,
    form: &HashMap<String, String>,
) -> Response<Full<Bytes>> {
    let caller = match authenticate(state, headers, access_key_id) {
        Ok(caller) => caller,
        Err((code, message)) => return xml_error(StatusCode::FORBIDDEN, &code, &message),
    };
    if operation != "AssumeRole" {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("{operation} is not simulated"),
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
        )
    };
    let Some(role) = state.roles.get(&role_arn) else {
        return denied();
    };
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
        Err(_) => return xml_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "lock"),
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
         <ResponseMetadata><RequestId>00000000-0000-0000-0000-{serial:012}</RequestId></ResponseMetadata>\n</AssumeRoleResponse>\n",
        role_arn.rsplit('/').next().unwrap_or_default()
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    response
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"__type": code, "Message": message}).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
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

fn xml_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>Sender</Type>\n    \
         <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>00000000-0000-0000-0000-000000000000</RequestId>\n</ErrorResponse>\n",
        escape(code),
        escape(message)
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    response
}

fn plain(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = status;
    response
}
