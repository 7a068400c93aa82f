//! Callers proving themselves with a Kubernetes service-account token: the TokenReview the
//! CA asks the API server for (audience `skiff`, the projected token the injector mounts),
//! and what its answer grants, a service account. The API call is behind the `kubernetes`
//! feature; building the request and reading the answer are pure.

use std::{future::Future, pin::Pin};

use serde_json::{Value, json};

use crate::inject::TOKEN_AUDIENCE;

/// The service account a token was issued to, as the API server vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    /// The pod the token is bound to, when the API server says.
    pub pod: Option<String>,
}

/// Why a token proves nothing. Never contains the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the API server did not authenticate the token: {0}")]
    NotAuthenticated(String),
    #[error("the token is not for the audience {TOKEN_AUDIENCE:?}")]
    Audience,
    #[error("the token is not a service account's (user {0:?})")]
    NotServiceAccount(String),
    #[error("the TokenReview answer has no {0}")]
    Malformed(&'static str),
    /// The API server could not be asked: the caller may try again.
    #[error("TokenReview failed: {0}")]
    Unavailable(String),
}

/// Asks whoever can vouch for a token (the API server; tests stand in).
pub trait TokenReviewer: Send + Sync + 'static {
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<ServiceAccount, ReviewError>> + Send + 'a>>;
}

/// The TokenReview to create for `token`.
pub fn review_request(token: &str) -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": { "token": token, "audiences": [TOKEN_AUDIENCE] },
    })
}

/// What the created TokenReview's answer grants: authenticated, for the `skiff` audience
/// (an audience-unaware answer, with no audiences, is refused), as
/// `system:serviceaccount:<namespace>:<name>`.
pub fn granted(answer: &Value) -> Result<ServiceAccount, ReviewError> {
    let status = answer
        .get("status")
        .ok_or(ReviewError::Malformed("status"))?;
    if status.get("authenticated").and_then(Value::as_bool) != Some(true) {
        let why = status
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(ReviewError::NotAuthenticated(cut(why)));
    }
    let audiences = status.get("audiences").and_then(Value::as_array);
    if !audiences.is_some_and(|a| a.iter().any(|v| v.as_str() == Some(TOKEN_AUDIENCE))) {
        return Err(ReviewError::Audience);
    }
    let user = status.get("user").ok_or(ReviewError::Malformed("user"))?;
    let username = user
        .get("username")
        .and_then(Value::as_str)
        .ok_or(ReviewError::Malformed("user.username"))?;
    let mut parts = username.split(':');
    let (Some("system"), Some("serviceaccount"), Some(namespace), Some(name), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(ReviewError::NotServiceAccount(cut(username)));
    };
    if namespace.is_empty() || name.is_empty() {
        return Err(ReviewError::NotServiceAccount(cut(username)));
    }
    let pod = user
        .get("extra")
        .and_then(|e| e.get("authentication.kubernetes.io/pod-name"))
        .and_then(Value::as_array)
        .and_then(|names| names.first())
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(ServiceAccount {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        pod,
    })
}

/// An API-server string for a log line: bounded, control characters escaped.
fn cut(text: &str) -> String {
    let short: String = text.chars().take(200).collect();
    short.escape_debug().to_string()
}

/// The API server as the reviewer (`serve --kubernetes`).
#[cfg(feature = "kubernetes")]
#[derive(Clone)]
pub struct ApiReviewer {
    client: kube::Client,
}

#[cfg(feature = "kubernetes")]
impl ApiReviewer {
    pub fn new(client: kube::Client) -> Self {
        ApiReviewer { client }
    }

    async fn create(&self, token: &str) -> Result<ServiceAccount, ReviewError> {
        let unavailable = |e: &dyn std::fmt::Display| ReviewError::Unavailable(cut(&e.to_string()));
        let body = serde_json::to_vec(&review_request(token)).map_err(|e| unavailable(&e))?;
        let request = http::Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| unavailable(&e))?;
        let answer: Value = self
            .client
            .request(request)
            .await
            .map_err(|e| unavailable(&e))?;
        granted(&answer)
    }
}

#[cfg(feature = "kubernetes")]
impl TokenReviewer for ApiReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<ServiceAccount, ReviewError>> + Send + 'a>> {
        Box::pin(self.create(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Value) -> Value {
        json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status })
    }

    #[test]
    fn the_request_asks_for_the_skiff_audience() {
        let r = review_request("t0k3n");
        assert_eq!(r["spec"]["token"], "t0k3n");
        assert_eq!(r["spec"]["audiences"], json!(["skiff"]));
        assert_eq!(r["kind"], "TokenReview");
    }

    #[test]
    fn an_authenticated_service_account_token_grants_its_account() {
        let got = granted(&answer(json!({
            "authenticated": true,
            "audiences": ["skiff"],
            "user": {
                "username": "system:serviceaccount:shop:reviews",
                "extra": { "authentication.kubernetes.io/pod-name": ["reviews-1"] },
            },
        })));
        assert_eq!(
            got,
            Ok(ServiceAccount {
                namespace: "shop".into(),
                name: "reviews".into(),
                pod: Some("reviews-1".into()),
            })
        );
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                json!({ "authenticated": false, "error": "invalid bearer token" }),
                ReviewError::NotAuthenticated("invalid bearer token".into()),
            ),
            (
                json!({}),
                ReviewError::NotAuthenticated("no reason given".into()),
            ),
            (
                json!({ "authenticated": true, "user": { "username": "system:serviceaccount:a:b" } }),
                ReviewError::Audience,
            ),
            (
                json!({ "authenticated": true, "audiences": ["https://kubernetes.default.svc"],
                        "user": { "username": "system:serviceaccount:a:b" } }),
                ReviewError::Audience,
            ),
            (
                json!({ "authenticated": true, "audiences": ["skiff"], "user": { "username": "alice" } }),
                ReviewError::NotServiceAccount("alice".into()),
            ),
            (
                json!({ "authenticated": true, "audiences": ["skiff"],
                        "user": { "username": "system:serviceaccount:a:b:c" } }),
                ReviewError::NotServiceAccount("system:serviceaccount:a:b:c".into()),
            ),
            (
                json!({ "authenticated": true, "audiences": ["skiff"],
                        "user": { "username": "system:serviceaccount::b" } }),
                ReviewError::NotServiceAccount("system:serviceaccount::b".into()),
            ),
            (
                json!({ "authenticated": true, "audiences": ["skiff"], "user": {} }),
                ReviewError::Malformed("user.username"),
            ),
        ];
        for (status, want) in cases {
            assert_eq!(granted(&answer(status.clone())), Err(want), "{status}");
        }
        assert_eq!(granted(&json!({})), Err(ReviewError::Malformed("status")));
    }
}
