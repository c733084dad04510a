//! A fake Kubernetes API server for tests.
//!
//! [`FakeApiServer`] listens on `127.0.0.1:<free port>` (plain HTTP/1.1, no TLS) and speaks
//! enough of the core `v1` API for a kube-rs `reflector` + `watcher` (or kubectl's `get`):
//!
//! - list: `GET /api/v1/{plural}` and `GET /api/v1/namespaces/{ns}/{plural}`, with
//!   `fieldSelector` (any dotted path: `spec.nodeName=node-a`, `metadata.name=x`, `=`, `==`,
//!   `!=`), `labelSelector` (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x)`),
//!   `limit`/`continue` (real pages) and `resourceVersion` (lists always return the current
//!   state). The answer is a real `PodList`/`ConfigMapList`/... whose items, as from the real
//!   API server, carry no `apiVersion`/`kind`;
//! - get: `GET /api/v1/namespaces/{ns}/{plural}/{name}` (and `/api/v1/{plural}/{name}` for
//!   cluster-scoped kinds), 404 `Status` when absent;
//! - watch: the list paths with `watch=true` (or `1`), `resourceVersion=N`, `timeoutSeconds`,
//!   `allowWatchBookmarks`, `sendInitialEvents`: a chunked stream of newline-delimited
//!   `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}` events for every change
//!   after `N` that passes the selectors (an object leaving the selection is a `DELETED`, one
//!   entering it an `ADDED`, as the real server's watch cache does). `resourceVersion` unset or
//!   `0`, or `sendInitialEvents=true`, first sends the current objects as `ADDED` (the latter
//!   then a bookmark annotated `k8s.io/initial-events-end`). A watch from a version older than
//!   the kept history gets a 410 `Expired` `ERROR` event, so a watcher relists. The stream is
//!   held open until `timeoutSeconds` (default 1800), [`FakeApiServer::cut_connections`], an
//!   outage, or the server's drop, and its connection closes after it;
//! - `GET /version`, `/healthz`, `/livez`, `/readyz`;
//! - reviews: `POST /apis/authentication.k8s.io/v1/tokenreviews` and
//!   `/apis/authorization.k8s.io/v1/subjectaccessreviews`, answered (201, the spec echoed) from
//!   the tokens and non-resource URL grants a test sets ([`FakeApiServer::add_token`],
//!   [`FakeApiServer::grant`]); each is in the request log, so a test can count them.
//! - swoll's `Trace` resource (`/apis/tools.swoll.criticalstack.com/v1alpha1/...traces`):
//!   list, get and watch as above, and `PATCH .../traces/{name}/status` with a JSON merge
//!   patch (RFC 7386) of `status` (other changes are ignored, as with the real status
//!   subresource), refused with 409 when the patch's `metadata.resourceVersion` is not the
//!   object's (see [`patch_status`]).
//! - `PATCH /api/v1/namespaces/{ns}/configmaps/{name}` with a JSON merge patch of `metadata`,
//!   with the same precondition (see [`patch_configmap`]).
//!
//! One global, monotonically increasing resourceVersion (like etcd's revision) is stamped on
//! every object the server stores. Any kind can be applied; `Pod`, `ConfigMap`, `Node`,
//! `Namespace` and a few more core kinds are known up front, so listing them works while empty.
//!
//! It is hyper's HTTP/1.1 server on a tokio runtime of the [`FakeApiServer`]'s own, on a thread
//! of its own: the methods are plain synchronous calls, for tests with or without a runtime.
//!
//! ```no_run
//! use swoll_kernel_tests::apiserver::{FakeApiServer, pod};
//! let api = FakeApiServer::start();
//! api.apply(pod("default", "web", "uid-1", "node-a", &[("app", "containerd://0123")], &[], "Running"));
//! let kubeconfig = api.kubeconfig(std::path::Path::new("/tmp"));
//! api.set_down(true); // the API server "goes away": connections reset, watches cut
//! api.set_down(false);
//! assert!(api.requests() < 50);
//! ```
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{
    Method, Response, StatusCode,
    body::{Frame, Incoming},
    header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

/// The token written into [`FakeApiServer::kubeconfig`] (the server accepts any or none).
pub const TOKEN: &str = "fake-token";

/// Watch events of at most this many changes are kept; older resourceVersions get 410.
const HISTORY_LIMIT: usize = 10_000;
/// Watches that asked for bookmarks get one when this long idle and the version moved on.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);
/// The watch length when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: u64 = 1800;

/// How the server misbehaves while it is down (see [`FakeApiServer::set_outage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// Every new connection is reset (TCP RST) right after it is accepted, as when the API
    /// server's process is gone behind a load balancer; each counts as one request.
    Reset,
    /// Every request gets `503 Service Unavailable` with a `Status` body, then the connection
    /// is closed.
    Unavailable,
}

/// The fake API server; dropping it stops its thread and closes every connection.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropped to stop the accept loop, and with it the runtime and every connection.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Sent after every change of the objects or their history: the watches look again.
    changed: watch::Sender<()>,
    /// Sent to end every open connection (see [`Shared::cut_all`]).
    cuts: watch::Sender<()>,
    requests: AtomicUsize,
}

#[derive(Clone)]
struct KindInfo {
    kind: String,
    api_version: String,
    namespaced: bool,
}

/// (plural, namespace or "", name)
type Key = (String, String, String);

struct Change {
    rv: u64,
    plural: String,
    /// The object before the change (for a delete: the deleted object at the delete's version).
    old: Option<Value>,
    /// The object after the change (`None` for a delete).
    new: Option<Value>,
}

struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    kinds: BTreeMap<String, KindInfo>,
    history: VecDeque<Change>,
    /// Watches must start at or after this version (changes up to it are forgotten).
    compacted: u64,
    outage: Option<Outage>,
    /// Bumped by every cut: a watch opened before sends nothing more.
    cut_epoch: u64,
    open_watches: usize,
    log: Vec<String>,
    uids: u64,
    reviews: Reviews,
}

/// What the review endpoints answer from.
#[derive(Default)]
struct Reviews {
    /// token → (username, groups, the audiences it was minted for)
    tokens: HashMap<String, (String, Vec<String>, Vec<String>)>,
    /// (username or group, non-resource URL (a trailing `*` matches any rest), verb)
    grants: Vec<(String, String, String)>,
}

/// A request as the handlers see it: the query decoded, the body read.
struct Request {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Bytes,
}

/// Response bodies: whole, or a watch's stream, which a cut ends with an error (hyper then
/// drops the connection without the final chunk).
type Body = UnsyncBoxBody<Bytes, io::Error>;

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 and a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener, for tokio");
        let mut kinds = BTreeMap::new();
        for (kind, namespaced) in [
            ("Pod", true),
            ("ConfigMap", true),
            ("Secret", true),
            ("Service", true),
            ("ServiceAccount", true),
            ("Endpoints", true),
            ("Event", true),
            ("PersistentVolumeClaim", true),
            ("Node", false),
            ("Namespace", false),
            ("PersistentVolume", false),
        ] {
            kinds.insert(
                plural_of(kind),
                KindInfo {
                    kind: kind.to_owned(),
                    api_version: "v1".to_owned(),
                    namespaced,
                },
            );
        }
        kinds.insert(
            "traces".to_owned(),
            KindInfo {
                kind: "Trace".to_owned(),
                api_version: TRACE_API_VERSION.to_owned(),
                namespaced: true,
            },
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1,
                objects: BTreeMap::new(),
                kinds,
                history: VecDeque::new(),
                compacted: 0,
                outage: None,
                cut_epoch: 0,
                open_watches: 0,
                log: Vec::new(),
                uids: 0,
                reviews: Reviews::default(),
            }),
            changed: watch::Sender::new(()),
            cuts: watch::Sender::new(()),
            requests: AtomicUsize::new(0),
        });
        // A runtime of its own on a thread of its own: the methods stay synchronous, for tests
        // with and without a runtime of theirs.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the fake API server's runtime");
        let (stop, stopped) = oneshot::channel();
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("fake-apiserver".into())
                .spawn(move || runtime.block_on(serve(shared, listener, stopped)))
                .expect("spawning the fake API server")
        };
        FakeApiServer {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates or replaces an object (by kind, namespace, name): `ADDED` or `MODIFIED` to
    /// watchers. The server sets `metadata.resourceVersion`, fills a missing `apiVersion` (`v1`),
    /// namespace (`default`, for namespaced kinds), `uid` (kept from the replaced object) and
    /// `creationTimestamp`; a `Trace` keeps its stored status, as with the real status
    /// subresource. Returns the object as stored.
    pub fn apply(&self, object: Value) -> Value {
        let mut obj = object;
        let kind = obj["kind"]
            .as_str()
            .expect("apply: object without kind")
            .to_owned();
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("apply: object without metadata.name")
            .to_owned();
        if obj.get("apiVersion").is_none_or(Value::is_null) {
            obj["apiVersion"] = json!("v1");
        }
        let api_version = obj["apiVersion"].as_str().unwrap_or("v1").to_owned();
        let plural = plural_of(&kind);
        let mut st = self.shared.lock();
        let info = st
            .kinds
            .entry(plural.clone())
            .or_insert_with(|| KindInfo {
                kind: kind.clone(),
                api_version,
                namespaced: true,
            })
            .clone();
        let namespace = if info.namespaced {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            obj["metadata"]["namespace"] = json!(ns);
            ns
        } else {
            if let Some(meta) = obj["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            String::new()
        };
        let key = (plural.clone(), namespace, name);
        let old = st.objects.get(&key).cloned();
        if plural == "traces" {
            keep_trace_status(&mut obj, old.as_ref());
        }
        if obj["metadata"]["uid"].as_str().is_none_or(str::is_empty) {
            let uid = match old.as_ref().and_then(|o| o["metadata"]["uid"].as_str()) {
                Some(uid) => uid.to_owned(),
                None => {
                    st.uids += 1;
                    format!("00000000-0000-4000-8000-{:012x}", st.uids)
                }
            };
            obj["metadata"]["uid"] = json!(uid);
        }
        if obj["metadata"]["creationTimestamp"].is_null() {
            let created = old
                .as_ref()
                .map(|o| o["metadata"]["creationTimestamp"].clone())
                .filter(|v| !v.is_null())
                .unwrap_or_else(|| json!(rfc3339_now()));
            obj["metadata"]["creationTimestamp"] = created;
        }
        self.shared.store(st, key, obj)
    }

    /// Deletes an object: `DELETED` (carrying the object at the delete's resourceVersion) to
    /// watchers. `kind` is the object's kind (`Pod`) or its plural (`pods`); `namespace` is
    /// ignored for cluster-scoped kinds. Returns the deleted object, `None` if there was none.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let mut st = self.shared.lock();
        let key = st.key(kind, namespace, name);
        let mut obj = st.objects.remove(&key)?;
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.record(Change {
            rv,
            plural: key.0,
            old: Some(obj.clone()),
            new: None,
        });
        drop(st);
        self.shared.notify();
        Some(obj)
    }

    /// The stored object, if any (`kind` as in [`FakeApiServer::delete`]).
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.shared.lock();
        st.objects.get(&st.key(kind, namespace, name)).cloned()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Takes the server down ([`Outage::Reset`]: connections reset, open watches and
    /// keep-alive connections cut) or brings it back (state and history kept, so watchers can
    /// resume from their last resourceVersion).
    pub fn set_down(&self, down: bool) {
        self.set_outage(down.then_some(Outage::Reset));
    }

    /// Starts (`Some`) or ends (`None`) an outage of the given kind: a [`Outage::Reset`] cuts
    /// every open connection, an [`Outage::Unavailable`] the open watches.
    pub fn set_outage(&self, outage: Option<Outage>) {
        let mut st = self.shared.lock();
        st.outage = outage;
        match outage {
            Some(Outage::Reset) => self.shared.cut_all(&mut st),
            // Open watches end; idle keep-alive connections stay and get a 503 at their next
            // request, as from a real server gone unhealthy (closing them here would race a
            // client's next request on them into a reset, which no client retries).
            Some(Outage::Unavailable) => {
                st.cut_epoch += 1;
                drop(st);
                self.shared.notify();
            }
            None => {}
        }
    }

    /// Whether the server is down.
    pub fn is_down(&self) -> bool {
        self.shared.lock().outage.is_some()
    }

    /// Closes every open connection (watches end mid-stream, without their final chunk), as a
    /// load balancer or an API server restart does; the server stays up.
    pub fn cut_connections(&self) {
        self.shared.cut_all(&mut self.shared.lock());
    }

    /// Forgets the change history: a watch from any older resourceVersion (including the ones
    /// open now) gets a 410 `Expired` error and has to relist.
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.history.clear();
        st.compacted = st.rv;
        drop(st);
        self.shared.notify();
    }

    /// HTTP requests served so far (while down with [`Outage::Reset`], each reset connection
    /// counts as one).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Every request's line so far (`GET /api/v1/pods?...`; `RESET` for a reset connection).
    pub fn request_log(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    /// Watches open right now.
    pub fn open_watches(&self) -> usize {
        self.shared.lock().open_watches
    }

    /// Writes `dir/kubeconfig` pointing at this server (plain http, token [`TOKEN`], namespace
    /// `default`) and returns its path, for `KUBECONFIG=...`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {url}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: default
current-context: fake
preferences: {{}}
users:
- name: fake
  user:
    token: {TOKEN}
",
            url = self.url()
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

/// The API server's own token audience: what a review that names none checks tokens for.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc";

/// Reviews: who a token is, and what they may get.
impl FakeApiServer {
    /// Makes TokenReviews of `token` answer: user `username` in `groups` (and
    /// `system:authenticated`), a token of the API server's audience. Unknown tokens are not
    /// authenticated.
    pub fn add_token(&self, token: &str, username: &str, groups: &[&str]) {
        self.add_token_for(token, username, groups, &[API_AUDIENCE]);
    }

    /// As [`FakeApiServer::add_token`], for a token minted for `audiences` (a projected
    /// service account token's `audience`): as the API server does, a review that names
    /// audiences authenticates it only for one of them, and answers which; one that names none
    /// only for the API server's own.
    pub fn add_token_for(&self, token: &str, username: &str, groups: &[&str], audiences: &[&str]) {
        let mut groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        groups.push("system:authenticated".to_owned());
        let audiences = audiences.iter().map(|a| (*a).to_owned()).collect();
        self.shared
            .lock()
            .reviews
            .tokens
            .insert(token.to_owned(), (username.to_owned(), groups, audiences));
    }

    /// Makes SubjectAccessReviews allow `verb` on non-resource URL `path` (a trailing `*`
    /// matches any rest, as in RBAC) to `subject`, a username or a group. Nothing else is
    /// allowed.
    pub fn grant(&self, subject: &str, path: &str, verb: &str) {
        self.shared.lock().reviews.grants.push((
            subject.to_owned(),
            path.to_owned(),
            verb.to_owned(),
        ));
    }

    /// How many requests of the log went to `POST …/<plural>` (`tokenreviews`,
    /// `subjectaccessreviews`).
    pub fn reviews(&self, plural: &str) -> usize {
        let suffix = format!("/{plural}");
        self.request_log()
            .iter()
            .filter(|line| {
                line.strip_prefix("POST ")
                    .and_then(|rest| rest.split([' ', '?']).next())
                    .is_some_and(|path| path.ends_with(&suffix))
            })
            .count()
    }
}

/// The answer to a review POST, or `None` for any other POST.
fn review(reviews: &Reviews, req: &Request) -> Option<(u16, Value)> {
    let path = req.path.trim_end_matches('/');
    let bad = |why: &str| (400, status_json(400, "BadRequest", why));
    let sent: Value = match serde_json::from_slice(&req.body) {
        Ok(value) => value,
        Err(e) => return Some(bad(&format!("the body is no JSON: {e}"))),
    };
    let spec = sent.get("spec").cloned().unwrap_or(Value::Null);
    match path {
        "/apis/authentication.k8s.io/v1/tokenreviews" => {
            let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
            let wanted: Vec<&str> = spec.get("audiences").and_then(Value::as_array).map_or_else(
                || vec![API_AUDIENCE],
                |a| a.iter().filter_map(Value::as_str).collect(),
            );
            let status = match reviews.tokens.get(token) {
                Some((username, groups, minted)) => {
                    let valid: Vec<&str> = wanted
                        .iter()
                        .copied()
                        .filter(|w| minted.iter().any(|m| m == w))
                        .collect();
                    if valid.is_empty() {
                        json!({"authenticated": false, "error": "token audiences are invalid for the target audiences"})
                    } else {
                        json!({
                            "authenticated": true,
                            "user": {"username": username, "uid": format!("uid-{username}"), "groups": groups},
                            "audiences": valid,
                        })
                    }
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            Some((
                201,
                json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "metadata": {"creationTimestamp": null}, "spec": spec, "status": status,
                }),
            ))
        }
        "/apis/authorization.k8s.io/v1/subjectaccessreviews" => {
            let Some(attrs) = spec.get("nonResourceAttributes") else {
                return Some(bad(
                    "the fake API server reviews only nonResourceAttributes",
                ));
            };
            let field =
                |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let (url, verb) = (field(attrs, "path"), field(attrs, "verb"));
            let user = field(&spec, "user");
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let allowed = reviews.grants.iter().any(|(subject, pattern, granted)| {
                (*subject == user || groups.contains(subject))
                    && (granted == "*" || *granted == verb)
                    && match pattern.strip_suffix('*') {
                        Some(prefix) => url.starts_with(prefix),
                        None => *pattern == url,
                    }
            });
            let status = if allowed {
                json!({"allowed": true, "reason": "granted by the test"})
            } else {
                json!({"allowed": false, "reason": format!("no grant of {verb} {url} to {user}")})
            };
            Some((
                201,
                json!({
                    "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                    "metadata": {"creationTimestamp": null}, "spec": spec, "status": status,
                }),
            ))
        }
        _ => None,
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        // The runtime ends with the accept loop, dropping every connection's task.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `obj` under `key` at the next resourceVersion (stamped on it), records the change
    /// and wakes the watches; returns the object as stored.
    fn store(&self, mut st: MutexGuard<'_, State>, key: Key, mut obj: Value) -> Value {
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let old = st.objects.insert(key.clone(), obj.clone());
        st.record(Change {
            rv,
            plural: key.0,
            old,
            new: Some(obj.clone()),
        });
        drop(st);
        self.notify();
        obj
    }

    /// Wakes the watches to look at the state again.
    fn notify(&self) {
        self.changed.send_replace(());
    }

    /// Ends every open connection; under the state lock, so that a watch sends nothing after
    /// it and a connection accepted meanwhile is either cut too or sees the outage.
    fn cut_all(&self, st: &mut State) {
        st.cut_epoch += 1;
        self.cuts.send_replace(());
    }
}

impl State {
    fn record(&mut self, change: Change) {
        self.history.push_back(change);
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    fn key(&self, kind: &str, namespace: &str, name: &str) -> Key {
        let plural = if kind.starts_with(|c: char| c.is_ascii_lowercase()) {
            kind.to_owned()
        } else {
            plural_of(kind)
        };
        let namespaced = self.kinds.get(&plural).is_none_or(|k| k.namespaced);
        let ns = if namespaced {
            namespace.to_owned()
        } else {
            String::new()
        };
        (plural, ns, name.to_owned())
    }

    fn log(&mut self, line: String) {
        if self.log.len() < 100_000 {
            self.log.push(line);
        }
    }
}

/// Accepts connections until `stopped` (then the runtime ends, dropping every connection);
/// hyper serves each on a task of its own, which a cut drops.
async fn serve(shared: Arc<Shared>, listener: TcpListener, mut stopped: oneshot::Receiver<()>) {
    let listener =
        tokio::net::TcpListener::from_std(listener).expect("the listener on the runtime");
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of fds or the like: don't spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let cut = {
            let mut st = shared.lock();
            if st.outage == Some(Outage::Reset) {
                shared.requests.fetch_add(1, Ordering::SeqCst);
                st.log("RESET".to_owned());
                None
            } else {
                // Under the lock, as cuts are made: an outage starting now cuts this one too.
                Some(shared.cuts.subscribe())
            }
        };
        let Some(mut cut) = cut else {
            // SO_LINGER 0: the peer sees a TCP reset instead of an orderly close.
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(shared.clone(), req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = cut.changed() => {}
            }
        });
    }
}

/// Counts and logs a request, then answers it unless the server is down.
async fn answer(shared: Arc<Shared>, req: hyper::Request<Incoming>) -> io::Result<Response<Body>> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let line = format!("{} {} {:?}", req.method(), req.uri(), req.version());
    let outage = {
        let mut st = shared.lock();
        st.log(line);
        st.outage
    };
    match outage {
        // A request read just before the outage's cut reached its connection: dropped with it.
        Some(Outage::Reset) => {
            let down = "the fake API server is down";
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, down));
        }
        Some(Outage::Unavailable) => {
            let body = status_json(503, "ServiceUnavailable", "the fake API server is down");
            return Ok(closing(json_reply(503, &body)));
        }
        None => {}
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let req = Request {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        body,
    };
    Ok(handle(&shared, &req))
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }
}

/// The answer to a request of a server that is up.
fn handle(shared: &Arc<Shared>, req: &Request) -> Response<Body> {
    if req.method == Method::POST
        && let Some((code, body)) = review(&shared.lock().reviews, req)
    {
        return json_reply(code, &body);
    }
    if req.method == Method::PATCH {
        let (code, body) = if req.path.starts_with(CONFIGMAP_PATH) {
            patch_configmap(shared, req)
        } else {
            patch_status(shared, req)
        };
        return json_reply(code, &body);
    }
    if req.method != Method::GET {
        let msg = "the fake API server only serves GET";
        return json_reply(405, &status_json(405, "MethodNotAllowed", msg));
    }
    match req.path.trim_end_matches('/') {
        "/version" => {
            return json_reply(
                200,
                &json!({
                    "major": "1", "minor": "37", "gitVersion": "v1.37.0-fake",
                    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25", "compiler": "gc",
                    "platform": "linux/amd64"
                }),
            );
        }
        "/healthz" | "/livez" | "/readyz" => return response(200, "text/plain", full("ok".into())),
        "/api" => {
            let body = json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []});
            return json_reply(200, &body);
        }
        _ => {}
    }
    let target = match route(&shared.lock(), &req.path) {
        Ok(target) => target,
        Err(message) => return json_reply(404, &status_json(404, "NotFound", &message)),
    };
    let mut filter = match Filter::new(req, &target) {
        Ok(filter) => filter,
        Err(message) => return json_reply(400, &status_json(400, "BadRequest", &message)),
    };
    if req.flag("watch") {
        if let Some(name) = &target.name {
            filter.fields.push(FieldReq {
                path: "metadata.name".into(),
                equal: true,
                value: name.clone(),
            });
        }
        return watch(shared, req, target, filter);
    }
    let (code, body) = match &target.name {
        Some(name) => get_one(&shared.lock(), &target, name),
        None => list(&shared.lock(), req, &target, &filter),
    };
    json_reply(code, &body)
}

struct Target {
    plural: String,
    info: KindInfo,
    namespace: Option<String>,
    name: Option<String>,
}

fn route(st: &State, path: &str) -> Result<Target, String> {
    let not_found = || "the server could not find the requested resource".to_owned();
    let rest = path
        .strip_prefix("/api/v1/")
        .or_else(|| path.strip_prefix(TRACE_PATH))
        .ok_or_else(not_found)?;
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, plural, name) = match segs.as_slice() {
        [plural] => (None, *plural, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return Err(not_found()),
    };
    let info = st.kinds.get(plural).cloned().ok_or_else(not_found)?;
    if namespace.is_some() && !info.namespaced {
        return Err(not_found());
    }
    if name.is_some() && namespace.is_none() && info.namespaced {
        return Err(not_found());
    }
    Ok(Target {
        plural: plural.to_owned(),
        info,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    })
}

fn get_one(st: &State, target: &Target, name: &str) -> (u16, Value) {
    let key = (
        target.plural.clone(),
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    );
    match st.objects.get(&key) {
        Some(obj) => (200, obj.clone()),
        None => {
            let mut status = status_json(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", target.plural),
            );
            status["details"] = json!({"name": name, "kind": target.plural});
            (404, status)
        }
    }
}

fn list(st: &State, req: &Request, target: &Target, filter: &Filter) -> (u16, Value) {
    let limit: usize = req
        .param("limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let (list_rv, after) = match req.param("continue").filter(|c| !c.is_empty()) {
        None => (st.rv, None),
        Some(token) => {
            let mut parts = token.splitn(3, '/');
            let parsed = (|| {
                let rv: u64 = parts.next()?.parse().ok()?;
                Some((rv, (parts.next()?.to_owned(), parts.next()?.to_owned())))
            })();
            match parsed {
                None => {
                    return (
                        400,
                        status_json(400, "BadRequest", "invalid continue token"),
                    );
                }
                Some((rv, _)) if rv < st.compacted => {
                    let msg = "The provided continue parameter is too old to display a consistent list result.";
                    return (410, status_json(410, "Expired", msg));
                }
                Some((rv, after)) => (rv, Some(after)),
            }
        }
    };
    let mut items = Vec::new();
    let mut remaining = 0usize;
    let mut last = None;
    for ((plural, ns, name), obj) in &st.objects {
        if *plural != target.plural || !filter.matches(obj) {
            continue;
        }
        if let Some((a_ns, a_name)) = &after
            && (ns, name) <= (a_ns, a_name)
        {
            continue;
        }
        if items.len() < limit {
            let mut item = obj.clone();
            if let Some(map) = item.as_object_mut() {
                map.remove("apiVersion");
                map.remove("kind");
            }
            items.push(item);
            last = Some((ns.clone(), name.clone()));
        } else {
            remaining += 1;
        }
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if remaining > 0
        && let Some((ns, name)) = last
    {
        metadata["continue"] = json!(format!("{list_rv}/{ns}/{name}"));
        metadata["remainingItemCount"] = json!(remaining);
    }
    let body = json!({
        "kind": format!("{}List", target.info.kind),
        "apiVersion": target.info.api_version,
        "metadata": metadata,
        "items": items,
    });
    (200, body)
}

/// Opens a watch: a response whose chunked body is the [`Watch`]'s events.
fn watch(shared: &Arc<Shared>, req: &Request, target: Target, filter: Filter) -> Response<Body> {
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let bookmarks = req.flag("allowWatchBookmarks");
    let send_initial = req.flag("sendInitialEvents");
    let rv_param = req.param("resourceVersion").unwrap_or("");

    let mut st = shared.lock();
    let mut first = String::new();
    let mut ended = false;
    let mut from = st.rv;
    if send_initial || rv_param.is_empty() || rv_param == "0" {
        for ((plural, _, _), obj) in &st.objects {
            if *plural == target.plural && filter.matches(obj) {
                first.push_str(&event("ADDED", obj));
            }
        }
        if send_initial && bookmarks {
            first.push_str(&bookmark(&target, from, true));
        }
    } else {
        match rv_param.parse::<u64>() {
            Ok(n) if n < st.compacted => {
                first = gone(n, st.compacted);
                ended = true;
            }
            Ok(n) => from = n,
            Err(_) => {
                let msg = format!("invalid resource version: {rv_param}");
                return closing(json_reply(400, &status_json(400, "BadRequest", &msg)));
            }
        }
    }
    st.open_watches += 1;
    let now = Instant::now();
    let watch = Watch {
        shared: shared.clone(),
        changes: shared.changed.subscribe(),
        epoch: st.cut_epoch,
        target,
        filter,
        first: (!first.is_empty()).then_some(first),
        ended,
        from,
        reported: from,
        last_sent: now,
        deadline: now + Duration::from_secs(timeout),
        bookmarks,
    };
    drop(st);
    let events = futures::stream::unfold(watch, |mut watch| async move {
        let lines = watch.next().await?;
        Some((lines.map(|l| Frame::data(Bytes::from(l))), watch))
    });
    closing(response(
        200,
        "application/json",
        StreamBody::new(events).boxed_unsync(),
    ))
}

/// An open watch: what it has sent and what it waits for. It counts in
/// [`FakeApiServer::open_watches`] until dropped with its response body.
struct Watch {
    shared: Arc<Shared>,
    changes: watch::Receiver<()>,
    /// The cut epoch it was opened in: a cut since ends it.
    epoch: u64,
    target: Target,
    filter: Filter,
    /// Sent before any change: the initial events, or the 410 that ends the watch.
    first: Option<String>,
    ended: bool,
    /// The version up to which changes have been looked at.
    from: u64,
    /// The version the client knows of (the last event or bookmark).
    reported: u64,
    last_sent: Instant,
    deadline: Instant,
    bookmarks: bool,
}

impl Watch {
    /// The next lines to send, `None` at the watch's end, an error once it is cut (no final
    /// chunk: the client sees the stream break).
    async fn next(&mut self) -> Option<io::Result<String>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if self.ended {
            return None;
        }
        loop {
            let wake = {
                // Before looking, so that a change made meanwhile wakes the wait below.
                self.changes.mark_unchanged();
                let st = self.shared.lock();
                if st.cut_epoch != self.epoch || st.outage.is_some() {
                    return Some(Err(io::ErrorKind::ConnectionAborted.into()));
                }
                if self.from < st.compacted {
                    self.ended = true;
                    return Some(Ok(gone(self.from, st.compacted)));
                }
                let lines: String = st
                    .history
                    .iter()
                    .filter(|c| c.rv > self.from && c.plural == self.target.plural)
                    .filter_map(|c| change_event(c, &self.filter))
                    .collect();
                self.from = st.rv;
                let now = Instant::now();
                if !lines.is_empty() {
                    self.reported = self.from;
                    self.last_sent = now;
                    return Some(Ok(lines));
                }
                if now >= self.deadline {
                    return None;
                }
                if self.bookmarks && self.from > self.reported {
                    let due = self.last_sent + BOOKMARK_EVERY;
                    if now >= due {
                        self.reported = self.from;
                        self.last_sent = now;
                        return Some(Ok(bookmark(&self.target, self.from, false)));
                    }
                    due.min(self.deadline)
                } else {
                    self.deadline
                }
            };
            tokio::select! {
                _ = self.changes.changed() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.shared.lock().open_watches -= 1;
    }
}

/// A `BOOKMARK` at version `rv`; the one after the initial events says so.
fn bookmark(target: &Target, rv: u64, initial_events_end: bool) -> String {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({
        "kind": target.info.kind, "apiVersion": target.info.api_version, "metadata": metadata,
    });
    format!("{}\n", json!({"type": "BOOKMARK", "object": object}))
}

fn gone(n: u64, compacted: u64) -> String {
    let status = status_json(
        410,
        "Expired",
        &format!("too old resource version: {n} ({compacted})"),
    );
    format!("{}\n", json!({"type": "ERROR", "object": status}))
}

fn event(kind: &str, obj: &Value) -> String {
    format!("{}\n", json!({"type": kind, "object": obj}))
}

/// The watch event a change makes for a watcher with this filter, if any.
fn change_event(change: &Change, filter: &Filter) -> Option<String> {
    let old = change.old.as_ref().filter(|o| filter.matches(o));
    let new = change.new.as_ref().filter(|o| filter.matches(o));
    match (old, new) {
        (Some(_), Some(new)) => Some(event("MODIFIED", new)),
        (None, Some(new)) => Some(event("ADDED", new)),
        (Some(old), None) => {
            let mut gone = old.clone();
            gone["metadata"]["resourceVersion"] = json!(change.rv.to_string());
            Some(event("DELETED", &gone))
        }
        _ => None,
    }
}

/// A response with the headers the real API server sends (hyper adds `Date` and the length).
fn response(code: u16, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(code).expect("a valid status code");
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    response
}

/// A whole body (it never fails; the error type is the watches').
fn full(body: String) -> Body {
    Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_reply(code: u16, body: &Value) -> Response<Body> {
    response(code, "application/json", full(body.to_string()))
}

/// Makes `response` its connection's last: hyper closes the connection after it.
fn closing(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

struct FieldReq {
    path: String,
    equal: bool,
    value: String,
}

enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

struct Filter {
    namespace: Option<String>,
    fields: Vec<FieldReq>,
    labels: Vec<LabelReq>,
}

impl Filter {
    fn new(req: &Request, target: &Target) -> Result<Self, String> {
        let mut fields = Vec::new();
        for term in req
            .param("fieldSelector")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, true, v)
            } else {
                return Err(format!("invalid field selector: {term:?}"));
            };
            fields.push(FieldReq {
                path: path.trim().to_owned(),
                equal,
                value: value.trim().to_owned(),
            });
        }
        let labels = parse_label_selector(req.param("labelSelector").unwrap_or(""))?;
        Ok(Filter {
            namespace: target.namespace.clone(),
            fields,
            labels,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj["metadata"]["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        let fields_ok = self
            .fields
            .iter()
            .all(|f| (field_value(obj, &f.path) == f.value) == f.equal);
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        fields_ok
            && self.labels.iter().all(|r| match r {
                LabelReq::Eq(k, v) => label(k) == Some(v),
                LabelReq::Ne(k, v) => label(k) != Some(v),
                LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
                LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
                LabelReq::Exists(k) => label(k).is_some(),
                LabelReq::NotExists(k) => label(k).is_none(),
            })
    }
}

/// A field's value as a field selector sees it ("" when absent).
fn field_value(obj: &Value, path: &str) -> String {
    let mut v = obj;
    for part in path.split('.') {
        v = &v[part];
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// A `labelSelector` query parameter, parsed as the API server does. Ours, not a library's:
/// kube-rs builds selectors (`kube::core::Selector`) and writes them as this syntax, but parses
/// none from it, and this parsing is the server's behaviour the tests rely on.
fn parse_label_selector(sel: &str) -> Result<Vec<LabelReq>, String> {
    // Splits on commas outside parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in sel.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&sel[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&sel[start..]);
    let set = |s: &str| -> Result<Vec<String>, String> {
        let inner = s.trim().strip_prefix('(').and_then(|s| s.strip_suffix(')'));
        let inner = inner.ok_or_else(|| format!("invalid label selector set: {s:?}"))?;
        Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
    };
    let mut reqs = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let req = if let Some((k, v)) = term.split_once("!=") {
            LabelReq::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==") {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once('=') {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once(" notin ") {
            LabelReq::NotIn(k.trim().into(), set(v)?)
        } else if let Some((k, v)) = term.split_once(" in ") {
            LabelReq::In(k.trim().into(), set(v)?)
        } else if let Some(k) = term.strip_prefix('!') {
            LabelReq::NotExists(k.trim().into())
        } else if term.contains(|c: char| c.is_whitespace() || "()<>".contains(c)) {
            return Err(format!("unable to parse label selector term {term:?}"));
        } else {
            LabelReq::Exists(term.into())
        };
        reqs.push(req);
    }
    Ok(reqs)
}

/// The API version of swoll's `Trace` resource.
pub const TRACE_API_VERSION: &str = "tools.swoll.criticalstack.com/v1alpha1";
/// Where its API's paths start.
const TRACE_PATH: &str = "/apis/tools.swoll.criticalstack.com/v1alpha1/";

/// `PATCH {TRACE_PATH}namespaces/{ns}/traces/{name}/status` with a JSON merge patch: the
/// patch's `status` is merged into the stored Trace's (a `null` removes a field, a map merges
/// key by key: so one agent's `status.nodes.<node>` leaves the other nodes' entries), the object
/// gets a new resourceVersion and watchers a `MODIFIED`. A `metadata.resourceVersion` in the
/// patch that is not the object's gets 409 `Conflict`, as from the real server; an absent
/// Trace 404. Any other PATCH is 405.
fn patch_status(shared: &Arc<Shared>, req: &Request) -> (u16, Value) {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path
        .strip_prefix(TRACE_PATH)
        .unwrap_or_default()
        .split('/')
        .collect();
    let ["namespaces", ns, "traces", name, "status"] = segs.as_slice() else {
        let msg = "the fake API server only patches the status of Traces";
        return (405, status_json(405, "MethodNotAllowed", msg));
    };
    let key = ("traces".to_owned(), (*ns).to_owned(), (*name).to_owned());
    merge_patch_of(
        shared,
        &req.body,
        key,
        "traces.tools.swoll.criticalstack.com",
        "status",
    )
}

/// Where the paths of namespaced core objects start.
const CONFIGMAP_PATH: &str = "/api/v1/namespaces/";

/// `PATCH /api/v1/namespaces/{ns}/configmaps/{name}` with a JSON merge patch of `metadata`
/// (swoll's agents record their ConfigMap traces' starts in an annotation): merged into the
/// stored ConfigMap's, which gets a new resourceVersion, and watchers a `MODIFIED`. As for
/// [`patch_status`], a `metadata.resourceVersion` in the patch that is not the object's gets
/// 409 and an absent ConfigMap 404; other PATCHes under `/api/v1/namespaces/` are 405.
fn patch_configmap(shared: &Arc<Shared>, req: &Request) -> (u16, Value) {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path
        .strip_prefix(CONFIGMAP_PATH)
        .unwrap_or_default()
        .split('/')
        .collect();
    let [ns, "configmaps", name] = segs.as_slice() else {
        let msg = "the fake API server only patches ConfigMaps and the status of Traces";
        return (405, status_json(405, "MethodNotAllowed", msg));
    };
    let key = (
        "configmaps".to_owned(),
        (*ns).to_owned(),
        (*name).to_owned(),
    );
    merge_patch_of(shared, &req.body, key, "configmaps", "metadata")
}

/// What both PATCHes share: `body` parsed as a JSON merge patch, the object at `key` found
/// (404 naming `resource` when absent), the patch's `metadata.resourceVersion`, if any, checked
/// against the object's (409 when it differs) and taken out, the patch's `field` merged into
/// the object's, and the object stored with a new resourceVersion.
fn merge_patch_of(
    shared: &Arc<Shared>,
    body: &[u8],
    key: Key,
    resource: &str,
    field: &str,
) -> (u16, Value) {
    let mut patch: Value = match serde_json::from_slice(body) {
        Ok(patch) => patch,
        Err(err) => return (400, status_json(400, "BadRequest", &err.to_string())),
    };
    let st = shared.lock();
    let name = &key.2;
    let Some(mut obj) = st.objects.get(&key).cloned() else {
        let msg = format!("{resource} \"{name}\" not found");
        return (404, status_json(404, "NotFound", &msg));
    };
    let wanted = patch["metadata"]
        .as_object_mut()
        .and_then(|m| m.remove("resourceVersion"));
    if let Some(wanted) = wanted
        && wanted.as_str() != obj["metadata"]["resourceVersion"].as_str()
    {
        let msg = format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
             modified; please apply your changes to the latest version and try again"
        );
        return (409, status_json(409, "Conflict", &msg));
    }
    if let Some(part) = patch.get(field) {
        merge_patch(&mut obj[field], part);
    }
    (200, shared.store(st, key, obj))
}

/// Applies JSON merge patch `patch` (RFC 7386) to `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (field, value) in fields {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(field);
            }
        } else {
            merge_patch(&mut target[field.as_str()], value);
        }
    }
}

/// As the real server with a status subresource: writing a Trace keeps its stored status (only
/// [`patch_status`] changes it).
fn keep_trace_status(obj: &mut Value, old: Option<&Value>) {
    match old.and_then(|o| o.get("status")) {
        Some(status) => obj["status"] = status.clone(),
        None => {
            if let Some(map) = obj.as_object_mut() {
                map.remove("status");
            }
        }
    }
}

/// A `Trace` in `namespace` with `spec` (swoll's custom resource).
pub fn trace(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": TRACE_API_VERSION,
        "kind": "Trace",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// `Pod` -> `pods`, `Endpoints` -> `endpoints`, `NetworkPolicy` -> `networkpolicies`.
fn plural_of(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower == "endpoints" {
        lower
    } else if let Some(stem) = lower
        .strip_suffix('y')
        .filter(|s| !s.ends_with(['a', 'e', 'o', 'u']))
    {
        format!("{stem}ies")
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// Now as the API server writes timestamps: `2026-01-02T03:04:05Z`.
pub fn rfc3339_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A full `Pod` as the API server returns it: spec (`nodeName`, one container per entry),
/// labels, and a status with `phase`, conditions, IPs and one `containerStatuses` entry per
/// container (`containerID` like `containerd://<64 hex>`; an empty one is left out, as for a
/// container not created yet). `phase` is `Pending`, `Running`, `Succeeded`, `Failed` or
/// `Unknown`: containers are waiting, running, or terminated accordingly. An empty `node`
/// makes an unscheduled pod. `uid` may be empty (the server then makes one).
pub fn pod(
    namespace: &str,
    name: &str,
    uid: &str,
    node: &str,
    containers: &[(&str, &str)],
    labels: &[(&str, &str)],
    phase: &str,
) -> Value {
    let now = rfc3339_now();
    let labels: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let host_octet = node
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 250
        + 1;
    let pod_octet = name
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 250
        + 1;
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "creationTimestamp": now,
    });
    if !uid.is_empty() {
        metadata["uid"] = json!(uid);
    }
    let mut spec = json!({
        "containers": containers.iter().map(|(n, _)| container_spec(n)).collect::<Vec<_>>(),
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ],
        "priority": 0,
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority",
    });
    let mut status = json!({"phase": phase, "qosClass": "BestEffort"});
    if node.is_empty() {
        status["conditions"] = json!([{
            "type": "PodScheduled", "status": "False", "lastProbeTime": null,
            "lastTransitionTime": now, "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        }]);
    } else {
        spec["nodeName"] = json!(node);
        let running = phase == "Running";
        let ready = if running { "True" } else { "False" };
        let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastProbeTime": null, "lastTransitionTime": now});
        status["conditions"] = json!([
            cond(
                "PodReadyToStartContainers",
                if phase == "Pending" { "False" } else { "True" }
            ),
            cond("Initialized", "True"),
            cond("Ready", ready),
            cond("ContainersReady", ready),
            cond("PodScheduled", "True"),
        ]);
        let host_ip = format!("10.0.0.{host_octet}");
        let pod_ip = format!("10.244.{host_octet}.{pod_octet}");
        status["hostIP"] = json!(host_ip);
        status["hostIPs"] = json!([{"ip": host_ip}]);
        if phase != "Pending" {
            status["podIP"] = json!(pod_ip);
            status["podIPs"] = json!([{"ip": pod_ip}]);
        }
        status["startTime"] = json!(now);
        status["containerStatuses"] = json!(
            containers
                .iter()
                .map(|(n, id)| container_status(n, id, container_state(phase, id), &now))
                .collect::<Vec<_>>()
        );
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status})
}

/// Adds init containers (spec and `status.initContainerStatuses`) to a [`pod`]: terminated
/// (exit 0) once the pod is past `Pending`, else running if it has a container ID, else waiting.
pub fn with_init_containers(mut pod: Value, containers: &[(&str, &str)]) -> Value {
    let now = rfc3339_now();
    let phase = pod["status"]["phase"]
        .as_str()
        .unwrap_or("Pending")
        .to_owned();
    pod["spec"]["initContainers"] = json!(
        containers
            .iter()
            .map(|(n, _)| container_spec(n))
            .collect::<Vec<_>>()
    );
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(n, id)| {
            let state = match phase.as_str() {
                "Pending" if id.is_empty() => State_::Waiting("PodInitializing"),
                "Pending" => State_::Running,
                "Failed" => State_::Terminated(1),
                _ => State_::Terminated(0),
            };
            container_status(n, id, state, &now)
        })
        .collect();
    pod["status"]["initContainerStatuses"] = json!(statuses);
    pod
}

/// Adds ephemeral (debug) containers (spec and `status.ephemeralContainerStatuses`) to a
/// [`pod`]: running if they have a container ID, else waiting.
pub fn with_ephemeral_containers(mut pod: Value, containers: &[(&str, &str)]) -> Value {
    let now = rfc3339_now();
    let target = pod["spec"]["containers"][0]["name"].clone();
    pod["spec"]["ephemeralContainers"] = json!(
        containers
            .iter()
            .map(|(n, _)| {
                let mut c = container_spec(n);
                c["targetContainerName"] = target.clone();
                c["stdin"] = json!(true);
                c["tty"] = json!(true);
                c
            })
            .collect::<Vec<_>>()
    );
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(n, id)| {
            let state = if id.is_empty() {
                State_::Waiting("ContainerCreating")
            } else {
                State_::Running
            };
            container_status(n, id, state, &now)
        })
        .collect();
    pod["status"]["ephemeralContainerStatuses"] = json!(statuses);
    pod
}

/// A `ConfigMap` with the given data.
pub fn configmap(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    })
}

/// A container's state in a status (named so as not to clash with the server's `State`).
#[allow(non_camel_case_types)]
enum State_ {
    Waiting(&'static str),
    Running,
    Terminated(i32),
}

fn container_state(phase: &str, id: &str) -> State_ {
    match phase {
        "Running" if !id.is_empty() => State_::Running,
        "Succeeded" => State_::Terminated(0),
        "Failed" => State_::Terminated(1),
        _ => State_::Waiting("ContainerCreating"),
    }
}

fn container_spec(name: &str) -> Value {
    json!({
        "name": name,
        "image": format!("registry.example/{name}:1.0"),
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    })
}

fn container_status(name: &str, id: &str, state: State_, now: &str) -> Value {
    let (state, ready, started) = match state {
        State_::Waiting(reason) => (json!({"waiting": {"reason": reason}}), false, false),
        State_::Running => (json!({"running": {"startedAt": now}}), true, true),
        State_::Terminated(code) => {
            let mut t = json!({
                "exitCode": code,
                "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": now,
                "finishedAt": now,
            });
            if !id.is_empty() {
                t["containerID"] = json!(id);
            }
            (json!({"terminated": t}), false, false)
        }
    };
    let image = format!("registry.example/{name}:1.0");
    let mut status = json!({
        "name": name,
        "state": state,
        "lastState": {},
        "ready": ready,
        "restartCount": 0,
        "image": image,
        "imageID": format!("registry.example/{name}@sha256:{}", "0".repeat(64)),
        "started": started,
    });
    if !id.is_empty() {
        status["containerID"] = json!(id);
    }
    status
}
