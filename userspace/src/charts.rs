//! `/metrics/charts`: where a node's system calls go, as a Sankey diagram and two top-N tables.
//!
//! Swoll had this page; it is kept because a Sankey answers at a glance what a dashboard needs
//! several panels for: which classes of calls a namespace makes, from which pods, and how they
//! fail. Everything is computed here, on the server, from the rows of the last map read
//! ([`crate::exposition::Exposition::rows`]): each path through the chosen order of labels (class →
//! group → namespace → pod → syscall → errno by default) adds its call count to every link on
//! it. The page is plain HTML with the nodes and links inlined as JSON; echarts, embedded in the
//! binary at build time (`build.rs`), draws them, so the page works on a node with no way out.
//!
//! What swoll got wrong is avoided on purpose: nothing here grows between requests (each page is
//! built from the current rows and dropped), a busy node's page stays small (at most
//! [`MAX_PATHS`] paths, the rest folded into one `(other)` path), labels of unknown syscalls are
//! just labels, and every label is escaped on its way into HTML or JSON (pod names are user data).
//!
//! Query parameters, as swoll's: `namespace=` keeps one Kubernetes namespace (and changes the
//! default order to class → group → pod → container → syscall → errno), `ord=` sets the order
//! as comma-separated tokens (`class|cl`, `group|gr`, `namespace|ns`, `pod|p`, `container|c`,
//! `syscall|sc|name|n`, `errno|error|err|e`, and `kns|k` for the pid namespace inode). `kns=`
//! (not in swoll) keeps one pid namespace. Anything else is answered 400 with what was wrong.
use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    fmt::{self, Write as _},
    sync::Arc,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};

use serde::Serialize;

use crate::{
    exposition::Exposition,
    metrics::{Label, Row},
};

/// Most paths a Sankey shows; the rest are summed into one `(other)` path, so a node with
/// thousands of pods still gets a page of a few hundred kilobytes that a browser can lay out.
pub const MAX_PATHS: usize = 300;

/// Rows in each top-N table.
pub const TOP: usize = 20;

/// The echarts version embedded (the one `scripts/setup.sh` fetches; see `build.rs`).
pub const ECHARTS_VERSION: &str = env!("SWOLL_ECHARTS_VERSION");

/// `echarts.min.js` as `build.rs` found it; empty when built with `SWOLL_ECHARTS=none`.
static ECHARTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echarts.min.js"));

/// The page around the data: `{{name}}` placeholders filled by [`page`].
const TEMPLATE: &str = include_str!("../assets/charts.html");

/// The script that hands the inlined data to echarts (a file of its own so the page's
/// Content-Security-Policy can forbid inline scripts).
const SCRIPT: &str = include_str!("../assets/charts.js");

/// The default order: swoll's.
pub const DEFAULT_ORDER: [Label; 6] = [
    Label::Class,
    Label::Group,
    Label::Namespace,
    Label::Pod,
    Label::Syscall,
    Label::Err,
];

/// The default order when one namespace is chosen (swoll's): the namespace level would be one
/// node, so the containers get its place.
pub const NAMESPACE_ORDER: [Label; 6] = [
    Label::Class,
    Label::Group,
    Label::Pod,
    Label::Container,
    Label::Syscall,
    Label::Err,
];

/// The `ord=` tokens: swoll's, plus `err` (the metric label's name) and `kns`.
const TOKENS: [(&str, Label); 20] = [
    ("class", Label::Class),
    ("cl", Label::Class),
    ("group", Label::Group),
    ("gr", Label::Group),
    ("namespace", Label::Namespace),
    ("ns", Label::Namespace),
    ("pod", Label::Pod),
    ("p", Label::Pod),
    ("container", Label::Container),
    ("c", Label::Container),
    ("syscall", Label::Syscall),
    ("sc", Label::Syscall),
    ("name", Label::Syscall),
    ("n", Label::Syscall),
    ("errno", Label::Err),
    ("error", Label::Err),
    ("err", Label::Err),
    ("e", Label::Err),
    ("kns", Label::Kns),
    ("k", Label::Kns),
];

/// The routes of the page, merged into the agent's router by [`crate::http::router`].
pub fn routes() -> Router<Arc<Exposition>> {
    Router::new()
        .route("/metrics/charts", get(page_handler))
        .route("/metrics/charts/", get(page_handler))
        .route("/metrics/charts/data.json", get(data_handler))
        .route("/metrics/charts/echarts.min.js", get(echarts_handler))
        .route("/metrics/charts/charts.js", get(script_handler))
}

/// A query string the page cannot honour, said in words for the 400 answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadQuery(pub String);

impl fmt::Display for BadQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadQuery {}

/// What a request asks for: the order of the Sankey's levels and which rows to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The levels, left to right: at least two, none twice.
    pub order: Vec<Label>,
    /// Keep only this Kubernetes namespace.
    pub namespace: Option<String>,
    /// Keep only this pid namespace.
    pub kns: Option<u32>,
}

impl Default for Query {
    fn default() -> Query {
        Query {
            order: DEFAULT_ORDER.to_vec(),
            namespace: None,
            kns: None,
        }
    }
}

impl Query {
    /// Parses a raw query string (`None`: no `?`). Empty values count as not given, so the
    /// page's own form, submitted with blank fields, shows the defaults.
    pub fn parse(raw: Option<&str>) -> Result<Query, BadQuery> {
        let mut ord = None;
        let mut namespace = None;
        let mut kns = None;
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key)?;
            let value = percent_decode(value)?;
            let slot = match key.as_str() {
                "ord" => &mut ord,
                "namespace" => &mut namespace,
                "kns" => &mut kns,
                _ => {
                    return Err(BadQuery(format!(
                        "unknown query parameter {key:?} (known: namespace, ord, kns)"
                    )));
                }
            };
            if slot.is_some() {
                return Err(BadQuery(format!("query parameter {key:?} given twice")));
            }
            *slot = Some(value);
        }
        let namespace = namespace.filter(|n| !n.is_empty());
        let kns = match kns.filter(|k| !k.is_empty()) {
            None => None,
            Some(k) => Some(k.parse::<u32>().map_err(|_| {
                BadQuery(format!(
                    "kns={k:?} is not a pid namespace inode number (as `readlink /proc/PID/ns/pid` shows it)"
                ))
            })?),
        };
        let order = match ord.filter(|o| !o.is_empty()) {
            Some(ord) => parse_order(&ord)?,
            None if namespace.is_some() => NAMESPACE_ORDER.to_vec(),
            None => DEFAULT_ORDER.to_vec(),
        };
        Ok(Query {
            order,
            namespace,
            kns,
        })
    }

    fn keeps(&self, row: &Row) -> bool {
        row.count > 0
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == row.workload.namespace)
            && self.kns.is_none_or(|kns| kns == row.kns)
    }
}

/// Parses `ord=`: comma-separated tokens (case and blanks around them ignored), at least two
/// levels, none twice (a level twice would make a node its own neighbour).
pub fn parse_order(ord: &str) -> Result<Vec<Label>, BadQuery> {
    let mut order = Vec::new();
    for token in ord.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let lower = token.to_ascii_lowercase();
        let Some(&(_, label)) = TOKENS.iter().find(|(name, _)| *name == lower) else {
            return Err(BadQuery(format!(
                "unknown ord token {token:?} (one of class|cl, group|gr, namespace|ns, pod|p, \
                 container|c, syscall|sc|name|n, errno|error|err|e, kns|k)"
            )));
        };
        if order.contains(&label) {
            return Err(BadQuery(format!(
                "ord names {} twice ({token:?})",
                label.name()
            )));
        }
        order.push(label);
    }
    if order.len() < 2 {
        return Err(BadQuery(format!(
            "ord={ord:?} needs at least two levels, e.g. ord=class,syscall,errno"
        )));
    }
    Ok(order)
}

/// Decodes `%XX` escapes and `+` (a space, as HTML forms send it) of one query component.
/// Not `form_urlencoded::parse`: it passes a malformed escape through as text and replaces
/// invalid UTF-8, so a mistyped `namespace=` would silently match nothing instead of a 400.
fn percent_decode(s: &str) -> Result<String, BadQuery> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| BadQuery(format!("bad percent-escape in {s:?}")))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| BadQuery(format!("{s:?} does not decode to UTF-8")))
}

/// A row's value at one level.
fn value(row: &Row, label: Label) -> Cow<'_, str> {
    match label {
        Label::Syscall => Cow::Borrowed(&row.syscall),
        Label::Err => Cow::Borrowed(&row.err),
        Label::Class => Cow::Borrowed(row.class),
        Label::Group => Cow::Borrowed(row.group),
        Label::Namespace => Cow::Borrowed(&row.workload.namespace),
        Label::Pod => Cow::Borrowed(&row.workload.pod),
        Label::Container => Cow::Borrowed(&row.workload.container),
        Label::Kns => Cow::Owned(row.kns.to_string()),
    }
}

/// One node of the Sankey: a value at one level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Unique across levels: `<level>:<value>` (`syscall:sys_openat`), or `<level>#other` for
    /// the folded paths (no value can make that name, as `#` is not `:`).
    pub name: String,
    /// The level (column), from 0.
    pub depth: usize,
    /// What the chart writes by the node: the value, `(none)` for an empty one (host processes
    /// have no pod), `(other)` for the folded paths.
    pub text: String,
    /// Calls through the node.
    pub value: u64,
}

/// A link between nodes of neighbouring levels, by index into [`Sankey::nodes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The node on the left.
    pub source: usize,
    /// The node on the right.
    pub target: usize,
    /// Calls along it.
    pub value: u64,
}

/// The Sankey of a set of rows: what the page inlines and `data.json` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sankey {
    /// The levels, left to right.
    pub order: Vec<Label>,
    /// Nodes by level, the busiest first within a level.
    pub nodes: Vec<Node>,
    /// Links, by source node, the busiest first.
    pub links: Vec<Link>,
    /// Distinct paths (label combinations with calls) in the rows kept.
    pub paths: usize,
    /// Paths folded into the `(other)` path (0 when all fit).
    pub folded_paths: usize,
    /// Calls on the folded paths.
    pub folded_calls: u64,
    /// Calls in the rows kept.
    pub calls: u64,
}

/// Builds the Sankey of the rows `query` keeps, with at most `max_paths` paths of their own (the
/// busiest; at least one) and the rest summed into one path of `(other)` nodes.
pub fn sankey(rows: &[Row], query: &Query, max_paths: usize) -> Sankey {
    let order = &query.order;
    let mut paths: HashMap<Vec<Cow<'_, str>>, u64> = HashMap::new();
    for row in rows.iter().filter(|r| query.keeps(r)) {
        let key = order.iter().map(|&l| value(row, l)).collect();
        let calls = paths.entry(key).or_default();
        *calls = calls.saturating_add(row.count);
    }
    let mut paths: Vec<_> = paths.into_iter().collect();
    paths.sort_unstable_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
    let total = paths.len();
    let kept = total.min(max_paths.max(1));
    let folded_calls = paths[kept..]
        .iter()
        .fold(0u64, |sum, (_, c)| sum.saturating_add(*c));

    // Nodes by (level, value; None for the folded path), numbered as first met.
    let mut index: HashMap<(usize, Option<String>), usize> = HashMap::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut links: HashMap<(usize, usize), u64> = HashMap::new();
    let mut calls = 0u64;
    let mut add = |path: &[Option<&str>], count: u64| {
        calls = calls.saturating_add(count);
        let mut prev = None;
        for (depth, (v, label)) in path.iter().zip(order).enumerate() {
            let id = *index
                .entry((depth, v.map(str::to_owned)))
                .or_insert_with(|| {
                    nodes.push(Node {
                        name: match v {
                            Some(v) => format!("{}:{v}", label.name()),
                            None => format!("{}#other", label.name()),
                        },
                        depth,
                        text: match v {
                            Some("") => "(none)".to_owned(),
                            Some(v) => (*v).to_owned(),
                            None => "(other)".to_owned(),
                        },
                        value: 0,
                    });
                    nodes.len() - 1
                });
            nodes[id].value = nodes[id].value.saturating_add(count);
            if let Some(p) = prev {
                let link = links.entry((p, id)).or_default();
                *link = link.saturating_add(count);
            }
            prev = Some(id);
        }
    };
    for (path, count) in &paths[..kept] {
        let path: Vec<Option<&str>> = path.iter().map(|v| Some(v.as_ref())).collect();
        add(&path, *count);
    }
    if kept < total {
        add(&vec![None; order.len()], folded_calls);
    }

    // Renumber: by level, then busiest first, then by name (a stable page for equal counts).
    let mut sorted: Vec<usize> = (0..nodes.len()).collect();
    sorted.sort_unstable_by(|&a, &b| {
        let (a, b) = (&nodes[a], &nodes[b]);
        (a.depth, b.value, &a.name).cmp(&(b.depth, a.value, &b.name))
    });
    let mut renumber = vec![0; nodes.len()];
    for (new, &old) in sorted.iter().enumerate() {
        renumber[old] = new;
    }
    let nodes: Vec<Node> = sorted.iter().map(|&i| nodes[i].clone()).collect();
    let mut links: Vec<Link> = links
        .into_iter()
        .map(|((s, t), value)| Link {
            source: renumber[s],
            target: renumber[t],
            value,
        })
        .collect();
    links
        .sort_unstable_by(|a, b| (a.source, b.value, a.target).cmp(&(b.source, a.value, b.target)));
    Sankey {
        order: order.clone(),
        nodes,
        links,
        paths: total,
        folded_paths: total - kept,
        folded_calls,
        calls,
    }
}

impl Sankey {
    /// The Sankey as JSON, safe to inline in a `<script>` element: `<`, `>` and `&` (which JSON
    /// has only inside strings) are written as `\u00XX`, so no label can close the element, and
    /// U+2028/U+2029 as escapes too, which old JavaScript parsers took for line ends.
    pub fn to_json(&self, query: &Query) -> String {
        let view = SankeyJson {
            order: self.order.iter().map(|l| l.name()).collect(),
            namespace: query.namespace.as_deref(),
            kns: query.kns,
            paths: self.paths,
            folded_paths: self.folded_paths,
            folded_calls: self.folded_calls,
            calls: self.calls,
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeJson {
                    name: &n.name,
                    depth: n.depth,
                    text: &n.text,
                    calls: n.value,
                })
                .collect(),
            links: self
                .links
                .iter()
                .map(|l| LinkJson {
                    source: &self.nodes[l.source].name,
                    target: &self.nodes[l.target].name,
                    value: l.value,
                })
                .collect(),
        };
        // Plain structs of strings and numbers: serializing them cannot fail.
        let json = serde_json::to_string(&view).unwrap_or_default();
        let mut out = String::with_capacity(json.len());
        for c in json.chars() {
            match c {
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    write!(out, "\\u{:04x}", u32::from(c)).unwrap_or_default();
                }
                c => out.push(c),
            }
        }
        out
    }
}

/// The JSON shape of a [`Sankey`], which the page's script reads: links name their nodes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SankeyJson<'a> {
    order: Vec<&'static str>,
    namespace: Option<&'a str>,
    kns: Option<u32>,
    paths: usize,
    folded_paths: usize,
    folded_calls: u64,
    calls: u64,
    nodes: Vec<NodeJson<'a>>,
    links: Vec<LinkJson<'a>>,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    name: &'a str,
    depth: usize,
    text: &'a str,
    calls: u64,
}

#[derive(Serialize)]
struct LinkJson<'a> {
    source: &'a str,
    target: &'a str,
    value: u64,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One line of the top-syscalls table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopSyscall {
    /// `sys_<name>`.
    pub syscall: String,
    /// swoll's class of it.
    pub class: &'static str,
    /// swoll's group of it.
    pub group: &'static str,
    /// Calls.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Nanoseconds in them.
    pub time_ns: u64,
}

/// One line of the top-errors table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopError {
    /// The errno's name.
    pub err: String,
    /// The syscall that failed with it.
    pub syscall: String,
    /// Calls that failed so.
    pub calls: u64,
    /// All calls of that syscall, for the failure rate.
    pub of: u64,
}

/// The `n` syscalls with the most calls among the rows `query` keeps.
pub fn top_syscalls(rows: &[Row], query: &Query, n: usize) -> Vec<TopSyscall> {
    let mut by: BTreeMap<&str, TopSyscall> = BTreeMap::new();
    for row in rows.iter().filter(|r| query.keeps(r)) {
        let t = by.entry(&row.syscall).or_insert_with(|| TopSyscall {
            syscall: row.syscall.to_string(),
            class: row.class,
            group: row.group,
            calls: 0,
            errors: 0,
            time_ns: 0,
        });
        t.calls = t.calls.saturating_add(row.count);
        t.time_ns = t.time_ns.saturating_add(row.time_ns);
        if row.err != "OK" {
            t.errors = t.errors.saturating_add(row.count);
        }
    }
    let mut top: Vec<_> = by.into_values().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.calls));
    top.truncate(n);
    top
}

/// The `n` (errno, syscall) pairs with the most failed calls among the rows `query` keeps.
pub fn top_errors(rows: &[Row], query: &Query, n: usize) -> Vec<TopError> {
    let mut all: HashMap<&str, u64> = HashMap::new();
    let mut by: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for row in rows.iter().filter(|r| query.keeps(r)) {
        let a = all.entry(&row.syscall).or_default();
        *a = a.saturating_add(row.count);
        if row.err != "OK" {
            let e = by.entry((&row.err, &row.syscall)).or_default();
            *e = e.saturating_add(row.count);
        }
    }
    let mut top: Vec<TopError> = by
        .into_iter()
        .map(|((err, syscall), calls)| TopError {
            err: err.to_owned(),
            syscall: syscall.to_owned(),
            calls,
            of: all.get(syscall).copied().unwrap_or(calls),
        })
        .collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.calls));
    top.truncate(n);
    top
}

/// A count with thousands separated (`1,234,567`).
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Nanoseconds in the unit that reads best.
fn duration(ns: u64) -> String {
    // Display only: f64's rounding of huge totals does not matter.
    let f = ns as f64;
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", f / 1e6),
        _ => format!("{:.2} s", f / 1e9),
    }
}

/// Fills `{{name}}` placeholders of `template` in one pass (filled text is never scanned again,
/// so a label that reads `{{data}}` stays text).
fn fill(template: &str, mut value: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after
            .find("}}")
            .and_then(|end| Some((end, value(&after[..end])?)))
        {
            Some((end, v)) => {
                out.push_str(&v);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Renders the page for `rows`. `base` is the relative URL prefix of the page's scripts
/// (`""` when the page is `/metrics/charts/`, `"charts/"` when it is `/metrics/charts`), so the
/// page also works behind a proxy that serves the agent under another path.
pub fn page(rows: &[Row], query: &Query, base: &str) -> String {
    let sankey = sankey(rows, query, MAX_PATHS);
    let order: Vec<&str> = query.order.iter().map(|l| l.name()).collect();
    let mut title = order.join(" → ");
    if let Some(ns) = &query.namespace {
        write!(title, " in namespace {ns}").unwrap_or_default();
    }
    if let Some(kns) = query.kns {
        write!(title, " in pid namespace {kns}").unwrap_or_default();
    }
    let chart = if sankey.links.is_empty() {
        "<p class=\"empty\">No system calls recorded for this selection yet.</p>".to_owned()
    } else if ECHARTS.is_empty() {
        "<p class=\"empty\">This swoll was built without echarts (SWOLL_ECHARTS=none): the \
         tables below are all there is.</p>"
            .to_owned()
    } else {
        let mut c = format!(
            "<div id=\"sankey\" role=\"img\" aria-label=\"Sankey of system calls by {}\"></div>",
            escape_html(&title)
        );
        if sankey.folded_paths > 0 {
            write!(
                c,
                "<p class=\"note\">The {MAX_PATHS} busiest of {} paths are shown; {} calls on the \
                 other {} are folded into (other).</p>",
                thousands(sankey.paths as u64),
                thousands(sankey.folded_calls),
                thousands(sankey.folded_paths as u64)
            )
            .unwrap_or_default();
        }
        c
    };
    let scripts = if sankey.links.is_empty() || ECHARTS.is_empty() {
        String::new()
    } else {
        format!(
            "<script src=\"{base}echarts.min.js?v={ECHARTS_VERSION}\"></script>\n\
             <script src=\"{base}charts.js?v={}\"></script>",
            env!("CARGO_PKG_VERSION")
        )
    };
    let tables = tables(rows, query);
    fill(TEMPLATE, |name| {
        Some(match name {
            "title" => escape_html(&title).into_owned(),
            "order" => escape_html(&order.join(",")).into_owned(),
            "namespace" => escape_html(query.namespace.as_deref().unwrap_or_default()).into_owned(),
            "kns" => query.kns.map(|k| k.to_string()).unwrap_or_default(),
            "calls" => thousands(sankey.calls),
            "chart" => chart.clone(),
            "tables" => tables.clone(),
            // Inside <script type="application/json">: to_json escaped `<`, `>`, `&`.
            "data" => sankey.to_json(query),
            "scripts" => scripts.clone(),
            "version" => escape_html(env!("CARGO_PKG_VERSION")).into_owned(),
            "base" => escape_html(base).into_owned(),
            "query" => escape_html(&query_string(query)).into_owned(),
            _ => return None,
        })
    })
}

/// `query` as a query string (`?ord=…`, empty for the defaults), for links that keep it.
fn query_string(query: &Query) -> String {
    let mut parts = Vec::new();
    let default = if query.namespace.is_some() {
        &NAMESPACE_ORDER[..]
    } else {
        &DEFAULT_ORDER[..]
    };
    if query.order != default {
        let order: Vec<&str> = query.order.iter().map(|l| l.name()).collect();
        parts.push(format!("ord={}", order.join(",")));
    }
    if let Some(ns) = &query.namespace {
        parts.push(format!(
            "namespace={}",
            form_urlencoded::byte_serialize(ns.as_bytes()).collect::<String>()
        ));
    }
    if let Some(kns) = query.kns {
        parts.push(format!("kns={kns}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The two top-N tables as HTML.
fn tables(rows: &[Row], query: &Query) -> String {
    let mut out = String::new();
    out.push_str(
        "<table id=\"top-syscalls\"><caption>Top system calls</caption><thead><tr>\
         <th>syscall</th><th>class / group</th><th class=\"n\">calls</th>\
         <th class=\"n\">failed</th><th class=\"n\">time</th><th class=\"n\">mean</th>\
         </tr></thead><tbody>",
    );
    let syscalls = top_syscalls(rows, query, TOP);
    for t in &syscalls {
        write!(
            out,
            "<tr><td>{}</td><td>{} / {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape_html(&t.syscall),
            escape_html(t.class),
            escape_html(t.group),
            thousands(t.calls),
            thousands(t.errors),
            duration(t.time_ns),
            duration(t.time_ns / t.calls.max(1)),
        )
        .unwrap_or_default();
    }
    if syscalls.is_empty() {
        out.push_str("<tr><td colspan=\"6\">none</td></tr>");
    }
    out.push_str(
        "</tbody></table><table id=\"top-errors\"><caption>Top errors</caption><thead><tr>\
         <th>errno</th><th>syscall</th><th class=\"n\">calls</th>\
         <th class=\"n\">of its calls</th></tr></thead><tbody>",
    );
    let errors = top_errors(rows, query, TOP);
    for t in &errors {
        let share = 100.0 * t.calls as f64 / t.of.max(1) as f64;
        write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{share:.1} %</td></tr>",
            escape_html(&t.err),
            escape_html(&t.syscall),
            thousands(t.calls),
        )
        .unwrap_or_default();
    }
    if errors.is_empty() {
        out.push_str("<tr><td colspan=\"4\">none</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// What the page's answers allow: its own scripts (no inline ones: the data is JSON, not
/// code), inline styles (echarts sets them), nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn bad_request(err: &BadQuery) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("bad query: {err}\n"),
    )
        .into_response()
}

/// Makes the rows of the last map read and runs `build` on them, off the async runtime (a busy
/// node has tens of thousands of rows, and the agent's runtime is single-threaded). Rows are
/// made here, when a page asks, rather than at every read for pages rarely looked at.
async fn with_rows(
    state: &Exposition,
    build: impl FnOnce(&[Row]) -> String + Send + 'static,
) -> Result<String, Response> {
    let source = state.rows();
    tokio::task::spawn_blocking(move || build(&source.rows()))
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "building the charts page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "building the page failed\n",
            )
                .into_response()
        })
}

async fn page_handler(State(state): State<Arc<Exposition>>, uri: Uri) -> Response {
    let query = match Query::parse(uri.query()) {
        Ok(q) => q,
        Err(err) => return bad_request(&err),
    };
    let base = if uri.path().ends_with('/') {
        ""
    } else {
        "charts/"
    };
    match with_rows(&state, move |rows| page(rows, &query, base)).await {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            html,
        )
            .into_response(),
        Err(response) => response,
    }
}

async fn data_handler(State(state): State<Arc<Exposition>>, uri: Uri) -> Response {
    let query = match Query::parse(uri.query()) {
        Ok(q) => q,
        Err(err) => return bad_request(&err),
    };
    match with_rows(&state, move |rows| {
        sankey(rows, &query, MAX_PATHS).to_json(&query)
    })
    .await
    {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            json,
        )
            .into_response(),
        Err(response) => response,
    }
}

async fn echarts_handler() -> Response {
    if ECHARTS.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "this swoll was built without echarts (SWOLL_ECHARTS=none)\n",
        )
            .into_response();
    }
    // The page asks for it with `?v=<version>`, so a year of caching is safe across upgrades.
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        ECHARTS,
    )
        .into_response()
}

async fn script_handler() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // Small, and changes with the agent's code without a version bump: revalidate.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::Workload;

    fn row(syscall: &'static str, err: &'static str, ns: &str, pod: &str, count: u64) -> Row {
        Row {
            syscall: Cow::Borrowed(syscall),
            err: Cow::Borrowed(err),
            class: "FileSystem",
            group: "Files",
            workload: Workload {
                namespace: ns.to_owned(),
                pod: pod.to_owned(),
                container: "c".to_owned(),
            },
            kns: 4_026_531_836,
            count,
            time_ns: count * 1000,
        }
    }

    fn link(s: &Sankey, from: &str, to: &str) -> Option<u64> {
        s.links
            .iter()
            .find(|l| s.nodes[l.source].name == from && s.nodes[l.target].name == to)
            .map(|l| l.value)
    }

    #[test]
    fn order_tokens_are_swolls() {
        assert_eq!(
            parse_order("cl, gr ,ns,p,sc,e").unwrap(),
            DEFAULT_ORDER.to_vec()
        );
        assert_eq!(
            parse_order("CLASS,group,pod,container,name,error").unwrap(),
            NAMESPACE_ORDER.to_vec()
        );
        assert_eq!(
            parse_order("n,errno,k").unwrap(),
            vec![Label::Syscall, Label::Err, Label::Kns]
        );
        assert_eq!(
            parse_order("syscall,c,").unwrap(),
            vec![Label::Syscall, Label::Container]
        );
        let err = parse_order("class,bogus").unwrap_err().0;
        assert!(
            err.contains("\"bogus\"") && err.contains("class|cl"),
            "{err}"
        );
        assert!(parse_order("pod,p").unwrap_err().0.contains("twice"));
        assert!(parse_order("pod").unwrap_err().0.contains("two levels"));
        assert!(parse_order(" , ").is_err());
    }

    #[test]
    fn query_defaults_follow_the_namespace_filter() {
        assert_eq!(Query::parse(None).unwrap(), Query::default());
        assert_eq!(Query::parse(Some("")).unwrap(), Query::default());
        let q = Query::parse(Some("namespace=kube-system")).unwrap();
        assert_eq!(q.order, NAMESPACE_ORDER.to_vec());
        assert_eq!(q.namespace.as_deref(), Some("kube-system"));
        // The page's own form sends blank fields.
        assert_eq!(
            Query::parse(Some("namespace=&ord=&kns=")).unwrap(),
            Query::default()
        );
        let q = Query::parse(Some("ord=sc%2Ce&namespace=a+b&kns=4026531836")).unwrap();
        assert_eq!(q.order, vec![Label::Syscall, Label::Err]);
        assert_eq!(q.namespace.as_deref(), Some("a b"));
        assert_eq!(q.kns, Some(4_026_531_836));
        for bad in [
            "nope=1",
            "ord=x",
            "kns=abc",
            "ord=cl,sc&ord=cl,e",
            "namespace=%zz",
            "namespace=%ff",
        ] {
            assert!(Query::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_strings_round_trip() {
        for raw in [
            "",
            "ord=sc,e",
            "namespace=a%20b%26c",
            "namespace=x&ord=cl,sc&kns=5",
        ] {
            let q = Query::parse(Some(raw)).unwrap();
            let s = query_string(&q);
            assert_eq!(
                Query::parse(s.strip_prefix('?')).unwrap(),
                q,
                "{raw} -> {s}"
            );
        }
        assert_eq!(query_string(&Query::default()), "");
    }

    #[test]
    fn each_path_adds_its_calls_to_every_link_on_it() {
        let rows = vec![
            row("sys_openat", "ENOENT", "", "", 7),
            row("sys_openat", "OK", "", "", 3),
            row("sys_read", "OK", "web", "web-1", 5),
            // A second pid namespace of the same workload: summed.
            Row {
                kns: 7,
                ..row("sys_read", "OK", "web", "web-1", 2)
            },
            row("sys_close", "OK", "web", "web-1", 0),
        ];
        let s = sankey(&rows, &Query::default(), MAX_PATHS);
        assert_eq!(s.paths, 3);
        assert_eq!(s.calls, 17);
        assert_eq!(s.folded_paths, 0);
        assert_eq!(link(&s, "class:FileSystem", "group:Files"), Some(17));
        assert_eq!(link(&s, "group:Files", "namespace:"), Some(10));
        assert_eq!(link(&s, "group:Files", "namespace:web"), Some(7));
        assert_eq!(link(&s, "pod:web-1", "syscall:sys_read"), Some(7));
        assert_eq!(link(&s, "syscall:sys_openat", "err:ENOENT"), Some(7));
        assert_eq!(link(&s, "syscall:sys_openat", "err:OK"), Some(3));
        assert_eq!(link(&s, "syscall:sys_read", "err:OK"), Some(7));
        // Zero counts make no node.
        assert!(!s.nodes.iter().any(|n| n.name == "syscall:sys_close"));
        // Names are unique; empty values read (none); levels are in order, busiest first.
        let mut names: Vec<_> = s.nodes.iter().map(|n| &n.name).collect();
        names.dedup();
        assert_eq!(names.len(), s.nodes.len());
        let none = s.nodes.iter().find(|n| n.name == "pod:").unwrap();
        assert_eq!(
            (none.text.as_str(), none.depth, none.value),
            ("(none)", 3, 10)
        );
        assert!(
            s.nodes.windows(2).all(|w| w[0].depth < w[1].depth
                || (w[0].depth == w[1].depth && w[0].value >= w[1].value))
        );
        assert!(
            s.links
                .iter()
                .all(|l| s.nodes[l.target].depth == s.nodes[l.source].depth + 1)
        );
    }

    #[test]
    fn filters_keep_one_namespace_or_pid_namespace() {
        let rows = vec![
            row("sys_openat", "ENOENT", "", "", 7),
            row("sys_read", "OK", "web", "web-1", 5),
            Row {
                kns: 42,
                ..row("sys_write", "EPIPE", "web", "web-2", 4)
            },
        ];
        let q = Query::parse(Some("namespace=web")).unwrap();
        let s = sankey(&rows, &q, MAX_PATHS);
        assert_eq!(s.calls, 9);
        assert_eq!(link(&s, "pod:web-2", "container:c"), Some(4));
        assert!(!s.nodes.iter().any(|n| n.name == "syscall:sys_openat"));
        let q = Query::parse(Some("kns=42&ord=sc,e")).unwrap();
        let s = sankey(&rows, &q, MAX_PATHS);
        assert_eq!(s.calls, 4);
        assert_eq!(s.links.len(), 1);
        assert_eq!(link(&s, "syscall:sys_write", "err:EPIPE"), Some(4));
    }

    #[test]
    fn paths_over_the_cap_fold_into_other() {
        let names: Vec<&'static str> = (0..50)
            .map(|i| &*Box::leak(format!("sys_n{i:02}").into_boxed_str()))
            .collect();
        let rows: Vec<Row> = names
            .iter()
            .enumerate()
            .map(|(i, n)| row(n, "OK", "", "", 100 - i as u64))
            .collect();
        let q = Query::parse(Some("ord=sc,e")).unwrap();
        let s = sankey(&rows, &q, 10);
        assert_eq!(s.paths, 50);
        assert_eq!(s.folded_paths, 40);
        let want: u64 = (51..=90).sum();
        assert_eq!(s.folded_calls, want);
        assert_eq!(link(&s, "syscall#other", "err#other"), Some(want));
        assert_eq!(link(&s, "syscall:sys_n00", "err:OK"), Some(100));
        assert!(!s.nodes.iter().any(|n| n.name == "syscall:sys_n10"));
        // 10 syscalls + (other) on the left, OK + (other) on the right.
        assert_eq!(s.nodes.len(), 13);
        assert_eq!(s.links.len(), 11);
        let other = s.nodes.iter().find(|n| n.name == "syscall#other").unwrap();
        assert_eq!(other.text, "(other)");
        // The whole page stays small however many rows there are.
        let many: Vec<Row> = (0..5000)
            .map(|i| row("sys_read", "OK", "ns", &format!("pod-{i}"), 1 + i))
            .collect();
        let s = sankey(&many, &Query::default(), MAX_PATHS);
        assert_eq!(s.paths, 5000);
        assert!(s.links.len() <= 5 * (MAX_PATHS + 1));
        assert!(page(&many, &Query::default(), "").len() < 200_000);
    }

    #[test]
    fn labels_are_escaped_in_html_and_json() {
        assert_eq!(escape_html("plain"), "plain");
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let q = Query {
            namespace: Some("</script><b>\"\\\n\u{1}&\u{2028}".into()),
            ..Query::default()
        };
        let j = Sankey::default().to_json(&q);
        assert!(
            j.contains(r#""namespace":"\u003c/script\u003e\u003cb\u003e\"\\\n\u0001\u0026\u2028""#),
            "{j}"
        );
        let evil = "</script><script>alert(1)</script>{{data}}";
        let rows = vec![row("sys_openat", "ENOENT", evil, evil, 3)];
        let q = Query::parse(Some("ord=ns,p,sc")).unwrap();
        let html = page(&rows, &q, "");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("\\u003c/script\\u003e\\u003cscript\\u003ealert(1)"));
        // The one-pass template leaves a label's braces as text.
        assert_eq!(html.matches("id=\"swoll-data\"").count(), 1);
        assert!(html.contains("{{data}}"));
        let q = Query::parse(Some("namespace=%22%3E%3Cb%3E")).unwrap();
        let html = page(&rows, &q, "");
        assert!(html.contains("value=\"&quot;&gt;&lt;b&gt;\""), "{html}");
        assert!(!html.contains("\"><b>"));
    }

    #[test]
    fn tables_rank_syscalls_and_errors() {
        let rows = vec![
            row("sys_openat", "ENOENT", "", "", 7),
            row("sys_openat", "OK", "", "", 3),
            row("sys_read", "OK", "", "", 50),
            row("sys_write", "EPIPE", "", "", 1),
        ];
        let q = Query::default();
        let s = top_syscalls(&rows, &q, 2);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].syscall.as_str(), s[0].calls, s[0].errors),
            ("sys_read", 50, 0)
        );
        assert_eq!(
            (s[1].syscall.as_str(), s[1].calls, s[1].errors),
            ("sys_openat", 10, 7)
        );
        assert_eq!(s[1].time_ns, 10_000);
        let e = top_errors(&rows, &q, TOP);
        assert_eq!(
            e.iter()
                .map(|e| (e.err.as_str(), e.syscall.as_str(), e.calls, e.of))
                .collect::<Vec<_>>(),
            vec![
                ("ENOENT", "sys_openat", 7, 10),
                ("EPIPE", "sys_write", 1, 1)
            ]
        );
        let html = page(&rows, &q, "charts/");
        assert!(
            html.contains("<td>sys_openat</td><td>FileSystem / Files</td><td class=\"n\">10</td>")
        );
        assert!(html.contains("70.0 %"));
        // The page's scripts are relative to it (unless built without echarts).
        assert_eq!(
            html.contains("src=\"charts/echarts.min.js?v="),
            !ECHARTS.is_empty()
        );
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(duration(1_500), "1.5 µs");
        assert_eq!(duration(2_500_000_000), "2.50 s");
    }

    #[test]
    fn empty_rows_make_a_page_without_a_chart() {
        let html = page(&[], &Query::default(), "");
        assert!(html.contains("No system calls recorded"));
        assert!(!html.contains("<script src="));
        assert!(!html.contains("{{"), "every placeholder is filled");
    }

    #[test]
    fn echarts_is_the_version_setup_fetches() {
        let setup = include_str!("../../scripts/setup.sh");
        assert!(
            setup.contains(&format!("\necharts_version={ECHARTS_VERSION}\n")),
            "scripts/setup.sh and build.rs disagree on the echarts version"
        );
        assert!(
            ECHARTS.is_empty()
                || ECHARTS
                    .windows(ECHARTS_VERSION.len() + 10)
                    .any(|w| w == format!("version=\"{ECHARTS_VERSION}\"").as_bytes())
        );
    }
}
