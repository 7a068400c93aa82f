//! Sidecar injection: how a pod is meshed (a `skiff-init` container, a `skiff-proxy` native
//! sidecar, a projected token), as a pure transformation of its spec shared by the
//! `skiff-xds inject` CLI (whole manifests) and the admission webhook (one Pod, a JSON Patch).

mod annotations;
mod cli;
mod error;
mod manifest;
mod patch;
mod pod;
mod settings;
mod sidecar;
mod syntax;
mod value;
mod workload;

pub use self::{
    annotations::KNOWN as ANNOTATIONS,
    cli::{InjectArgs, InjectSettingsArgs, main},
    error::InjectError,
    manifest::{Injected, ManifestError, Note, Place, Problem, inject as inject_manifests},
    patch::{PatchOp, diff},
    pod::{Report, Skip, controller_name, controller_workload, workload_name},
    settings::{
        ADMIN_PORT, DEFAULT_CONTROL_PLANE, INIT_CONTAINER, PROXY_CONTAINER, PROXY_UID, Resources,
        Settings, TOKEN_AUDIENCE, TOKEN_MOUNT_PATH, TOKEN_VOLUME, default_image,
    },
    syntax::{Quantity, Resource},
    value::{Map, Value},
    workload::Kind,
};

/// One Pod injected, as the admission webhook needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInjection {
    /// Skipped or not, and the warnings (an AdmissionResponse carries them to `kubectl`).
    pub report: Report,
    /// The Pod as it will run (the input when skipped).
    pub pod: Value,
    /// From the input to `pod`; empty when skipped.
    pub patch: Vec<PatchOp>,
}

/// Injects one Pod object (`metadata` and `spec`, as an AdmissionReview carries it).
/// `owner` names its workload when its labels do not (see [`workload_name`]): a webhook
/// passes the name of the Deployment or Job behind the pod. The errors are all the reasons
/// the pod is refused, each naming its annotation or field.
pub fn inject_pod(
    pod: &Value,
    owner: Option<&str>,
    settings: &Settings,
) -> Result<PodInjection, Vec<InjectError>> {
    let mut injected = pod.clone();
    let Some(map) = injected.as_map_mut() else {
        return Err(vec![InjectError::Shape {
            path: "(the pod)".to_owned(),
            expected: "a mapping",
            found: pod.kind(),
        }]);
    };
    let report = pod::inject(map, "", owner, settings)?;
    let patch = diff(pod, &injected);
    Ok(PodInjection {
        report,
        pod: injected,
        patch,
    })
}
