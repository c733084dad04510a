//! What the HTTP endpoints serve: the series and keys of the last map read, the agent's own
//! metrics, and what seccomp profiles are dated against. The map reader publishes here; the
//! routes ([`crate::http`], [`crate::charts`], [`crate::seccomp`]) only read, so none of them
//! depends on another.
use std::{
    path::PathBuf,
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::metrics::{RowSource, SelfMetrics, Table};

/// What the endpoints serve, updated by the map reader.
#[derive(Debug)]
pub struct Exposition {
    /// The syscall families' series at the last map read.
    syscalls: RwLock<Arc<Table>>,
    /// The keys of the last map read, for pages that chart them.
    rows: RwLock<Arc<RowSource>>,
    /// The agent's own metrics, encoded at each scrape.
    pub self_metrics: SelfMetrics,
    /// Set once the first map read is rendered.
    ready: AtomicBool,
    /// What the seccomp profiles are dated against, set once the probes are loaded.
    seccomp_origin: OnceLock<Origin>,
}

impl Exposition {
    /// An exposition with no syscall series yet and not ready.
    pub fn new(self_metrics: SelfMetrics) -> Self {
        Self {
            syscalls: RwLock::new(Arc::new(Table::default())),
            rows: RwLock::new(Arc::new(RowSource::default())),
            self_metrics,
            ready: AtomicBool::new(false),
            seccomp_origin: OnceLock::new(),
        }
    }

    /// Sets what the seccomp profiles are dated against (once; later calls are ignored).
    pub fn set_seccomp_origin(&self, origin: Origin) {
        let _ = self.seccomp_origin.set(origin);
    }

    /// What the seccomp profiles are dated against, once set.
    pub fn seccomp_origin(&self) -> Option<Origin> {
        self.seccomp_origin.get().cloned()
    }

    /// Replaces the syscall families and the keys behind their rows, and marks the agent
    /// ready.
    pub fn publish(&self, syscalls: Arc<Table>, rows: RowSource) {
        replace(&self.syscalls, syscalls);
        replace(&self.rows, Arc::new(rows));
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the first map read is rendered, for the readiness probe.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The syscall families' series at the last map read.
    pub fn syscalls(&self) -> Arc<Table> {
        current(&self.syscalls)
    }

    /// The keys of the last map read, which make its rows.
    pub fn rows(&self) -> Arc<RowSource> {
        current(&self.rows)
    }
}

fn replace<T>(lock: &RwLock<Arc<T>>, value: Arc<T>) {
    match lock.write() {
        Ok(mut guard) => *guard = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

fn current<T>(lock: &RwLock<Arc<T>>) -> Arc<T> {
    match lock.read() {
        Ok(guard) => Arc::clone(&guard),
        Err(poisoned) => Arc::clone(&poisoned.into_inner()),
    }
}

/// What the seccomp routes need besides the rows: where procfs is, and since when the probes
/// count. Set once the probes are loaded.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The host's procfs (`--proc-root`), to date pid namespaces.
    pub proc_root: PathBuf,
    /// When the probes began counting, after boot; `None` if not known.
    pub counting_since: Option<Duration>,
}
