//! A simulated Amazon S3 on loopback, as far as shared storage needs one: path-style requests
//! (`/BUCKET/KEY`), PutObject with S3's conditional writes (`If-None-Match: *` creates an object
//! only if there is none; `If-Match: ETAG` replaces it only if it is still that version; a
//! condition that does not hold is `412 PreconditionFailed`, and nothing is written),
//! GetObject and HeadObject (`If-None-Match: ETAG` answers `304 Not Modified`, `If-Match` a
//! `412`), DeleteObject and ListObjectsV2 (prefix, `max-keys`, continuation). Writes are applied
//! one at a time, so of two conditional writes on one version exactly one succeeds, as on S3.
//!
//! An ETag is a digest of the object's bytes, so that writing the same bytes again gives the same
//! ETag, as S3's MD5 ETags do; clients treat it as opaque. Bodies sent with the SDKs'
//! `aws-chunked` content encoding (chunk sizes, then trailing checksums) are decoded.
//!
//! Tests count requests per operation ([`S3Simulator::requests`]) and can make every request
//! fail ([`S3Simulator::set_failing`]) as an outage does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// ListObjectsV2's page size when the request does not ask for less (S3's own maximum).
const MAX_KEYS: usize = 1000;

#[derive(Debug, Clone)]
struct Object {
    body: Bytes,
    etag: String,
    last_modified: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct State {
    buckets: Mutex<BTreeMap<String, BTreeMap<String, Object>>>,
    requests: Mutex<BTreeMap<&'static str, usize>>,
    failing: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A running simulated S3; stops when dropped.
#[derive(Debug)]
pub struct S3Simulator {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: CancellationToken,
}

impl Drop for S3Simulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl S3Simulator {
    /// Starts serving on 127.0.0.1 on an ephemeral port, with these (empty) buckets.
    pub async fn start(buckets: &[&str]) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        {
            let mut all = lock(&state.buckets);
            for bucket in buckets {
                all.insert((*bucket).to_string(), BTreeMap::new());
            }
        }
        let shutdown = CancellationToken::new();
        let task_state = state.clone();
        crate::simulator::serve(listener, shutdown.clone(), move |request| {
            let state = task_state.clone();
            async move { handle(&state, request).await }
        });
        Ok(Self {
            addr,
            state,
            shutdown,
        })
    }

    /// The endpoint URL for `AWS_ENDPOINT_URL_S3` (path-style requests).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received of `operation` (`PutObject`, `GetObject`, `HeadObject`,
    /// `DeleteObject`, `ListObjectsV2`), whatever their answer.
    pub fn requests(&self, operation: &str) -> usize {
        lock(&self.state.requests)
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// An object's bytes as stored now.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Bytes> {
        lock(&self.state.buckets)
            .get(bucket)
            .and_then(|objects| objects.get(key))
            .map(|object| object.body.clone())
    }

    /// The keys in `bucket` under `prefix`, in order.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        lock(&self.state.buckets)
            .get(bucket)
            .map(|objects| {
                objects
                    .keys()
                    .filter(|key| key.starts_with(prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// While set, every request is answered `503 ServiceUnavailable` and changes nothing.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }
}

async fn handle<B>(state: &State, request: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
{
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "IncompleteBody", "body not read"),
    };
    let path = percent_decode(parts.uri.path());
    let query: BTreeMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let (bucket, key) = match path.trim_start_matches('/').split_once('/') {
        Some((bucket, key)) => (bucket.to_string(), key.to_string()),
        None => (path.trim_start_matches('/').to_string(), String::new()),
    };
    let operation = match (&parts.method, key.is_empty()) {
        (&Method::PUT, false) => "PutObject",
        (&Method::GET, false) => "GetObject",
        (&Method::HEAD, false) => "HeadObject",
        (&Method::DELETE, false) => "DeleteObject",
        (&Method::GET, true) if query.get("list-type").map(String::as_str) == Some("2") => {
            "ListObjectsV2"
        }
        _ => {
            return error(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "not simulated",
            );
        }
    };
    *lock(&state.requests).entry(operation).or_default() += 1;
    if state.failing.load(Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "Please reduce your request rate.",
        );
    }
    let mut buckets = lock(&state.buckets);
    let Some(objects) = buckets.get_mut(&bucket) else {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist",
        );
    };
    let headers = &parts.headers;
    match operation {
        "PutObject" => {
            let current = objects.get(&key).map(|object| object.etag.as_str());
            if let Some(failed) = precondition(headers, current) {
                return failed;
            }
            let body = if is_aws_chunked(headers) {
                match decode_aws_chunked(&body) {
                    Some(decoded) => decoded,
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "IncompleteBody",
                            "malformed aws-chunked body",
                        );
                    }
                }
            } else {
                body
            };
            let etag = etag_of(&body);
            objects.insert(
                key,
                Object {
                    body,
                    etag: etag.clone(),
                    last_modified: Utc::now(),
                },
            );
            let mut response = Response::new(Full::new(Bytes::new()));
            insert(response.headers_mut(), header::ETAG, &etag);
            response
        }
        "GetObject" | "HeadObject" => {
            let Some(object) = objects.get(&key) else {
                let mut response = error(
                    StatusCode::NOT_FOUND,
                    "NoSuchKey",
                    "The specified key does not exist.",
                );
                if operation == "HeadObject" {
                    *response.body_mut() = Full::new(Bytes::new());
                }
                return response;
            };
            if let Some(wanted) = header_str(headers, header::IF_MATCH)
                && !etag_matches(wanted, &object.etag)
            {
                return error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                );
            }
            let not_modified = header_str(headers, header::IF_NONE_MATCH)
                .is_some_and(|tags| etag_matches(tags, &object.etag));
            let mut response =
                Response::new(Full::new(if not_modified || operation == "HeadObject" {
                    Bytes::new()
                } else {
                    object.body.clone()
                }));
            if not_modified {
                *response.status_mut() = StatusCode::NOT_MODIFIED;
            } else {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, object.body.len().into());
            }
            let h = response.headers_mut();
            insert(h, header::ETAG, &object.etag);
            insert(
                h,
                header::LAST_MODIFIED,
                &object
                    .last_modified
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            );
            response
        }
        "DeleteObject" => {
            objects.remove(&key);
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        _ => list_objects(&bucket, objects, &query),
    }
}

/// A PutObject's condition that does not hold on the object's current ETag (`None`: no
/// object), as S3 answers it.
fn precondition(headers: &HeaderMap, current: Option<&str>) -> Option<Response<Full<Bytes>>> {
    let holds = match (
        header_str(headers, header::IF_NONE_MATCH),
        header_str(headers, header::IF_MATCH),
    ) {
        (Some(none_match), _) if none_match.trim() == "*" => current.is_none(),
        (_, Some(wanted)) => current.is_some_and(|etag| etag_matches(wanted, etag)),
        _ => true,
    };
    match (holds, current) {
        (true, _) => None,
        // If-Match on a key that does not exist.
        (false, None) if header_str(headers, header::IF_MATCH).is_some() => Some(error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        )),
        (false, _) => Some(error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        )),
    }
}

fn list_objects(
    bucket: &str,
    objects: &BTreeMap<String, Object>,
    query: &BTreeMap<String, String>,
) -> Response<Full<Bytes>> {
    let prefix = query.get("prefix").map(String::as_str).unwrap_or("");
    let max_keys = query
        .get("max-keys")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(MAX_KEYS)
        .clamp(1, MAX_KEYS);
    let after = query
        .get("continuation-token")
        .or_else(|| query.get("start-after"))
        .cloned()
        .unwrap_or_default();
    let matching: Vec<(&String, &Object)> = objects
        .iter()
        .filter(|(key, _)| key.starts_with(prefix) && **key > after)
        .collect();
    let page = &matching[..matching.len().min(max_keys)];
    let truncated = matching.len() > page.len();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{max_keys}</MaxKeys><IsTruncated>{truncated}</IsTruncated>",
        escape(bucket),
        escape(prefix),
        page.len()
    );
    for (key, object) in page {
        xml.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            escape(key),
            object.last_modified.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            escape(&object.etag),
            object.body.len()
        ));
    }
    if let (true, Some((last, _))) = (truncated, page.last()) {
        xml.push_str(&format!(
            "<NextContinuationToken>{}</NextContinuationToken>",
            escape(last)
        ));
    }
    xml.push_str("</ListBucketResult>");
    let mut response = Response::new(Full::new(Bytes::from(xml)));
    insert(
        response.headers_mut(),
        header::CONTENT_TYPE,
        "application/xml",
    );
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><RequestId>{:016X}</RequestId></Error>",
        escape(code),
        escape(message),
        fastrand::u64(..)
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    insert(
        response.headers_mut(),
        header::CONTENT_TYPE,
        "application/xml",
    );
    response
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = http::HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a list of entity tags (`"a", "b"`, or `*`) names `etag`.
fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',').map(str::trim).any(|tag| {
        tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == etag.trim_matches('"')
    })
}

/// A quoted hex digest of the bytes (two FNV-1a passes): the same bytes, the same ETag.
fn etag_of(body: &[u8]) -> String {
    let fnv = |seed: u64| {
        body.iter().fold(seed, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "\"{:016x}{:016x}\"",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

fn is_aws_chunked(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_ENCODING).is_some_and(|e| e.contains("aws-chunked"))
        || header_str(
            headers,
            header::HeaderName::from_static("x-amz-content-sha256"),
        )
        .is_some_and(|v| v.starts_with("STREAMING-"))
}

/// The payload of an `aws-chunked` body: `SIZE[;chunk-signature=...]\r\nDATA\r\n` chunks up to
/// a zero-size one, then trailing headers (checksums), which are not checked here.
fn decode_aws_chunked(body: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(Bytes::from(out));
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request over its own connection: (status, headers as lower-case lines, body).
    async fn send(
        sim: &S3Simulator,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<String>, String) {
        let mut stream = tokio::net::TcpStream::connect(sim.addr).await.unwrap();
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            sim.addr,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        (
            status,
            lines.map(str::to_ascii_lowercase).collect(),
            body.to_string(),
        )
    }

    fn etag(headers: &[String]) -> String {
        headers
            .iter()
            .find_map(|h| h.strip_prefix("etag: "))
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn conditional_writes_create_once_and_replace_only_the_version_read() {
        let sim = S3Simulator::start(&["b"]).await.unwrap();
        let create = [("if-none-match", "*")];
        let (status, headers, _) = send(&sim, "PUT", "/b/p/lease", &create, b"one").await;
        assert_eq!(status, 200);
        let first = etag(&headers);
        // A second create loses, and writes nothing.
        let (status, _, body) = send(&sim, "PUT", "/b/p/lease", &create, b"two").await;
        assert_eq!(status, 412);
        assert!(body.contains("<Code>PreconditionFailed</Code>"), "{body}");
        assert_eq!(sim.object("b", "p/lease").unwrap(), "one");

        // Replacing the version read succeeds once; the old ETag is then stale.
        let (status, headers, _) =
            send(&sim, "PUT", "/b/p/lease", &[("if-match", &first)], b"three").await;
        assert_eq!(status, 200);
        let second = etag(&headers);
        assert_ne!(first, second);
        let (status, _, _) =
            send(&sim, "PUT", "/b/p/lease", &[("if-match", &first)], b"four").await;
        assert_eq!(status, 412);
        assert_eq!(sim.object("b", "p/lease").unwrap(), "three");
        // If-Match on a key that does not exist.
        let (status, _, body) = send(&sim, "PUT", "/b/p/none", &[("if-match", &first)], b"x").await;
        assert_eq!((status, body.contains("NoSuchKey")), (404, true));
        // The same bytes, the same ETag (as S3's MD5).
        let (_, headers, _) = send(&sim, "PUT", "/b/p/other", &[], b"three").await;
        assert_eq!(etag(&headers), second);
        assert_eq!(sim.requests("PutObject"), 6);
    }

    #[tokio::test]
    async fn reads_answer_not_modified_for_the_etag_held() {
        let sim = S3Simulator::start(&["b"]).await.unwrap();
        let (_, headers, _) = send(&sim, "PUT", "/b/k%20y", &[], b"record").await;
        let tag = etag(&headers);
        assert_eq!(sim.keys("b", ""), ["k y"]);
        let (status, headers, body) = send(&sim, "GET", "/b/k%20y", &[], b"").await;
        assert_eq!((status, body.as_str()), (200, "record"));
        assert_eq!(etag(&headers), tag);
        let (status, _, body) =
            send(&sim, "GET", "/b/k%20y", &[("if-none-match", &tag)], b"").await;
        assert_eq!((status, body.as_str()), (304, ""));
        let (status, _, body) = send(
            &sim,
            "GET",
            "/b/k%20y",
            &[("if-none-match", "\"0123\"")],
            b"",
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "record"));
        let (status, _, _) = send(&sim, "GET", "/b/k%20y", &[("if-match", "\"0123\"")], b"").await;
        assert_eq!(status, 412);
        let (status, _, body) = send(&sim, "GET", "/b/missing", &[], b"").await;
        assert_eq!(
            (status, body.contains("<Code>NoSuchKey</Code>")),
            (404, true)
        );
        let (status, _, body) = send(&sim, "GET", "/nobucket/k", &[], b"").await;
        assert_eq!((status, body.contains("NoSuchBucket")), (404, true));
        let (status, _, _) = send(&sim, "DELETE", "/b/k%20y", &[], b"").await;
        assert_eq!(status, 204);
        assert!(sim.object("b", "k y").is_none());
        assert_eq!(sim.requests("GetObject"), 6);
    }

    #[tokio::test]
    async fn lists_by_prefix_in_pages() {
        let sim = S3Simulator::start(&["b"]).await.unwrap();
        for key in ["p/a", "p/b", "p/c", "q/a"] {
            send(&sim, "PUT", &format!("/b/{key}"), &[], key.as_bytes()).await;
        }
        let (status, _, xml) = send(
            &sim,
            "GET",
            "/b?list-type=2&prefix=p%2F&max-keys=2",
            &[],
            b"",
        )
        .await;
        assert_eq!(status, 200);
        assert!(
            xml.contains("<KeyCount>2</KeyCount>")
                && xml.contains("<IsTruncated>true</IsTruncated>"),
            "{xml}"
        );
        assert!(xml.contains("<Key>p/a</Key>") && xml.contains("<Key>p/b</Key>"));
        assert!(xml.contains("<NextContinuationToken>p/b</NextContinuationToken>"));
        let (_, _, xml) = send(
            &sim,
            "GET",
            "/b?list-type=2&prefix=p%2F&max-keys=2&continuation-token=p%2Fb",
            &[],
            b"",
        )
        .await;
        assert!(
            xml.contains("<Key>p/c</Key>") && !xml.contains("<Key>q/a</Key>"),
            "{xml}"
        );
        assert!(xml.contains("<IsTruncated>false</IsTruncated>"));
    }

    #[tokio::test]
    async fn aws_chunked_bodies_are_decoded_and_an_outage_writes_nothing() {
        let sim = S3Simulator::start(&["b"]).await.unwrap();
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
        let headers = [
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "11"),
        ];
        let (status, _, _) = send(&sim, "PUT", "/b/k", &headers, body).await;
        assert_eq!(status, 200);
        assert_eq!(sim.object("b", "k").unwrap(), "hello world");

        sim.set_failing(true);
        let (status, _, body) = send(&sim, "PUT", "/b/k", &[], b"lost").await;
        assert_eq!((status, body.contains("ServiceUnavailable")), (503, true));
        assert_eq!(sim.object("b", "k").unwrap(), "hello world");
        sim.set_failing(false);
        let (status, _, _) = send(&sim, "GET", "/b/k", &[], b"").await;
        assert_eq!(status, 200);
    }
}
