//! The HTTP endpoints on loopback, no kernel needed: readiness, the exposition, and the bounds
//! every route has.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use swoll::{
    conn::{HttpMetrics, InFlight, Limits, serve},
    exposition::Exposition,
    http::{IN_FLIGHT_WAIT, MAX_BODY, MAX_CONCURRENT, router},
    maps::Snapshot,
    metrics::{Label, Renderer, RowSource, SelfMetrics},
    resolver::Workload,
};

fn request(addr: SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(raw.as_bytes()).expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn endpoints_answer_and_bound_requests() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let exposition = Arc::new(Exposition::new(SelfMetrics::new().expect("self-metrics")));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = HttpMetrics::new(&exposition.self_metrics).expect("HTTP metrics");
    let app = router(
        Arc::clone(&exposition),
        InFlight::new(MAX_CONCURRENT, IN_FLIGHT_WAIT, "metrics", &metrics),
    );
    let limits = Limits {
        max_connections: 8,
        stall_timeout: Duration::from_secs(5),
    };
    let _server = std::thread::spawn(move || {
        runtime.block_on(serve(
            listener,
            app,
            limits,
            "metrics",
            &metrics,
            std::future::pending(),
        ))
    });

    let get = |path: &str| {
        request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    assert!(
        get("/readyz").starts_with("HTTP/1.1 503"),
        "not ready before the first read"
    );
    let rendered =
        Renderer::new(&Label::ALL, 0).render(&Snapshot::default(), |_| Workload::default());
    exposition.publish(rendered.table, RowSource::default());
    assert!(get("/readyz").starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
    assert!(metrics.contains("# TYPE swoll_node_metrics_syscall_count counter"));
    assert!(metrics.contains("swoll_build_info{"));
    assert!(get("/nope").starts_with("HTTP/1.1 404"));

    let big = "x".repeat(MAX_BODY + 1);
    let post = request(
        addr,
        &format!(
            "POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        ),
    );
    assert!(post.starts_with("HTTP/1.1 413"), "{post}");
}

/// The in-flight permit is the body's, not the handler's: while a response body is still open
/// a second request is refused, and once its client goes the permit is back.
#[test]
fn the_in_flight_permit_lives_as_long_as_the_body() {
    use axum::{Router, body::Body, routing::get};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let exposition = Exposition::new(SelfMetrics::new().expect("self-metrics"));
    let metrics = HttpMetrics::new(&exposition.self_metrics).expect("HTTP metrics");
    // One chunk, then a body that never ends: the handler has long returned.
    let app = Router::new()
        .route(
            "/open",
            get(|| async {
                let first = futures::stream::iter([Ok::<_, std::convert::Infallible>(
                    axum::body::Bytes::from_static(b"first\n"),
                )]);
                Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()))
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            InFlight::new(1, Duration::ZERO, "metrics", &metrics),
            swoll::conn::in_flight,
        ));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let limits = Limits {
        max_connections: 8,
        stall_timeout: Duration::from_secs(5),
    };
    let _server = std::thread::spawn(move || {
        runtime.block_on(serve(
            listener,
            app,
            limits,
            "metrics",
            &metrics,
            std::future::pending(),
        ))
    });
    let raw = "GET /open HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut holder = TcpStream::connect(addr).expect("connect");
    holder.write_all(raw.as_bytes()).expect("write");
    let mut head = [0u8; 256];
    let n = holder.read(&mut head).expect("the first answer's head");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    let refused = request(
        addr,
        "GET /open HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop(holder);
    // The server sees the close when it next reads or writes; 2 s is ample on loopback.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let mut again = TcpStream::connect(addr).expect("connect");
        again.write_all(raw.as_bytes()).expect("write");
        let n = again.read(&mut head).expect("an answer's head");
        if head[..n].starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the permit was not given back: {}",
            String::from_utf8_lossy(&head[..n])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
