//! The one listener's accept loop: every connection is served by hyper
//! (HTTP/1.1 with upgrades for the media WebSocket, h2c for gRPC) under the
//! [`ConnectionLimits`] of the config. `axum::serve` has none of them, and a
//! peer that opens connections and never finishes a request would otherwise
//! hold a descriptor and its buffers for as long as it likes.
//!
//! - **Cap**: at most `max_connections` are open, an upgraded media WebSocket
//!   included (its permit travels with the socket). One over the cap is
//!   accepted and closed at once, so the client fails fast instead of
//!   waiting in the kernel's backlog, and the refusal can be counted
//!   (`voice_agent_connections_refused_total`) and logged (at most once a
//!   minute: a flood must not become a log flood).
//! - **Headers**: HTTP/1.1 requests must arrive within `header_timeout`
//!   (hyper's own timer, which also runs while a keep-alive connection waits
//!   for its next request); a new connection's first request too, whatever
//!   the protocol (the idle check below, with the shorter limit).
//! - **Body**: a request's body must be complete `body_timeout` after its
//!   headers; reading it after that fails with [`BodyTimeout`].
//! - **Idle**: a connection with no request in progress for `idle_timeout` is
//!   shut down gracefully: HTTP/1.1 closes, HTTP/2 sends GOAWAY. Neither cuts
//!   a request in progress (a WatchCall stream keeps its connection), and an
//!   upgraded WebSocket has left hyper, so a media stream is never cut here
//!   (the bridge has its own timeouts).
//! - **Shutdown**: when the token is cancelled, accepting stops (the listener
//!   is closed) and every connection is shut down gracefully, as
//!   `axum::serve`'s graceful shutdown did; [`serve`] returns once they are
//!   all closed.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use futures_util::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::AppState;
use crate::config::ConnectionLimits;

/// How often a refusal at the cap may be logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `router` on `listener` until `shutdown` is cancelled, then shuts
/// every connection down gracefully and returns once all are closed.
pub(crate) async fn serve(listener: TcpListener, router: Router, state: Arc<AppState>, shutdown: CancellationToken) {
    let limits = state.config.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut refusals = RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Dropping the socket closes it: the client sees the connection
            // end without a response, at once.
            drop(tcp);
            state.metrics.connections_refused.inc();
            refusals.refused(limits.max_connections);
            continue;
        };
        // Media frames are small and latency-bound: Nagle's algorithm would hold
        // a mark behind the unacknowledged media message before it (and the
        // peer's delayed ACK makes that up to 40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
        }
        let io = CappedStream { tcp, _permit: permit };
        connections.spawn(serve_connection(io, router.clone(), limits.clone(), shutdown.clone()));
    }
    // Closed now, so new clients are refused by the kernel while the open
    // connections wind down.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// As `axum::serve`: errors of one connection are not the listener's; others
/// (out of descriptors) are logged, and accepting pauses for a second in the
/// hope that some are released.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Logs refusals at the cap at most once per [`REFUSAL_LOG_EVERY`], with how
/// many there were since the last line.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn refused(&mut self, cap: usize) {
        self.unlogged += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + REFUSAL_LOG_EVERY) {
            return;
        }
        tracing::warn!(
            refused = self.unlogged,
            "MAX_CONNECTIONS ({cap}) connections are open: new ones are closed at once (logged at most once a minute)"
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}

async fn serve_connection(io: CappedStream, router: Router, limits: ConnectionLimits, shutdown: CancellationToken) {
    let activity = Arc::new(Activity::new());
    let service = TowerToHyperService::new(Tracked {
        router,
        activity: activity.clone(),
        body_timeout: limits.body_timeout,
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // As axum::serve: the CONNECT protocol is what WebSockets over HTTP/2 need.
    builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle_check = tokio::time::sleep(activity.idle_limit(&limits));
    tokio::pin!(idle_check);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = &mut idle_check, if !closing => match activity.idle_until(&limits) {
                Some(until) if until <= Instant::now() => {
                    tracing::trace!("closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                Some(until) => idle_check.as_mut().reset(until),
                None => idle_check.as_mut().reset(Instant::now() + limits.idle_timeout),
            },
        }
    }
}

/// An accepted connection that holds one of the [`ConnectionLimits::max_connections`]
/// permits for as long as the socket exists, also after a WebSocket upgrade
/// takes it out of hyper.
struct CappedStream {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for CappedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// What a connection is doing, for the idle check: requests in progress
/// (from the headers until the response body is done or dropped) and when
/// the last one ended.
struct Activity {
    opened: Instant,
    in_progress: AtomicUsize,
    /// Requests started so far.
    requests: AtomicU64,
    /// When the last request ended, in milliseconds after `opened`.
    last_end_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_progress: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
        }
    }

    /// How long a connection may go without a request: until its first, the
    /// header timeout too (a client that connects and sends nothing, or
    /// trickles an HTTP/2 preface, is a header that does not arrive).
    fn idle_limit(&self, limits: &ConnectionLimits) -> Duration {
        if self.requests.load(Ordering::Acquire) == 0 {
            limits.idle_timeout.min(limits.header_timeout)
        } else {
            limits.idle_timeout
        }
    }

    /// When the connection counts as idle, if nothing starts before; `None`
    /// while a request is in progress.
    fn idle_until(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last_end = Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
        Some(self.opened + last_end + self.idle_limit(limits))
    }

    fn start(self: &Arc<Self>) -> InProgress {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        InProgress(self.clone())
    }
}

/// One request in progress; its end is stamped when dropped.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let since_open = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_end_ms.fetch_max(since_open, Ordering::AcqRel);
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router as hyper calls it: request bodies under the body deadline,
/// each request counted in progress until its response body is done.
#[derive(Clone)]
struct Tracked {
    router: Router,
    activity: Arc<Activity>,
    body_timeout: Duration,
}

impl Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The Router is always ready (it is called through a clone below).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: hyper::Request<Incoming>) -> Self::Future {
        let in_progress = self.activity.start();
        let deadline = Instant::now() + self.body_timeout;
        let req = req.map(|body| Body::new(DeadlineBody::new(body, deadline, self.body_timeout)));
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = match router.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok(response.map(|body| {
                Body::new(Ending {
                    body,
                    _in_progress: in_progress,
                })
            }))
        })
    }
}

/// A request body read after its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body that fails with [`BodyTimeout`] once its deadline passes
/// before it is complete. The timer is made only when a read would wait.
struct DeadlineBody<B> {
    body: B,
    deadline: Instant,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> DeadlineBody<B> {
    fn new(body: B, deadline: Instant, timeout: Duration) -> Self {
        Self {
            body,
            deadline,
            timeout,
            sleep: None,
        }
    }
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that ends its request's [`InProgress`] when it is done
/// with (sent or dropped).
struct Ending {
    body: Body,
    _in_progress: InProgress,
}

impl HttpBody for Ending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// True when `e` (or what caused it) is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source()).any(|e| e.is::<BodyTimeout>())
}
