//! The `Identity` gRPC service: authenticates the caller (its bootstrap token, or under
//! `--kubernetes` its service-account token by TokenReview), finds the identity it is
//! entitled to, checks the CSR asks for exactly that, and signs. Each refusal's gRPC status
//! comes from `CertifyError::status`.

use std::sync::Arc;

use skiff_api::{
    pb::{
        self,
        identity_server::{Identity, IdentityServer},
    },
    resource::{MAX_NAME_LEN, resource_name},
};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::{
    Ca, csr,
    error::CertifyError,
    token_review::{ReviewError, ServiceAccount, TokenReviewer},
};
use crate::source::ConfigStore;

/// The `Identity` service; cheap to clone. Without a CA every call is FAILED_PRECONDITION.
#[derive(Clone)]
pub struct IdentityService {
    ca: Option<Arc<Ca>>,
    store: Arc<ConfigStore>,
    reviewer: Option<Arc<dyn TokenReviewer>>,
}

/// Who a caller proved to be.
#[derive(Debug)]
enum Caller {
    /// The holder of the workload's bootstrap token.
    Workload,
    /// A pod of this service account (its token, reviewed by the API server).
    ServiceAccount(ServiceAccount),
}

impl IdentityService {
    /// `store` is the config the discovery streams serve: a workload is known, and entitled
    /// to its SPIFFE ID, exactly when a proxy could stream as it.
    pub fn new(ca: Option<Arc<Ca>>, store: Arc<ConfigStore>) -> Self {
        IdentityService {
            ca,
            store,
            reviewer: None,
        }
    }

    /// Also accepts service-account tokens that `reviewer` vouches for: such a caller gets
    /// only `spiffe://<trust domain>/ns/<namespace>/sa/<account>` of its own account.
    pub fn with_token_review(mut self, reviewer: Arc<dyn TokenReviewer>) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    pub fn into_server(self) -> IdentityServer<Self> {
        IdentityServer::new(self)
    }

    /// Who the caller is: a bootstrap token for its workload first, then (with a reviewer) a
    /// service-account token.
    async fn authenticate(&self, req: &pb::CertifyRequest) -> Result<Caller, CertifyError> {
        let Some(ca) = &self.ca else {
            return Err(CertifyError::NoCa);
        };
        let workload = display_name(&req.namespace, &req.workload);
        if ca
            .tokens()
            .admits(&resource_name(&req.namespace, &req.workload), &req.token)
        {
            return Ok(Caller::Workload);
        }
        let token = req.token.trim();
        if let Some(reviewer) = &self.reviewer
            && !token.is_empty()
        {
            match reviewer.review(token).await {
                Ok(account) => return Ok(Caller::ServiceAccount(account)),
                Err(ReviewError::Unavailable(reason)) => {
                    return Err(CertifyError::ReviewUnavailable { workload, reason });
                }
                Err(e) => tracing::info!(%workload, reason = %e, "service-account token refused"),
            }
        }
        Err(CertifyError::TokenRefused { workload })
    }

    /// One Certify call of an authenticated caller, decided; no I/O but the config and CA
    /// loads.
    fn decide(
        &self,
        req: &pb::CertifyRequest,
        caller: Caller,
    ) -> Result<pb::CertifyResponse, CertifyError> {
        let Some(ca) = &self.ca else {
            return Err(CertifyError::NoCa);
        };
        let workload = display_name(&req.namespace, &req.workload);
        let refused = || CertifyError::TokenRefused {
            workload: workload.clone(),
        };
        let key = resource_name(&req.namespace, &req.workload);
        let config = self.store.current();
        // The workload must be one a proxy could stream as.
        let Some(declared) = config.workloads.get(&key) else {
            return Err(refused());
        };
        let granted = match caller {
            Caller::Workload => declared.message.spiffe_id.clone(),
            Caller::ServiceAccount(account) => {
                // A token of one namespace proves nothing about another's workloads.
                if account.namespace != req.namespace {
                    return Err(refused());
                }
                format!(
                    "spiffe://{}/ns/{}/sa/{}",
                    config.mesh.message.trust_domain, account.namespace, account.name
                )
            }
        };
        let checked = csr::check(&req.csr).map_err(|source| CertifyError::BadCsr {
            workload: workload.clone(),
            source,
        })?;
        if checked.spiffe_id != granted {
            return Err(CertifyError::NotEntitled {
                workload,
                requested: checked.spiffe_id,
                granted,
            });
        }
        let authority = ca.authority();
        let chain = authority
            .issue(
                &checked.public_key,
                &granted,
                ca.options().cert_lifetime,
                OffsetDateTime::now_utc(),
            )
            .map_err(|source| CertifyError::Sign {
                workload: workload.clone(),
                source,
            })?;
        tracing::info!(%workload, identity = %granted, "certificate issued");
        Ok(pb::CertifyResponse {
            certificate_chain: chain,
            trust_anchors: authority.trust_anchors().to_vec(),
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyResponse>, Status> {
        let req = request.get_ref();
        let decided = match self.authenticate(req).await {
            Ok(caller) => self.decide(req, caller),
            Err(e) => Err(e),
        };
        if let Some(ca) = &self.ca {
            ca.metrics().certificate(decided.is_ok()).inc();
        }
        match decided {
            Ok(rsp) => Ok(Response::new(rsp)),
            Err(e) => {
                tracing::info!(reason = %e, "certificate refused");
                Err(e.status())
            }
        }
    }
}

/// `<namespace>/<workload>` for messages and logs: the caller wrote it, so it is cut to a
/// resource name's length and its control characters escaped.
fn display_name(namespace: &str, workload: &str) -> String {
    let name = resource_name(namespace, workload);
    let cut: String = name.chars().take(MAX_NAME_LEN).collect();
    cut.escape_debug().to_string()
}
