//! `swoll serve`: load the probes, read their maps every interval, serve the metrics.
use std::{
    net::SocketAddr,
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use crate::{
    http::{self, Exposition},
    loader::{self, LoadError, LoadOptions, Probes},
    metrics::{self, SelfMetrics, Workload},
};

/// Settings of `swoll serve`, validated.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Time between map reads.
    pub interval: Duration,
    /// How the probes are loaded.
    pub load: LoadOptions,
}

/// Why `swoll serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The probes could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The self-metrics registry refused a metric (a bug).
    #[error("registering self-metrics")]
    Metrics(#[from] prometheus::Error),
    /// The listener could not be bound.
    #[error("listening on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server or the signal handlers failed.
    #[error("serving HTTP")]
    Http(#[source] std::io::Error),
}

/// Runs until SIGINT or SIGTERM, then detaches the probes and returns.
pub async fn run(opts: ServeOptions) -> Result<(), ServeError> {
    let probes = loader::load(&opts.load)?;
    tracing::info!(
        map_size = opts.load.map_size,
        host = opts.load.count_host,
        time = opts.load.time,
        "probes attached to raw_syscalls sys_enter/sys_exit"
    );
    let exposition = Arc::new(Exposition::new(SelfMetrics::new()?));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: opts.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(%local, "serving /metrics");

    let (stop_reader, stopped) = mpsc::channel::<()>();
    let reader = {
        let exposition = Arc::clone(&exposition);
        thread::Builder::new()
            .name("swoll-map-reader".into())
            .spawn(move || read_loop(probes, &exposition, opts.interval, &stopped))
            .map_err(ServeError::Http)?
    };

    let served = axum::serve(listener, http::router(exposition))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(ServeError::Http);
    drop(stop_reader);
    if reader.join().is_err() {
        tracing::error!("the map reader panicked");
    }
    tracing::info!("probes detached; bye");
    served
}

/// Reads the maps every `interval` until `stop` is dropped; then drops the probes, which
/// detaches them.
fn read_loop(probes: Probes, exposition: &Exposition, interval: Duration, stop: &mpsc::Receiver<()>) {
    loop {
        let started = Instant::now();
        let snapshot = probes.maps.read();
        let text = metrics::render_syscalls(&snapshot, |_| Workload::default());
        let series = text.lines().filter(|l| !l.starts_with('#')).count() / 2;
        exposition.self_metrics.observe(&snapshot, series);
        exposition.publish(text);
        tracing::debug!(keys = snapshot.rows.len(), took = ?started.elapsed(), "maps read");
        match stop.recv_timeout(interval.saturating_sub(started.elapsed())) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(probes);
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
