//! Why a refresh failed, in a small fixed set of reasons, and AWS errors told in one short line.
//!
//! Every AWS SDK error is reduced to an [`AwsError`]: the operation, AWS's error code and
//! message, the HTTP status and the request id, or what happened instead of an answer (a
//! timeout, an unreachable endpoint, an unreadable response, no credentials). Its `Display` is
//! the line the log and the error messages carry: never the SDK's `Debug` dump, never headers,
//! never a credential. Each failure has one [`Reason`], the `reason` label of
//! `aws_cost_refresh_failures_total`.

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
    /// No credentials to sign the request with.
    Credentials(String),
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
                Some(text) => AwsErrorKind::Credentials(text),
                None if failure.is_timeout() => AwsErrorKind::Timeout(chain(err)),
                None => AwsErrorKind::Unreachable(chain(err)),
            },
            SdkError::ResponseError(_) => AwsErrorKind::BadResponse(chain(err)),
            _ => match credentials_failure(err) {
                Some(text) => AwsErrorKind::Credentials(text),
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
            AwsErrorKind::Credentials(_) => Reason::Credentials,
        }
    }
}

/// `GetCostAndUsage: AccessDeniedException: User ... is not authorized ... (HTTP 400, request
/// id ...)`.
impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.operation)?;
        match &self.kind {
            AwsErrorKind::Service { code, message } if message.is_empty() => f.write_str(code)?,
            AwsErrorKind::Service { code, message } => write!(f, "{code}: {message}")?,
            AwsErrorKind::Timeout(text) => write!(f, "no answer in time: {text}")?,
            AwsErrorKind::Unreachable(text) => write!(f, "AWS unreachable: {text}")?,
            AwsErrorKind::BadResponse(text) => write!(f, "unreadable response: {text}")?,
            AwsErrorKind::Credentials(text) => write!(f, "no credentials: {text}")?,
            AwsErrorKind::Other(text) => f.write_str(text)?,
        }
        match (self.status, &self.request_id) {
            (Some(status), Some(id)) => write!(f, " (HTTP {status}, request id {id})"),
            (Some(status), None) => write!(f, " (HTTP {status})"),
            (None, Some(id)) => write!(f, " (request id {id})"),
            (None, None) => Ok(()),
        }
    }
}

/// When a request failed for want of credentials, what the credential provider said: an
/// [`AwsError`] of its own (an AssumeRole STS refused) or the provider's error chain.
fn credentials_failure(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(credentials) =
            e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            let mut inner: Option<&(dyn StdError + 'static)> = Some(credentials);
            while let Some(i) = inner {
                if let Some(aws) = i.downcast_ref::<AwsError>() {
                    return Some(aws.to_string());
                }
                inner = i.source();
            }
            return Some(chain(credentials));
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

/// `text` cut to at most `max` characters (on a character boundary, marked with "...").
pub fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{}...", cut.trim_end())
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
    fn long_text_is_shortened_on_a_character_boundary() {
        assert_eq!(shorten("short", 10), "short");
        let long = "é".repeat(300);
        let cut = shorten(&long, 50);
        assert_eq!(cut.chars().count(), 50);
        assert!(cut.ends_with("..."));
    }
}
