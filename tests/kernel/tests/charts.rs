//! The charts page end to end: the real `swoll serve`, a workload in its own pid namespace, and
//! `/metrics/charts` over HTTP (the inlined Sankey carries the workload's nodes and exact
//! counts), then in headless Chromium (Debian's, driven by playwright-core from
//! `tests/kernel/charts/`): no console errors, nothing fetched from elsewhere, the drawn Sankey
//! has the workload's nodes, and a screenshot is saved under the target directory.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use swoll_kernel_tests::{Agent, http_get, is_root, skip, spawn_workload};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");
const CHROMIUM: &str = "/usr/bin/chromium";
/// The workload's calls: `sys_openat` failing with `ENOENT` 7 times, `sys_getppid` 9 times.
/// It holds its pid namespace for up to a minute; the tests kill it when done.
const WORKLOAD_ARGS: [&str; 7] = [
    "--new-pidns",
    "--hold",
    "60000",
    "openat-missing",
    "7",
    "getppid",
    "9",
];

/// A workload that stays alive (its pid namespace too, so the agent keeps its rows) until
/// dropped, when its process in the new namespace is killed and the outer one reaped.
struct Held {
    child: Child,
    ns: u32,
}

impl Held {
    fn start() -> Held {
        let (child, ns) = spawn_workload(WORKLOAD, &WORKLOAD_ARGS);
        Held { child, ns }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The first process of the new namespace is the outer process's only child.
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for inner in children.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", inner]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `path` as JSON, asserting 200.
fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = http_get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The value of the link `source` → `target` in a Sankey's JSON (names as the page uses them).
fn link(data: &serde_json::Value, source: &str, target: &str) -> Option<u64> {
    data["links"]
        .as_array()?
        .iter()
        .find(|l| l["source"] == source && l["target"] == target)?["value"]
        .as_u64()
}

fn node_names(data: &serde_json::Value) -> Vec<String> {
    data["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the Sankey of pid namespace `ns` until it has the workload's exact counts.
fn wait_for_workload(addr: std::net::SocketAddr, ns: u32) -> serde_json::Value {
    let path = format!("/metrics/charts/data.json?kns={ns}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let data = get_json(addr, &path);
        if link(&data, "syscall:sys_openat", "err:ENOENT") == Some(7)
            && link(&data, "syscall:sys_getppid", "err:OK") == Some(9)
        {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "the workload's calls never showed in {path}: {data}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The JSON the page inlines for its chart.
fn inline_data(html: &str) -> serde_json::Value {
    let start = "<script type=\"application/json\" id=\"swoll-data\">";
    let json = html
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(json, _)| json)
        .unwrap_or_else(|| panic!("no inline data in the page:\n{html}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("inline data: {e}: {json}"))
}

#[test]
fn charts_page_inlines_the_workloads_sankey() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(agent) = Agent::start(&["--interval", "500ms"]) else {
        return;
    };
    let held = Held::start();
    let ns = held.ns;
    let data = wait_for_workload(agent.addr, ns);
    assert_eq!(
        data["order"],
        serde_json::json!(["class", "group", "namespace", "pod", "syscall", "err"])
    );
    // A path adds its calls to every link on it: openat's 7 flow from its class down.
    assert!(
        link(&data, "class:FileSystem", "group:Files").is_some_and(|v| v >= 7),
        "{data}"
    );
    assert!(
        link(&data, "pod:", "syscall:sys_openat") == Some(7),
        "a process outside Kubernetes has an empty pod: {data}"
    );

    // The page itself, at both of its paths: the host's calls and the workload's, inlined.
    for path in ["/metrics/charts", "/metrics/charts/"] {
        let (code, html) = http_get(agent.addr, path).expect("GET the page");
        assert_eq!(code, 200, "{path}: {html}");
        let names = node_names(&inline_data(&html));
        for want in [
            "class:FileSystem",
            "syscall:sys_openat",
            "err:ENOENT",
            "err:OK",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{path}: no {want} in {names:?}"
            );
        }
        assert!(html.contains("<table id=\"top-syscalls\">"), "{html}");
        assert!(html.contains("<table id=\"top-errors\">"), "{html}");
        let script = if path.ends_with('/') {
            "src=\"echarts.min.js?v="
        } else {
            "src=\"charts/echarts.min.js?v="
        };
        assert!(
            html.contains(script),
            "{path} loads echarts by {script}: {html}"
        );
    }

    // Filters and orders, as swoll's page had them.
    let (code, html) = http_get(agent.addr, &format!("/metrics/charts?kns={ns}&ord=sc,e"))
        .expect("GET with a filter");
    assert_eq!(code, 200, "{html}");
    let data = inline_data(&html);
    assert_eq!(data["order"], serde_json::json!(["syscall", "err"]));
    assert_eq!(link(&data, "syscall:sys_openat", "err:ENOENT"), Some(7));
    assert!(html.contains("<td>ENOENT</td><td>sys_openat</td><td class=\"n\">7</td>"));
    let data = get_json(
        agent.addr,
        "/metrics/charts/data.json?namespace=no-such-namespace",
    );
    assert_eq!(
        data["order"],
        serde_json::json!(["class", "group", "pod", "container", "syscall", "err"])
    );
    assert_eq!(data["links"], serde_json::json!([]));
    for (query, says) in [
        ("ord=class,bogus", "unknown ord token \"bogus\""),
        ("ord=pod,p", "twice"),
        ("kns=nope", "not a pid namespace"),
        ("color=red", "unknown query parameter"),
    ] {
        let (code, body) =
            http_get(agent.addr, &format!("/metrics/charts?{query}")).expect("GET a bad query");
        assert_eq!(code, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }

    // echarts comes from the agent itself.
    let (code, js) =
        http_get(agent.addr, "/metrics/charts/echarts.min.js").expect("GET echarts.min.js");
    assert_eq!(code, 200);
    assert!(
        js.contains(&format!("version=\"{}\"", swoll::charts::ECHARTS_VERSION)),
        "not echarts {}",
        swoll::charts::ECHARTS_VERSION
    );
    drop(held);
    assert!(agent.stop().success());
}

/// True inside the virtme-ng guests of `scripts/multikernel.sh`: 1 CPU under TCG, the host's
/// filesystem read-only. The browser check needs no particular kernel and runs on the host.
fn in_multikernel_guest() -> bool {
    std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.contains("virtme_"))
}

/// Where the browser check lives, with its `node_modules` (scripts/setup.sh --test installs it).
fn checker() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts")
}

/// Runs `node check.mjs` on `pages` (url, screenshot) and returns its reports.
fn run_browser(pages: &[(String, PathBuf)]) -> Vec<serde_json::Value> {
    let mut cmd = Command::new("node");
    cmd.current_dir(checker()).arg("check.mjs").arg(CHROMIUM);
    for (url, shot) in pages {
        cmd.arg(url).arg(shot);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning node");
    let deadline = Instant::now() + Duration::from_secs(240);
    while child.try_wait().expect("waiting for node").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the browser check took more than 240 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("node's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node check.mjs failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("check.mjs report: {e}: {stdout}"))
}

#[test]
fn charts_page_draws_the_sankey_in_headless_chromium() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    if in_multikernel_guest() {
        eprintln!("charts browser check: runs on the host only (no kernel dependence)");
        return;
    }
    if !Path::new(CHROMIUM).exists()
        && skip("Debian's chromium is not installed (scripts/setup.sh --test installs it)")
    {
        return;
    }
    if !checker().join("node_modules/playwright-core").exists()
        && skip(
            "playwright-core is not in tests/kernel/charts (scripts/setup.sh --test runs npm ci)",
        )
    {
        return;
    }
    if Command::new("node").arg("--version").output().is_err()
        && skip("node is not installed (scripts/setup.sh --test installs npm)")
    {
        return;
    }
    let Some(agent) = Agent::start(&["--interval", "500ms"]) else {
        return;
    };
    let held = Held::start();
    let ns = held.ns;
    wait_for_workload(agent.addr, ns);

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("charts");
    std::fs::create_dir_all(&dir).expect("creating the screenshot directory");
    let workload_shot = dir.join("sankey-workload.png");
    let node_shot = dir.join("sankey-node.png");
    let base = format!("http://{}", agent.addr);
    // The workload's own pid namespace, then the whole node (where the workload's calls are
    // among the host's: only nodes every Linux host has are sure to be drawn there).
    let pages = [
        (format!("{base}/metrics/charts?kns={ns}"), workload_shot),
        (format!("{base}/metrics/charts/"), node_shot),
    ];
    let wants: [&[&str]; 2] = [
        &[
            "syscall:sys_openat",
            "err:ENOENT",
            "syscall:sys_getppid",
            "err:OK",
        ],
        &["class:FileSystem", "syscall:sys_openat", "err:ENOENT"],
    ];
    let reports = run_browser(&pages);
    assert_eq!(reports.len(), pages.len(), "{reports:?}");
    for ((report, (url, shot)), want) in reports.iter().zip(&pages).zip(wants) {
        let brief = |key: &str| report[key].clone();
        assert_eq!(brief("status"), 200, "{url}: {report}");
        for key in [
            "consoleErrors",
            "pageErrors",
            "failedRequests",
            "foreignRequests",
            "httpErrors",
        ] {
            assert_eq!(brief(key), serde_json::json!([]), "{url}: {key}: {report}");
        }
        assert_eq!(
            brief("finished"),
            serde_json::json!(true),
            "echarts never finished: {report}"
        );
        assert_eq!(brief("seriesType"), "sankey", "{report}");
        assert_eq!(
            brief("echartsVersion"),
            swoll::charts::ECHARTS_VERSION,
            "{report}"
        );
        let nodes: Vec<&str> = report["nodes"]
            .as_array()
            .map(|n| n.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        for want in want {
            assert!(nodes.contains(want), "{url}: no {want} drawn: {nodes:?}");
        }
        assert_eq!(
            report["laidOut"].as_u64(),
            Some(nodes.len() as u64),
            "every node is laid out: {report}"
        );
        let png = std::fs::read(shot).expect("reading the screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{} is not a screenshot",
            shot.display()
        );
        eprintln!("screenshot: {}", shot.display());
    }
    // The workload's own page: its exact counts are what the browser drew.
    let links = reports[0]["links"].as_array().cloned().unwrap_or_default();
    assert!(
        links.contains(&serde_json::json!(["syscall:sys_openat", "err:ENOENT", 7])),
        "{links:?}"
    );
    assert!(
        links.contains(&serde_json::json!(["syscall:sys_getppid", "err:OK", 9])),
        "{links:?}"
    );
    drop(held);
    assert!(agent.stop().success());
}
