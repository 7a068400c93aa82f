//! The `Identity` gRPC service: authenticates the caller by its bootstrap token, finds the
//! identity its workload is entitled to in the current mesh config, checks the CSR asks for
//! exactly that, and signs. Each refusal's gRPC status comes from `CertifyError::status`.

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

use super::{Ca, csr, error::CertifyError};
use crate::source::ConfigStore;

/// The `Identity` service; cheap to clone. Without a CA every call is FAILED_PRECONDITION.
#[derive(Clone)]
pub struct IdentityService {
    ca: Option<Arc<Ca>>,
    store: Arc<ConfigStore>,
}

impl IdentityService {
    /// `store` is the config the discovery streams serve: a workload is known, and entitled
    /// to its SPIFFE ID, exactly when a proxy could stream as it.
    pub fn new(ca: Option<Arc<Ca>>, store: Arc<ConfigStore>) -> Self {
        IdentityService { ca, store }
    }

    pub fn into_server(self) -> IdentityServer<Self> {
        IdentityServer::new(self)
    }

    /// One Certify call, decided; no I/O but the config and CA loads.
    fn decide(&self, req: &pb::CertifyRequest) -> Result<pb::CertifyResponse, CertifyError> {
        let Some(ca) = &self.ca else {
            return Err(CertifyError::NoCa);
        };
        let workload = display_name(&req.namespace, &req.workload);
        let refused = || CertifyError::TokenRefused {
            workload: workload.clone(),
        };
        let key = resource_name(&req.namespace, &req.workload);
        if !ca.tokens().admits(&key, &req.token) {
            return Err(refused());
        }
        let granted = match self.store.current().workloads.get(&key) {
            Some(w) => w.message.spiffe_id.clone(),
            None => return Err(refused()),
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
        let decided = self.decide(request.get_ref());
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
