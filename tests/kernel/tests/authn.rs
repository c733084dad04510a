//! Who may read the endpoints: `swoll serve --auth` as the chart runs it with `auth.enabled`,
//! against the fake API server answering TokenReviews and SubjectAccessReviews; and the trace
//! streams' token file.
use std::{io::Read as _, io::Write as _, net::SocketAddr, path::Path, time::Duration};

use swoll_kernel_tests::{
    Agent, TempDir,
    apiserver::{FakeApiServer, Outage},
    is_root, sample, skip,
};

const READER: &str = "system:serviceaccount:monitoring:prometheus";
const STRANGER: &str = "system:serviceaccount:default:stranger";

/// `GET path` with `Authorization: Bearer <token>` when given: (status code, body).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")
        .expect("sending the request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("reading the answer");
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {raw:.80}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The reviews the fake API server has answered or refused so far: (TokenReviews,
/// SubjectAccessReviews).
fn reviews(api: &FakeApiServer) -> (usize, usize) {
    (
        api.reviews("tokenreviews"),
        api.reviews("subjectaccessreviews"),
    )
}

/// issue #14: with `auth.enabled` every route but the probes needs a token the API server
/// authenticates and a grant of the path; answers are cached; an API server that cannot answer
/// makes a 503 and a counted error, never an allow. Today's main serves `/metrics` to anyone.
#[test]
fn metrics_need_a_reviewed_token_and_a_grant() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let rendered = match swoll_kernel_tests::manifest::rendered_with(&["auth.enabled=true"]) {
        Ok(d) => d,
        Err(why) => {
            skip(&why);
            return;
        }
    };
    assert!(rendered.args.iter().any(|a| a == "--auth"), "{rendered:?}");
    let api = FakeApiServer::start();
    api.add_token("reader-token", READER, &["system:serviceaccounts"]);
    api.add_token("stranger-token", STRANGER, &["system:serviceaccounts"]);
    api.grant(READER, "/metrics", "get");
    let dir = TempDir::new("swoll-authn");
    let kubeconfig = api.kubeconfig(&dir.0);
    let Some(agent) = Agent::start_as(
        &rendered,
        &["--interval", "200ms", "--auth"],
        &[("KUBECONFIG", kubeconfig.as_path())],
    ) else {
        return;
    };
    let addr = agent.addr;

    // The kubelet's probes carry no token.
    assert_eq!(get(addr, "/healthz", None), (200, "ok\n".to_owned()));
    assert_eq!(get(addr, "/readyz", None).0, 200);

    let (code, body) = get(addr, "/metrics", None);
    assert_eq!(
        (code, body.as_str()),
        (401, "Unauthorized: send a valid bearer token\n")
    );
    assert_eq!(reviews(&api), (0, 0), "no token, nothing to review");

    let (code, _) = get(addr, "/metrics", Some("forged-token"));
    assert_eq!(code, 401);
    assert_eq!(reviews(&api), (1, 0), "an unknown token is not authorized");

    let (code, body) = get(addr, "/metrics", Some("stranger-token"));
    assert_eq!(
        (code, body.as_str()),
        (
            403,
            "Forbidden (user=system:serviceaccount:default:stranger, verb=get, path=/metrics): \
             no grant of get /metrics to system:serviceaccount:default:stranger\n"
        )
    );
    assert_eq!(reviews(&api), (2, 1));

    let (code, body) = get(addr, "/metrics", Some("reader-token"));
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("# TYPE swoll_node_metrics_syscall_count counter"),
        "{body}"
    );
    assert_eq!(reviews(&api), (3, 2));
    // The grant is of /metrics only.
    let (code, _) = get(addr, "/metrics/charts", Some("reader-token"));
    assert_eq!(code, 403);
    assert_eq!(
        reviews(&api),
        (3, 3),
        "the token's review is cached, the path is new"
    );

    // Within the caches' lifetimes nothing is reviewed again: allowed, denied, unknown alike.
    for _ in 0..2 {
        assert_eq!(get(addr, "/metrics", Some("stranger-token")).0, 403);
        assert_eq!(get(addr, "/metrics", Some("forged-token")).0, 401);
    }
    assert_eq!(get(addr, "/metrics", Some("reader-token")).0, 200);
    assert_eq!(reviews(&api), (3, 3), "answered from the caches");

    // The API server cannot answer: a token it has not reviewed yet gets a 503, never an
    // allow; cached answers still serve.
    api.add_token("late-token", READER, &[]);
    api.set_outage(Some(Outage::Unavailable));
    let (code, body) = get(addr, "/metrics", Some("late-token"));
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with(
            "cannot authorize the request now: sending a TokenReview to the API server"
        ),
        "{body}"
    );
    let (code, body) = get(addr, "/metrics", Some("reader-token"));
    assert_eq!(code, 200, "{body}");
    let counted =
        |series: &str| sample(&body, series).unwrap_or_else(|| panic!("{series} in\n{body}"));
    assert_eq!(
        counted("swoll_http_auth_reviews_total{result=\"error\",review=\"tokenreview\"}"),
        1
    );
    assert_eq!(
        counted("swoll_http_auth_reviews_total{result=\"answered\",review=\"tokenreview\"}"),
        3
    );
    assert_eq!(
        counted(
            "swoll_http_auth_reviews_total{result=\"answered\",review=\"subjectaccessreview\"}"
        ),
        3
    );
    let decision = |d: &str| {
        counted(&format!(
            "swoll_http_auth_decisions_total{{decision=\"{d}\",listener=\"metrics\"}}"
        ))
    };
    assert_eq!(decision("error"), 1);
    assert_eq!(decision("unauthenticated"), 4);
    assert_eq!(decision("forbidden"), 4);
    // This scrape is counted once it is allowed, before its body is made.
    assert_eq!(decision("allowed"), 3);
    assert_eq!(
        counted("swoll_http_auth_cache_hits_total{review=\"tokenreview\"}"),
        7
    );
    api.set_outage(None);
    assert_eq!(get(addr, "/metrics", Some("late-token")).0, 200);
}

/// The trace streams' token comes from a file (a mounted Secret), never from argv or the
/// environment: `--traces-token` is refused with a message naming its replacement.
#[test]
fn trace_streams_take_their_token_from_a_file() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let Some(out) = Agent::run_to_exit(&["--traces-token", "in-argv"]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--traces-token-file"), "{stderr}");
    assert!(
        !stderr.contains("in-argv"),
        "the token is not repeated: {stderr}"
    );

    let api = FakeApiServer::start();
    let dir = TempDir::new("swoll-traces-token");
    let kubeconfig = api.kubeconfig(&dir.0);
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, "file-token\n").expect("writing the token file");
    let traces: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let traces_listen = traces.to_string();
    let Some(_agent) = Agent::start_with_env(
        &[
            "--interval",
            "200ms",
            "--node-name",
            "node-a",
            "--traces-listen",
            &traces_listen,
        ],
        &[
            ("KUBECONFIG", kubeconfig.as_path()),
            ("SWOLL_TRACES_TOKEN_FILE", Path::new(&token_file)),
        ],
    ) else {
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(traces).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no trace listener on {traces}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(traces, "/traces/none", None).0, 401);
    assert_eq!(get(traces, "/traces/none", Some("wrong")).0, 401);
    assert_eq!(
        get(traces, "/traces/none", Some("file-token")),
        (404, "no such trace is running\n".to_owned())
    );
}
