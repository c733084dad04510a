//! The HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, the charts page
//! (`/metrics/charts`, built in [`crate::charts`]) and the seccomp profiles (`/seccomp/…`,
//! built in [`crate::seccomp`]).
use std::{convert::Infallible, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::exposition::Exposition;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Longest a request may take before it is answered 408.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest request body accepted (no route takes one); larger gets 413.
pub const MAX_BODY: usize = 4096;
/// Requests of the metrics listener in flight at once, responses still being sent included;
/// more wait up to [`IN_FLIGHT_WAIT`], then are answered 503 (see [`crate::conn::in_flight`]),
/// so a burst of scrapes or clients that stop reading cannot exhaust memory.
pub const MAX_CONCURRENT: usize = 32;
/// How long a request of the metrics listener waits for one of [`MAX_CONCURRENT`]: under the
/// request timeout, so the answer says why (503, not 408).
pub const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The router over `state`, with a timeout and a body limit on every route and one cap on
/// requests in flight over all of them but the probes: an agent on every node must not be the
/// thing a misbehaving client can stall. `/healthz` and `/readyz` answer a constant or a flag,
/// holding nothing, so they stay out of the cap and answer while it is full.
pub fn router(state: Arc<Exposition>, in_flight: crate::conn::InFlight) -> Router {
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Arc::clone(&state));
    Router::new()
        .route("/metrics", get(metrics))
        .merge(crate::charts::routes())
        .merge(crate::seccomp::routes())
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            in_flight,
            crate::conn::in_flight,
        ))
        .merge(probes)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
}

/// The syscall families of the last read, streamed as hyper asks for them a chunk at a time
/// (each made when it is sent, from a table the scrape shares with the others), then the
/// self-metrics, encoded when the scrape arrived. The route's timeout ends when the answer
/// starts; what a body still being sent holds is one chunk and a share of a table, not a copy
/// of the text, and its in-flight permit, until the write stall timeout
/// ([`crate::conn::Limits`]) cuts off a client that stopped reading.
async fn metrics(State(state): State<Arc<Exposition>>) -> Response {
    let mut self_metrics = Vec::with_capacity(8192);
    if let Err(err) = state.self_metrics.render(&mut self_metrics) {
        tracing::warn!(error = %err, "encoding self-metrics");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding self-metrics failed\n",
        )
            .into_response();
    }
    let chunks = state
        .syscalls()
        .chunks()
        .map(Bytes::from)
        .chain(std::iter::once(Bytes::from(self_metrics)))
        .map(Ok::<_, Infallible>);
    let body = Body::from_stream(futures::stream::iter(chunks));
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response()
}

async fn readyz(State(state): State<Arc<Exposition>>) -> Response {
    if state.is_ready() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the first map read has not finished\n",
        )
            .into_response()
    }
}

/// Trace streams open at once, over all traces; one more is answered 503 at once (streams end
/// when their client leaves, which may be never).
pub const MAX_TRACE_STREAMS: usize = 64;

/// The router of the trace streams (`GET /traces/<name>`, Server-Sent Events): a listener of its
/// own, loopback by default, because trace events carry paths and argv; with `token`, a stream
/// needs `Authorization: Bearer <token>`. No request timeout (streams are long), but a cap on
/// open streams (`in_flight`, of [`MAX_TRACE_STREAMS`]: a stream holds its permit until it
/// ends); a client that falls behind loses events (and is told how many) instead of slowing the
/// agent, and one that stops reading is cut off by the write stall timeout.
pub fn trace_router(
    hub: Arc<crate::trace::agent::TraceHub>,
    token: Option<String>,
    in_flight: crate::conn::InFlight,
) -> Router {
    Router::new()
        .route("/traces/{name}", get(trace_stream))
        .with_state((hub, token.map(Arc::<str>::from)))
        .layer(axum::middleware::from_fn_with_state(
            in_flight,
            crate::conn::in_flight,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
}

type TraceState = (Arc<crate::trace::agent::TraceHub>, Option<Arc<str>>);

async fn trace_stream(
    State((hub, token)): State<TraceState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    if let Some(token) = token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_secret(given.as_bytes(), token.as_bytes()) {
            return (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
        }
    }
    let Some(events) = hub.subscribe(&name) else {
        return (StatusCode::NOT_FOUND, "no such trace is running\n").into_response();
    };
    let stream = futures::stream::unfold(events, |mut events| async move {
        let event = match events.recv().await {
            Ok(line) => Event::default().data(&*line),
            Err(RecvError::Lagged(n)) => Event::default()
                .event("lost")
                .data(format!("{{\"lost\":{n}}}")),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), events))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
