//! The HTTP listeners' connections and requests, bounded so that no client can starve the
//! endpoints or pin memory: a cap on open connections per listener, a cap on requests in flight
//! whose permit lives until the response body is sent or dropped, a header read timeout
//! (slowloris) and a write stall timeout (a client that stops reading); over TLS when given a
//! certificate ([`crate::tls`]), the handshake bounded by the same timeout.
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};

/// Bounds of one listener's connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Longest a connection may go without sending a request's headers, or without taking any
    /// of a response's bytes off the agent's hands while some are waiting, before it is closed.
    pub stall_timeout: Duration,
}

/// Bytes hyper buffers per connection, either way: request headers up to this, and response
/// bytes ahead of the socket up to this plus one body chunk (it takes the next chunk only
/// below it). Without it hyper would take a whole `/metrics` body (up to about 400 KiB) into its
/// buffer, dropping the body and its in-flight permit while the bytes still wait for a client
/// that does not read.
const CONNECTION_BUFFER: usize = 32 * 1024;

/// Longest open connections get to finish at shutdown before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The listeners' metrics, by `listener` (`metrics`, `traces`).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    open: IntGaugeVec,
    rejected: IntCounterVec,
    stalled: IntCounterVec,
    shed: IntCounterVec,
    handshakes_failed: IntCounterVec,
}

impl HttpMetrics {
    /// The metrics, registered in `self_metrics` so that `/metrics` carries them.
    pub fn new(self_metrics: &crate::metrics::SelfMetrics) -> Result<Self, prometheus::Error> {
        let open = IntGaugeVec::new(
            Opts::new(
                "swoll_http_connections_open",
                "HTTP connections open on a listener.",
            ),
            &["listener"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "swoll_http_connections_rejected_total",
                "HTTP connections closed as soon as accepted because the listener had --max-connections open.",
            ),
            &["listener"],
        )?;
        let stalled = IntCounterVec::new(
            Opts::new(
                "swoll_http_connections_timed_out_total",
                "HTTP connections closed because the client sent no request headers, or read none of a response, for --http-write-timeout.",
            ),
            &["listener"],
        )?;
        let shed = IntCounterVec::new(
            Opts::new(
                "swoll_http_requests_rejected_total",
                "HTTP requests answered 503 because the listener had its most requests in flight (responses still being sent count) for as long as a request may wait.",
            ),
            &["listener"],
        )?;
        let handshakes_failed = IntCounterVec::new(
            Opts::new(
                "swoll_http_tls_handshakes_failed_total",
                "TLS connections closed because their handshake failed or took longer than --http-write-timeout (a client that does not trust the certificate, or speaks plain HTTP).",
            ),
            &["listener"],
        )?;
        for listener in ["metrics", "traces"] {
            open.with_label_values(&[listener]);
            rejected.with_label_values(&[listener]);
            stalled.with_label_values(&[listener]);
            shed.with_label_values(&[listener]);
            handshakes_failed.with_label_values(&[listener]);
        }
        self_metrics.register(Box::new(open.clone()))?;
        self_metrics.register(Box::new(rejected.clone()))?;
        self_metrics.register(Box::new(stalled.clone()))?;
        self_metrics.register(Box::new(shed.clone()))?;
        self_metrics.register(Box::new(handshakes_failed.clone()))?;
        Ok(Self {
            open,
            rejected,
            stalled,
            shed,
            handshakes_failed,
        })
    }
}

/// A cap on the requests of one listener in flight, shared by all its routes: a permit is taken
/// when a request arrives and given back when its response body has been sent or dropped (not
/// when the handler returns), because a body being sent is what holds memory.
#[derive(Clone, Debug)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    wait: Duration,
    shed: prometheus::IntCounter,
}

impl InFlight {
    /// At most `max` requests of `listener` in flight; one beyond waits up to `wait` for a
    /// permit. A waiting request holds its connection and nothing else (the table is taken
    /// once the permit is), so the connection cap bounds the queue.
    pub fn new(max: usize, wait: Duration, listener: &str, metrics: &HttpMetrics) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            wait,
            shed: metrics.shed.with_label_values(&[listener]),
        }
    }
}

/// The middleware of [`InFlight`] (`axum::middleware::from_fn_with_state`): a request that gets
/// no permit within the wait is answered 503, and the client retries (a scraper at its next
/// interval).
pub async fn in_flight(State(cap): State<InFlight>, request: Request, next: Next) -> Response {
    let permits = Arc::clone(&cap.permits);
    let permit = match permits.clone().try_acquire_owned() {
        Ok(permit) => Ok(permit),
        Err(_) => tokio::time::timeout(cap.wait, permits.acquire_owned())
            .await
            .map_err(|_| ())
            // The semaphore is never closed; a closed one would refuse like a full one.
            .and_then(|acquired| acquired.map_err(|_| ())),
    };
    let Ok(permit) = permit else {
        cap.shed.inc();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many requests in flight\n",
        )
            .into_response();
    };
    next.run(request).await.map(|body| {
        Body::new(Held {
            body,
            _permit: permit,
        })
    })
}

/// A response body holding its request's in-flight permit until hyper drops it: when the body
/// is fully sent, or the connection is closed.
struct Held {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves `router` on `listener` under `limits`, over TLS with `tls`, until `shutdown`
/// resolves, then gives open connections [`SHUTDOWN_GRACE`] to finish their responses. `name`
/// labels the metrics.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    name: &'static str,
    metrics: &HttpMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = metrics.open.with_label_values(&[name]);
    let rejected = metrics.rejected.with_label_values(&[name]);
    let stalled = metrics.stalled.with_label_values(&[name]);
    let handshakes_failed = metrics.handshakes_failed.with_label_values(&[name]);
    let (closing, closed) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of fds or memory, or a connection reset before it was accepted: the
                    // listener stays; a pause lets open connections end before the next try.
                    tracing::warn!(listener = name, error = %err, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            rejected.inc();
            // Dropped unanswered: an answer would be one more write a stalled client could hold.
            drop(stream);
            continue;
        };
        open.inc();
        let io = Stalls::new(stream, limits.stall_timeout);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let (open, stalled, closed) = (open.clone(), stalled.clone(), closed.clone());
        let (tls, handshakes_failed) = (tls.clone(), handshakes_failed.clone());
        tokio::spawn(async move {
            let result = match tls {
                None => connection(io, service, limits, closed).await,
                Some(tls) => {
                    match tokio::time::timeout(limits.stall_timeout, tls.accept(io)).await {
                        Ok(Ok(io)) => connection(io, service, limits, closed).await,
                        Ok(Err(err)) => {
                            handshakes_failed.inc();
                            tracing::debug!(listener = name, error = %err, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            handshakes_failed.inc();
                            tracing::debug!(listener = name, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(err) = result {
                if err.is_timeout() || is_stall(&err) {
                    stalled.inc();
                }
                tracing::debug!(listener = name, error = %err, "HTTP connection ended");
            }
            open.dec();
            drop(slot);
        });
    }
    let _ = closing.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!(
            listener = name,
            "connections still open after the shutdown grace are dropped"
        );
    }
}

/// Serves HTTP/1.1 on one connection until it ends, or until `closed` says the listener is
/// closing (then gracefully).
async fn connection<I>(
    io: I,
    service: hyper_util::service::TowerToHyperService<Router>,
    limits: Limits,
    mut closed: tokio::sync::watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.stall_timeout)
        .max_buf_size(CONNECTION_BUFFER)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        // Only ever set to true, or dropped with the listener: either way, closing.
        _ = closed.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Whether hyper ended a connection because [`Stalls`] found its client stalled.
fn is_stall(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A connection whose writes fail with `TimedOut` once the socket has taken nothing for the
/// stall timeout: a client that stops reading (its receive window and the agent's send buffer
/// full) is cut off and releases the body it holds, while a slow one that keeps reading is
/// not, however long its response or stream.
struct Stalls {
    stream: TcpStream,
    timeout: Duration,
    /// Armed at the first write the socket could not take; reset by any write it takes.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Stalls {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        Self {
            stream,
            timeout,
            stalled: None,
        }
    }

    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Stalls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stalls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}
