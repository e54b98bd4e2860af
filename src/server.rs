//! The HTTP server: `/metrics` (or `--web.telemetry-path`), the landing page, `/-/healthy`,
//! `/-/ready`; content negotiation, gzip, HEAD, and graceful shutdown.
//!
//! A scrape loads the current rendering (an `Arc`), encodes the exporter's own few metrics, and
//! writes bytes: it never calls AWS and takes the same time whatever AWS is doing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::exposition::{Format, Piece, Run, accepts_gzip, negotiate};
use crate::metrics::{Metrics, REVISION, VERSION};
use crate::snapshot::SnapshotStore;

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What the HTTP layer serves from: snapshots and self metrics, never AWS.
#[derive(Debug)]
pub struct ServerState {
    pub store: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    pub telemetry_path: String,
}

/// Accepts connections until `shutdown` is cancelled, then lets in-flight requests finish
/// (for at most [`SHUTDOWN_GRACE`]).
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Responses are written as several chunks: without TCP_NODELAY, Nagle's algorithm and
        // delayed ACKs would hold a small last chunk back for tens of milliseconds.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(peer = %peer, error = %err, "cannot set TCP_NODELAY");
        }
        let state = state.clone();
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, &request)) }
                }),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("all connections closed"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing connections"),
    }
}

/// A response body of shared chunks, sent as they are: a scrape does not copy the page.
#[derive(Debug, Default)]
pub struct Body {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Body {
    pub fn new(chunks: Vec<Bytes>) -> Self {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            remaining,
        }
    }

    pub fn len(&self) -> u64 {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body::new(vec![bytes])
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.chunks.pop_front() {
            Some(chunk) => {
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// OpenMetrics' closing line, as a piece.
static EOF: LazyLock<Piece> = LazyLock::new(|| Piece::from_static("# EOF\n"));

/// Routes one request.
pub fn handle(state: &ServerState, request: &Request<Incoming>) -> Response<Body> {
    respond(
        state,
        request.method(),
        request.uri().path(),
        request.headers(),
    )
}

/// The response to a request for `path`: every route, without I/O.
pub fn respond(
    state: &ServerState,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
) -> Response<Body> {
    let known = path == state.telemetry_path || matches!(path, "/" | "/-/healthy" | "/-/ready");
    if !known {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let response = if path == state.telemetry_path {
        metrics_response(state, headers)
    } else if path == "/" {
        landing_page(state)
    } else if path == "/-/healthy" {
        text(StatusCode::OK, "Healthy\n")
    } else {
        // The config is loaded before the server starts; a failing refresh never makes the
        // exporter unready, so that Prometheus keeps scraping aws_cost_refresh_success 0.
        text(StatusCode::OK, "Ready\n")
    };
    if head {
        without_body(response)
    } else {
        response
    }
}

fn metrics_response(state: &ServerState, headers: &http::HeaderMap) -> Response<Body> {
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let format = negotiate(header_str(header::ACCEPT));
    let gzip = accepts_gzip(header_str(header::ACCEPT_ENCODING));
    let rendered = state.store.rendered();
    let own = state.metrics.encode(format);
    let openmetrics = format == Format::OpenMetrics;
    // The exporter's own lines are the only part encoded (and, for gzip, compressed) per scrape.
    let body = if gzip {
        let mut page = Run::default();
        page.push(&Piece::new(own));
        page.append(rendered.run(format));
        if openmetrics {
            page.push(&EOF);
        }
        Body::new(page.gzip())
    } else {
        let mut chunks = vec![Bytes::from(own)];
        chunks.extend(rendered.run(format).plain());
        if openmetrics {
            chunks.push(EOF.text.clone());
        }
        Body::new(chunks)
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

fn landing_page(state: &ServerState) -> Response<Body> {
    let path = html_escape(&state.telemetry_path);
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>AWS Cost Exporter</title></head>\n<body>\n\
         <h1>AWS Cost Exporter</h1>\n<p>Prometheus exporter for AWS Cost Explorer data. Version {VERSION} (revision {REVISION}).</p>\n\
         <ul>\n<li><a href=\"{path}\">Metrics</a> ({path})</li>\n<li><a href=\"/-/healthy\">Health</a> (/-/healthy)</li>\n\
         <li><a href=\"/-/ready\">Readiness</a> (/-/ready)</li>\n</ul>\n</body>\n</html>\n"
    );
    let mut response = Response::new(Body::from(Bytes::from(page)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A HEAD response: the GET response's headers, including its length, without the body.
fn without_body(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Body::default())
}

/// The addresses to try for a node_exporter-style listen address: `:10067` means every
/// interface, IPv6 and IPv4 (`[::]`), or every IPv4 interface where IPv6 is unavailable.
pub fn listen_addresses(text: &str) -> Vec<String> {
    if text.starts_with(':') {
        vec![format!("[::]{text}"), format!("0.0.0.0{text}")]
    } else {
        vec![text.to_string()]
    }
}

/// Binds the listener for `address` (see [`listen_addresses`]).
pub async fn bind(address: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let mut last_error = None;
    for candidate in listen_addresses(address) {
        match TcpListener::bind(&candidate).await {
            Ok(listener) => {
                let local = listener.local_addr()?;
                return Ok((listener, local));
            }
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no address to listen on")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ServerState {
        ServerState {
            store: Arc::new(SnapshotStore::new(vec![])),
            metrics: Arc::new(Metrics::new()),
            telemetry_path: "/metrics".into(),
        }
    }

    #[test]
    fn routes_and_methods() {
        let s = state();
        let h = http::HeaderMap::new();
        assert_eq!(
            respond(&s, &Method::GET, "/metrics", &h).status(),
            StatusCode::OK
        );
        assert_eq!(respond(&s, &Method::GET, "/", &h).status(), StatusCode::OK);
        assert_eq!(
            respond(&s, &Method::GET, "/-/healthy", &h).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&s, &Method::GET, "/-/ready", &h).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&s, &Method::GET, "/nope", &h).status(),
            StatusCode::NOT_FOUND
        );
        let post = respond(&s, &Method::POST, "/metrics", &h);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(
            respond(&s, &Method::DELETE, "/nope", &h).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn listen_address_forms() {
        assert_eq!(
            listen_addresses(":10067"),
            vec!["[::]:10067", "0.0.0.0:10067"]
        );
        assert_eq!(listen_addresses("127.0.0.1:0"), vec!["127.0.0.1:0"]);
        assert_eq!(listen_addresses("[::1]:10067"), vec!["[::1]:10067"]);
    }
}
