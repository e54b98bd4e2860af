//! The HTTP server: `/metrics` (or `--web.telemetry-path`), the landing page, `/-/healthy`,
//! `/-/ready`, `/-/reload`; content negotiation, gzip, HEAD, graceful shutdown; TLS and basic
//! authentication from `--web.config.file` ([`crate::web_config`]); limits on connections,
//! request heads and bodies, and slow clients ([`Limits`]).
//!
//! A scrape loads the current rendering (an `Arc`), takes the exporter's own few metrics (encoded
//! again only when they changed or the clock's tick, a tenth of a second, did), and writes
//! bytes: it never calls AWS and takes the same time whatever AWS is doing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::exposition::{Format, Piece, accepts_gzip, gzip_body, negotiate, plain_body};
use crate::metrics::{Metrics, REVISION, VERSION};
use crate::snapshot::SnapshotStore;
use crate::web_config::{WebConfig, WebConfigSource};

/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default of `--web.read-timeout`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `--web.max-connections`, as Prometheus.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The largest request head (request line and headers) accepted; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The largest request body accepted; no endpoint needs one. Larger ones get 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Concurrent requests on one HTTP/2 connection.
pub const MAX_HTTP2_STREAMS: u32 = 64;
/// The lifecycle endpoint that reloads the configuration (POST or PUT).
pub const RELOAD_PATH: &str = "/-/reload";

/// What protects the server from slow and numerous clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request's headers (and its body, and a TLS
    /// handshake), and how long an idle keep-alive connection stays open.
    pub read_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A `POST /-/reload`: the reply is `Ok` once the reload is applied, or the reason it was
/// refused.
#[derive(Debug)]
pub struct ReloadRequest {
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// What the HTTP layer serves from: snapshots and self metrics, never AWS.
#[derive(Debug)]
pub struct ServerState {
    pub store: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    pub telemetry_path: String,
    /// `--web.config.file`, when given.
    pub web: Option<Arc<WebConfigSource>>,
    /// Where `POST /-/reload` asks for a reload; `None` without `--web.enable-lifecycle`.
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    pub limits: Limits,
}

impl ServerState {
    /// Plain HTTP, no authentication, no lifecycle API, default limits.
    pub fn new(store: Arc<SnapshotStore>, metrics: Arc<Metrics>, telemetry_path: String) -> Self {
        Self {
            store,
            metrics,
            telemetry_path,
            web: None,
            reload: None,
            limits: Limits::default(),
        }
    }
}

/// Accepts connections until `shutdown` is cancelled, then lets in-flight requests finish
/// (for at most [`SHUTDOWN_GRACE`]). At most `limits.max_connections` connections are served
/// at once: the next one is accepted when one closes, and waits in the kernel's accept queue
/// until then (as Prometheus' own listener does).
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(state.limits.max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
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
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            serve_connection(stream, peer, state, watcher).await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("all connections closed"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing connections"),
    }
}

/// One connection: the TLS handshake when the web configuration has TLS (its files re-read
/// first, so that rotated certificates apply to new connections), then HTTP/1.1, or HTTP/2
/// when TLS negotiated it.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ServerState>,
    watcher: Watcher,
) {
    let tls = match &state.web {
        Some(web) => web.for_handshake().tls.clone(),
        None => None,
    };
    let Some(tls) = tls else {
        serve_http1(stream, peer, state, watcher).await;
        return;
    };
    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    let stream = match tokio::time::timeout(state.limits.read_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_http2(stream, peer, state, watcher).await;
    } else {
        serve_http1(stream, peer, state, watcher).await;
    }
}

/// HTTP/1.1 on `stream`, in an [`IdleTimeout`] that also bounds the request heads.
async fn serve_http1<S>(stream: S, peer: SocketAddr, state: Arc<ServerState>, watcher: Watcher)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let heads = Arc::new(Heads::default());
    let io = IdleTimeout::new(stream, state.limits.read_timeout).with_heads(heads.clone());
    let connection = http1::Builder::new()
        // The IdleTimeout bounds the heads instead: hyper's clock would arm a timer, an
        // allocation and two changes to the runtime's timer wheel, for every request.
        .header_read_timeout(None::<Duration>)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(
            TokioIo::new(io),
            service_fn(move |request| answer(&state, request, Some(&heads))),
        );
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
    }
}

/// HTTP/2 on `stream`, in an [`IdleTimeout`].
async fn serve_http2<S>(stream: S, peer: SocketAddr, state: Arc<ServerState>, watcher: Watcher)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(IdleTimeout::new(stream, state.limits.read_timeout));
    // No keep-alive pings: their answers would keep an idle connection from ever timing out
    // (see IdleTimeout).
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_HTTP2_STREAMS)
        .serve_connection(io, service_fn(move |request| answer(&state, request, None)));
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(peer = %peer, error = %err, "HTTP/2 connection ended with an error");
    }
}

/// What an HTTP/1 connection's service tells its [`IdleTimeout`] about the requests, so that
/// the bytes of a request head can be told from a body's.
#[derive(Debug, Default)]
struct Heads {
    /// Requests whose head arrived whole (the service was called for them).
    arrived: AtomicU64,
    /// Requests being handled ([`Handling`]): what is read meanwhile is their bodies.
    handling: AtomicUsize,
}

/// A request being handled, from the service's call until its response is ready.
struct Handling(Arc<Heads>);

impl Handling {
    fn new(heads: &Arc<Heads>) -> Self {
        heads.handling.fetch_add(1, Ordering::Relaxed);
        Self(heads.clone())
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection on which no byte moved, either way, for `timeout` fails with `TimedOut` and is
/// closed: an idle keep-alive or HTTP/2 connection, and a client that stops reading its
/// response, cannot hold one of the `--web.max-connections` slots for longer than that. A slow
/// client that keeps reading is not cut off.
///
/// With [`Heads`] (HTTP/1), a request head must also arrive whole within `timeout` of its first
/// byte, however slowly its bytes keep coming (as hyper's header read timeout would, without a
/// timer for each request): a client trickling an endless head is cut off too.
struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    /// When a byte last moved.
    progress: tokio::time::Instant,
    /// Never later than `progress + timeout`, nor than `head_from + timeout` while a head is
    /// arriving: moved on to the earlier when it fires (not at every read and write, which
    /// would touch the timer for each).
    deadline: Pin<Box<tokio::time::Sleep>>,
    heads: Option<Arc<Heads>>,
    /// `heads.arrived` when last looked at.
    arrived: u64,
    /// When the first byte of the head arriving was read.
    head_from: Option<tokio::time::Instant>,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        let progress = tokio::time::Instant::now();
        Self {
            inner,
            timeout,
            progress,
            deadline: Box::pin(tokio::time::sleep_until(progress + timeout)),
            heads: None,
            arrived: 0,
            head_from: None,
        }
    }

    /// Bounds the request heads that `heads` tells of, too.
    fn with_heads(mut self, heads: Arc<Heads>) -> Self {
        self.heads = Some(heads);
        self
    }

    fn progressed(&mut self) {
        self.progress = tokio::time::Instant::now();
    }

    /// Bytes were read: the first ones after a head arrived, unless a request is being handled
    /// (its body), start the next head.
    fn read_some(&mut self) {
        self.progressed();
        if self.reading_heads() && self.head_from.is_none() {
            self.head_from = Some(self.progress);
        }
    }

    /// When the first byte of a head not arrived whole yet was read.
    fn head_arriving(&mut self) -> Option<tokio::time::Instant> {
        if self.reading_heads() {
            self.head_from
        } else {
            None
        }
    }

    /// Whether what is read now is request heads (with `heads`, no request being handled);
    /// forgets the head that was arriving once it has.
    fn reading_heads(&mut self) -> bool {
        let Some(heads) = &self.heads else {
            return false;
        };
        let arrived = heads.arrived.load(Ordering::Relaxed);
        if arrived != self.arrived {
            self.arrived = arrived;
            self.head_from = None;
        }
        heads.handling.load(Ordering::Relaxed) == 0
    }

    /// Called when the inner stream is pending: an error once `timeout` has passed since a
    /// byte last moved, or since the first byte of a head that has not arrived whole.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        while self.deadline.as_mut().poll(cx).is_ready() {
            let now = tokio::time::Instant::now();
            let idle = self.progress + self.timeout;
            if idle <= now {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no bytes moved within the read timeout",
                )));
            }
            let mut due = idle;
            if let Some(head) = self.head_arriving().map(|from| from + self.timeout) {
                if head <= now {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request head not received within the read timeout",
                    )));
                }
                due = due.min(head);
            }
            self.deadline.as_mut().reset(due);
        }
        Poll::Pending
    }

    fn written(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match poll {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progressed();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => self.pending(cx),
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.read_some();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => this.pending(cx),
        }
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.written(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.written(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.pending(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body of shared chunks, sent as they are: a scrape does not copy the page, and
/// scrapes that send the same bytes share one list of chunks.
#[derive(Debug)]
pub struct Body {
    chunks: Arc<[Bytes]>,
    /// The first chunk not sent yet.
    next: usize,
    remaining: u64,
}

impl Body {
    pub fn new(chunks: Vec<Bytes>) -> Self {
        let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        Self::shared(chunks.into())
    }

    /// A body of chunks shared with other responses.
    pub fn shared(chunks: Arc<[Bytes]>) -> Self {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            chunks,
            next: 0,
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

impl Default for Body {
    fn default() -> Self {
        static EMPTY: LazyLock<Arc<[Bytes]>> = LazyLock::new(|| Arc::new([]));
        Self::shared(EMPTY.clone())
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
        loop {
            let Some(chunk) = self.chunks.get(self.next).cloned() else {
                return Poll::Ready(None);
            };
            self.next += 1;
            // Empty chunks (a shared list may hold some) are no frames.
            if !chunk.is_empty() {
                self.remaining -= chunk.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// OpenMetrics' closing line, as a piece.
static EOF: LazyLock<Piece> = LazyLock::new(|| Piece::from_static("# EOF\n"));

/// The answer to a request on a connection, as hyper's service. A request without a body
/// and without a web configuration, other than `/-/reload`, (every scrape without TLS or basic
/// auth) is answered at once and dropped before hyper goes on: hyper reads the connection while
/// a request is in flight (to see the client hang up), and a request still holding its head's
/// bytes would make that read allocate a new buffer; dropped, the buffer is used again. So a
/// scrape allocates nothing of its own (bench/ANALYSIS.md). Any other request is answered by
/// [`handle_request`]. `heads` (HTTP/1) learns of each request, and of its handling.
fn answer(
    state: &Arc<ServerState>,
    request: Request<hyper::body::Incoming>,
    heads: Option<&Arc<Heads>>,
) -> Answer {
    use http_body::Body as _;
    if let Some(heads) = heads {
        heads.arrived.fetch_add(1, Ordering::Relaxed);
    }
    if state.web.is_none() && request.body().is_end_stream() && request.uri().path() != RELOAD_PATH
    {
        let (parts, _) = request.into_parts();
        let wanted = Wanted::of(&parts.headers);
        // The request's header map, emptied, carries the response's headers: hyper keeps a
        // sent response's map to parse the next request into, so neither allocates one.
        let mut headers = parts.headers;
        headers.clear();
        let response = respond_with(state, &parts.method, parts.uri.path(), wanted, headers);
        return Answer::Now(std::future::ready(Ok(response)));
    }
    let state = state.clone();
    let handling = heads.map(Handling::new);
    Answer::Later(Box::pin(async move {
        let response = handle_request(&state, request).await;
        drop(handling);
        Ok(response)
    }))
}

/// The future [`answer`] returns: ready at once, or a request's whole handling.
enum Answer {
    Now(std::future::Ready<Result<Response<Body>, Infallible>>),
    Later(Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>),
}

impl Future for Answer {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Now(ready) => Pin::new(ready).poll(cx),
            Answer::Later(later) => later.as_mut().poll(cx),
        }
    }
}

/// Serves one request: the body cap, the web configuration's authentication and headers,
/// `/-/reload`, then the routes of [`respond`].
pub async fn handle_request<B>(state: &ServerState, request: Request<B>) -> Response<Body>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let web = state.web.as_ref().map(|web| web.for_request());
    let mut response = route(state, web.as_deref(), request).await;
    // exporter-toolkit sets the configured headers on every response, 401 included.
    if let Some(web) = &web {
        for (name, value) in &web.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

async fn route<B>(
    state: &ServerState,
    web: Option<&WebConfig>,
    request: Request<B>,
) -> Response<Body>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    if let Err(status) = read_small_body(body, state.limits.read_timeout).await {
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "413 request body too large\n",
            StatusCode::REQUEST_TIMEOUT => "408 request body not received in time\n",
            _ => "400 bad request body\n",
        };
        let mut response = text(status, message);
        // The rest of the body is not read: the connection cannot carry another request.
        if parts.version < Version::HTTP_2 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return response;
    }
    // exporter-toolkit exempts no path: the landing page and health endpoints need the
    // credentials too (TLS client certificates, checked in the handshake, likewise).
    if let (Some(source), Some(web)) = (&state.web, web)
        && !source
            .authorized(web, parts.headers.get(header::AUTHORIZATION))
            .await
    {
        let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        return response;
    }
    if parts.uri.path() == RELOAD_PATH {
        return reload(state, &parts.method).await;
    }
    respond(state, &parts.method, parts.uri.path(), &parts.headers)
}

/// Reads (and drops) a request body of at most [`MAX_BODY_BYTES`] within `timeout`.
async fn read_small_body<B>(body: B, timeout: Duration) -> Result<(), StatusCode>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.is_end_stream() {
        return Ok(());
    }
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    match tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST),
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
    }
}

/// `/-/reload`, as Prometheus: POST or PUT with `--web.enable-lifecycle`, 403 without it;
/// answers once the reload was applied (200) or refused (500, with the reason).
async fn reload(state: &ServerState, method: &Method) -> Response<Body> {
    if method != Method::POST && method != Method::PUT {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "This endpoint requires a POST request.\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, PUT"));
        return response;
    }
    let Some(requests) = &state.reload else {
        return text(StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n");
    };
    let (reply, outcome) = oneshot::channel();
    if requests.send(ReloadRequest { reply }).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match outcome.await {
        Ok(Ok(())) => text(StatusCode::OK, "configuration reloaded\n"),
        Ok(Err(reason)) => owned_text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {reason}\n"),
        ),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
    }
}

/// The response to a request for `path`: every route, without I/O.
pub fn respond(
    state: &ServerState,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
) -> Response<Body> {
    respond_with(
        state,
        method,
        path,
        Wanted::of(headers),
        http::HeaderMap::new(),
    )
}

/// What a request's headers ask of a `/metrics` response.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    format: Format,
    gzip: bool,
}

impl Wanted {
    fn of(headers: &http::HeaderMap) -> Self {
        let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            format: negotiate(header_str(header::ACCEPT)),
            gzip: accepts_gzip(header_str(header::ACCEPT_ENCODING)),
        }
    }
}

/// [`respond`], with `empty` (no entries, maybe capacity) as the `/metrics` response's header
/// map.
fn respond_with(
    state: &ServerState,
    method: &Method,
    path: &str,
    wanted: Wanted,
    empty: http::HeaderMap,
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
        metrics_response(state, wanted, empty)
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

fn metrics_response(state: &ServerState, wanted: Wanted, empty: http::HeaderMap) -> Response<Body> {
    let Wanted { format, gzip } = wanted;
    // The exporter's own metrics first: a refresh publishes its snapshot before it records
    // its outcome, so a page never says a refresh succeeded without serving what it published.
    let own = state.metrics.own_lines(format);
    let rendered = state.store.rendered();
    let openmetrics = format == Format::OpenMetrics;
    // The exporter's own lines are the only part encoded (and, for gzip, compressed) for a
    // scrape, and only when they changed or the clock's tick did (see
    // Metrics::own_lines); the body they start is joined once for them, and every scrape that
    // sends them shares it.
    let run = rendered.run(format);
    let chunks = rendered.bodies().get(format, gzip, &own.text, || {
        if gzip {
            gzip_body(own.pieces(), run, openmetrics.then_some(&*EOF))
        } else {
            plain_body(&own.text, run, openmetrics.then_some(&EOF.text))
        }
    });
    let body = Body::shared(chunks);
    let mut response = Response::new(body);
    *response.headers_mut() = empty;
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
    with_text(status, Bytes::from_static(body.as_bytes()))
}

fn owned_text(status: StatusCode, body: String) -> Response<Body> {
    with_text(status, Bytes::from(body))
}

fn with_text(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
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
        ServerState::new(
            Arc::new(SnapshotStore::new(vec![])),
            Arc::new(Metrics::new()),
            "/metrics".into(),
        )
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

    fn request(
        method: Method,
        path: &str,
        body: &'static [u8],
    ) -> Request<http_body_util::Full<Bytes>> {
        let mut request = Request::new(http_body_util::Full::new(Bytes::from_static(body)));
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().unwrap();
        request
    }

    async fn body_text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn reload_needs_the_lifecycle_flag_and_post() {
        let s = state();
        let response = handle_request(&s, request(Method::POST, "/-/reload", b"")).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(body_text(response).await, "Lifecycle API is not enabled.\n");
        let response = handle_request(&s, request(Method::GET, "/-/reload", b"")).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "POST, PUT");

        // With the flag, the reply of whoever reloads is the answer.
        let (sender, mut requests) = mpsc::channel(1);
        let s = ServerState {
            reload: Some(sender),
            ..state()
        };
        let answer = tokio::spawn(async move {
            let first: ReloadRequest = requests.recv().await.unwrap();
            first.reply.send(Ok(())).unwrap();
            let second: ReloadRequest = requests.recv().await.unwrap();
            second
                .reply
                .send(Err("invalid configuration x".into()))
                .unwrap();
        });
        let ok = handle_request(&s, request(Method::POST, "/-/reload", b"")).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let refused = handle_request(&s, request(Method::PUT, "/-/reload", b"")).await;
        assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body_text(refused).await,
            "failed to reload config: invalid configuration x\n"
        );
        answer.await.unwrap();
    }

    #[tokio::test]
    async fn request_bodies_are_capped() {
        let s = state();
        let small = handle_request(&s, request(Method::GET, "/metrics", b"x")).await;
        assert_eq!(small.status(), StatusCode::OK);
        static LARGE: [u8; MAX_BODY_BYTES + 1] = [b'x'; MAX_BODY_BYTES + 1];
        let large = handle_request(&s, request(Method::POST, "/-/reload", &LARGE)).await;
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(large.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn a_connection_whose_peer_stops_reading_times_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(1024);
        let mut io = IdleTimeout::new(server, Duration::from_millis(200));
        // Writes progress while the peer reads.
        io.write_all(&[1; 1024]).await.unwrap();
        let mut received = [0; 1024];
        client.read_exact(&mut received).await.unwrap();
        io.write_all(&[2; 1024]).await.unwrap();
        // The peer stops reading: the write stalls, then fails.
        let stalled = tokio::time::timeout(Duration::from_secs(60), io.write_all(&[3; 1]))
            .await
            .expect("the stalled write ends");
        assert_eq!(
            stalled.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::TimedOut)
        );
        // A read with nothing to read fails the same way.
        assert_idle_read_times_out(&mut io).await;
    }

    /// A read on `io` with nothing to read fails with `TimedOut` (within a minute).
    async fn assert_idle_read_times_out<T: tokio::io::AsyncRead + Unpin>(io: &mut IdleTimeout<T>) {
        use tokio::io::AsyncReadExt;
        let mut byte = [0; 1];
        let idle = tokio::time::timeout(Duration::from_secs(60), io.read(&mut byte))
            .await
            .expect("the idle read ends");
        assert_eq!(
            idle.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::TimedOut)
        );
    }

    /// A connection on which bytes keep moving stays open past the timeout, whatever the
    /// number of reads and writes.
    #[tokio::test]
    async fn a_connection_that_keeps_moving_stays_open() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(1024);
        let mut io = IdleTimeout::new(server, Duration::from_millis(200));
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_millis(700) {
            io.write_all(&[1; 16]).await.unwrap();
            let mut received = [0; 16];
            client.read_exact(&mut received).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Then idle: it times out, about the timeout after the last byte moved.
        let idle_from = tokio::time::Instant::now();
        assert_idle_read_times_out(&mut io).await;
        assert!(idle_from.elapsed() < Duration::from_millis(200) + Duration::from_secs(5));
    }

    /// Reads `io` while its peer `client` sends a byte every 20 ms, for `for_at_most`: `Err`
    /// with how long it took if a read failed with `TimedOut`; `after_each` runs after each
    /// byte is read.
    async fn trickle<T: tokio::io::AsyncRead + Unpin>(
        io: &mut IdleTimeout<T>,
        client: &mut tokio::io::DuplexStream,
        for_at_most: Duration,
        mut after_each: impl FnMut(),
    ) -> Result<(), Duration> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let started = tokio::time::Instant::now();
        while started.elapsed() < for_at_most {
            client.write_all(b"x").await.unwrap();
            let mut byte = [0; 1];
            let read = tokio::time::timeout(Duration::from_secs(60), io.read(&mut byte))
                .await
                .expect("the read ends");
            match read {
                Ok(1) => after_each(),
                Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(started.elapsed());
                }
                other => panic!("unexpected read: {other:?}"),
            }
            // Until the next byte, the read waits (and polls the deadline).
            let mut more = [0; 1];
            let waited = tokio::time::timeout(Duration::from_millis(20), io.read(&mut more)).await;
            match waited {
                Err(_) => {}
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(started.elapsed());
                }
                other => panic!("unexpected read: {other:?}"),
            }
        }
        Ok(())
    }

    /// A request head trickling in, a byte every 20 ms, is cut off once `timeout` has passed
    /// since its first byte, though bytes keep moving; without heads to bound (HTTP/2), only
    /// idleness is.
    #[tokio::test]
    async fn a_head_that_never_ends_times_out_though_bytes_keep_coming() {
        let timeout = Duration::from_millis(200);
        let (server, mut client) = tokio::io::duplex(1024);
        let mut io = IdleTimeout::new(server, timeout).with_heads(Arc::default());
        let cut = trickle(&mut io, &mut client, Duration::from_secs(5), || {})
            .await
            .expect_err("an endless head is cut off");
        assert!(cut >= timeout, "{cut:?}");
        assert!(cut < Duration::from_secs(2), "{cut:?}");

        let (server, mut client) = tokio::io::duplex(1024);
        let mut io = IdleTimeout::new(server, timeout);
        assert_eq!(
            trickle(&mut io, &mut client, Duration::from_millis(700), || {}).await,
            Ok(())
        );
    }

    /// Heads that arrive whole within the timeout, however many, and the bytes read while a
    /// request is handled (its body) do not add up to a head; the first bytes after both start
    /// one.
    #[tokio::test]
    async fn heads_that_arrive_and_bodies_are_not_cut_off() {
        let timeout = Duration::from_millis(200);
        let heads = Arc::new(Heads::default());
        let (server, mut client) = tokio::io::duplex(1024);
        let mut io = IdleTimeout::new(server, timeout).with_heads(heads.clone());
        // A head of one byte each: 700 ms of them.
        let arrive = || {
            heads.arrived.fetch_add(1, Ordering::Relaxed);
        };
        assert_eq!(
            trickle(&mut io, &mut client, Duration::from_millis(700), arrive).await,
            Ok(())
        );
        // A request being handled reads its body for 700 ms.
        let handling = Handling::new(&heads);
        assert_eq!(
            trickle(&mut io, &mut client, Duration::from_millis(700), || {}).await,
            Ok(())
        );
        drop(handling);
        // Handled: the next bytes are a head again.
        arrive();
        let cut = trickle(&mut io, &mut client, Duration::from_secs(5), || {})
            .await
            .expect_err("an endless head is cut off");
        assert!(cut >= timeout && cut < Duration::from_secs(2), "{cut:?}");
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
