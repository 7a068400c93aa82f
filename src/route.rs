//! Request matching within one service (path, method, headers, query parameters; first match
//! wins) and the weighted choice among a route's backends. Compiled once per snapshot.

use std::{sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue, Method, request::Parts};
use rand::RngExt;
use regex::Regex;
use skiff_api::model;

use crate::{
    cluster::Cluster,
    resilience::{FaultPolicy, ResilienceMetrics, RetryPolicy},
    telemetry::RouteStats,
};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no service for authority {authority:?}")]
    UnknownService { authority: Option<String> },
    #[error("every backend of route {route} has weight 0")]
    NoBackend { route: Arc<str> },
}

/// Why a route could not be compiled (the proxy's own checks, past `skiff-api` validation).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{path}: invalid regular expression: {source}")]
    Regex { path: String, source: regex::Error },
    #[error("{path}: invalid {what}: {value:?}")]
    Invalid {
        path: String,
        what: &'static str,
        value: String,
    },
    #[error("{path}: no service {service:?} in namespace {namespace:?}")]
    UnknownBackend {
        path: String,
        service: String,
        namespace: String,
    },
}

#[derive(Debug)]
enum PathMatch {
    Exact(String),
    /// Stored without a trailing slash; `/` is stored as the empty string (matches all).
    Prefix(String),
    Regex(Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

#[derive(Debug)]
enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(v) => v.as_bytes() == value,
            ValueMatch::Regex(r) => std::str::from_utf8(value).is_ok_and(|s| r.is_match(s)),
        }
    }
}

#[derive(Debug, Default)]
struct Match {
    path: Option<PathMatch>,
    method: Option<Method>,
    headers: Vec<(HeaderName, ValueMatch)>,
    query: Vec<(String, ValueMatch)>,
}

impl Match {
    fn matches(&self, req: &Parts) -> bool {
        if let Some(m) = &self.method
            && req.method != m
        {
            return false;
        }
        if let Some(p) = &self.path
            && !p.matches(req.uri.path())
        {
            return false;
        }
        for (name, vm) in &self.headers {
            match req.headers.get(name) {
                Some(v) if vm.matches(v.as_bytes()) => {}
                _ => return false,
            }
        }
        if !self.query.is_empty() {
            let q = req.uri.query().unwrap_or("");
            for (name, vm) in &self.query {
                let found = q.split('&').any(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    k == name && vm.matches(v.as_bytes())
                });
                if !found {
                    return false;
                }
            }
        }
        true
    }
}

/// Finds a backend service's cluster by name and optional namespace.
pub type ResolveBackend<'a> = dyn Fn(&str, Option<&str>) -> Option<Arc<Cluster>> + 'a;

/// A route: what it matches, where it sends, its policy and its metrics.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    matches: Vec<Match>,
    backends: Vec<(Arc<Cluster>, u32)>,
    total_weight: u64,
    /// Until the response headers, over every attempt (504 `timeout` after).
    pub timeout: Option<Duration>,
    /// One attempt's limit (`timeouts.backendRequest`).
    pub per_try_timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub fault: Option<FaultPolicy>,
    pub stats: RouteStats,
}

impl Route {
    /// A route with no conditions, used when nothing matched or for a single target.
    pub fn fallback(name: &str, cluster: Arc<Cluster>, stats: RouteStats) -> Route {
        Route {
            name: name.into(),
            matches: Vec::new(),
            backends: vec![(cluster, 1)],
            total_weight: 1,
            timeout: None,
            per_try_timeout: None,
            retry: None,
            fault: None,
            stats,
        }
    }

    /// Compiles one mesh route of `own`'s service; `resolve` finds a backend service's cluster.
    pub fn compile(
        path: &str,
        name: &str,
        spec: &model::Route,
        own: &Arc<Cluster>,
        resolve: &ResolveBackend<'_>,
        stats: RouteStats,
        resilience: &ResilienceMetrics,
    ) -> Result<Route, CompileError> {
        let mut matches = Vec::with_capacity(spec.matches.len());
        for (i, m) in spec.matches.iter().enumerate() {
            matches.push(compile_match(&format!("{path}.matches[{i}]"), m)?);
        }
        let mut backends = Vec::with_capacity(spec.backend_refs.len().max(1));
        if spec.backend_refs.is_empty() {
            backends.push((own.clone(), 1));
        }
        for (i, b) in spec.backend_refs.iter().enumerate() {
            let cluster = resolve(&b.service, b.namespace.as_deref()).ok_or_else(|| {
                CompileError::UnknownBackend {
                    path: format!("{path}.backendRefs[{i}].service"),
                    service: b.service.clone(),
                    namespace: b
                        .namespace
                        .clone()
                        .unwrap_or_else(|| own.namespace.to_string()),
                }
            })?;
            backends.push((cluster, b.weight));
        }
        let total_weight = backends.iter().map(|(_, w)| u64::from(*w)).sum();
        Ok(Route {
            name: name.into(),
            matches,
            backends,
            total_weight,
            timeout: spec
                .timeouts
                .as_ref()
                .and_then(|t| t.request)
                .map(|d| d.get()),
            per_try_timeout: spec
                .timeouts
                .as_ref()
                .and_then(|t| t.backend_request)
                .map(|d| d.get()),
            retry: spec.retry.as_ref().map(RetryPolicy::compile),
            fault: spec
                .fault
                .as_ref()
                .map(|f| FaultPolicy::compile(f, resilience.faults(&own.name, name))),
            stats,
        })
    }

    fn matches(&self, req: &Parts) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(req))
    }

    /// Chooses a backend by weight.
    pub fn pick_backend(&self) -> Result<&Arc<Cluster>, RouteError> {
        if self.total_weight == 0 {
            return Err(RouteError::NoBackend {
                route: self.name.clone(),
            });
        }
        if let [(only, _)] = self.backends.as_slice() {
            return Ok(only);
        }
        let mut ticket = rand::rng().random_range(0..self.total_weight);
        for (cluster, w) in &self.backends {
            let w = u64::from(*w);
            if ticket < w {
                return Ok(cluster);
            }
            ticket -= w;
        }
        // Unreachable while total_weight is the sum of the weights; the last backend is a safe answer.
        self.backends
            .last()
            .map(|(c, _)| c)
            .ok_or(RouteError::NoBackend {
                route: self.name.clone(),
            })
    }

    pub fn backends(&self) -> impl Iterator<Item = (&Arc<Cluster>, u32)> {
        self.backends.iter().map(|(c, w)| (c, *w))
    }
}

fn anchored(path: &str, value: &str) -> Result<Regex, CompileError> {
    Regex::new(&format!("^(?:{value})$")).map_err(|source| CompileError::Regex {
        path: path.to_owned(),
        source,
    })
}

fn compile_match(path: &str, m: &model::RouteMatch) -> Result<Match, CompileError> {
    let path_match = match &m.path {
        None => None,
        Some(p) => Some(match p.kind {
            model::PathMatchType::Exact => PathMatch::Exact(p.value.clone()),
            model::PathMatchType::PathPrefix => {
                PathMatch::Prefix(p.value.trim_end_matches('/').to_owned())
            }
            model::PathMatchType::RegularExpression => {
                PathMatch::Regex(anchored(&format!("{path}.path.value"), &p.value)?)
            }
        }),
    };
    let method = match &m.method {
        None => None,
        Some(s) => Some(
            Method::from_bytes(s.as_bytes()).map_err(|_| CompileError::Invalid {
                path: format!("{path}.method"),
                what: "method",
                value: s.clone(),
            })?,
        ),
    };
    let value = |p: String, vm: &model::ValueMatch| -> Result<ValueMatch, CompileError> {
        Ok(match vm.kind {
            model::ValueMatchType::Exact => ValueMatch::Exact(vm.value.clone()),
            model::ValueMatchType::RegularExpression => ValueMatch::Regex(anchored(&p, &vm.value)?),
        })
    };
    let mut headers = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.iter().enumerate() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| CompileError::Invalid {
                path: format!("{path}.headers[{i}].name"),
                what: "header name",
                value: h.name.clone(),
            })?;
        headers.push((name, value(format!("{path}.headers[{i}].value"), h)?));
    }
    let mut query = Vec::with_capacity(m.query_params.len());
    for (i, q) in m.query_params.iter().enumerate() {
        query.push((
            q.name.clone(),
            value(format!("{path}.queryParams[{i}].value"), q)?,
        ));
    }
    Ok(Match {
        path: path_match,
        method,
        headers,
        query,
    })
}

/// A service's routes in order, and the route for requests none of them matches.
#[derive(Debug)]
pub struct Table {
    routes: Vec<Route>,
    default: Route,
}

impl Table {
    pub fn new(routes: Vec<Route>, default: Route) -> Self {
        Table { routes, default }
    }

    /// The first route that matches, else the default route.
    pub fn select(&self, req: &Parts) -> &Route {
        self.routes
            .iter()
            .find(|r| r.matches(req))
            .unwrap_or(&self.default)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// The authority a request names: the URI's (HTTP/2, absolute form), else `Host`.
pub fn authority(req: &Parts) -> Option<&str> {
    if let Some(a) = req.uri.authority() {
        return Some(a.as_str());
    }
    req.headers
        .get(http::header::HOST)
        .and_then(|h: &HeaderValue| h.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let p = PathMatch::Prefix("/api".into());
        assert!(p.matches("/api"));
        assert!(p.matches("/api/x"));
        assert!(!p.matches("/apix"));
        assert!(PathMatch::Prefix(String::new()).matches("/anything"));
    }

    #[test]
    fn match_needs_every_condition() {
        let m = compile_match(
            "m",
            &model::RouteMatch {
                path: Some(model::PathMatch {
                    kind: model::PathMatchType::RegularExpression,
                    value: "/v[0-9]+/.*".into(),
                }),
                method: Some("GET".into()),
                headers: vec![model::ValueMatch {
                    name: "x-canary".into(),
                    kind: model::ValueMatchType::Exact,
                    value: "true".into(),
                }],
                query_params: vec![model::ValueMatch {
                    name: "version".into(),
                    kind: model::ValueMatchType::Exact,
                    value: "2".into(),
                }],
            },
        )
        .unwrap();
        assert!(m.matches(&parts(
            "GET",
            "/v1/items?a=b&version=2",
            &[("x-canary", "true")]
        )));
        assert!(!m.matches(&parts(
            "POST",
            "/v1/items?version=2",
            &[("x-canary", "true")]
        )));
        assert!(!m.matches(&parts(
            "GET",
            "/v1/items?version=3",
            &[("x-canary", "true")]
        )));
        assert!(!m.matches(&parts("GET", "/v1/items?version=2", &[])));
        assert!(
            !m.matches(&parts(
                "GET",
                "/x/v1/items?version=2",
                &[("x-canary", "true")]
            )),
            "regex is anchored"
        );
    }

    #[test]
    fn bad_regex_names_its_path() {
        let err = anchored("services[0].routes[0].matches[0].path.value", "(").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("services[0].routes[0].matches[0].path.value:")
        );
    }
}
