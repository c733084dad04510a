//! `swoll top`: a live terminal table of every syscall by rate, read from the in-kernel counters.
//!
//! Like the original swoll's `top`, it loads its own probes (root needed; no running agent),
//! reads the maps every `--interval`, and shows one row per (syscall, errno,
//! pid namespace) with its count and its rate over the last interval, sorted by rate, under
//! sparklines of the total and error rates. `--no-ui` prints the same table once as text.
//! With `--node-name` (and KUBECONFIG or the in-cluster config) it watches that node's pods
//! with `swoll serve`'s pod watch ([`crate::resolver::pods`]) and labels rows with their
//! namespace, pod and container, so `-n` selects a Kubernetes namespace; without it, rows carry
//! the container's short id only and no API call is made.
//!
//! Rates: each read is compared with the previous one. The probes' maps are created empty when
//! `top` loads them, so a key absent from the previous read made all its calls since then (the
//! first read compares with that empty map, over the time since load): its rate is its count
//! over the elapsed time, never a guess. A count lower than before means the kernel's LRU
//! recycled the key and it started again from zero, so the new count is all new calls; rates
//! are never negative.
//!
//! The table logic ([`Rates`], [`Filter`], [`view`], [`totals`], [`History`], [`table_text`],
//! [`App`]) is pure and unit-tested; only [`run`] touches the kernel and the terminal.
use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row as TableRow, Sparkline, Table},
};
use swoll_decode::trace::selector::PodQuery;

use crate::{
    loader::{self, LoadOptions, Probes},
    metrics::{self, Row},
    resolver::{PodIndex, Resolver, pods, procfs::Procfs},
};

/// Settings of `swoll top`, validated (built by [`crate::cli::TopArgs::into_options`]).
#[derive(Clone, Debug)]
pub struct TopOptions {
    /// Time between map reads: the window every rate is measured over.
    pub interval: Duration,
    /// Print the table once as text after one interval instead of running the UI.
    pub no_ui: bool,
    /// Which rows are shown (`-n`, `-f`); the UI's `/` replaces the text part.
    pub filter: Filter,
    /// Most rows shown; `None` fits the screen (the UI) or [`NO_UI_LIMIT`]; `Some(0)` is all.
    pub limit: Option<usize>,
    /// The host's procfs, where pid namespaces are resolved to containers.
    pub proc_root: PathBuf,
    /// The Kubernetes node whose pods label the rows; `None`: no API calls, container ids only.
    pub node_name: Option<String>,
    /// How the probes are loaded.
    pub load: LoadOptions,
}

/// Rows printed by `--no-ui` without `--limit`: a screenful, so the heaviest callers are not
/// buried under thousands of idle keys.
pub const NO_UI_LIMIT: usize = 50;

/// Points kept for each sparkline: a minute at the default interval.
pub const HISTORY: usize = 60;

use crate::resolver::DISCOVER_EVERY;

/// Column titles of the table, in order; shared by the UI and `--no-ui`.
pub const COLUMNS: [&str; 8] = [
    "SYSCALL",
    "ERRNO",
    "NAMESPACE",
    "POD",
    "CONTAINER",
    "KNS",
    "COUNT",
    "RATE/S",
];

/// Columns holding numbers, aligned right.
const NUMERIC: [bool; 8] = [false, false, false, false, false, true, true, true];

/// A row of the table: a kernel key with its labels, cumulative count and rate.
#[derive(Clone, Debug, PartialEq)]
pub struct TopRow {
    /// The key's labels and cumulative values.
    pub row: Row,
    /// Calls per second over the last interval; never negative.
    pub rate: f64,
}

/// What identifies a row from one read to the next: its pid namespace, syscall and errno
/// (the kernel key, through its labels).
type RowKey = (u32, Cow<'static, str>, Cow<'static, str>);

/// Turns successive reads of the cumulative counters into per-second rates.
#[derive(Debug)]
pub struct Rates {
    last: HashMap<RowKey, u64>,
    last_at: Instant,
}

impl Rates {
    /// A tracker whose baseline is an empty map at `loaded`, the moment the probes (and so
    /// their freshly created maps) were loaded: a first read's rates are over the time since.
    pub fn new(loaded: Instant) -> Rates {
        Rates {
            last: HashMap::new(),
            last_at: loaded,
        }
    }

    /// The rates of `rows`, read at `now`, against the previous read; `now` becomes the
    /// previous read. A row absent before counts from zero; a count that went down (the key was
    /// recycled by the kernel's LRU and began again) counts from zero too. A zero-length window
    /// gives rate 0.
    pub fn update(&mut self, rows: Vec<Row>, now: Instant) -> Vec<TopRow> {
        let secs = now.saturating_duration_since(self.last_at).as_secs_f64();
        let mut next = HashMap::with_capacity(rows.len());
        let rated = rows
            .into_iter()
            .map(|row| {
                let key = (row.kns, row.syscall.clone(), row.err.clone());
                let before = self.last.get(&key).copied().unwrap_or(0);
                let delta = row.count.checked_sub(before).unwrap_or(row.count);
                let rate = if secs > 0.0 { delta as f64 / secs } else { 0.0 };
                next.insert(key, row.count);
                TopRow { row, rate }
            })
            .collect();
        self.last = next;
        self.last_at = now;
        rated
    }
}

/// Which rows are shown: an exact Kubernetes namespace and a text that some label contains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only rows of this Kubernetes namespace.
    pub namespace: Option<String>,
    /// Only rows where a label contains this text, ignoring ASCII case; never empty.
    pub text: Option<String>,
}

impl Filter {
    /// A filter from the command line; empty strings mean no filter.
    pub fn new(namespace: Option<String>, text: Option<String>) -> Filter {
        Filter {
            namespace: namespace.filter(|n| !n.is_empty()),
            text: text.filter(|t| !t.is_empty()),
        }
    }

    /// Replaces the text part (the UI's `/`); empty clears it.
    pub fn set_text(&mut self, text: &str) {
        self.text = Some(text.to_owned()).filter(|t| !t.is_empty());
    }

    /// Whether `row` is shown: its namespace is the one asked for, and one of its labels
    /// (syscall, errno, class, group, namespace, pod, container, kns) contains the text.
    pub fn matches(&self, row: &Row) -> bool {
        if self
            .namespace
            .as_deref()
            .is_some_and(|ns| row.workload.namespace != ns)
        {
            return false;
        }
        let Some(text) = self.text.as_deref() else {
            return true;
        };
        [
            &row.syscall,
            &row.err,
            row.class,
            row.group,
            &row.workload.namespace,
            &row.workload.pod,
            &row.workload.container,
        ]
        .into_iter()
        .any(|label| contains_ignore_case(label, text))
            || contains_ignore_case(&row.kns.to_string(), text)
    }
}

/// Whether `haystack` contains `needle`, ignoring ASCII case; without allocating.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// The rows `filter` shows, sorted by rate (highest first), then count (highest first), then
/// by syscall, errno and pid namespace so that equal rows keep their places between reads.
pub fn view<'a>(rows: &'a [TopRow], filter: &Filter) -> Vec<&'a TopRow> {
    let mut shown: Vec<&TopRow> = rows.iter().filter(|r| filter.matches(&r.row)).collect();
    shown.sort_by(|a, b| {
        b.rate
            .total_cmp(&a.rate)
            .then(b.row.count.cmp(&a.row.count))
            .then_with(|| a.row.syscall.cmp(&b.row.syscall))
            .then_with(|| a.row.err.cmp(&b.row.err))
            .then(a.row.kns.cmp(&b.row.kns))
    });
    shown
}

/// Sums over the rows shown: the header's figures and the sparklines' next points.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Rows (kernel keys) shown.
    pub rows: usize,
    /// Their calls, cumulative since load.
    pub count: u64,
    /// Their calls per second.
    pub rate: f64,
    /// Their failed calls (errno other than `OK`) per second.
    pub error_rate: f64,
}

/// The totals of `rows`.
pub fn totals(rows: &[&TopRow]) -> Totals {
    rows.iter().fold(Totals::default(), |mut t, r| {
        t.rows += 1;
        t.count = t.count.saturating_add(r.row.count);
        t.rate += r.rate;
        if r.row.err != "OK" {
            t.error_rate += r.rate;
        }
        t
    })
}

/// The last [`HISTORY`] total and error rates, oldest first: the sparklines' data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    total: VecDeque<u64>,
    errors: VecDeque<u64>,
}

impl History {
    /// Appends one read's totals, dropping the oldest beyond [`HISTORY`].
    pub fn push(&mut self, totals: &Totals) {
        for (points, rate) in [
            (&mut self.total, totals.rate),
            (&mut self.errors, totals.error_rate),
        ] {
            if points.len() == HISTORY {
                points.pop_front();
            }
            // `as` saturates: rates are finite and non-negative.
            points.push_back(rate.round() as u64);
        }
    }

    /// Forgets every point: after the filter changes, old points measured other rows.
    pub fn clear(&mut self) {
        self.total.clear();
        self.errors.clear();
    }

    /// Total calls per second, oldest first.
    pub fn total(&self) -> &VecDeque<u64> {
        &self.total
    }

    /// Failed calls per second, oldest first.
    pub fn errors(&self) -> &VecDeque<u64> {
        &self.errors
    }
}

/// A rate as shown: one decimal.
pub fn format_rate(rate: f64) -> String {
    format!("{rate:.1}")
}

/// The cells of one row, in [`COLUMNS`] order; empty labels (host processes, namespaces not
/// resolved, local mode's missing pods) show as `-` so that every column has a word.
pub fn cells(row: &TopRow) -> [String; 8] {
    let label = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    [
        row.row.syscall.to_string(),
        row.row.err.to_string(),
        label(&row.row.workload.namespace),
        label(&row.row.workload.pod),
        label(&row.row.workload.container),
        row.row.kns.to_string(),
        row.row.count.to_string(),
        format_rate(row.rate),
    ]
}

/// Widths of the columns: the widest of title and cells.
fn widths(rows: &[[String; 8]]) -> [usize; 8] {
    let mut widths = COLUMNS.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// The table as plain text, `--no-ui`'s output: a title line, then one line per row, columns
/// separated by two spaces, words left-aligned and numbers right-aligned.
pub fn table_text(rows: &[&TopRow]) -> String {
    let cells: Vec<[String; 8]> = rows.iter().map(|r| cells(r)).collect();
    let widths = widths(&cells);
    let mut out = String::new();
    let titles = COLUMNS.map(str::to_owned);
    for line in std::iter::once(&titles).chain(&cells) {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let w = widths[i];
            if NUMERIC[i] {
                text.push_str(&format!("{cell:>w$}"));
            } else {
                text.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// The first `limit` rows (`0`: all).
fn limited<'a>(rows: &'a [&'a TopRow], limit: usize) -> &'a [&'a TopRow] {
    if limit == 0 {
        rows
    } else {
        &rows[..rows.len().min(limit)]
    }
}

/// What a key press asks of the UI loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on (redraw).
    Continue,
    /// Leave: `q`, or Ctrl-C (which raw mode delivers as a key, not a signal).
    Quit,
}

/// The UI's state apart from the terminal: the last read, the filter being typed, the history.
#[derive(Debug)]
pub struct App {
    /// The rows shown.
    pub filter: Filter,
    /// The filter text being typed after `/`, until Enter or Esc.
    pub editing: Option<String>,
    /// The last read, rated, unfiltered.
    pub rows: Vec<TopRow>,
    /// Sparkline points.
    pub history: History,
    /// Reads so far.
    pub reads: u64,
    /// Most rows shown; `None` fits the screen.
    pub limit: Option<usize>,
    /// Map read interval, for the header.
    pub interval: Duration,
    /// This host's name, for the header.
    pub hostname: String,
    /// The last warning logged while the UI ran (logs cannot go to the screen's stderr).
    pub message: Option<String>,
}

impl App {
    /// An app with nothing read yet.
    pub fn new(filter: Filter, limit: Option<usize>, interval: Duration, hostname: String) -> App {
        App {
            filter,
            editing: None,
            rows: Vec::new(),
            history: History::default(),
            reads: 0,
            limit,
            interval,
            hostname,
            message: None,
        }
    }

    /// Takes in one read's rows and adds its totals to the history.
    pub fn update(&mut self, rows: Vec<TopRow>) {
        self.rows = rows;
        self.reads += 1;
        let totals = totals(&view(&self.rows, &self.filter));
        self.history.push(&totals);
    }

    /// Handles a key: `q` or Ctrl-C quits, `/` starts typing a filter (Enter applies it,
    /// Backspace erases, Esc clears it), Esc outside typing clears the filter too.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind != KeyEventKind::Press {
            return Action::Continue;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(key.code, KeyCode::Char('c' | 'C'))
        {
            return Action::Quit;
        }
        match (&mut self.editing, key.code) {
            (Some(text), KeyCode::Enter) => {
                let text = std::mem::take(text);
                self.editing = None;
                self.set_filter_text(&text);
            }
            (Some(_), KeyCode::Esc) | (None, KeyCode::Esc) => {
                self.editing = None;
                self.set_filter_text("");
            }
            (Some(text), KeyCode::Backspace) => {
                text.pop();
            }
            (Some(text), KeyCode::Char(c)) => text.push(c),
            (Some(_), _) => {}
            (None, KeyCode::Char('q' | 'Q')) => return Action::Quit,
            (None, KeyCode::Char('/')) => {
                self.editing = Some(self.filter.text.clone().unwrap_or_default());
            }
            (None, _) => {}
        }
        Action::Continue
    }

    /// Sets the filter's text; a change starts the sparklines afresh, since their points
    /// measured other rows.
    fn set_filter_text(&mut self, text: &str) {
        let before = self.filter.text.clone();
        self.filter.set_text(text);
        if self.filter.text != before {
            self.history.clear();
        }
    }

    /// Draws the whole screen: header, sparklines, table, footer.
    pub fn draw(&self, frame: &mut Frame) {
        let [header, total, errors, table, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(4),
            Constraint::Length(4),
            Constraint::Min(4),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let shown = view(&self.rows, &self.filter);
        let sums = totals(&shown);

        let mut head = format!(
            "swoll top  {}  every {:?}  {} keys  {} calls/s  {} errors/s",
            self.hostname,
            self.interval,
            sums.rows,
            format_rate(sums.rate),
            format_rate(sums.error_rate),
        );
        if self.reads == 0 {
            head.push_str("  (first read after one interval)");
        }
        frame.render_widget(
            Paragraph::new(head).style(Style::new().add_modifier(Modifier::BOLD)),
            header,
        );

        for (area, points, title, color) in [
            (
                total,
                self.history.total(),
                format!(" total {}/s ", format_rate(sums.rate)),
                Color::Green,
            ),
            (
                errors,
                self.history.errors(),
                format!(" errors {}/s ", format_rate(sums.error_rate)),
                Color::Red,
            ),
        ] {
            let width = usize::from(area.width.saturating_sub(2));
            let skip = points.len().saturating_sub(width);
            frame.render_widget(
                Sparkline::default()
                    .block(Block::bordered().title(title))
                    .style(Style::new().fg(color))
                    .data(points.iter().skip(skip).copied()),
                area,
            );
        }

        self.draw_table(frame, table, &shown);
        self.draw_footer(frame, footer);
    }

    /// The table: as many rows as fit (or `--limit`), numbers right-aligned, errors in red.
    fn draw_table(&self, frame: &mut Frame, area: Rect, shown: &[&TopRow]) {
        // Borders and the title row take three lines.
        let fits = usize::from(area.height.saturating_sub(3));
        let limit = match self.limit {
            None => fits,
            Some(0) => shown.len(),
            Some(n) => n.min(fits),
        };
        let visible = limited(shown, limit.max(1));
        let cells: Vec<[String; 8]> = visible.iter().map(|r| cells(r)).collect();
        let widths = widths(&cells).map(|w| Constraint::Length(u16::try_from(w).unwrap_or(40)));
        let align = |i: usize, text: String| {
            let line = Line::from(text);
            Cell::from(if NUMERIC[i] {
                line.alignment(Alignment::Right)
            } else {
                line
            })
        };
        let title_row = TableRow::new(
            COLUMNS
                .iter()
                .enumerate()
                .map(|(i, c)| align(i, (*c).to_owned())),
        )
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED));
        let rows = cells.into_iter().zip(visible).map(|(cells, r)| {
            let row = TableRow::new(
                cells
                    .into_iter()
                    .enumerate()
                    .map(|(i, text)| align(i, text)),
            );
            if r.row.err == "OK" {
                row
            } else {
                row.style(Style::new().fg(Color::Red))
            }
        });
        let mut title = format!(" syscalls by rate: {} of {} ", visible.len(), shown.len());
        if let Some(ns) = &self.filter.namespace {
            title.push_str(&format!("| namespace {ns} "));
        }
        if let Some(text) = &self.filter.text {
            title.push_str(&format!("| filter {text:?} "));
        }
        frame.render_widget(
            Table::new(rows, widths)
                .header(title_row)
                .column_spacing(2)
                .block(Block::bordered().title(title)),
            area,
        );
    }

    /// The key help, or the filter being typed, and the last warning logged.
    fn draw_footer(&self, frame: &mut Frame, area: Rect) {
        let line = match &self.editing {
            Some(text) => Line::from(vec![
                Span::styled("filter: ", Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(text.clone()),
                Span::styled("_", Style::new().add_modifier(Modifier::SLOW_BLINK)),
                Span::raw("   Enter apply  Esc clear"),
            ]),
            None => {
                let mut spans = vec![Span::raw("q quit  / filter  Esc clear filter")];
                if let Some(message) = &self.message {
                    spans.push(Span::styled(
                        format!("   {message}"),
                        Style::new().fg(Color::Yellow),
                    ));
                }
                Line::from(spans)
            }
        };
        frame.render_widget(Paragraph::new(line), area);
    }
}

/// The probes and what turns their maps into rated rows.
struct Source {
    probes: Probes,
    resolver: Resolver,
    records: Option<u64>,
    rates: Rates,
}

impl Source {
    /// Resolves the pid namespaces the probes recorded since the last look, while their
    /// processes still live; cheap when nothing new was recorded.
    fn discover(&mut self) {
        let records = self.probes.maps.pid_ns_records();
        if self.records != Some(records) {
            self.records = Some(records);
            for (pid_ns, seen) in self.probes.maps.pid_namespaces_seen() {
                self.resolver.observe(pid_ns, Some(seen));
            }
        }
    }

    /// Reads the maps, resolves their namespaces and rates every key.
    fn read(&mut self) -> Vec<TopRow> {
        self.discover();
        let mut snapshot = self.probes.maps.read();
        snapshot.merge_slot_rows();
        let now = Instant::now();
        let mut namespaces: Vec<u32> = snapshot.rows.keys().map(|k| k.pid_ns).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        for &ns in &namespaces {
            self.resolver.observe(ns, None);
        }
        self.resolver.retry_unknown(namespaces);
        let rows = metrics::rows(&snapshot.rows, |ns| self.resolver.workload(ns));
        self.rates.update(rows, now)
    }
}

/// Runs `swoll top`: watches the node's pods (with `--node-name`), loads the probes, then
/// either prints the table once (`--no-ui`) or runs the terminal UI until `q` or Ctrl-C.
/// Dropping the probes on return detaches them.
pub fn run(opts: TopOptions) -> anyhow::Result<()> {
    if !opts.no_ui && !std::io::stdout().is_terminal() {
        anyhow::bail!("swoll top needs a terminal on stdout; use --no-ui for plain text");
    }
    // Before the pod watch starts: its warnings (API server unreachable) must not scribble
    // over the UI's screen.
    let logs = LogLines::default();
    let log_guard = (!opts.no_ui).then(|| tracing::subscriber::set_default(logs.subscriber()));
    let result = watch_and_run(opts, &logs);
    drop(log_guard);
    let mut stderr = std::io::stderr().lock();
    for line in logs.take() {
        let _ = writeln!(stderr, "{line}");
    }
    result
}

/// [`run`] once logging is set up: the pod watch first, so the first read waits for no list.
fn watch_and_run(opts: TopOptions, logs: &LogLines) -> anyhow::Result<()> {
    let pods: Option<Box<dyn PodIndex>> = match opts.node_name.as_deref() {
        None => None,
        Some(node) => {
            let query = PodQuery::node(node);
            let pods = pods::watch_from_thread(&query, pods::FIRST_LIST_WAIT)
                .context("--node-name: labelling pods needs KUBECONFIG or the in-cluster config")?;
            Some(Box::new(pods))
        }
    };
    let probes = loader::load(&opts.load)?;
    let loaded = Instant::now();
    let mut source = Source {
        probes,
        resolver: Resolver::new(Procfs::new(&opts.proc_root), opts.load.host_pid_ns, pods),
        records: None,
        rates: Rates::new(loaded),
    };
    if opts.no_ui {
        print_once(&mut source, &opts, loaded)
    } else {
        ui(&mut source, opts, loaded, logs)
    }
}

/// `--no-ui`: one interval's rates, as text on stdout.
fn print_once(source: &mut Source, opts: &TopOptions, loaded: Instant) -> anyhow::Result<()> {
    let due = loaded + opts.interval;
    loop {
        source.discover();
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(DISCOVER_EVERY));
    }
    let rows = source.read();
    let shown = view(&rows, &opts.filter);
    let text = table_text(limited(&shown, opts.limit.unwrap_or(NO_UI_LIMIT)));
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the table to stdout")
}

/// Puts the terminal back (raw mode off, main screen) when dropped: on every way out of the
/// UI, errors included. Panics are covered by the hook `ratatui::try_init` installs.
struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Warnings logged while the UI owns the terminal: written to stderr they would scribble over
/// the screen, so they are kept here, the last shown in the footer, all printed on exit.
#[derive(Clone, Debug, Default)]
struct LogLines(Arc<Mutex<VecDeque<String>>>);

impl LogLines {
    const KEEP: usize = 20;

    /// A subscriber of warnings that stores them here.
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_max_level(tracing::Level::WARN)
            .finish()
    }

    fn last(&self) -> Option<String> {
        let lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines.back().cloned()
    }

    fn take(&self) -> Vec<String> {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines.drain(..).collect()
    }
}

/// One log event being formatted; stored as a line when the formatter drops it.
struct LogLine {
    buf: Vec<u8>,
    into: LogLines,
}

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.buf).trim_end().to_owned();
        if line.is_empty() {
            return;
        }
        let mut lines = self.into.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == LogLines::KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogLines {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            buf: Vec::new(),
            into: self.clone(),
        }
    }
}

/// The terminal UI: reads every interval, redraws on every read, key and resize; the last of
/// `logs` shows in the footer.
fn ui(
    source: &mut Source,
    opts: TopOptions,
    loaded: Instant,
    logs: &LogLines,
) -> anyhow::Result<()> {
    let mut app = App::new(opts.filter, opts.limit, opts.interval, hostname());
    let _restore = RestoreTerminal;
    ratatui::try_init()
        .context("setting up the terminal")
        .and_then(|mut terminal| ui_loop(&mut terminal, source, &mut app, logs, loaded))
}

/// Reads on schedule, looks for new pid namespaces and waits for keys in between, redrawing
/// only when something changed; returns on `q` or Ctrl-C.
fn ui_loop(
    terminal: &mut DefaultTerminal,
    source: &mut Source,
    app: &mut App,
    logs: &LogLines,
    loaded: Instant,
) -> anyhow::Result<()> {
    let mut next_read = loaded + app.interval;
    let mut dirty = true;
    loop {
        if dirty {
            terminal.draw(|frame| app.draw(frame))?;
            dirty = false;
        }
        let now = Instant::now();
        if now >= next_read {
            app.update(source.read());
            if let Some(message) = logs.last() {
                app.message = Some(message);
            }
            // Keep the cadence, but never queue up reads after a stall.
            next_read = (next_read + app.interval).max(now);
            dirty = true;
            continue;
        }
        source.discover();
        let wait = DISCOVER_EVERY.min(next_read.saturating_duration_since(now));
        if event::poll(wait).context("reading the terminal")? {
            match event::read().context("reading the terminal")? {
                Event::Key(key) => {
                    if app.key(key) == Action::Quit {
                        return Ok(());
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
}

/// This host's name for the header (`-` if unreadable).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::Workload;

    fn row(syscall: &'static str, err: &'static str, kns: u32, count: u64) -> Row {
        Row {
            syscall: Cow::Borrowed(syscall),
            err: Cow::Borrowed(err),
            class: "class",
            group: "group",
            workload: Workload::default(),
            kns,
            count,
            time_ns: 0,
        }
    }

    fn rated(r: Row, rate: f64) -> TopRow {
        TopRow { row: r, rate }
    }

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn first_read_rates_since_load() {
        let t0 = Instant::now();
        let mut rates = Rates::new(t0);
        let out = rates.update(
            vec![row("sys_read", "OK", 1, 500)],
            t0 + Duration::from_secs(2),
        );
        assert_eq!(out[0].rate, 250.0);
    }

    #[test]
    fn rates_are_deltas_over_elapsed() {
        let t0 = Instant::now();
        let mut rates = Rates::new(t0);
        rates.update(
            vec![row("sys_read", "OK", 1, 100), row("sys_write", "OK", 1, 7)],
            t0 + Duration::from_secs(1),
        );
        let out = rates.update(
            vec![
                row("sys_read", "OK", 1, 400),
                row("sys_write", "OK", 1, 7),
                row("sys_read", "OK", 2, 50),
            ],
            t0 + Duration::from_millis(1500),
        );
        assert_eq!(out[0].rate, 600.0, "300 more in 0.5 s");
        assert_eq!(out[1].rate, 0.0, "no new calls");
        assert_eq!(out[2].rate, 100.0, "new key: all 50 calls in the window");
    }

    #[test]
    fn a_counter_that_went_down_restarts_from_zero() {
        let t0 = Instant::now();
        let mut rates = Rates::new(t0);
        rates.update(
            vec![row("sys_read", "OK", 1, 1000)],
            t0 + Duration::from_secs(1),
        );
        let out = rates.update(
            vec![row("sys_read", "OK", 1, 30)],
            t0 + Duration::from_secs(2),
        );
        assert_eq!(out[0].rate, 30.0);
        let out = rates.update(
            vec![row("sys_read", "OK", 1, 30)],
            t0 + Duration::from_secs(2),
        );
        assert_eq!(out[0].rate, 0.0, "zero-length window");
        assert!(out[0].rate >= 0.0);
    }

    #[test]
    fn rows_are_keyed_by_errno_and_namespace() {
        let t0 = Instant::now();
        let mut rates = Rates::new(t0);
        rates.update(
            vec![
                row("sys_openat", "OK", 1, 10),
                row("sys_openat", "ENOENT", 1, 20),
            ],
            t0 + Duration::from_secs(1),
        );
        let out = rates.update(
            vec![
                row("sys_openat", "OK", 1, 15),
                row("sys_openat", "ENOENT", 1, 20),
                row("sys_openat", "OK", 2, 3),
            ],
            t0 + Duration::from_secs(2),
        );
        let r: Vec<f64> = out.iter().map(|r| r.rate).collect();
        assert_eq!(r, [5.0, 0.0, 3.0]);
    }

    #[test]
    fn view_sorts_by_rate_then_count() {
        let rows = vec![
            rated(row("sys_a", "OK", 1, 10), 1.0),
            rated(row("sys_b", "OK", 1, 99), 5.0),
            rated(row("sys_c", "OK", 1, 50), 1.0),
            rated(row("sys_d", "OK", 1, 1), 0.0),
        ];
        let names: Vec<&str> = view(&rows, &Filter::default())
            .iter()
            .map(|r| &*r.row.syscall)
            .collect();
        assert_eq!(names, ["sys_b", "sys_c", "sys_a", "sys_d"]);
    }

    #[test]
    fn filters_by_namespace_and_any_label() {
        let mut pod = row("sys_getppid", "OK", 4026532000, 5);
        pod.workload = Workload {
            namespace: "shop".into(),
            pod: "cart-7d9".into(),
            container: "cart".into(),
        };
        let rows = vec![
            rated(pod, 1.0),
            rated(row("sys_openat", "ENOENT", 4026531836, 5), 1.0),
        ];
        let count = |f: &Filter| view(&rows, f).len();
        assert_eq!(count(&Filter::default()), 2);
        assert_eq!(count(&Filter::new(Some("shop".into()), None)), 1);
        assert_eq!(count(&Filter::new(Some("sho".into()), None)), 0, "exact");
        assert_eq!(count(&Filter::new(None, Some("GETPPID".into()))), 1);
        assert_eq!(count(&Filter::new(None, Some("enoent".into()))), 1);
        assert_eq!(count(&Filter::new(None, Some("4026531836".into()))), 1);
        assert_eq!(count(&Filter::new(None, Some("cart-7".into()))), 1);
        assert_eq!(count(&Filter::new(None, Some("class".into()))), 2);
        assert_eq!(count(&Filter::new(None, Some("nothing".into()))), 0);
        assert_eq!(
            count(&Filter::new(Some(String::new()), Some(String::new()))),
            2
        );
        assert_eq!(
            count(&Filter::new(Some("shop".into()), Some("openat".into()))),
            0
        );
    }

    #[test]
    fn totals_split_errors() {
        let rows = [
            rated(row("sys_read", "OK", 1, 10), 4.0),
            rated(row("sys_openat", "ENOENT", 1, 3), 1.5),
        ];
        let shown: Vec<&TopRow> = rows.iter().collect();
        assert_eq!(
            totals(&shown),
            Totals {
                rows: 2,
                count: 13,
                rate: 5.5,
                error_rate: 1.5
            }
        );
    }

    #[test]
    fn history_keeps_the_last_points() {
        let mut h = History::default();
        for i in 0..(HISTORY + 5) {
            h.push(&Totals {
                rate: i as f64,
                error_rate: 0.4,
                ..Totals::default()
            });
        }
        assert_eq!(h.total().len(), HISTORY);
        assert_eq!(h.total().front(), Some(&5));
        assert_eq!(h.total().back(), Some(&(HISTORY as u64 + 4)));
        assert!(h.errors().iter().all(|&e| e == 0));
        h.clear();
        assert!(h.total().is_empty() && h.errors().is_empty());
    }

    #[test]
    fn text_table_is_aligned() {
        let rows = [
            rated(row("sys_getppid", "OK", 4026532000, 12345), 2000.0),
            rated(row("sys_openat", "ENOENT", 4026531836, 7), 0.25),
        ];
        let shown: Vec<&TopRow> = rows.iter().collect();
        let text = table_text(&shown);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "SYSCALL      ERRNO   NAMESPACE  POD  CONTAINER         KNS  COUNT  RATE/S",
                "sys_getppid  OK      -          -    -          4026532000  12345  2000.0",
                "sys_openat   ENOENT  -          -    -          4026531836      7     0.2",
            ]
        );
        for line in &lines[1..] {
            assert_eq!(line.split_whitespace().count(), COLUMNS.len());
        }
        assert_eq!(
            table_text(&[]),
            "SYSCALL  ERRNO  NAMESPACE  POD  CONTAINER  KNS  COUNT  RATE/S\n"
        );
    }

    #[test]
    fn limit_zero_is_all() {
        let rows = [
            rated(row("sys_a", "OK", 1, 1), 1.0),
            rated(row("sys_b", "OK", 1, 1), 1.0),
        ];
        let shown: Vec<&TopRow> = rows.iter().collect();
        assert_eq!(limited(&shown, 0).len(), 2);
        assert_eq!(limited(&shown, 1).len(), 1);
        assert_eq!(limited(&shown, 9).len(), 2);
    }

    #[test]
    fn keys_quit_and_edit_the_filter() {
        let mut app = App::new(Filter::default(), None, Duration::from_secs(1), "h".into());
        app.update(vec![rated(row("sys_read", "OK", 1, 1), 1.0)]);
        assert_eq!(app.history.total().len(), 1);
        assert_eq!(app.key(press(KeyCode::Char('/'))), Action::Continue);
        for c in "readx".chars() {
            app.key(press(KeyCode::Char(c)));
        }
        // `q` while typing is text, not quit.
        app.key(press(KeyCode::Char('q')));
        app.key(press(KeyCode::Backspace));
        app.key(press(KeyCode::Backspace));
        assert_eq!(app.editing.as_deref(), Some("read"));
        assert_eq!(app.filter.text, None, "not applied before Enter");
        app.key(press(KeyCode::Enter));
        assert_eq!(app.editing, None);
        assert_eq!(app.filter.text.as_deref(), Some("read"));
        assert!(app.history.total().is_empty(), "new filter, new history");
        // `/` again starts from the current text; Esc clears it.
        app.key(press(KeyCode::Char('/')));
        assert_eq!(app.editing.as_deref(), Some("read"));
        app.key(press(KeyCode::Esc));
        assert_eq!(
            (app.editing.as_deref(), app.filter.text.as_deref()),
            (None, None)
        );
        assert_eq!(app.key(press(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(
            app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
        app.key(press(KeyCode::Char('/')));
        assert_eq!(
            app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit,
            "Ctrl-C quits while typing too"
        );
    }

    #[test]
    fn draws_into_a_test_backend() {
        let mut app = App::new(
            Filter::default(),
            None,
            Duration::from_secs(1),
            "node-1".into(),
        );
        let mut openat = row("sys_openat", "ENOENT", 4026531836, 7);
        openat.workload.container = "0123456789ab".into();
        app.update(vec![
            rated(row("sys_getppid", "OK", 4026532000, 12345), 2000.0),
            rated(openat, 3.0),
        ]);
        let mut terminal =
            ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 20)).expect("terminal");
        terminal.draw(|f| app.draw(f)).expect("draw");
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .chunks(120)
            .map(|line| line.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        assert!(screen.contains("swoll top  node-1"), "{screen}");
        assert!(screen.contains("total 2003.0/s"), "{screen}");
        assert!(screen.contains("errors 3.0/s"), "{screen}");
        assert!(screen.contains("SYSCALL"), "{screen}");
        let getppid = screen.find("sys_getppid").expect(&screen);
        let openat = screen.find("sys_openat").expect(&screen);
        assert!(getppid < openat, "sorted by rate:\n{screen}");
        assert!(screen.contains("0123456789ab"), "{screen}");
        assert!(screen.contains("q quit"), "{screen}");
    }

    #[test]
    fn cli_parses_top() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "swoll", "top", "--no-ui", "-n", "shop", "-f", "read", "--limit", "5",
        ])
        .expect("parses");
        let crate::cli::Command::Top(args) = cli.command else {
            panic!("not top")
        };
        assert_eq!(args.interval, Duration::from_secs(1));
        assert!(args.no_ui && !args.no_host);
        assert_eq!(args.namespace.as_deref(), Some("shop"));
        assert_eq!(args.filter.as_deref(), Some("read"));
        assert_eq!(args.limit, Some(5));
    }
}
