//! Who may call the HTTP listeners. `/metrics` tells what every container on the node runs and
//! trace streams carry paths and argv, so in Kubernetes every request but the probes can be made
//! to authenticate and be authorized the way kube-rbac-proxy does it: the bearer token goes to a
//! TokenReview, the user it names to a SubjectAccessReview on the request's path as a
//! non-resource URL (`get /metrics`), and both answers are cached for a while so that scrapes
//! cost the API server nothing most of the time. Without Kubernetes, the trace streams can
//! require one fixed token read from a file.
use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, UserInfo},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, api::PostParams};
use lru::LruCache;
use prometheus::{IntCounterVec, Opts};

/// How long a TokenReview's answer is used, either way (kube-rbac-proxy's).
pub const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long a SubjectAccessReview that allowed is used (kube-rbac-proxy's).
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a SubjectAccessReview that denied is used: short, so that a grant takes effect soon.
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Answers kept per cache: enough for every scraper and reader of a cluster, bounded so that a
/// client sending new tokens cannot grow the agent.
const CACHE_ENTRIES: usize = 1024;
/// Longest a review may take before the request is answered 503, under the metrics listener's
/// request timeout so that the answer says why.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may call one listener.
#[derive(Clone)]
pub enum Access {
    /// Anyone who can connect.
    Open,
    /// Whoever sends this bearer token (`--traces-token-file`).
    Token(Arc<str>),
    /// Whoever the Kubernetes API server authenticates and authorizes (`--auth`).
    Reviews(Reviewer),
}

/// The state of [`check`]: who may call, and the listener's name for the metrics.
#[derive(Clone)]
pub struct Gate {
    access: Access,
    decisions: Decisions,
}

impl Gate {
    /// The gate of listener `listener` (`metrics`, `traces`).
    pub fn new(access: Access, listener: &str, metrics: &AuthMetrics) -> Self {
        let decision = |d: &str| metrics.decisions.with_label_values(&[listener, d]);
        Self {
            access,
            decisions: Decisions {
                allowed: decision("allowed"),
                unauthenticated: decision("unauthenticated"),
                forbidden: decision("forbidden"),
                error: decision("error"),
            },
        }
    }
}

#[derive(Clone)]
struct Decisions {
    allowed: prometheus::IntCounter,
    unauthenticated: prometheus::IntCounter,
    forbidden: prometheus::IntCounter,
    error: prometheus::IntCounter,
}

/// The metrics of the gates and the reviews.
#[derive(Clone, Debug)]
pub struct AuthMetrics {
    decisions: IntCounterVec,
    reviews: IntCounterVec,
    cache_hits: IntCounterVec,
}

impl AuthMetrics {
    /// The metrics, registered in `self_metrics` so that `/metrics` carries them.
    pub fn new(self_metrics: &crate::metrics::SelfMetrics) -> Result<Self, prometheus::Error> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "swoll_http_auth_decisions_total",
                "HTTP requests by what authentication and authorization decided: allowed, unauthenticated (401), forbidden (403) or error (503, the API server could not review them).",
            ),
            &["listener", "decision"],
        )?;
        let reviews = IntCounterVec::new(
            Opts::new(
                "swoll_http_auth_reviews_total",
                "TokenReviews and SubjectAccessReviews sent to the API server, by result: answered, or error (unreachable, refused, or too slow).",
            ),
            &["review", "result"],
        )?;
        let cache_hits = IntCounterVec::new(
            Opts::new(
                "swoll_http_auth_cache_hits_total",
                "Requests whose TokenReview or SubjectAccessReview was answered from the agent's cache.",
            ),
            &["review"],
        )?;
        for review in ["tokenreview", "subjectaccessreview"] {
            cache_hits.with_label_values(&[review]);
            for result in ["answered", "error"] {
                reviews.with_label_values(&[review, result]);
            }
        }
        self_metrics.register(Box::new(decisions.clone()))?;
        self_metrics.register(Box::new(reviews.clone()))?;
        self_metrics.register(Box::new(cache_hits.clone()))?;
        Ok(Self {
            decisions,
            reviews,
            cache_hits,
        })
    }
}

/// Asks the API server who sent a token and whether they may do what they ask, and remembers
/// the answers. Cheap to clone: the clones share the caches.
#[derive(Clone)]
pub struct Reviewer {
    client: kube::Client,
    /// The audiences a token must be valid for, one at least (`--auth-audience`); empty: the
    /// API server's own.
    audiences: Arc<[String]>,
    tokens: Arc<Mutex<LruCache<String, Expiring<Authenticated>>>>,
    access: Arc<Mutex<LruCache<String, Expiring<Authorized>>>>,
    metrics: AuthMetrics,
}

#[derive(Clone)]
struct Expiring<T> {
    until: Instant,
    value: T,
}

/// A TokenReview's answer.
#[derive(Clone)]
enum Authenticated {
    User(UserInfo),
    Rejected,
}

/// A SubjectAccessReview's answer.
#[derive(Clone)]
enum Authorized {
    Allowed,
    Denied(String),
}

/// Why a review could not be had: the request is answered 503, nothing is cached.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The API server refused the review or could not be reached.
    #[error("sending a {review} to the API server")]
    Api {
        /// `TokenReview` or `SubjectAccessReview`.
        review: &'static str,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The API server took longer than [`REVIEW_TIMEOUT`].
    #[error("the API server did not answer a {review} within {REVIEW_TIMEOUT:?}")]
    Timeout {
        /// `TokenReview` or `SubjectAccessReview`.
        review: &'static str,
    },
}

impl Reviewer {
    /// A reviewer asking the API server of `client` (which needs `create` on `tokenreviews` and
    /// `subjectaccessreviews`, as the built-in ClusterRole `system:auth-delegator` grants),
    /// accepting tokens of one of `audiences` (none: of the API server's audiences).
    pub fn new(client: kube::Client, metrics: AuthMetrics, audiences: Vec<String>) -> Self {
        let entries = NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Self {
            client,
            audiences: audiences.into(),
            tokens: Arc::new(Mutex::new(LruCache::new(entries))),
            access: Arc::new(Mutex::new(LruCache::new(entries))),
            metrics,
        }
    }

    async fn authenticate(&self, token: &str) -> Result<Authenticated, ReviewError> {
        if let Some(hit) = cached(&self.tokens, token) {
            self.metrics
                .cache_hits
                .with_label_values(&["tokenreview"])
                .inc();
            return Ok(hit);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.to_vec()),
            },
            ..TokenReview::default()
        };
        let api = Api::<TokenReview>::all(self.client.clone());
        let answer = self
            .send("tokenreview", api.create(&PostParams::default(), &review))
            .await
            .map_err(|e| e.in_review("TokenReview"))?;
        let status = answer.status.unwrap_or_default();
        // An authenticator that ignores audiences answers none: such an answer is no proof the
        // token was meant for us (the TokenReview API says so).
        let meant_for_us = self.audiences.is_empty()
            || status
                .audiences
                .as_ref()
                .is_some_and(|valid| valid.iter().any(|a| self.audiences.contains(a)));
        let value = match status.user {
            Some(user) if status.authenticated == Some(true) && meant_for_us => {
                Authenticated::User(user)
            }
            _ => Authenticated::Rejected,
        };
        remember(&self.tokens, token.to_owned(), TOKEN_TTL, value.clone());
        Ok(value)
    }

    async fn authorize(
        &self,
        user: &UserInfo,
        path: &str,
        verb: &str,
    ) -> Result<Authorized, ReviewError> {
        let spec = SubjectAccessReviewSpec {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(path.to_owned()),
                verb: Some(verb.to_owned()),
            }),
            resource_attributes: None,
        };
        // The whole spec is the key: the same user with other groups is asked about again.
        let key = serde_json::to_string(&spec).unwrap_or_default();
        if let Some(hit) = cached(&self.access, &key) {
            self.metrics
                .cache_hits
                .with_label_values(&["subjectaccessreview"])
                .inc();
            return Ok(hit);
        }
        let review = SubjectAccessReview {
            spec,
            ..SubjectAccessReview::default()
        };
        let api = Api::<SubjectAccessReview>::all(self.client.clone());
        let answer = self
            .send(
                "subjectaccessreview",
                api.create(&PostParams::default(), &review),
            )
            .await
            .map_err(|e| e.in_review("SubjectAccessReview"))?;
        let status = answer.status.unwrap_or_default();
        let (value, ttl) = if status.allowed {
            (Authorized::Allowed, ALLOWED_TTL)
        } else {
            let reason = status
                .reason
                .filter(|r| !r.is_empty())
                .or(status.evaluation_error)
                .unwrap_or_else(|| "no RBAC rule allows it".to_owned());
            (Authorized::Denied(reason), DENIED_TTL)
        };
        remember(&self.access, key, ttl, value.clone());
        Ok(value)
    }

    async fn send<T>(
        &self,
        review: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Unanswered> {
        let result = match tokio::time::timeout(REVIEW_TIMEOUT, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(Unanswered::Api(err)),
            Err(_) => Err(Unanswered::Timeout),
        };
        let label = if result.is_ok() { "answered" } else { "error" };
        self.metrics
            .reviews
            .with_label_values(&[review, label])
            .inc();
        result
    }
}

/// A review that got no answer, before it is named.
enum Unanswered {
    Api(kube::Error),
    Timeout,
}

impl Unanswered {
    fn in_review(self, review: &'static str) -> ReviewError {
        match self {
            Unanswered::Api(source) => ReviewError::Api { review, source },
            Unanswered::Timeout => ReviewError::Timeout { review },
        }
    }
}

fn cached<T: Clone>(cache: &Mutex<LruCache<String, Expiring<T>>>, key: &str) -> Option<T> {
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match cache.get(key) {
        Some(entry) if entry.until > Instant::now() => Some(entry.value.clone()),
        Some(_) => {
            cache.pop(key);
            None
        }
        None => None,
    }
}

fn remember<T>(cache: &Mutex<LruCache<String, Expiring<T>>>, key: String, ttl: Duration, value: T) {
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.put(
        key,
        Expiring {
            until: Instant::now() + ttl,
            value,
        },
    );
}

/// The verb a request asks for, as the API server names them (and RBAC rules list them).
fn verb(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "*",
    }
}

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The middleware of a [`Gate`] (`axum::middleware::from_fn_with_state`): 401 without a token
/// the gate accepts, 403 when the user may not do what they ask, 503 when the API server cannot
/// say (never an allow). The token is taken off the request before it goes on, and never logged.
pub async fn check(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let token = bearer(request.headers()).map(str::to_owned);
    request.headers_mut().remove(header::AUTHORIZATION);
    let decisions = &gate.decisions;
    match &gate.access {
        Access::Open => {}
        Access::Token(expected) => {
            if !token.is_some_and(|t| same_secret(t.as_bytes(), expected.as_bytes())) {
                decisions.unauthenticated.inc();
                return unauthorized();
            }
        }
        Access::Reviews(reviewer) => {
            let Some(token) = token else {
                decisions.unauthenticated.inc();
                return unauthorized();
            };
            let user = match reviewer.authenticate(&token).await {
                Ok(Authenticated::User(user)) => user,
                Ok(Authenticated::Rejected) => {
                    decisions.unauthenticated.inc();
                    return unauthorized();
                }
                Err(err) => {
                    decisions.error.inc();
                    return unavailable(&err);
                }
            };
            let path = request.uri().path().to_owned();
            let verb = verb(request.method());
            match reviewer.authorize(&user, &path, verb).await {
                Ok(Authorized::Allowed) => {}
                Ok(Authorized::Denied(reason)) => {
                    decisions.forbidden.inc();
                    let name = user.username.as_deref().unwrap_or("");
                    tracing::debug!(user = name, verb, path, reason, "request denied");
                    return (
                        StatusCode::FORBIDDEN,
                        format!("Forbidden (user={name}, verb={verb}, path={path}): {reason}\n"),
                    )
                        .into_response();
                }
                Err(err) => {
                    decisions.error.inc();
                    return unavailable(&err);
                }
            }
        }
    }
    decisions.allowed.inc();
    next.run(request).await
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "Unauthorized: send a valid bearer token\n",
    )
        .into_response()
}

fn unavailable(err: &ReviewError) -> Response {
    let message = crate::error_chain(err);
    tracing::warn!(error = message, "cannot review a request: answered 503");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        format!("cannot authorize the request now: {message}\n"),
    )
        .into_response()
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a bearer token from `path` (a mounted Secret's key): surrounding whitespace is not
/// part of it, and an empty file is an error, not "no token".
pub fn read_token(path: &std::path::Path) -> Result<Arc<str>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(Arc::from(token))
}

/// A token file that cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It could not be read.
    #[error("reading the token file {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It holds nothing but whitespace.
    #[error("the token file {path} is empty")]
    Empty {
        /// The file.
        path: std::path::PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_the_api_servers() {
        assert_eq!(verb(&Method::GET), "get");
        assert_eq!(verb(&Method::HEAD), "get");
        assert_eq!(verb(&Method::POST), "create");
        assert_eq!(verb(&Method::OPTIONS), "*");
    }

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
