//! A fake Kubernetes API server on loopback for the `serve --kubernetes` tests: an in-memory
//! object store with one global resourceVersion, list/watch (history, 410 Expired, pagination,
//! selectors), JSON and merge patches, and TokenReview. The real kube-rs client talks to it over
//! plain HTTP/1.1; nothing here knows about Skiff.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{body::Frame, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
    time::Instant,
};

/// The audience the API server itself accepts when a TokenReview names none.
pub const API_SERVER_AUDIENCE: &str = "https://kubernetes.default.svc";

/// How long a watch stays open when the request gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One resource type the fake serves.
struct KindInfo {
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    namespaced: bool,
    /// Field selector labels beyond `metadata.name` and `metadata.namespace`.
    fields: &'static [&'static str],
}

impl KindInfo {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: "Service",
        group: "",
        version: "v1",
        plural: "services",
        namespaced: true,
        fields: &[],
    },
    KindInfo {
        kind: "Pod",
        group: "",
        version: "v1",
        plural: "pods",
        namespaced: true,
        fields: &[
            "spec.nodeName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ],
    },
    KindInfo {
        kind: "ConfigMap",
        group: "",
        version: "v1",
        plural: "configmaps",
        namespaced: true,
        fields: &[],
    },
    KindInfo {
        kind: "Namespace",
        group: "",
        version: "v1",
        plural: "namespaces",
        namespaced: false,
        fields: &["status.phase"],
    },
    KindInfo {
        kind: "EndpointSlice",
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        namespaced: true,
        fields: &["addressType"],
    },
    KindInfo {
        kind: "MutatingWebhookConfiguration",
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "mutatingwebhookconfigurations",
        namespaced: false,
        fields: &[],
    },
];

fn kind_by_name(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

fn kind_by_path(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// A failed request, answered as a `Status` object.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Expired(String),
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn not_found(info: &KindInfo, name: &str) -> ApiError {
        ApiError::NotFound(format!("{} \"{name}\" not found", resource_name(info)))
    }

    fn code_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::AlreadyExists(_) => (StatusCode::CONFLICT, "AlreadyExists"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Expired(_) => (StatusCode::GONE, "Expired"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    fn status(&self) -> Value {
        let (code, reason) = self.code_reason();
        status_object(code.as_u16(), reason, &self.to_string())
    }

    fn response(&self) -> Response<Body> {
        json_response(self.code_reason().0, &self.status())
    }
}

/// `services`, or `mutatingwebhookconfigurations.admissionregistration.k8s.io`, as the real
/// server names a resource in its messages.
fn resource_name(info: &KindInfo) -> String {
    if info.group.is_empty() {
        info.plural.to_string()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
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

/// A TokenReview identity: the token authenticates as `system:serviceaccount:NS:SA`.
#[derive(Clone, Debug)]
pub struct TokenUser {
    pub namespace: String,
    pub service_account: String,
    /// (pod name, pod uid) the token is bound to.
    pub pod: Option<(String, String)>,
    /// The audiences the token was issued for.
    pub audiences: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change in the history, kept so a watch can resume from any later resourceVersion.
struct Change {
    kind: &'static str,
    rv: u64,
    ty: EventType,
    /// The object before a modification, to turn selector transitions into ADDED/DELETED.
    old: Option<Value>,
    object: Value,
}

/// What a list or watch selects: a namespace, label and field requirements.
#[derive(Default, Clone)]
struct Selector {
    namespace: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

#[derive(Clone, Debug)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug)]
struct FieldReq {
    path: String,
    value: String,
    equal: bool,
}

impl Selector {
    fn matches(&self, object: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && str_at(object, "metadata.namespace") != Some(ns.as_str())
        {
            return false;
        }
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|req| {
                let actual = str_at(object, &req.path).unwrap_or("");
                (actual == req.value) == req.equal
            })
    }
}

fn str_at<'a>(object: &'a Value, dotted: &str) -> Option<&'a str> {
    dotted
        .split('.')
        .try_fold(object, |v, key| v.get(key))
        .and_then(Value::as_str)
}

fn parse_label_selector(text: &str) -> Result<Vec<LabelReq>, ApiError> {
    let bad = || ApiError::BadRequest(format!("unable to parse requirement: {text:?}"));
    // split on commas outside parentheses
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    let mut reqs = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, ApiError> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let req = if let Some((k, v)) = term.split_once("!=") {
            LabelReq::NotEq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==") {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once('=') {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            LabelReq::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = term.split_once(" in ") {
            LabelReq::In(k.trim().into(), set(rest)?)
        } else if let Some(k) = term.strip_prefix('!') {
            LabelReq::NotExists(k.trim().into())
        } else if term.contains([' ', '(', ')']) {
            return Err(bad());
        } else {
            LabelReq::Exists(term.into())
        };
        reqs.push(req);
    }
    Ok(reqs)
}

fn parse_field_selector(info: &KindInfo, text: &str) -> Result<Vec<FieldReq>, ApiError> {
    let mut reqs = Vec::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
            (p, v, false)
        } else if let Some((p, v)) = term.split_once("==") {
            (p, v, true)
        } else if let Some((p, v)) = term.split_once('=') {
            (p, v, true)
        } else {
            return Err(ApiError::BadRequest(format!(
                "invalid selector: '{text}'; can't understand '{term}'"
            )));
        };
        let path = path.trim();
        let known =
            path == "metadata.name" || path == "metadata.namespace" || info.fields.contains(&path);
        if !known {
            return Err(ApiError::BadRequest(format!(
                "field label not supported: {path}"
            )));
        }
        reqs.push(FieldReq {
            path: path.into(),
            value: value.trim().into(),
            equal,
        });
    }
    Ok(reqs)
}

/// An open watch: the events it still wants go down `tx` as newline-terminated JSON.
struct OpenWatch {
    kind: &'static str,
    selector: Selector,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

/// The rest of a paginated list, kept as a snapshot so later pages agree with the first.
struct Page {
    rv: u64,
    items: Vec<Value>,
}

#[derive(Default)]
struct State {
    /// The global resourceVersion counter: the revision of the latest write.
    rv: u64,
    /// History before (and at) this revision is forgotten.
    horizon: u64,
    objects: BTreeMap<(&'static str, String, String), Value>,
    history: Vec<Change>,
    watches: Vec<OpenWatch>,
    list_counts: HashMap<String, usize>,
    pages: HashMap<String, Page>,
    next_page: u64,
    next_uid: u64,
    tokens: HashMap<String, TokenUser>,
    token_reviews: usize,
    patches: Vec<(String, String, Value)>,
    fail_next: usize,
}

fn event_line(ty: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": ty, "object": object }))
        .unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    Bytes::from(line)
}

/// What a watch with `selector` should see of `change`, if anything.
fn event_for(selector: &Selector, change: &Change) -> Option<Bytes> {
    let now = selector.matches(&change.object);
    let ty = match change.ty {
        EventType::Modified => {
            let before = change.old.as_ref().is_some_and(|o| selector.matches(o));
            match (before, now) {
                (true, true) => EventType::Modified,
                (false, true) => EventType::Added,
                (true, false) => EventType::Deleted,
                (false, false) => return None,
            }
        }
        ty if now => ty,
        _ => return None,
    };
    Some(event_line(ty.as_str(), &change.object))
}

impl State {
    fn new_uid(&mut self) -> String {
        self.next_uid += 1;
        format!("5f1e0000-0000-4000-8000-{:012x}", self.next_uid)
    }

    fn record(&mut self, change: Change) {
        self.watches.retain(|w| !w.tx.is_closed());
        for w in self.watches.iter().filter(|w| w.kind == change.kind) {
            if let Some(line) = event_for(&w.selector, &change) {
                let _ = w.tx.send(line);
            }
        }
        self.history.push(change);
    }

    /// Stores `object` as the current state of its key: a new resourceVersion, uid and
    /// creationTimestamp kept from the object it replaces (or made up), and an event.
    fn store(&mut self, info: &'static KindInfo, mut object: Value) -> Value {
        let ns = str_at(&object, "metadata.namespace")
            .unwrap_or("")
            .to_string();
        let name = str_at(&object, "metadata.name").unwrap_or("").to_string();
        let key = (info.kind, ns, name);
        let old = self.objects.get(&key).cloned();
        self.rv += 1;
        let rv = self.rv;
        let uid = match old.as_ref().and_then(|o| str_at(o, "metadata.uid")) {
            Some(uid) => uid.to_string(),
            None => self.new_uid(),
        };
        let created = old
            .as_ref()
            .and_then(|o| str_at(o, "metadata.creationTimestamp"))
            .map(str::to_string)
            .unwrap_or_else(now_rfc3339);
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), info.api_version().into());
            map.insert("kind".into(), info.kind.into());
        }
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), rv.to_string().into());
            meta.entry("uid").or_insert_with(|| uid.into());
            meta.entry("creationTimestamp")
                .or_insert_with(|| created.into());
            if !info.namespaced {
                meta.remove("namespace");
            }
        }
        self.objects.insert(key, object.clone());
        let ty = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Change {
            kind: info.kind,
            rv,
            ty,
            old,
            object: object.clone(),
        });
        object
    }

    fn remove(&mut self, info: &'static KindInfo, ns: &str, name: &str) -> Option<Value> {
        let mut object = self
            .objects
            .remove(&(info.kind, ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), rv.to_string().into());
        }
        self.record(Change {
            kind: info.kind,
            rv,
            ty: EventType::Deleted,
            old: None,
            object: object.clone(),
        });
        Some(object)
    }

    fn current(&self, info: &'static KindInfo, selector: &Selector) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((kind, _, _), object)| *kind == info.kind && selector.matches(object))
            .map(|(_, object)| object.clone())
            .collect()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Bumped whenever a watch opens, for `wait_for_watches`.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake API server; dropping it stops the server and every connection it holds.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = serving.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |req| {
                                let shared = shared.clone();
                                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                            });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        FakeApiServer { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server, default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Writes `dir/kubeconfig` pointing at this server (context `fake`, namespace `default`).
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: fake\n  user: {{}}\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n",
            url = self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Create or replace by kind + namespace + name; emits ADDED or MODIFIED.
    pub fn apply(&self, object: Value) {
        let kind = object["kind"].as_str().unwrap_or_default();
        let info = kind_by_name(kind).unwrap_or_else(|| panic!("the fake does not serve {kind:?}"));
        assert_eq!(
            object["apiVersion"].as_str(),
            Some(info.api_version().as_str()),
            "apiVersion of {kind}"
        );
        assert!(
            str_at(&object, "metadata.name").is_some(),
            "{kind} without metadata.name"
        );
        assert_eq!(
            str_at(&object, "metadata.namespace").is_some(),
            info.namespaced,
            "metadata.namespace of {kind}"
        );
        self.shared.lock().store(info, object);
    }

    /// Deletes one object (namespace "" for cluster-scoped kinds); emits DELETED.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let info = kind_by_name(kind).unwrap_or_else(|| panic!("the fake does not serve {kind:?}"));
        let removed = self.shared.lock().remove(info, namespace, name);
        assert!(removed.is_some(), "no {kind} {namespace}/{name} to delete");
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let info = kind_by_name(kind)?;
        let key = (info.kind, namespace.to_string(), name.to_string());
        self.shared.lock().objects.get(&key).cloned()
    }

    /// Ends every open watch response cleanly; clients re-watch from their last resourceVersion.
    pub fn break_watches(&self) {
        self.shared.lock().watches.clear();
    }

    /// Forgets the event history (like a compaction): resuming a watch from any
    /// resourceVersion handed out so far answers 410 Expired, and continue tokens expire.
    /// Open watches are not touched; combine with `break_watches` to force a relist.
    pub fn expire_history(&self) {
        let mut state = self.shared.lock();
        state.rv += 1;
        state.horizon = state.rv;
        state.history.clear();
        state.pages.clear();
    }

    /// Sends a BOOKMARK at the current resourceVersion to every open watch that allows them.
    pub fn send_bookmarks(&self) {
        let state = self.shared.lock();
        for w in state.watches.iter().filter(|w| w.bookmarks) {
            if let Some(info) = kind_by_name(w.kind) {
                let _ = w.tx.send(bookmark(info, state.rv, false));
            }
        }
    }

    /// How many watches of `kind` are open now.
    pub fn watch_count(&self, kind: &str) -> usize {
        let state = self.shared.lock();
        state
            .watches
            .iter()
            .filter(|w| w.kind == kind && !w.tx.is_closed())
            .count()
    }

    /// Resolves once at least `n` watch requests of `kind` are open.
    pub async fn wait_for_watches(&self, kind: &str, n: usize) {
        let mut changed = self.shared.changed.subscribe();
        while self.watch_count(kind) < n {
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// How many list (not watch) requests of `kind` were served.
    pub fn list_count(&self, kind: &str) -> usize {
        let state = self.shared.lock();
        state.list_counts.get(kind).copied().unwrap_or(0)
    }

    /// Adds a token TokenReviews will accept.
    pub fn add_token(&self, token: &str, user: TokenUser) {
        self.shared.lock().tokens.insert(token.to_string(), user);
    }

    /// How many TokenReviews were created.
    pub fn token_reviews(&self) -> usize {
        self.shared.lock().token_reviews
    }

    /// Every PATCH received: (path, content-type, body as JSON; `null` when it was not JSON).
    pub fn patches(&self) -> Vec<(String, String, Value)> {
        self.shared.lock().patches.clone()
    }

    /// The next `n` requests of any kind fail with 500 InternalError.
    pub fn fail_next(&self, n: usize) {
        self.shared.lock().fail_next = n;
    }
}

fn bookmark(info: &KindInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    let object = json!({
        "apiVersion": info.api_version(),
        "kind": info.kind,
        "metadata": metadata,
    });
    event_line("BOOKMARK", &object)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
    *response.status_mut() = code;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Decodes `%XX` escapes, and `+` as a space when `plus` (query strings).
fn percent_decode(text: &str, plus: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// The resource a request path names.
enum Target {
    /// A list/watch/create collection; `namespace` None for all namespaces.
    Collection {
        info: &'static KindInfo,
        namespace: Option<String>,
    },
    Item {
        info: &'static KindInfo,
        namespace: String,
        name: String,
    },
    TokenReviews,
}

fn route(path: &str) -> Option<Target> {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    if (group, version, rest) == ("authentication.k8s.io", "v1", &["tokenreviews"][..]) {
        return Some(Target::TokenReviews);
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let info = kind_by_path(group, version, rest.first()?)?;
    if namespace.is_some() && !info.namespaced {
        return None;
    }
    match rest {
        [_] => Some(Target::Collection { info, namespace }),
        [_, name] if info.namespaced == namespace.is_some() => Some(Target::Item {
            info,
            namespace: namespace.unwrap_or_default(),
            name: name.to_string(),
        }),
        _ => None,
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    match serve(shared, req).await {
        Ok(response) => response,
        Err(error) => error.response(),
    }
}

async fn serve(shared: &Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    {
        let mut state = shared.lock();
        if state.fail_next > 0 {
            state.fail_next -= 1;
            return Err(ApiError::Internal("injected failure".into()));
        }
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query());
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = body
        .collect()
        .await
        .map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?
        .to_bytes();
    let Some(target) = route(&path) else {
        return Err(ApiError::NotFound(
            "the server could not find the requested resource".into(),
        ));
    };
    match (parts.method, target) {
        (Method::POST, Target::TokenReviews) => token_review(shared, &body),
        (Method::GET, Target::Collection { info, namespace }) => {
            let selector = selector(info, namespace, &query)?;
            let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
            if watching {
                start_watch(shared, info, selector, &query)
            } else {
                list(shared, info, selector, &query)
            }
        }
        (Method::POST, Target::Collection { info, namespace }) => {
            create(shared, info, namespace, &body)
        }
        (
            Method::GET,
            Target::Item {
                info,
                namespace,
                name,
            },
        ) => {
            let state = shared.lock();
            let key = (info.kind, namespace, name);
            match state.objects.get(&key) {
                Some(object) => Ok(json_response(StatusCode::OK, object)),
                None => Err(ApiError::not_found(info, &key.2)),
            }
        }
        (
            Method::PUT,
            Target::Item {
                info,
                namespace,
                name,
            },
        ) => replace(shared, info, &namespace, &name, &body),
        (
            Method::DELETE,
            Target::Item {
                info,
                namespace,
                name,
            },
        ) => match shared.lock().remove(info, &namespace, &name) {
            Some(object) => Ok(json_response(StatusCode::OK, &object)),
            None => Err(ApiError::not_found(info, &name)),
        },
        (
            Method::PATCH,
            Target::Item {
                info,
                namespace,
                name,
            },
        ) => {
            let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
            shared
                .lock()
                .patches
                .push((path.clone(), content_type.clone(), parsed));
            patch(shared, info, &namespace, &name, &content_type, &body)
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn selector(
    info: &KindInfo,
    namespace: Option<String>,
    query: &HashMap<String, String>,
) -> Result<Selector, ApiError> {
    Ok(Selector {
        namespace,
        labels: match query.get("labelSelector") {
            Some(text) => parse_label_selector(text)?,
            None => Vec::new(),
        },
        fields: match query.get("fieldSelector") {
            Some(text) => parse_field_selector(info, text)?,
            None => Vec::new(),
        },
    })
}

fn list(
    shared: &Arc<Shared>,
    info: &'static KindInfo,
    selector: Selector,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 0,
        Some(Ok(limit)) => limit,
        Some(Err(_)) => return Err(ApiError::BadRequest("invalid limit".into())),
    };
    let mut state = shared.lock();
    *state.list_counts.entry(info.kind.to_string()).or_default() += 1;
    let (rv, mut items) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match state.pages.remove(token) {
            Some(page) => (page.rv, page.items),
            None => {
                return Err(ApiError::Expired(
                    "the provided continue parameter is too old to display a consistent \
                     list result; start a new list without it"
                        .into(),
                ));
            }
        },
        None => (state.rv, state.current(info, &selector)),
    };
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if limit > 0 && items.len() > limit {
        let rest = items.split_off(limit);
        state.next_page += 1;
        let token = format!("page-{}", state.next_page);
        metadata["continue"] = token.clone().into();
        metadata["remainingItemCount"] = rest.len().into();
        state.pages.insert(token, Page { rv, items: rest });
    }
    let body = json!({
        "apiVersion": info.api_version(),
        "kind": format!("{}List", info.kind),
        "metadata": metadata,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &body))
}

fn start_watch(
    shared: &Arc<Shared>,
    info: &'static KindInfo,
    selector: Selector,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let timeout = match query.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
        None => DEFAULT_WATCH_TIMEOUT,
        Some(Ok(secs)) => Duration::from_secs(secs),
        Some(Err(_)) => return Err(ApiError::BadRequest("invalid timeoutSeconds".into())),
    };
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let initial_events = query.get("sendInitialEvents").map(String::as_str) == Some("true");
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv}")))?,
        ),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut state = shared.lock();
    match from {
        Some(rv) if rv < state.horizon => {
            let status = ApiError::Expired(format!(
                "too old resource version: {rv} ({})",
                state.horizon
            ))
            .status();
            let _ = tx.send(event_line("ERROR", &status));
            drop(tx);
            return Ok(watch_response(rx, timeout));
        }
        Some(rv) => {
            for change in state
                .history
                .iter()
                .filter(|c| c.kind == info.kind && c.rv > rv)
            {
                if let Some(line) = event_for(&selector, change) {
                    let _ = tx.send(line);
                }
            }
        }
        None => {
            for object in state.current(info, &selector) {
                let _ = tx.send(event_line("ADDED", &object));
            }
            if initial_events {
                let _ = tx.send(bookmark(info, state.rv, true));
            }
        }
    }
    state.watches.push(OpenWatch {
        kind: info.kind,
        selector,
        bookmarks,
        tx,
    });
    drop(state);
    shared.changed.send_modify(|n| *n += 1);
    Ok(watch_response(rx, timeout))
}

fn watch_response(rx: mpsc::UnboundedReceiver<Bytes>, timeout: Duration) -> Response<Body> {
    let deadline = Instant::now() + timeout;
    let events = futures_util::stream::unfold(rx, move |mut rx| async move {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => Some((Ok::<_, Infallible>(Frame::data(line)), rx)),
            _ => None,
        }
    });
    let mut response = Response::new(StreamBody::new(events).boxed_unsync());
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let object: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not a JSON object: {e}")))?;
    if !object.is_object() {
        return Err(ApiError::BadRequest("the body is not a JSON object".into()));
    }
    Ok(object)
}

/// Checks an incoming object's kind and name and fills its namespace from the path.
fn check_object(
    info: &KindInfo,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<String, ApiError> {
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && kind != info.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind {kind} does not match {}",
            info.kind
        )));
    }
    let name = str_at(object, "metadata.name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::Invalid(format!(
                "{} is invalid: metadata.name: Required value: name is required",
                info.kind
            ))
        })?
        .to_string();
    if let Some(ns) = namespace {
        match str_at(object, "metadata.namespace") {
            Some(given) if given != ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent \
                     on the request"
                        .into(),
                ));
            }
            Some(_) => {}
            None => {
                object["metadata"]["namespace"] = ns.into();
            }
        }
    }
    Ok(name)
}

fn create(
    shared: &Arc<Shared>,
    info: &'static KindInfo,
    namespace: Option<String>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    if info.namespaced && namespace.is_none() {
        return Err(ApiError::MethodNotAllowed);
    }
    let mut object = parse_object(body)?;
    let name = check_object(info, namespace.as_deref(), &mut object)?;
    let mut state = shared.lock();
    let key = (info.kind, namespace.unwrap_or_default(), name);
    if state.objects.contains_key(&key) {
        return Err(ApiError::AlreadyExists(format!(
            "{} \"{}\" already exists",
            resource_name(info),
            key.2
        )));
    }
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
        meta.remove("uid");
        meta.remove("creationTimestamp");
    }
    let stored = state.store(info, object);
    Ok(json_response(StatusCode::CREATED, &stored))
}

fn replace(
    shared: &Arc<Shared>,
    info: &'static KindInfo,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let mut object = parse_object(body)?;
    let ns = info.namespaced.then_some(namespace);
    if check_object(info, ns, &mut object)? != name {
        return Err(ApiError::BadRequest(
            "the name of the object does not match the name on the URL".into(),
        ));
    }
    let mut state = shared.lock();
    let key = (info.kind, namespace.to_string(), name.to_string());
    let Some(current) = state.objects.get(&key).cloned() else {
        return Err(ApiError::not_found(info, name));
    };
    write_checked(&mut state, info, &current, object).map(|v| json_response(StatusCode::OK, &v))
}

/// Stores `object` over `current`: 409 on a stale resourceVersion, no write (and no event)
/// when nothing changed, as the real server does.
fn write_checked(
    state: &mut State,
    info: &'static KindInfo,
    current: &Value,
    mut object: Value,
) -> Result<Value, ApiError> {
    let current_rv = str_at(current, "metadata.resourceVersion").unwrap_or("");
    match str_at(&object, "metadata.resourceVersion") {
        Some(rv) if !rv.is_empty() && rv != current_rv => {
            return Err(ApiError::Conflict(format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                resource_name(info),
                str_at(current, "metadata.name").unwrap_or("")
            )));
        }
        _ => {}
    }
    if let Some(meta) = object["metadata"].as_object_mut() {
        for key in ["resourceVersion", "uid", "creationTimestamp"] {
            if let Some(v) = current["metadata"].get(key) {
                meta.insert(key.into(), v.clone());
            }
        }
    }
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), info.api_version().into());
        map.insert("kind".into(), info.kind.into());
    }
    if &object == current {
        return Ok(object);
    }
    Ok(state.store(info, object))
}

fn patch(
    shared: &Arc<Shared>,
    info: &'static KindInfo,
    namespace: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the patch is not JSON: {e}")))?;
    let mut state = shared.lock();
    let key = (info.kind, namespace.to_string(), name.to_string());
    let Some(current) = state.objects.get(&key).cloned() else {
        return Err(ApiError::not_found(info, name));
    };
    let patched = match media {
        "application/json-patch+json" => json_patch(&current, &patch).map_err(ApiError::Invalid)?,
        "application/merge-patch+json" => {
            let mut doc = current.clone();
            merge_patch(&mut doc, &patch);
            doc
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other}); this fake \
                 accepts application/json-patch+json and application/merge-patch+json"
            )));
        }
    };
    if !patched.is_object() {
        return Err(ApiError::Invalid(
            "the patched object is not an object".into(),
        ));
    }
    for field in ["metadata.name", "metadata.namespace"] {
        if str_at(&patched, field) != str_at(&current, field) {
            return Err(ApiError::Invalid(format!(
                "{field}: the patch may not change it"
            )));
        }
    }
    let stored = write_checked(&mut state, info, &current, patched)?;
    Ok(json_response(StatusCode::OK, &stored))
}

/// Applies an RFC 6902 patch to a copy of `doc`; the error says which operation failed.
fn json_patch(doc: &Value, patch: &Value) -> Result<Value, String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    let mut doc = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        let fail = |why: String| format!("JSON patch operation {i} ({op}): {why}");
        let name = op["op"].as_str().ok_or_else(|| fail("no op".into()))?;
        let path = op["path"].as_str().ok_or_else(|| fail("no path".into()))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| fail("no value".into()))
        };
        let from = || op["from"].as_str().ok_or_else(|| fail("no from".into()));
        match name {
            "add" => pointer_add(&mut doc, path, value()?).map_err(fail)?,
            "remove" => {
                pointer_remove(&mut doc, path).map_err(fail)?;
            }
            "replace" => {
                pointer_remove(&mut doc, path).map_err(fail)?;
                pointer_add(&mut doc, path, value()?).map_err(fail)?;
            }
            "test" => {
                let expected = value()?;
                match doc.pointer(path) {
                    Some(actual) if *actual == expected => {}
                    Some(actual) => {
                        return Err(fail(format!("test failed: found {actual}")));
                    }
                    None => return Err(fail("test failed: the path does not exist".into())),
                }
            }
            "move" => {
                let moved = pointer_remove(&mut doc, from()?).map_err(fail)?;
                pointer_add(&mut doc, path, moved).map_err(fail)?;
            }
            "copy" => {
                let copied = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| fail("from does not exist".into()))?;
                pointer_add(&mut doc, path, copied).map_err(fail)?;
            }
            other => return Err(fail(format!("unknown op {other:?}"))),
        }
    }
    Ok(doc)
}

/// Splits a JSON pointer into its parent pointer and unescaped last token.
fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let cut = path
        .rfind('/')
        .ok_or_else(|| format!("{path:?} is not a JSON pointer"))?;
    let last = path[cut + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..cut], last))
}

fn pointer_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| format!("index {last:?} is out of range"))?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("the parent of {path:?} does not exist")),
    }
}

fn pointer_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("{path:?} does not exist");
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(missing),
        Some(Value::Array(items)) => {
            let index = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .ok_or_else(missing)?;
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}

/// RFC 7386: objects merge key by key, `null` deletes, anything else replaces.
fn merge_patch(doc: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    if let Value::Object(map) = doc {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn token_review(shared: &Arc<Shared>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let mut review = parse_object(body)?;
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let requested: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut state = shared.lock();
    state.token_reviews += 1;
    let status = match state.tokens.get(&token) {
        None => json!({ "user": {}, "error": "invalid bearer token" }),
        Some(user) => {
            let wanted = if requested.is_empty() {
                vec![API_SERVER_AUDIENCE.to_string()]
            } else {
                requested.clone()
            };
            let common: Vec<&String> = wanted
                .iter()
                .filter(|a| user.audiences.contains(a))
                .collect();
            if common.is_empty() {
                json!({
                    "user": {},
                    "error": format!(
                        "token audiences {:?} do not include any of the requested audiences {:?}",
                        user.audiences, wanted
                    ),
                })
            } else {
                let mut extra = Map::new();
                if let Some((pod, pod_uid)) = &user.pod {
                    extra.insert("authentication.kubernetes.io/pod-name".into(), json!([pod]));
                    extra.insert(
                        "authentication.kubernetes.io/pod-uid".into(),
                        json!([pod_uid]),
                    );
                }
                json!({
                    "authenticated": true,
                    "user": {
                        "username": format!(
                            "system:serviceaccount:{}:{}",
                            user.namespace, user.service_account
                        ),
                        "uid": service_account_uid(&user.namespace, &user.service_account),
                        "groups": [
                            "system:serviceaccounts",
                            format!("system:serviceaccounts:{}", user.namespace),
                            "system:authenticated",
                        ],
                        "extra": extra,
                    },
                    "audiences": common,
                })
            }
        }
    };
    review["apiVersion"] = "authentication.k8s.io/v1".into();
    review["kind"] = "TokenReview".into();
    review["metadata"] = json!({ "creationTimestamp": null });
    review["status"] = status;
    Ok(json_response(StatusCode::CREATED, &review))
}

/// A stable uid per service account (FNV-1a of its name), shaped like a UUID.
fn service_account_uid(namespace: &str, name: &str) -> String {
    let hash = format!("{namespace}/{name}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        hash >> 32,
        (hash >> 16) & 0xffff,
        hash & 0xfff,
        (hash >> 20) & 0xfff,
        hash & 0xffff_ffff_ffff
    )
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // days since 1970-01-01 to a civil date (proleptic Gregorian)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
