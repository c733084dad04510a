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
//!   outage, or the server's drop;
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
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value, json};

/// The token written into [`FakeApiServer::kubeconfig`] (the server accepts any or none).
pub const TOKEN: &str = "fake-token";

/// Watch events of at most this many changes are kept; older resourceVersions get 410.
const HISTORY_LIMIT: usize = 10_000;
/// How long an idle watch waits between checks (shutdown, outage, peer gone).
const WATCH_POLL: Duration = Duration::from_millis(200);
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

/// The fake API server; dropping it stops its threads and closes every connection.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    requests: AtomicUsize,
    shutdown: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
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
    /// Bumped to make open watches end (outage, cut).
    cut_epoch: u64,
    conns: HashMap<u64, TcpStream>,
    next_conn: u64,
    open_watches: usize,
    log: Vec<String>,
    uids: u64,
    reviews: Reviews,
}

/// What the review endpoints answer from.
#[derive(Default)]
struct Reviews {
    /// token → (username, groups)
    tokens: HashMap<String, (String, Vec<String>)>,
    /// (username or group, non-resource URL (a trailing `*` matches any rest), verb)
    grants: Vec<(String, String, String)>,
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    close: bool,
    line: String,
    body: Vec<u8>,
}

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 and a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
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
                conns: HashMap::new(),
                next_conn: 0,
                open_watches: 0,
                log: Vec::new(),
                uids: 0,
                reviews: Reviews::default(),
            }),
            changed: Condvar::new(),
            requests: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("fake-apiserver".into())
                .spawn(move || accept_loop(&shared, &listener))
                .expect("spawning the fake API server")
        };
        FakeApiServer {
            addr,
            shared,
            accept: Some(accept),
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
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.objects.insert(key, obj.clone());
        st.record(Change {
            rv,
            plural,
            old,
            new: Some(obj.clone()),
        });
        drop(st);
        self.shared.changed.notify_all();
        obj
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
        self.shared.changed.notify_all();
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

    /// Starts (`Some`) or ends (`None`) an outage of the given kind; starting one cuts every
    /// open connection.
    pub fn set_outage(&self, outage: Option<Outage>) {
        let mut st = self.shared.lock();
        st.outage = outage;
        if outage.is_some() {
            st.cut_all();
        }
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Whether the server is down.
    pub fn is_down(&self) -> bool {
        self.shared.lock().outage.is_some()
    }

    /// Closes every open connection (watches end mid-stream, without their final chunk), as a
    /// load balancer or an API server restart does; the server stays up.
    pub fn cut_connections(&self) {
        self.shared.lock().cut_all();
        self.shared.changed.notify_all();
    }

    /// Forgets the change history: a watch from any older resourceVersion (including the ones
    /// open now) gets a 410 `Expired` error and has to relist.
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.history.clear();
        st.compacted = st.rv;
        drop(st);
        self.shared.changed.notify_all();
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

/// Reviews: who a token is, and what they may get.
impl FakeApiServer {
    /// Makes TokenReviews of `token` answer: user `username` in `groups` (and
    /// `system:authenticated`). Unknown tokens are not authenticated.
    pub fn add_token(&self, token: &str, username: &str, groups: &[&str]) {
        let mut groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        groups.push("system:authenticated".to_owned());
        self.shared
            .lock()
            .reviews
            .tokens
            .insert(token.to_owned(), (username.to_owned(), groups));
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
            let status = match reviews.tokens.get(token) {
                Some((username, groups)) => json!({
                    "authenticated": true,
                    "user": {"username": username, "uid": format!("uid-{username}"), "groups": groups},
                    "audiences": ["https://kubernetes.default.svc"],
                }),
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
        {
            // Under the lock, so that no connection gets registered after the cut.
            let mut st = self.shared.lock();
            self.shared.shutdown.store(true, Ordering::SeqCst);
            st.cut_all();
        }
        self.shared.changed.notify_all();
        // Wakes the accept loop, which then sees the shutdown flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

    fn cut_all(&mut self) {
        self.cut_epoch += 1;
        for conn in self.conns.values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    fn log(&mut self, line: String) {
        if self.log.len() < 100_000 {
            self.log.push(line);
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(_) if shared.shutdown.load(Ordering::SeqCst) => break,
            Err(_) => {
                // Out of fds or the like: don't spin.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut st = shared.lock();
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        if st.outage == Some(Outage::Reset) {
            shared.requests.fetch_add(1, Ordering::SeqCst);
            st.log("RESET".to_owned());
            drop(st);
            reset(stream);
            continue;
        }
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let id = st.next_conn;
        st.next_conn += 1;
        st.conns.insert(id, clone);
        drop(st);
        let conn_shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("fake-apiserver-conn".into())
            .spawn(move || {
                serve_connection(&conn_shared, stream);
                if let Some(conn) = conn_shared.lock().conns.remove(&id) {
                    let _ = conn.shutdown(Shutdown::Both);
                }
            });
        let mut threads = shared.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|t| !t.is_finished());
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(_) => {
                if let Some(conn) = shared.lock().conns.remove(&id) {
                    let _ = conn.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

/// Closes with SO_LINGER 0, so the peer sees a TCP reset instead of an orderly close.
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is a live socket owned by `stream`, and `linger` is a valid `struct linger`
    // whose size is passed along.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

fn serve_connection(shared: &Arc<Shared>, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(req)) => req,
            _ => return,
        };
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let outage = {
            let mut st = shared.lock();
            st.log(req.line.clone());
            st.outage
        };
        match outage {
            Some(Outage::Reset) => return reset(out),
            Some(Outage::Unavailable) => {
                let body = status_json(503, "ServiceUnavailable", "the fake API server is down");
                let _ = respond(
                    &mut out,
                    503,
                    "Service Unavailable",
                    "application/json",
                    &body.to_string(),
                    true,
                );
                return;
            }
            None => {}
        }
        let keep_alive = match handle(shared, &req, &mut out) {
            Ok(keep_alive) => keep_alive,
            Err(_) => return,
        };
        if !keep_alive || req.close {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    // Skips stray empty lines between requests.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let request_line = line.trim_end().to_owned();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut content_length = 0usize;
    let mut close = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
    }
    let mut body = Vec::new();
    if content_length > 0 {
        reader
            .by_ref()
            .take(content_length as u64)
            .read_to_end(&mut body)?;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), parse_query(q)),
        None => (target.clone(), Vec::new()),
    };
    Ok(Some(Request {
        method,
        path,
        query,
        close,
        line: request_line,
        body,
    }))
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// Handles one request; returns whether the connection can serve another.
fn handle(shared: &Arc<Shared>, req: &Request, out: &mut TcpStream) -> io::Result<bool> {
    let json_reply = |out: &mut TcpStream, code: u16, body: &Value| {
        respond(
            out,
            code,
            reason_phrase(code),
            "application/json",
            &body.to_string(),
            false,
        )
    };
    if req.method == "POST"
        && let Some((code, body)) = review(&shared.lock().reviews, req)
    {
        json_reply(out, code, &body)?;
        return Ok(true);
    }
    if req.method == "PATCH" {
        let (code, body) = if req.path.starts_with(CONFIGMAP_PATH) {
            patch_configmap(shared, req)
        } else {
            patch_status(shared, req)
        };
        json_reply(out, code, &body)?;
        return Ok(true);
    }
    if req.method != "GET" {
        let body = status_json(
            405,
            "MethodNotAllowed",
            "the fake API server only serves GET",
        );
        json_reply(out, 405, &body)?;
        return Ok(true);
    }
    match req.path.trim_end_matches('/') {
        "/version" => {
            let body = json!({
                "major": "1", "minor": "37", "gitVersion": "v1.37.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25", "compiler": "gc",
                "platform": "linux/amd64"
            });
            json_reply(out, 200, &body)?;
            return Ok(true);
        }
        "/healthz" | "/livez" | "/readyz" => {
            respond(out, 200, "OK", "text/plain", "ok", false)?;
            return Ok(true);
        }
        "/api" => {
            let body = json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []});
            json_reply(out, 200, &body)?;
            return Ok(true);
        }
        _ => {}
    }
    let target = match route(&shared.lock(), &req.path) {
        Ok(target) => target,
        Err(message) => {
            json_reply(out, 404, &status_json(404, "NotFound", &message))?;
            return Ok(true);
        }
    };
    let mut filter = match Filter::new(req, &target) {
        Ok(filter) => filter,
        Err(message) => {
            json_reply(out, 400, &status_json(400, "BadRequest", &message))?;
            return Ok(true);
        }
    };
    if req.flag("watch") {
        if let Some(name) = &target.name {
            filter.fields.push(FieldReq {
                path: "metadata.name".into(),
                equal: true,
                value: name.clone(),
            });
        }
        watch(shared, req, &target, &filter, out)?;
        return Ok(false);
    }
    let (code, body) = match &target.name {
        Some(name) => get_one(&shared.lock(), &target, name),
        None => list(&shared.lock(), req, &target, &filter),
    };
    json_reply(out, code, &body)?;
    Ok(true)
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

fn watch(
    shared: &Arc<Shared>,
    req: &Request,
    target: &Target,
    filter: &Filter,
    out: &mut TcpStream,
) -> io::Result<()> {
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let bookmarks = req.flag("allowWatchBookmarks");
    let send_initial = req.flag("sendInitialEvents");
    let rv_param = req.param("resourceVersion").unwrap_or("");

    let mut st = shared.lock();
    let epoch = st.cut_epoch;
    let mut initial = Vec::new();
    let mut expired = None;
    let mut from = st.rv;
    if send_initial || rv_param.is_empty() || rv_param == "0" {
        for ((plural, _, _), obj) in &st.objects {
            if *plural == target.plural && filter.matches(obj) {
                initial.push(event("ADDED", obj));
            }
        }
    } else {
        match rv_param.parse::<u64>() {
            Ok(n) if n < st.compacted => expired = Some(n),
            Ok(n) => from = n,
            Err(_) => {
                drop(st);
                let body = status_json(
                    400,
                    "BadRequest",
                    &format!("invalid resource version: {rv_param}"),
                );
                return respond(
                    out,
                    400,
                    "Bad Request",
                    "application/json",
                    &body.to_string(),
                    true,
                );
            }
        }
    }
    let compacted = st.compacted;
    st.open_watches += 1;
    drop(st);
    let result = (|| {
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\nDate: {}\r\n\r\n",
            http_date()
        )?;
        out.flush()?;
        if let Some(n) = expired {
            write_chunk(out, &gone(n, compacted))?;
            return write_chunk(out, "");
        }
        for e in &initial {
            write_chunk(out, e)?;
        }
        if send_initial && bookmarks {
            let bm = json!({"type": "BOOKMARK", "object": {
                "kind": target.info.kind, "apiVersion": target.info.api_version,
                "metadata": {"resourceVersion": from.to_string(),
                             "annotations": {"k8s.io/initial-events-end": "true"}}}});
            write_chunk(out, &format!("{bm}\n"))?;
        }
        stream_changes(
            shared, target, filter, out, from, epoch, deadline, bookmarks,
        )
    })();
    shared.lock().open_watches -= 1;
    result
}

#[allow(clippy::too_many_arguments)]
fn stream_changes(
    shared: &Arc<Shared>,
    target: &Target,
    filter: &Filter,
    out: &mut TcpStream,
    mut from: u64,
    epoch: u64,
    deadline: Instant,
    bookmarks: bool,
) -> io::Result<()> {
    let mut last_sent = Instant::now();
    let mut reported = from;
    loop {
        let mut lines = String::new();
        let mut ended = false;
        {
            let mut st = shared.lock();
            loop {
                if shared.shutdown.load(Ordering::SeqCst)
                    || st.cut_epoch != epoch
                    || st.outage.is_some()
                {
                    // Cut: no final chunk, the client sees the stream break.
                    return Ok(());
                }
                if from < st.compacted {
                    lines.push_str(&gone(from, st.compacted));
                    ended = true;
                    break;
                }
                for change in st
                    .history
                    .iter()
                    .filter(|c| c.rv > from && c.plural == target.plural)
                {
                    if let Some(e) = change_event(change, filter) {
                        lines.push_str(&e);
                    }
                }
                if !lines.is_empty() {
                    from = st.rv;
                    reported = from;
                    break;
                }
                from = st.rv;
                let now = Instant::now();
                if now >= deadline {
                    ended = true;
                    break;
                }
                if bookmarks && from > reported && now.duration_since(last_sent) >= BOOKMARK_EVERY {
                    let bm = json!({"type": "BOOKMARK", "object": {
                        "kind": target.info.kind, "apiVersion": target.info.api_version,
                        "metadata": {"resourceVersion": from.to_string()}}});
                    lines = format!("{bm}\n");
                    reported = from;
                    break;
                }
                let wait = WATCH_POLL.min(deadline - now);
                st = shared
                    .changed
                    .wait_timeout(st, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                if peer_closed(out) {
                    return Ok(());
                }
            }
        }
        if !lines.is_empty() {
            write_chunk(out, &lines)?;
            last_sent = Instant::now();
        }
        if ended {
            return write_chunk(out, "");
        }
    }
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

/// True when the client has closed its end (checked without blocking).
fn peer_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 1];
    let closed = match stream.peek(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    closed
}

fn write_chunk(out: &mut TcpStream, data: &str) -> io::Result<()> {
    let mut buf = Vec::with_capacity(data.len() + 16);
    write!(buf, "{:x}\r\n", data.len())?;
    buf.extend_from_slice(data.as_bytes());
    buf.extend_from_slice(b"\r\n");
    out.write_all(&buf)?;
    out.flush()
}

fn respond(
    out: &mut TcpStream,
    code: u16,
    reason: &str,
    content_type: &str,
    body: &str,
    close: bool,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(body.len() + 200);
    write!(
        buf,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\nDate: {}\r\n{}\r\n",
        body.len(),
        http_date(),
        if close { "Connection: close\r\n" } else { "" }
    )?;
    buf.extend_from_slice(body.as_bytes());
    out.write_all(&buf)?;
    out.flush()
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        503 => "Service Unavailable",
        _ => "Error",
    }
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
    let patch: Value = match serde_json::from_slice(&req.body) {
        Ok(patch) => patch,
        Err(err) => return (400, status_json(400, "BadRequest", &err.to_string())),
    };
    let key = ("traces".to_owned(), (*ns).to_owned(), (*name).to_owned());
    let mut st = shared.lock();
    let Some(old) = st.objects.get(&key).cloned() else {
        let msg = format!("traces.tools.swoll.criticalstack.com \"{name}\" not found");
        return (404, status_json(404, "NotFound", &msg));
    };
    if let Some(wanted) = patch["metadata"]["resourceVersion"].as_str()
        && Some(wanted) != old["metadata"]["resourceVersion"].as_str()
    {
        let msg = format!(
            "Operation cannot be fulfilled on traces.tools.swoll.criticalstack.com \"{name}\": \
             the object has been modified; please apply your changes to the latest version and \
             try again"
        );
        return (409, status_json(409, "Conflict", &msg));
    }
    let mut obj = old.clone();
    if let Some(status) = patch.get("status") {
        merge_patch(&mut obj["status"], status);
    }
    st.rv += 1;
    let rv = st.rv;
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.objects.insert(key, obj.clone());
    st.record(Change {
        rv,
        plural: "traces".to_owned(),
        old: Some(old),
        new: Some(obj.clone()),
    });
    drop(st);
    shared.changed.notify_all();
    (200, obj)
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
    let mut patch: Value = match serde_json::from_slice(&req.body) {
        Ok(patch) => patch,
        Err(err) => return (400, status_json(400, "BadRequest", &err.to_string())),
    };
    let key = (
        "configmaps".to_owned(),
        (*ns).to_owned(),
        (*name).to_owned(),
    );
    let mut st = shared.lock();
    let Some(old) = st.objects.get(&key).cloned() else {
        let msg = format!("configmaps \"{name}\" not found");
        return (404, status_json(404, "NotFound", &msg));
    };
    let wanted = patch["metadata"]
        .as_object_mut()
        .and_then(|m| m.remove("resourceVersion"));
    if let Some(wanted) = wanted
        && wanted.as_str() != old["metadata"]["resourceVersion"].as_str()
    {
        let msg = format!(
            "Operation cannot be fulfilled on configmaps \"{name}\": the object has been \
             modified; please apply your changes to the latest version and try again"
        );
        return (409, status_json(409, "Conflict", &msg));
    }
    let mut obj = old.clone();
    if let Some(metadata) = patch.get("metadata") {
        merge_patch(&mut obj["metadata"], metadata);
    }
    st.rv += 1;
    let rv = st.rv;
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.objects.insert(key, obj.clone());
    st.record(Change {
        rv,
        plural: "configmaps".to_owned(),
        old: Some(old),
        new: Some(obj.clone()),
    });
    drop(st);
    shared.changed.notify_all();
    (200, obj)
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

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn now_parts() -> (i64, u32, u32, u64, i64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil(days);
    (y, m, d, secs % 86_400, days)
}

/// Now as the API server writes timestamps: `2026-01-02T03:04:05Z`.
pub fn rfc3339_now() -> String {
    let (y, m, d, s, _) = now_parts();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn http_date() -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, s, days) = now_parts();
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
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
