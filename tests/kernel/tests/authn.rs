//! Who may read the endpoints: `swoll serve --auth` as the chart runs it with `auth.enabled`,
//! against the fake API server answering TokenReviews and SubjectAccessReviews; and the trace
//! streams' token file.
use std::{io::Read as _, io::Write as _, net::SocketAddr, path::Path, time::Duration};

use swoll_kernel_tests::{
    Agent, TempDir,
    apiserver::{API_AUDIENCE, FakeApiServer, Outage},
    is_root, sample, skip, swoll_bin, workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_swoll-workload");

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

    // `swoll seccomp` sends the token of its --token-file; a profile needs a grant of its path.
    api.grant(READER, "/seccomp/*", "get");
    let ns = workload(WORKLOAD, &["--new-pidns", "getppid", "3"]);
    let token = dir.0.join("token");
    std::fs::write(&token, "reader-token\n").expect("the token file");
    let agent_url = format!("http://{addr}");
    let (ok, out) = seccomp(&[&agent_url, "--kns", &ns.to_string()]);
    assert!(!ok && out.contains("the agent answered 401"), "{out}");
    let token = token.to_str().expect("a UTF-8 path");
    let out = retry_seccomp(&[&agent_url, "--kns", &ns.to_string(), "--token-file", token]);
    assert!(out.contains("\"getppid\""), "{out}");
}

#[test]
fn with_auth_audiences_only_tokens_minted_for_them_pass() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let rendered = match swoll_kernel_tests::manifest::rendered_with(&[
        "auth.enabled=true",
        "auth.audiences=swoll",
    ]) {
        Ok(d) => d,
        Err(why) => {
            skip(&why);
            return;
        }
    };
    assert!(
        rendered.args.iter().any(|a| a == "--auth-audience=swoll"),
        "{rendered:?}"
    );
    let api = FakeApiServer::start();
    api.add_token_for("swoll-token", READER, &[], &["swoll"]);
    api.add_token_for("both-token", READER, &[], &[API_AUDIENCE, "swoll"]);
    api.add_token("api-token", READER, &[]);
    api.grant(READER, "/metrics", "get");
    let dir = TempDir::new("swoll-audiences");
    let kubeconfig = api.kubeconfig(&dir.0);
    // The flags the rendered manifest passes, checked above.
    let Some(agent) = Agent::start_as(
        &rendered,
        &["--interval", "200ms", "--auth", "--auth-audience=swoll"],
        &[("KUBECONFIG", kubeconfig.as_path())],
    ) else {
        return;
    };
    let addr = agent.addr;
    // A service account's default token is the API server's: refused.
    assert_eq!(get(addr, "/metrics", Some("api-token")).0, 401);
    assert_eq!(get(addr, "/metrics", Some("swoll-token")).0, 200);
    assert_eq!(get(addr, "/metrics", Some("both-token")).0, 200);
    assert_eq!(reviews(&api).0, 3, "one TokenReview per token");
}

/// `swoll seccomp --agent <args…>`: whether it succeeded, and its stdout then its stderr.
fn seccomp(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(swoll_bin())
        .args(["seccomp", "--agent"])
        .args(args)
        .output()
        .expect("running swoll seccomp");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// [`seccomp`] until it succeeds (the agent knows a namespace from its next map read), for up
/// to 10 s; its output.
fn retry_seccomp(args: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = seccomp(args);
        if ok {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "swoll seccomp {args:?}: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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

/// Runs `openssl` with `args` in `dir`, panicking with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (the Debian package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (`ca.crt`) and, for each name, a P-256 key `<name>.key` and a certificate
/// `<name>.crt` it signed, for 127.0.0.1, with `CN=<name>`.
fn certificates(dir: &Path, names: &[&str]) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=swoll test CA",
        "-days",
        "1",
    ]);
    openssl(dir, &ca);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san.ext");
    for name in names {
        let (key, csr, crt, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("/CN={name}"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "1",
                "-extfile",
                "san.ext",
            ],
        );
    }
}

/// Puts `<name>.crt` and `<name>.key` of `certs` into `secret` as the kubelet updates a Secret
/// volume: a new timestamped directory, then `..data` swapped to it by a rename of a symlink;
/// `tls.crt` and `tls.key` are symlinks through `..data`.
fn publish(secret: &Path, certs: &Path, name: &str) {
    let version = format!("..{name}");
    std::fs::create_dir_all(secret.join(&version)).expect("the version directory");
    for (from, to) in [("crt", "tls.crt"), ("key", "tls.key")] {
        std::fs::copy(
            certs.join(format!("{name}.{from}")),
            secret.join(&version).join(to),
        )
        .expect("copying the certificate");
        let link = secret.join(to);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(to), link).expect("symlink");
        }
    }
    let tmp = secret.join("..data_tmp");
    std::os::unix::fs::symlink(&version, &tmp).expect("symlink ..data_tmp");
    std::fs::rename(&tmp, secret.join("..data")).expect("swapping ..data");
}

/// `curl -v` of `https://<addr><path>`, verifying against `ca`: (status code, body, the
/// served certificate's subject as curl prints it).
fn curl(addr: SocketAddr, path: &str, ca: &Path) -> Option<(u16, String, String)> {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-v",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(ca)
        .arg(format!("https://{addr}{path}"))
        .output()
        .expect("running curl");
    if !out.status.success() {
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, code) = stdout.rsplit_once('\n')?;
    let subject = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| {
            l.trim_start_matches(['*', ' '])
                .strip_prefix("subject: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    Some((code.parse().ok()?, body.to_owned(), subject))
}

/// issue #14: with a certificate from a Secret volume the agent serves TLS a verifying client
/// accepts, and when the Secret changes (the kubelet's symlink swap) new connections get the new
/// certificate without a restart. Run as the DaemonSet runs the agent, with the Secret volume as
/// a directory shared with the agent (the harness reproduces only hostPath volumes).
#[test]
fn tls_serves_the_mounted_certificate_and_its_renewal() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    if let Err(why) = swoll_kernel_tests::deployed::available() {
        skip(&why);
        return;
    }
    let dir = TempDir::new("swoll-tls");
    let certs = dir.0.join("certs");
    let secret = dir.0.join("secret");
    std::fs::create_dir_all(&certs).expect("certs dir");
    std::fs::create_dir_all(&secret).expect("secret dir");
    certificates(&certs, &["first", "second"]);
    publish(&secret, &certs, "first");
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (cert, key) = (secret.join("tls.crt"), secret.join("tls.key"));
    let args: Vec<std::ffi::OsString> = vec![
        "serve".into(),
        "--listen".into(),
        addr.to_string().into(),
        "--traces-listen".into(),
        "127.0.0.1:0".into(),
        "--no-pin".into(),
        "--interval".into(),
        "200ms".into(),
        "--tls-cert-file".into(),
        cert.into(),
        "--tls-key-file".into(),
        key.into(),
        "--tls-reload-interval".into(),
        "200ms".into(),
    ];
    let bin = swoll_kernel_tests::swoll_bin();
    if !bin.exists() && skip(&format!("{} is not built", bin.display())) {
        return;
    }
    let d = swoll_kernel_tests::manifest::daemonset();
    let mut run = swoll_kernel_tests::deployed::Run {
        shared: vec![secret.clone()],
        ..Default::default()
    };
    if let Some(proc_root) = d.arg("proc-root") {
        run.env.push(("SWOLL_PROC_ROOT".into(), proc_root.into()));
    }
    let root = TempDir::new("swoll-pod");
    let mut agent = Running(
        swoll_kernel_tests::deployed::command(d, &bin, &args, &root.0, &run)
            .spawn()
            .expect("spawning swoll serve"),
    );
    let ca = certs.join("ca.crt");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ready = loop {
        if let Some(answer) = curl(addr, "/readyz", &ca).filter(|(code, ..)| *code == 200) {
            break answer;
        }
        assert!(
            agent.0.try_wait().expect("waiting").is_none(),
            "swoll serve exited"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "not ready over TLS in 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(ready, (200, "ready\n".to_owned(), "CN=first".to_owned()));
    // Plain HTTP to the TLS port is no request.
    assert!(!swoll_kernel_tests::http_get(addr, "/healthz").is_ok_and(|(code, _)| code == 200));

    publish(&secret, &certs, "second");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body, subject) = curl(addr, "/metrics", &ca).expect("a verified /metrics");
        assert_eq!(code, 200);
        if subject == "CN=second" {
            assert_eq!(
                sample(
                    &body,
                    "swoll_tls_certificate_reloads_total{result=\"served\"}"
                ),
                Some(1),
                "{body}"
            );
            assert_eq!(
                sample(
                    &body,
                    "swoll_http_tls_handshakes_failed_total{listener=\"metrics\"}"
                ),
                Some(1),
                "the plain HTTP request: {body}"
            );
            break;
        }
        assert_eq!(subject, "CN=first");
        assert!(
            std::time::Instant::now() < deadline,
            "still CN=first 10 s after the swap"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // `swoll seccomp` over TLS: verified against the CA it is given, refused without it (the
    // system's roots do not hold the test CA).
    let ns = workload(WORKLOAD, &["--new-pidns", "getppid", "3"]);
    let agent_url = format!("https://{addr}");
    let ca = ca.to_str().expect("a UTF-8 path");
    let out = retry_seccomp(&[&agent_url, "--kns", &ns.to_string(), "--ca-file", ca]);
    assert!(out.contains("\"getppid\""), "{out}");
    let (ok, out) = seccomp(&[&agent_url, "--kns", &ns.to_string()]);
    assert!(!ok && out.contains("UnknownIssuer"), "{out}");
}

/// A deployed run's `unshare`, killed (and with it the agent, its pid 1) and reaped when
/// dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(agent) = swoll_kernel_tests::deployed::child_of(self.0.id())
            && let Ok(agent) = i32::try_from(agent)
        {
            // SAFETY: signals the agent this test started.
            unsafe { libc::kill(agent, libc::SIGKILL) };
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With `--auth` the trace streams are behind the same reviews as `/metrics`, on their own path:
/// a grant of `/metrics` does not open them, one of `/traces/*` does.
#[test]
fn trace_streams_need_a_grant_of_their_path() {
    let _serial = swoll_kernel_tests::exclusive();
    if !is_root() && skip("needs root") {
        return;
    }
    let api = FakeApiServer::start();
    api.add_token("reader-token", READER, &[]);
    api.add_token("tracer-token", "tracer", &["sre"]);
    api.grant(READER, "/metrics", "get");
    api.grant("sre", "/traces/*", "get");
    let dir = TempDir::new("swoll-authn-traces");
    let kubeconfig = api.kubeconfig(&dir.0);
    let traces: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let traces_listen = traces.to_string();
    let Some(agent) = Agent::start_with_env(
        &[
            "--interval",
            "200ms",
            "--node-name",
            "node-a",
            "--auth",
            "--traces-listen",
            &traces_listen,
        ],
        &[("KUBECONFIG", kubeconfig.as_path())],
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
    assert_eq!(get(traces, "/traces/none", Some("reader-token")).0, 403);
    assert_eq!(
        get(traces, "/traces/none", Some("tracer-token")),
        (404, "no such trace is running\n".to_owned())
    );
    assert_eq!(get(agent.addr, "/metrics", Some("tracer-token")).0, 403);
    let (code, body) = get(agent.addr, "/metrics", Some("reader-token"));
    assert_eq!(code, 200);
    let decision = |listener: &str, d: &str| {
        sample(
            &body,
            &format!("swoll_http_auth_decisions_total{{decision=\"{d}\",listener=\"{listener}\"}}"),
        )
    };
    assert_eq!(decision("traces", "unauthenticated"), Some(1));
    assert_eq!(decision("traces", "forbidden"), Some(1));
    assert_eq!(decision("traces", "allowed"), Some(1));
    assert_eq!(decision("metrics", "forbidden"), Some(1));
}
