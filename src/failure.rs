//! Why a refresh failed, in a small fixed set of reasons, and AWS errors told in one short line.
//!
//! Every AWS SDK error is reduced to an [`AwsError`]: the operation, AWS's error code and
//! message, the HTTP status and the request id, or what happened instead of an answer (a
//! timeout, an unreachable endpoint, an unreadable response, no credentials). Its `Display` is
//! the line the log and the error messages carry: never the SDK's `Debug` dump, never headers,
//! never a credential. Each failure has one [`Reason`], the `reason` label of
//! `aws_cost_refresh_failures_total`.
//!
//! An error is also told as a [`Concise`]: the same text in pieces, so that a log line can cut
//! the middle of AWS's message (or of an error chain) to fit its budget while the operation, the
//! error code, the HTTP status and the request id stay whole.

use std::error::Error as StdError;
use std::fmt;

use aws_sdk_costexplorer::error::ProvideErrorMetadata;
use aws_sdk_costexplorer::operation::RequestId;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

/// Why a refresh (or a part of it) failed: the `reason` label of
/// `aws_cost_refresh_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// AWS refused the identity the action (`AccessDeniedException`, `AccessDenied`).
    AccessDenied,
    /// AWS throttled the requests, still after the SDK's retries (`LimitExceededException`).
    Throttled,
    /// AWS answered with another error (HTTP 5xx, `ServiceUnavailable`, a validation error), or
    /// could not be reached.
    AwsError,
    /// No answer within the attempt or operation timeout.
    Timeout,
    /// An answer that could not be read or made sense of: malformed JSON, a truncated body, a
    /// page token that loops, a group without its figures.
    BadResponse,
    /// Amounts in a unit other than USD.
    UnsupportedUnit,
    /// No valid credentials: expired or refused keys, an AssumeRole that STS refused, a default
    /// chain that found nothing.
    Credentials,
    /// The daily cap of billed Cost Explorer requests (`max_api_requests_per_day`) is reached.
    ApiBudget,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 8] = [
        Reason::AccessDenied,
        Reason::Throttled,
        Reason::AwsError,
        Reason::Timeout,
        Reason::BadResponse,
        Reason::UnsupportedUnit,
        Reason::Credentials,
        Reason::ApiBudget,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AccessDenied => "access_denied",
            Reason::Throttled => "throttled",
            Reason::AwsError => "aws_error",
            Reason::Timeout => "timeout",
            Reason::BadResponse => "bad_response",
            Reason::UnsupportedUnit => "unsupported_unit",
            Reason::Credentials => "credentials",
            Reason::ApiBudget => "api_budget",
        }
    }

    /// The reason an AWS error code stands for (codes of Cost Explorer, STS and Organizations).
    pub fn of_code(code: &str) -> Option<Reason> {
        Some(match code {
            "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => {
                Reason::AccessDenied
            }
            "LimitExceededException"
            | "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "SlowDown" => Reason::Throttled,
            "ExpiredTokenException"
            | "ExpiredToken"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "InvalidClientTokenId"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "InvalidAccessKeyId"
            | "AuthFailure" => Reason::Credentials,
            _ => return None,
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that falls under one [`Reason`].
pub trait Classify {
    fn reason(&self) -> Reason;
}

/// The longest AWS error message kept (AWS's own are far shorter).
pub const MAX_MESSAGE: usize = 200;

/// What went wrong instead of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// AWS answered with an error.
    Service { code: String, message: String },
    /// No answer within a timeout.
    Timeout(String),
    /// AWS could not be reached (connection refused or reset, DNS, TLS).
    Unreachable(String),
    /// An answer that could not be read or parsed.
    BadResponse(String),
    /// No credentials to sign the request with: what the credential provider said.
    Credentials(String),
    /// No credentials to sign the request with: AWS refused the request that would have given
    /// them (an AssumeRole that STS refused), told with its own status and request id.
    CredentialsRefused(Box<AwsError>),
    /// The request could not be built.
    Other(String),
}

/// One failed AWS call, told concisely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AwsError {
    /// `GetCostAndUsage`, `AssumeRole`, `ListAccounts`, ...
    pub operation: &'static str,
    pub kind: AwsErrorKind,
    /// The HTTP status of the answer, when there was one.
    pub status: Option<u16>,
    /// AWS's request id, when the answer had one.
    pub request_id: Option<String>,
}

impl AwsError {
    /// Reduces an SDK error to its essentials.
    pub fn from_sdk<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let request_id = err
            .request_id()
            .or_else(|| err.meta().request_id())
            .map(str::to_string);
        let kind = match err {
            SdkError::ServiceError(_) => AwsErrorKind::Service {
                code: err.code().unwrap_or("UnknownError").to_string(),
                message: shorten(err.message().unwrap_or_default(), MAX_MESSAGE),
            },
            SdkError::TimeoutError(_) => AwsErrorKind::Timeout(chain(err)),
            SdkError::DispatchFailure(failure) => match credentials_failure(err) {
                Some(kind) => kind,
                None if failure.is_timeout() => AwsErrorKind::Timeout(chain(err)),
                None => AwsErrorKind::Unreachable(chain(err)),
            },
            SdkError::ResponseError(_) => AwsErrorKind::BadResponse(chain(err)),
            _ => match credentials_failure(err) {
                Some(kind) => kind,
                None => AwsErrorKind::Other(chain(err)),
            },
        };
        AwsError {
            operation,
            kind,
            status,
            request_id,
        }
    }

    /// AWS's error code, for service errors.
    pub fn code(&self) -> Option<&str> {
        match &self.kind {
            AwsErrorKind::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// `GetCostAndUsage: AccessDeniedException: User ... is not authorized ... (HTTP 400, request
/// id ...)`: AWS's message (or the error chain told instead of an answer) may lose its middle,
/// the operation, code, HTTP status and request id never.
impl ToConcise for AwsError {
    fn concise(&self) -> Concise {
        let told = Concise::default().fixed(format!("{}: ", self.operation));
        let told = match &self.kind {
            AwsErrorKind::Service { code, message } if message.is_empty() => told.fixed(code),
            AwsErrorKind::Service { code, message } => {
                told.fixed(format!("{code}: ")).elidable(message)
            }
            AwsErrorKind::Timeout(text) => told.fixed("no answer in time: ").elidable(text),
            AwsErrorKind::Unreachable(text) => told.fixed("AWS unreachable: ").elidable(text),
            AwsErrorKind::BadResponse(text) => told.fixed("unreadable response: ").elidable(text),
            AwsErrorKind::Credentials(text) => told.fixed("no credentials: ").elidable(text),
            AwsErrorKind::CredentialsRefused(refused) => {
                told.fixed("no credentials: ").then(refused.concise())
            }
            AwsErrorKind::Other(text) => told.elidable(text),
        };
        match (self.status, &self.request_id) {
            (Some(status), Some(id)) => told.fixed(format!(" (HTTP {status}, request id {id})")),
            (Some(status), None) => told.fixed(format!(" (HTTP {status})")),
            (None, Some(id)) => told.fixed(format!(" (request id {id})")),
            (None, None) => told,
        }
    }
}

impl Classify for AwsError {
    fn reason(&self) -> Reason {
        match &self.kind {
            AwsErrorKind::Service { code, .. } => {
                Reason::of_code(code).unwrap_or(match self.status {
                    Some(429) => Reason::Throttled,
                    _ => Reason::AwsError,
                })
            }
            AwsErrorKind::Timeout(_) => Reason::Timeout,
            AwsErrorKind::Unreachable(_) | AwsErrorKind::Other(_) => Reason::AwsError,
            AwsErrorKind::BadResponse(_) => Reason::BadResponse,
            AwsErrorKind::Credentials(_) | AwsErrorKind::CredentialsRefused(_) => {
                Reason::Credentials
            }
        }
    }
}

/// The whole of [`AwsError::concise`].
impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.concise(), f)
    }
}

/// When a request failed for want of credentials, what the credential provider said: an
/// [`AwsError`] of its own (an AssumeRole STS refused) or the provider's error chain.
fn credentials_failure(err: &(dyn StdError + 'static)) -> Option<AwsErrorKind> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(credentials) =
            e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            let mut inner: Option<&(dyn StdError + 'static)> = Some(credentials);
            while let Some(i) = inner {
                if let Some(aws) = i.downcast_ref::<AwsError>() {
                    return Some(AwsErrorKind::CredentialsRefused(Box::new(aws.clone())));
                }
                inner = i.source();
            }
            return Some(AwsErrorKind::Credentials(chain(credentials)));
        }
        current = e.source();
    }
    None
}

/// An error and its sources, joined with ": ", each said once, shortened.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    // The outermost parts of an SDK error are generic ("dispatch failure", "io error"): the
    // innermost say what happened.
    let generic = [
        "dispatch failure",
        "request has timed out",
        "response error",
        "failed to construct request",
        "service error",
        "other",
        "io error",
        "timeout",
        "user error",
    ];
    let specific: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| !generic.contains(p))
        .collect();
    let text = if specific.is_empty() {
        parts.join(": ")
    } else {
        specific.join(": ")
    };
    shorten(&text, MAX_MESSAGE)
}

/// `text` cut to at most `max` characters: its middle replaced with "…" (see [`elide`]).
pub fn shorten(text: &str, max: usize) -> String {
    elide(text.trim(), max, |_| 1)
}

/// What marks the text an elision took out.
pub const ELLIPSIS: char = '…';

/// The fewest characters a piece of text cut by [`Concise::within`] keeps: fewer say nothing,
/// and the piece is reduced to an ellipsis instead.
pub const MIN_CUT: usize = 16;

/// `text` as it is if its characters cost at most `max` (each `cost(c)`, at least 1), else its
/// head and tail around an [`ELLIPSIS`], costing at most `max` in all: two thirds of the room
/// for the head (what an AWS message says first: the identity, the action) and the rest for
/// the tail (why: "because no identity-based policy allows ..."), cut on character boundaries,
/// without spaces next to the ellipsis. With `max` 0 the result is empty.
pub fn elide(text: &str, max: usize, cost: impl Fn(char) -> usize) -> String {
    let cost = |c: char| cost(c).max(1);
    if text.chars().map(cost).sum::<usize>() <= max {
        return text.to_string();
    }
    let Some(room) = max.checked_sub(cost(ELLIPSIS)) else {
        return String::new();
    };
    let head_room = room - room / 3;
    let mut spent = 0;
    let head_end = text
        .char_indices()
        .take_while(|&(_, c)| {
            spent += cost(c);
            spent <= head_room
        })
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    let head = text[..head_end].trim_end();
    let tail_room = room - head.chars().map(cost).sum::<usize>();
    let mut spent = 0;
    let tail_start = text[head_end..]
        .char_indices()
        .rev()
        .take_while(|&(_, c)| {
            spent += cost(c);
            spent <= tail_room
        })
        .last()
        .map_or(text.len(), |(i, _)| head_end + i);
    let tail = text[tail_start..].trim_start();
    format!("{head}{ELLIPSIS}{tail}")
}

/// An error told in pieces, each either fixed (an operation, AWS's error code, an HTTP status,
/// a request id, the words between them) or elidable (AWS's message, an error chain, the name
/// of a failed part), so that [`Concise::within`] can fit it in a budget by cutting only the
/// middle of elidable pieces. Its `Display` is the whole text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Concise {
    pieces: Vec<(String, bool)>,
}

impl Concise {
    /// This, then `text`, never cut.
    pub fn fixed(mut self, text: impl Into<String>) -> Self {
        self.pieces.push((text.into(), false));
        self
    }

    /// This, then `text`, whose middle may be cut.
    pub fn elidable(mut self, text: impl Into<String>) -> Self {
        self.pieces.push((text.into(), true));
        self
    }

    /// This, then `other`.
    pub fn then(mut self, other: Concise) -> Self {
        self.pieces.extend(other.pieces);
        self
    }

    /// The whole text if its characters cost at most `max` (each `cost(c)`, at least 1, such as
    /// its length once escaped in a log line); else the elidable pieces are cut in their middle
    /// ([`elide`]) to the same cost at most, the longest first, until the text fits. A piece
    /// that would keep fewer than [`MIN_CUT`] characters says nothing: the longest such piece
    /// is reduced to an ellipsis instead, so that shorter ones (the name of a failed part) can
    /// stay whole. The fixed pieces are never cut: when they alone cost more than `max`, the
    /// text is longer than `max` (every elidable piece then an ellipsis).
    pub fn within(&self, max: usize, cost: impl Fn(char) -> usize) -> String {
        let cost = |c: char| cost(c).max(1);
        let costs: Vec<usize> = self
            .pieces
            .iter()
            .map(|(text, _)| text.chars().map(cost).sum())
            .collect();
        if costs.iter().sum::<usize>() <= max {
            return self.to_string();
        }
        let least = cost(ELLIPSIS);
        // Each piece's cap: `None` for a fixed piece, the piece's own cost when it stays whole.
        let mut caps: Vec<Option<usize>> = self
            .pieces
            .iter()
            .zip(&costs)
            .map(|((_, elidable), &c)| elidable.then_some(c))
            .collect();
        let fixed: usize = costs
            .iter()
            .zip(&caps)
            .filter(|(_, cap)| cap.is_none())
            .map(|(c, _)| c)
            .sum();
        let mut collapsed = vec![false; costs.len()];
        loop {
            // The largest cap on the pieces not reduced to an ellipsis that fits.
            let spent = |cap: usize| -> usize {
                (0..costs.len())
                    .filter(|&i| self.pieces[i].1)
                    .map(|i| match collapsed[i] {
                        true => least.min(costs[i]),
                        false => costs[i].min(cap),
                    })
                    .sum()
            };
            let longest = costs.iter().copied().max().unwrap_or(0);
            let cap = (least..=longest)
                .rev()
                .find(|&cap| fixed + spent(cap) <= max)
                .unwrap_or(least);
            let cut = (0..costs.len())
                .filter(|&i| self.pieces[i].1 && !collapsed[i] && costs[i] > cap)
                .max_by_key(|&i| (costs[i], std::cmp::Reverse(i)));
            match cut {
                Some(longest) if cap < MIN_CUT && costs[longest] > least => {
                    collapsed[longest] = true;
                }
                _ => {
                    for (i, slot) in caps.iter_mut().enumerate() {
                        if let Some(own) = slot {
                            *slot = Some(if collapsed[i] { least } else { (*own).min(cap) });
                        }
                    }
                    break;
                }
            }
        }
        self.pieces
            .iter()
            .zip(&caps)
            .map(|((text, _), cap)| match cap {
                Some(cap) => elide(text, *cap, cost),
                None => text.clone(),
            })
            .collect()
    }
}

impl fmt::Display for Concise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pieces
            .iter()
            .try_for_each(|(text, _)| f.write_str(text))
    }
}

/// An error that can be told as a [`Concise`].
pub trait ToConcise {
    fn concise(&self) -> Concise;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str, status: u16) -> AwsError {
        AwsError {
            operation: "GetCostAndUsage",
            kind: AwsErrorKind::Service {
                code: code.to_string(),
                message: "User: arn:aws:iam::123456789012:user/x is not authorized to perform: ce:GetCostAndUsage".to_string(),
            },
            status: Some(status),
            request_id: Some("4f1c2a9e-0000-4000-8000-000000000001".to_string()),
        }
    }

    #[test]
    fn service_errors_read_as_one_line() {
        assert_eq!(
            service("AccessDeniedException", 400).to_string(),
            "GetCostAndUsage: AccessDeniedException: User: arn:aws:iam::123456789012:user/x is not \
             authorized to perform: ce:GetCostAndUsage (HTTP 400, request id \
             4f1c2a9e-0000-4000-8000-000000000001)"
        );
    }

    #[test]
    fn codes_map_to_reasons() {
        let reason = |code: &str, status: u16| service(code, status).reason();
        assert_eq!(reason("AccessDeniedException", 400), Reason::AccessDenied);
        assert_eq!(reason("AccessDenied", 403), Reason::AccessDenied);
        assert_eq!(reason("LimitExceededException", 400), Reason::Throttled);
        assert_eq!(reason("TooManyRequestsException", 400), Reason::Throttled);
        assert_eq!(reason("Whatever", 429), Reason::Throttled);
        assert_eq!(reason("ExpiredTokenException", 400), Reason::Credentials);
        assert_eq!(
            reason("UnrecognizedClientException", 400),
            Reason::Credentials
        );
        assert_eq!(
            reason("InvalidSignatureException", 400),
            Reason::Credentials
        );
        assert_eq!(reason("InternalFailure", 500), Reason::AwsError);
        assert_eq!(reason("ServiceUnavailable", 503), Reason::AwsError);
        assert_eq!(reason("ValidationException", 400), Reason::AwsError);
        let timeout = AwsError {
            operation: "GetCostForecast",
            kind: AwsErrorKind::Timeout("operation attempt timeout occurred after 1s".into()),
            status: None,
            request_id: None,
        };
        assert_eq!(timeout.reason(), Reason::Timeout);
        assert_eq!(
            timeout.to_string(),
            "GetCostForecast: no answer in time: operation attempt timeout occurred after 1s"
        );
    }

    #[test]
    fn reasons_are_a_fixed_set_of_labels() {
        let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "access_denied",
                "throttled",
                "aws_error",
                "timeout",
                "bad_response",
                "unsupported_unit",
                "credentials",
                "api_budget"
            ]
        );
    }

    #[test]
    fn long_text_loses_its_middle_on_a_character_boundary() {
        assert_eq!(shorten("  short ", 10), "short");
        let long = format!("{}{}", "é".repeat(150), "ü".repeat(150));
        let cut = shorten(&long, 50);
        assert_eq!(cut, format!("{}…{}", "é".repeat(33), "ü".repeat(16)));
        assert_eq!(elide("abc", 0, |_| 1), "");
        assert_eq!(elide("abcdef", 1, |_| 1), "…");
        assert_eq!(elide("abcdef", 6, |_| 1), "abcdef");
        // No space next to the ellipsis; each character at its cost.
        assert_eq!(elide("one two three four", 10, |_| 1), "one tw…our");
        assert_eq!(elide("one two three four", 12, |_| 1), "one two…four");
        assert_eq!(
            elide("a\"b\"c\"d\"e\"f", 9, |c| if c == '"' { 2 } else { 1 }),
            "a\"b\"…f"
        );
    }

    /// The message AWS gives today when no policy allows the action.
    const DENIED: &str = "User: arn:aws:iam::123456789012:user/platform/cost-exporter is not authorized to perform: ce:GetCostAndUsage on resource: arn:aws:ce:us-east-1:123456789012:/GetCostAndUsage because no identity-based policy allows the ce:GetCostAndUsage action";

    fn denied() -> AwsError {
        AwsError {
            operation: "GetCostAndUsage",
            kind: AwsErrorKind::Service {
                code: "AccessDeniedException".into(),
                message: DENIED.into(),
            },
            status: Some(400),
            request_id: Some("c3fbaf66-bc1f-42fb-80a8-3a5e1b6f0d24".into()),
        }
    }

    #[test]
    fn a_budget_cuts_the_message_never_the_operation_code_status_or_request_id() {
        let err = denied();
        let whole = err.to_string();
        assert_eq!(
            whole,
            format!(
                "GetCostAndUsage: AccessDeniedException: {DENIED} (HTTP 400, request id \
                 c3fbaf66-bc1f-42fb-80a8-3a5e1b6f0d24)"
            )
        );
        assert_eq!(err.concise().within(10_000, |_| 1), whole);
        assert_eq!(
            err.concise().within(140, |_| 1),
            "GetCostAndUsage: AccessDeniedException: User: arn:aws:iam::1234567…dUsage action \
             (HTTP 400, request id c3fbaf66-bc1f-42fb-80a8-3a5e1b6f0d24)"
        );
        let fixed = "GetCostAndUsage: AccessDeniedException:  (HTTP 400, request id \
                     c3fbaf66-bc1f-42fb-80a8-3a5e1b6f0d24)"
            .chars()
            .count();
        for max in 0..whole.chars().count() + 2 {
            let told = err.concise().within(max, |_| 1);
            assert!(
                told.starts_with("GetCostAndUsage: AccessDeniedException: ")
                    && told
                        .ends_with(" (HTTP 400, request id c3fbaf66-bc1f-42fb-80a8-3a5e1b6f0d24)"),
                "{max}: {told}"
            );
            // At most the budget, one less when a space next to the ellipsis was dropped; an
            // ellipsis alone when the message would keep fewer than MIN_CUT characters.
            let length = told.chars().count();
            if max < fixed + MIN_CUT {
                assert_eq!(length, fixed + 1, "{max}: {told}");
            } else {
                let expected = max.min(whole.chars().count());
                assert!(
                    length == expected || length + 1 == expected,
                    "{max}: {told}"
                );
            }
        }
    }

    #[test]
    fn a_refused_assume_role_keeps_its_own_status_and_request_id() {
        let refused = AwsError {
            operation: "AssumeRole",
            kind: AwsErrorKind::Service {
                code: "AccessDenied".into(),
                message: "User: arn:aws:iam::999999999999:user/exporter is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role/CostExporter".into(),
            },
            status: Some(403),
            request_id: Some("415dd6cd-79ab-4f6f-855e-000000000008".into()),
        };
        let err = AwsError {
            operation: "GetCostAndUsage",
            kind: AwsErrorKind::CredentialsRefused(Box::new(refused)),
            status: None,
            request_id: None,
        };
        assert_eq!(err.reason(), Reason::Credentials);
        assert_eq!(
            err.concise().within(150, |_| 1),
            "GetCostAndUsage: no credentials: AssumeRole: AccessDenied: User: arn:aws:iam::9…\
             stExporter (HTTP 403, request id 415dd6cd-79ab-4f6f-855e-000000000008)"
        );
        // The fixed parts alone take 119 characters.
        assert_eq!(
            err.concise().within(120, |_| 1),
            "GetCostAndUsage: no credentials: AssumeRole: AccessDenied: … (HTTP 403, request id \
             415dd6cd-79ab-4f6f-855e-000000000008)"
        );
    }

    #[test]
    fn elidable_pieces_are_cut_longest_first() {
        let told = Concise::default()
            .elidable("forecast (unblended)")
            .fixed(": ")
            .elidable("x".repeat(100))
            .fixed(" [id]");
        assert_eq!(told.to_string().chars().count(), 127);
        // 27 too many: only the long piece is cut.
        assert_eq!(
            told.within(100, |_| 1),
            format!(
                "forecast (unblended): {}…{} [id]",
                "x".repeat(48),
                "x".repeat(24)
            )
        );
        // Both would keep 10 characters, too few to say anything: the longest goes, the other
        // keeps what is left.
        assert_eq!(told.within(27, |_| 1), "forecast (un…ended): … [id]");
        assert_eq!(told.within(29, |_| 1), "forecast (unblended): … [id]");
        // Two long pieces share the room.
        let two = Concise::default()
            .elidable("a".repeat(40))
            .fixed(" | ")
            .elidable("b".repeat(60));
        assert_eq!(
            two.within(63, |_| 1),
            format!(
                "{}…{} | {}…{}",
                "a".repeat(20),
                "a".repeat(9),
                "b".repeat(20),
                "b".repeat(9)
            )
        );
        // Fixed pieces alone are longer: every elidable piece is an ellipsis.
        assert_eq!(told.within(3, |_| 1), "…: … [id]");
    }
}
