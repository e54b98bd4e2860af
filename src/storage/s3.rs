//! `--storage.path s3://BUCKET/PREFIX`: the storage's objects in S3, read and written with the
//! conditional requests that make shared records and leases correct.
//!
//! - A read may name the ETag it already has (`If-None-Match`): S3 answers 304 and sends
//!   nothing when the object is unchanged, which is how replicas poll records cheaply.
//! - A write may demand that the object be absent (`If-None-Match: *`) or still be the version
//!   read (`If-Match: ETag`); when it is not, S3 answers 412 and writes nothing
//!   ([`Written::Conflict`]). S3 writes an object whole or not at all: no reader ever sees half
//!   of one.
//!
//! The client is the AWS SDK's: credentials from the default chain (or the options'), the
//! region from the default chain (else `us-east-1`), the endpoint from the standard
//! `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (or the options'), with path-style addressing
//! when an endpoint is set. Its requests run on a small runtime of their own, so that the
//! storage's blocking callers (the daily cap's interceptor, the refresh's blocking threads) can
//! wait for them from any thread without holding the thread the request needs.

use std::future::Future;
use std::io;
use std::time::Duration;

use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::http::Response;

/// Where in S3: `s3://BUCKET` or `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
}

impl Location {
    /// Parses `s3://BUCKET[/PREFIX]`: `None` when `text` is not an `s3://` URL; an error when it
    /// is one without a valid bucket name.
    pub fn parse(text: &str) -> Option<Result<Self, String>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid {
            return Some(Err(format!(
                "{text:?} does not name an S3 bucket: give s3://BUCKET or s3://BUCKET/PREFIX, BUCKET being 3 to 63 lower-case letters, digits, '-' or '.'"
            )));
        }
        let prefix = prefix.trim_matches('/');
        Some(Ok(Self {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }))
    }

    /// The URL of an object under the prefix, for messages.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{}/{}{name}", self.bucket, self.prefix)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// How the S3 client is made, beyond the default chain (tests set them; the binary leaves them
/// to the standard environment variables and files).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// The endpoint (else `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, or AWS's).
    pub endpoint_url: Option<String>,
    /// The region (else the default chain's, else `us-east-1`).
    pub region: Option<String>,
    /// Static credentials (else the default chain's).
    pub credentials: Option<aws_credential_types::Credentials>,
    /// How long a request may take, its retry included (default 10 s).
    pub attempt_timeout: Option<Duration>,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// No such object.
    Missing,
    /// The object still has the ETag named.
    Unchanged,
    Found {
        bytes: Vec<u8>,
        etag: String,
    },
}

/// What a write demands of the object it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition<'a> {
    /// Nothing: the write replaces whatever is there.
    Any,
    /// That there is none (`If-None-Match: *`).
    Absent,
    /// That it is still this version (`If-Match`).
    Matches(&'a str),
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Done {
        etag: String,
    },
    /// The condition did not hold (HTTP 412, or 409 when another conditional write to the key
    /// was in flight): nothing was written.
    Conflict,
}

/// A bucket and prefix, with the client that reaches them.
pub struct Bucket {
    client: aws_sdk_s3::Client,
    location: Location,
    handle: tokio::runtime::Handle,
    /// Dropped without blocking (see [`Drop`]).
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Bucket {
    /// The client for `location`, on its own runtime.
    pub async fn connect(location: Location, options: &S3Options) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aws-cost-storage")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let options = options.clone();
        let client = handle
            .spawn(async move {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(region) = &options.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                if let Some(credentials) = options.credentials.clone() {
                    loader = loader.credentials_provider(credentials);
                }
                let shared = loader.load().await;
                // Every request, retry included, ends within one attempt's time.
                let attempt = options.attempt_timeout.unwrap_or(Duration::from_secs(10));
                let mut config = aws_sdk_s3::config::Builder::from(&shared)
                    // Plain bodies: the records are small, and every S3-compatible store
                    // reads them.
                    .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                    .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
                    // One retry: a lease's timing cannot wait out the standard backoff, and
                    // every caller tries again on its own schedule.
                    .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(3))
                            .operation_attempt_timeout(attempt)
                            .operation_timeout(attempt)
                            .build(),
                    );
                if shared.region().is_none() && options.region.is_none() {
                    config = config.region(aws_config::Region::new("us-east-1"));
                }
                if let Some(url) = &options.endpoint_url {
                    config = config.endpoint_url(url.clone());
                }
                let custom_endpoint = options.endpoint_url.is_some()
                    || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
                    || std::env::var_os("AWS_ENDPOINT_URL").is_some();
                aws_sdk_s3::Client::from_conf(config.force_path_style(custom_endpoint).build())
            })
            .await
            .map_err(io::Error::other)?;
        Ok(Self {
            client,
            location,
            handle,
            runtime: Some(runtime),
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.location.prefix)
    }

    /// Runs `future` on the storage's runtime and waits for it without blocking.
    async fn on_runtime<T: Send + 'static>(
        &self,
        future: impl Future<Output = io::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        self.handle
            .spawn(future)
            .await
            .map_err(|_| io::Error::other("the storage's runtime is shutting down"))?
    }

    /// Runs `future` on the storage's runtime and blocks the calling thread until it is done:
    /// for blocking callers, from any thread but the storage runtime's own.
    fn blocking<T: Send + 'static>(
        &self,
        future: impl Future<Output = io::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver
            .recv()
            .map_err(|_| io::Error::other("the storage's runtime is shutting down"))?
    }

    /// Reads an object; with `known`, only when its ETag is another.
    pub async fn get(&self, name: &str, known: Option<&str>) -> io::Result<Fetched> {
        self.on_runtime(self.get_future(name, known)).await
    }

    /// [`Bucket::get`], blocking.
    pub fn get_blocking(&self, name: &str, known: Option<&str>) -> io::Result<Fetched> {
        self.blocking(self.get_future(name, known))
    }

    fn get_future(
        &self,
        name: &str,
        known: Option<&str>,
    ) -> impl Future<Output = io::Result<Fetched>> + Send + 'static {
        let request = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(self.key(name))
            .set_if_none_match(known.map(str::to_string));
        let url = self.location.url(name);
        async move {
            match request.send().await {
                Ok(output) => {
                    let etag = output.e_tag().unwrap_or_default().to_string();
                    let bytes = output
                        .body
                        .collect()
                        .await
                        .map_err(|err| io::Error::other(format!("reading {url}: {err}")))?
                        .to_vec();
                    Ok(Fetched::Found { bytes, etag })
                }
                Err(err) => match status(&err) {
                    Some(304) => Ok(Fetched::Unchanged),
                    Some(404) => Ok(Fetched::Missing),
                    _ => Err(failed("reading", &url, &err)),
                },
            }
        }
    }

    /// Writes an object if `condition` holds.
    pub async fn put(
        &self,
        name: &str,
        bytes: Vec<u8>,
        condition: Condition<'_>,
    ) -> io::Result<Written> {
        self.on_runtime(self.put_future(name, bytes, condition))
            .await
    }

    /// [`Bucket::put`], blocking.
    pub fn put_blocking(
        &self,
        name: &str,
        bytes: Vec<u8>,
        condition: Condition<'_>,
    ) -> io::Result<Written> {
        self.blocking(self.put_future(name, bytes, condition))
    }

    fn put_future(
        &self,
        name: &str,
        bytes: Vec<u8>,
        condition: Condition<'_>,
    ) -> impl Future<Output = io::Result<Written>> + Send + 'static {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(self.key(name))
            .content_type("application/octet-stream")
            .body(ByteStream::from(bytes));
        request = match condition {
            Condition::Any => request,
            Condition::Absent => request.if_none_match("*"),
            Condition::Matches(etag) => request.if_match(etag),
        };
        let url = self.location.url(name);
        async move {
            match request.send().await {
                Ok(output) => Ok(Written::Done {
                    etag: output.e_tag().unwrap_or_default().to_string(),
                }),
                // 409: another conditional write to the key was in flight (S3's
                // ConditionalRequestConflict); 412: the condition did not hold.
                Err(err) if matches!(status(&err), Some(409 | 412)) => Ok(Written::Conflict),
                Err(err) => Err(failed("writing", &url, &err)),
            }
        }
    }

    /// Deletes an object (absent already is fine).
    pub async fn delete(&self, name: &str) -> io::Result<()> {
        let request = self
            .client
            .delete_object()
            .bucket(&self.location.bucket)
            .key(self.key(name));
        let url = self.location.url(name);
        self.on_runtime(async move {
            match request.send().await {
                Ok(_) => Ok(()),
                Err(err) if status(&err) == Some(404) => Ok(()),
                Err(err) => Err(failed("deleting", &url, &err)),
            }
        })
        .await
    }

    /// The objects whose names start with `start` (under the prefix): each name (without the
    /// prefix) and ETag.
    pub async fn list(&self, start: &str) -> io::Result<Vec<(String, String)>> {
        let client = self.client.clone();
        let bucket = self.location.bucket.clone();
        let prefix = self.location.prefix.clone();
        let url = self.location.url(start);
        let start = start.to_string();
        self.on_runtime(async move {
            let mut found = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(format!("{prefix}{start}"))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|err| failed("listing", &url, &err))?;
                for object in page.contents() {
                    if let Some(name) = object.key().and_then(|k| k.strip_prefix(&prefix)) {
                        found.push((
                            name.to_string(),
                            object.e_tag().unwrap_or_default().to_string(),
                        ));
                    }
                }
            }
            Ok(found)
        })
        .await
    }
}

/// The HTTP status of a failed request's response, if one came.
fn status<E>(err: &SdkError<E, Response>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// An SDK error as one line: what was done to which object, S3's code and message (no secret
/// is ever part of them).
fn failed<E>(doing: &str, url: &str, err: &SdkError<E, Response>) -> io::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => DisplayErrorContext(err).to_string(),
    };
    let status = status(err)
        .map(|s| format!(" (HTTP {s})"))
        .unwrap_or_default();
    io::Error::other(format!("{doing} {url}: {detail}{status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_with_and_without_a_prefix() {
        assert_eq!(Location::parse("/var/lib/x"), None);
        assert_eq!(
            Location::parse("s3://cost-records").unwrap().unwrap(),
            Location {
                bucket: "cost-records".into(),
                prefix: String::new()
            }
        );
        let with = Location::parse("s3://cost-records/team/a/")
            .unwrap()
            .unwrap();
        assert_eq!(with.prefix, "team/a/");
        assert_eq!(
            with.url("lease-x.bin"),
            "s3://cost-records/team/a/lease-x.bin"
        );
        for bad in ["s3://", "s3://A_B", "s3://ab", "s3://-abc/x"] {
            let err = Location::parse(bad).unwrap().unwrap_err();
            assert!(err.contains("does not name an S3 bucket"), "{err}");
        }
    }
}
