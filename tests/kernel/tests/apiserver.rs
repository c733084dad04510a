//! The fake API server (`swoll_kernel_tests::apiserver`) against the real kube-rs client:
//! reflectors on pods (by node) and configmaps (by name) list, watch, survive an outage,
//! relist after a 410, and page. No root, no BPF.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{
    Api, Client, Config, ResourceExt,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use swoll_kernel_tests::apiserver::{
    FakeApiServer, Outage, configmap, pod, with_ephemeral_containers, with_init_containers,
};

const NODE: &str = "node-a";

fn cid(n: u8) -> String {
    format!("containerd://{}", format!("{n:02x}").repeat(32))
}

fn client_for(api: &FakeApiServer) -> Client {
    let config = Config::new(api.url().parse().expect("server url"));
    Client::try_from(config).expect("kube client")
}

/// Runs a reflector on `api` in the background: its store, and a count of watcher errors.
fn run_reflector<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, Arc<AtomicUsize>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let errors = Arc::new(AtomicUsize::new(0));
    let errs = errors.clone();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        stream
            .for_each(|ev| {
                if let Err(e) = ev {
                    eprintln!("watcher error (expected around outages): {e}");
                    errs.fetch_add(1, Ordering::SeqCst);
                }
                futures::future::ready(())
            })
            .await;
    });
    (reader, errors)
}

/// Polls `cond` every 50 ms until it holds, or panics after `secs` seconds.
async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(store: &Store<Pod>) -> Vec<String> {
    let mut names: Vec<String> = store.state().iter().map(|p| p.name_any()).collect();
    names.sort();
    names
}

fn node_pod(name: &str, node: &str, n: u8) -> serde_json::Value {
    pod(
        "default",
        name,
        &format!("uid-{name}"),
        node,
        &[("app", &cid(n))],
        &[("app", name)],
        "Running",
    )
}

#[tokio::test(flavor = "current_thread")]
async fn reflector_follows_pods_of_its_node_through_an_outage() {
    let api = FakeApiServer::start();
    api.apply(node_pod("a1", NODE, 1));
    api.apply(node_pod("a2", NODE, 2));
    api.apply(node_pod("b1", "node-b", 3));

    let pods: Api<Pod> = Api::all(client_for(&api));
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={NODE}"));
    let (store, errors) = run_reflector(pods, wc);
    tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready())
        .await
        .expect("store ready in time")
        .expect("writer alive");
    assert_eq!(names(&store), ["a1", "a2"], "initial list");
    let a1 = store
        .state()
        .into_iter()
        .find(|p| p.name_any() == "a1")
        .unwrap();
    let statuses = a1
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap();
    assert_eq!(statuses[0].container_id.as_deref(), Some(cid(1).as_str()));
    assert_eq!(a1.uid().as_deref(), Some("uid-a1"));

    wait_for("the watch", 10, || api.open_watches() == 1).await;
    api.apply(node_pod("a3", NODE, 4));
    api.apply(node_pod("b2", "node-b", 5));
    wait_for("a3 added", 10, || names(&store) == ["a1", "a2", "a3"]).await;

    api.delete("Pod", "default", "a1").expect("a1 existed");
    wait_for("a1 deleted", 10, || names(&store) == ["a2", "a3"]).await;

    // The API server goes away; changes happen meanwhile; it comes back.
    api.set_down(true);
    let down_at = Instant::now();
    wait_for("the watch cut", 5, || api.open_watches() == 0).await;
    api.apply(node_pod("a4", NODE, 6));
    api.delete("Pod", "default", "a2").expect("a2 existed");
    let mut relabelled = node_pod("a3", NODE, 4);
    relabelled["metadata"]["labels"]["tier"] = "backend".into();
    api.apply(relabelled);
    api.apply(node_pod("b3", "node-b", 7));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        names(&store),
        ["a2", "a3"],
        "the store keeps its last view while down"
    );
    api.set_down(false);
    wait_for("changes made while down", 15, || {
        let a3_relabelled = store.state().iter().any(|p| {
            p.name_any() == "a3" && p.labels().get("tier").map(String::as_str) == Some("backend")
        });
        names(&store) == ["a3", "a4"] && a3_relabelled
    })
    .await;
    eprintln!("caught up {:?} after the outage began", down_at.elapsed());
    assert!(errors.load(Ordering::SeqCst) >= 1, "the outage was seen");
    wait_for("the watch back", 10, || api.open_watches() == 1).await;

    // Still following after the outage; node-b's pods never came in.
    api.apply(node_pod("a5", NODE, 8));
    wait_for("a5 added", 10, || names(&store) == ["a3", "a4", "a5"]).await;
    assert!(!names(&store).iter().any(|n| n.starts_with('b')));

    let log = api.request_log();
    eprintln!("{} requests:\n{}", api.requests(), log.join("\n"));
    assert!(api.requests() < 50, "too many requests: {}", api.requests());
    assert!(
        log.iter()
            .filter(|l| l.starts_with("GET "))
            .all(|l| l.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "every request selects the node"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn watcher_relists_after_410_expired() {
    let api = FakeApiServer::start();
    api.apply(node_pod("a1", NODE, 1));
    api.apply(node_pod("a2", NODE, 2));
    let pods: Api<Pod> = Api::all(client_for(&api));
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={NODE}"));
    let (store, _errors) = run_reflector(pods, wc);
    wait_for("initial list", 10, || names(&store) == ["a1", "a2"]).await;
    wait_for("the watch", 10, || api.open_watches() == 1).await;

    // While the client is away, history is compacted past its resourceVersion.
    api.set_down(true);
    api.delete("Pod", "default", "a1");
    api.apply(node_pod("a3", NODE, 3));
    api.compact();
    api.set_down(false);
    wait_for("the relist", 15, || names(&store) == ["a2", "a3"]).await;

    let log = api.request_log();
    let lists = log
        .iter()
        .filter(|l| l.starts_with("GET ") && !l.contains("watch="))
        .count();
    eprintln!("{}", log.join("\n"));
    assert_eq!(lists, 2, "one initial list, one relist after 410");
    assert!(api.requests() < 50, "too many requests: {}", api.requests());

    // A cut without an outage resumes the watch from its resourceVersion, no relist.
    wait_for("the watch back", 10, || api.open_watches() == 1).await;
    api.cut_connections();
    api.apply(node_pod("a4", NODE, 4));
    wait_for("a4 after the cut", 15, || {
        names(&store) == ["a2", "a3", "a4"]
    })
    .await;
    let lists_after = api
        .request_log()
        .iter()
        .filter(|l| l.starts_with("GET ") && !l.contains("watch="))
        .count();
    assert_eq!(lists_after, 2, "resumed, not relisted");
}

#[tokio::test(flavor = "current_thread")]
async fn configmap_reflector_by_name_through_a_kubeconfig_file() {
    let api = FakeApiServer::start();
    let dir = std::env::temp_dir().join(format!("swoll-fake-apiserver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = api.kubeconfig(&dir);
    let kubeconfig = Kubeconfig::read_from(&path).expect("reading the kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config from the kubeconfig");
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        api.url()
    );
    let client = Client::try_from(config).expect("kube client");

    api.apply(configmap("swoll", "swoll-config", &[("mode", "a")]));
    api.apply(configmap("swoll", "other", &[("mode", "x")]));
    api.apply(configmap("elsewhere", "swoll-config", &[("mode", "y")]));
    let cms: Api<ConfigMap> = Api::namespaced(client, "swoll");
    let wc = watcher::Config::default().fields("metadata.name=swoll-config");
    let (store, _errors) = run_reflector(cms, wc);
    let mode = |s: &Store<ConfigMap>| -> Vec<String> {
        s.state()
            .iter()
            .map(|c| {
                format!(
                    "{}/{}={}",
                    c.namespace().unwrap(),
                    c.name_any(),
                    c.data.as_ref().unwrap()["mode"]
                )
            })
            .collect()
    };
    wait_for("initial list", 10, || {
        mode(&store) == ["swoll/swoll-config=a"]
    })
    .await;
    wait_for("the watch", 10, || api.open_watches() == 1).await;
    api.apply(configmap("swoll", "swoll-config", &[("mode", "b")]));
    api.apply(configmap("swoll", "other", &[("mode", "z")]));
    wait_for("the update", 10, || {
        mode(&store) == ["swoll/swoll-config=b"]
    })
    .await;
    api.delete("ConfigMap", "swoll", "swoll-config");
    wait_for("the delete", 10, || mode(&store).is_empty()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "current_thread")]
async fn streaming_list_and_label_selector() {
    let api = FakeApiServer::start();
    api.apply(node_pod("web", NODE, 1));
    api.apply(node_pod("db", NODE, 2));
    let pods: Api<Pod> = Api::namespaced(client_for(&api), "default");
    let wc = watcher::Config::default()
        .streaming_lists()
        .labels("app in (web,cache)");
    let (store, _errors) = run_reflector(pods, wc);
    wait_for("initial events", 10, || names(&store) == ["web"]).await;
    wait_for("the watch", 10, || api.open_watches() == 1).await;
    api.apply(node_pod("cache", NODE, 3));
    wait_for("cache added", 10, || names(&store) == ["cache", "web"]).await;
    // A pod whose labels stop matching leaves the store (a DELETED to this watcher).
    let mut relabelled = node_pod("web", NODE, 1);
    relabelled["metadata"]["labels"]["app"] = "frontend".into();
    api.apply(relabelled);
    wait_for("web relabelled away", 10, || names(&store) == ["cache"]).await;
    assert!(
        api.request_log()
            .iter()
            .any(|l| l.contains("sendInitialEvents=true"))
    );
    assert!(api.requests() < 20);
}

#[tokio::test(flavor = "current_thread")]
async fn list_pages_get_and_pod_json() {
    let api = FakeApiServer::start();
    for (i, name) in ["p1", "p2", "p3", "p4", "p5"].into_iter().enumerate() {
        api.apply(node_pod(name, NODE, i as u8));
    }
    let full = with_ephemeral_containers(
        with_init_containers(
            pod(
                "kube-system",
                "full",
                "",
                NODE,
                &[("main", &cid(9)), ("side", "")],
                &[("k", "v")],
                "Running",
            ),
            &[("init", &cid(10))],
        ),
        &[("debugger", &cid(11))],
    );
    api.apply(full);
    let client = client_for(&api);

    // Paging: limit 2 over 5 pods in default.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = pods.list(&lp).await.expect("list page");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|p| p.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(seen, ["p1", "p2", "p3", "p4", "p5"]);

    // Label selector equality, across namespaces.
    let all: Api<Pod> = Api::all(client.clone());
    let found = all
        .list(&ListParams::default().labels("app=p3"))
        .await
        .unwrap();
    assert_eq!(
        found.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["p3"]
    );
    let found = all
        .list(
            &ListParams::default()
                .labels("k=v")
                .fields("spec.nodeName=node-a"),
        )
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);

    // Get, and the pod's statuses as k8s-openapi reads them.
    let ks: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let full = ks.get("full").await.expect("get full");
    assert!(
        !full.uid().unwrap_or_default().is_empty(),
        "the server made a uid"
    );
    assert_eq!(full.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE));
    let status = full.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let cs = status.container_statuses.unwrap();
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].container_id.as_deref(), Some(cid(9).as_str()));
    assert!(cs[0].state.as_ref().unwrap().running.is_some());
    assert_eq!(
        cs[1].container_id, None,
        "a container not created yet has no ID"
    );
    let init = status.init_container_statuses.unwrap();
    assert_eq!(init[0].container_id.as_deref(), Some(cid(10).as_str()));
    assert!(init[0].state.as_ref().unwrap().terminated.is_some());
    let eph = status.ephemeral_container_statuses.unwrap();
    assert_eq!(eph[0].container_id.as_deref(), Some(cid(11).as_str()));

    let missing = ks
        .get_opt("nope")
        .await
        .expect("404 is not an error for get_opt");
    assert!(missing.is_none());
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");

    // A 503 outage: kube's client retries 503 itself (backoff from 5 ms, up to 15 times), so a
    // call made while down succeeds once the server is back...
    api.set_outage(Some(Outage::Unavailable));
    let before = api.requests();
    let back_up = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        api.set_outage(None);
    };
    let everything = ListParams::default();
    let (listed, ()) = tokio::join!(pods.list(&everything), back_up);
    assert_eq!(listed.expect("retried until back").items.len(), 5);
    let tries = api.requests() - before;
    assert!(
        (3..=16).contains(&tries),
        "{tries} requests for one list over the outage"
    );
    // ...and without that retry layer the 503 is the caller's error at once.
    let mut config = Config::new(api.url().parse().unwrap());
    config.default_retry = false;
    let no_retry: Api<Pod> = Api::namespaced(Client::try_from(config).unwrap(), "default");
    api.set_outage(Some(Outage::Unavailable));
    let err = no_retry
        .list(&ListParams::default())
        .await
        .expect_err("503 while down");
    assert!(
        err.to_string().contains("503") || err.to_string().contains("down"),
        "{err}"
    );
    api.set_down(false);
    no_retry
        .list(&ListParams::default())
        .await
        .expect("back up");
}
