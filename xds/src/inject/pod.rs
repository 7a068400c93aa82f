//! Injection of one pod (a Pod object or a workload's pod template): whether it is skipped
//! (host network, `skiff.dev/inject: disabled`, already injected), the workload name its
//! sidecar announces, and placing the containers and the volume. All or nothing: a refused
//! pod is left untouched.

use std::fmt;

use super::{
    annotations::{self, Mode},
    error::InjectError,
    settings::{INIT_CONTAINER, PROXY_CONTAINER, Settings, TOKEN_VOLUME},
    sidecar::{self, Identity},
    value::{Map, Value},
};

/// Why a pod was left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `hostNetwork: true`: a redirect would capture the node's traffic.
    HostNetwork,
    /// `skiff.dev/inject: disabled`.
    Disabled,
    /// It already has `skiff-proxy` or `skiff-init`.
    AlreadyInjected,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skip::HostNetwork => "hostNetwork: true",
            Skip::Disabled => "skiff.dev/inject: disabled",
            Skip::AlreadyInjected => "already injected",
        })
    }
}

/// What happened to one pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// `None`: injected.
    pub skipped: Option<Skip>,
    /// Annotations that were ignored, and why.
    pub warnings: Vec<String>,
}

/// Injects `pod` in place: a mapping with `metadata` and `spec`, found at `path` in its
/// object (`""` for a Pod, `spec.template` for a Deployment; used in error messages).
/// `owner` names the workload that holds the template, the fallback name of the workload
/// (see [`workload_name`]).
pub fn inject(
    pod: &mut Map,
    path: &str,
    owner: Option<&str>,
    settings: &Settings,
) -> Result<Report, Vec<InjectError>> {
    let at = |field: &str| match path {
        "" => field.to_owned(),
        p => format!("{p}.{field}"),
    };
    let one = |e: InjectError| vec![e];
    let metadata = optional_map(pod.get("metadata"), &at("metadata")).map_err(one)?;
    let empty = Map::new();
    let annotations = match metadata {
        Some(m) => optional_map(m.get("annotations"), &at("metadata.annotations")).map_err(one)?,
        None => None,
    }
    .unwrap_or(&empty);
    let spec = match pod.get("spec") {
        Some(Value::Map(spec)) => spec,
        other => {
            return Err(one(InjectError::Shape {
                path: at("spec"),
                expected: "a mapping",
                found: other.map_or("nothing", Value::kind),
            }));
        }
    };

    let skipped = |skip| {
        Ok(Report {
            skipped: Some(skip),
            warnings: Vec::new(),
        })
    };
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        return skipped(Skip::HostNetwork);
    }
    if annotations::mode(annotations).map_err(one)? == Mode::Disabled {
        return skipped(Skip::Disabled);
    }
    let init_containers = optional_seq(spec.get("initContainers"), &at("spec.initContainers"))
        .map_err(one)?
        .unwrap_or_default();
    let containers = optional_seq(spec.get("containers"), &at("spec.containers"))
        .map_err(one)?
        .unwrap_or_default();
    let ours = |c: &Value| {
        matches!(
            c.get("name").and_then(Value::as_str),
            Some(INIT_CONTAINER | PROXY_CONTAINER)
        )
    };
    if init_containers.iter().chain(containers).any(ours) {
        return skipped(Skip::AlreadyInjected);
    }

    let volumes = optional_seq(spec.get("volumes"), &at("spec.volumes"))
        .map_err(one)?
        .unwrap_or_default();
    let mut errors = Vec::new();
    if volumes
        .iter()
        .any(|v| v.get("name").and_then(Value::as_str) == Some(TOKEN_VOLUME))
    {
        errors.push(InjectError::NameTaken {
            what: "volume",
            name: TOKEN_VOLUME.to_owned(),
        });
    }
    let labels = metadata
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_map);
    let name = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str);
    let workload = workload_name(labels, owner, name("name"), name("generateName"));
    if workload.is_none() {
        errors.push(InjectError::NoWorkloadName);
    }
    let (overrides, warnings) = match annotations::overrides(annotations, settings) {
        Ok(o) => o,
        Err(mut e) => {
            e.append(&mut errors);
            return Err(e);
        }
    };
    let Some(workload) = workload else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }

    let identity = Identity {
        control_plane: &settings.control_plane,
        workload: &workload,
    };
    let mut new_init = vec![
        sidecar::init_container(&overrides),
        sidecar::proxy_container(&overrides, &identity),
    ];
    new_init.extend(init_containers.iter().cloned());
    let mut new_volumes = volumes.to_vec();
    new_volumes.push(sidecar::token_volume());

    let Some(spec) = pod.get_mut("spec").and_then(Value::as_map_mut) else {
        // Checked above; kept as an error rather than a panic.
        return Err(one(InjectError::Shape {
            path: at("spec"),
            expected: "a mapping",
            found: "nothing",
        }));
    };
    spec.insert_before("containers", "initContainers", Value::Seq(new_init));
    spec.insert("volumes", Value::Seq(new_volumes));
    Ok(Report {
        skipped: None,
        warnings,
    })
}

/// The name a pod's sidecar announces as its workload (`SKIFF_WORKLOAD`), first found of:
/// the label `app.kubernetes.io/name`, the label `app`, the owning workload's name (a
/// Deployment's, a CronJob's), the pod's name, its `generateName` without the trailing `-`.
/// The control plane's Kubernetes source must name pods by the same rule.
pub fn workload_name(
    labels: Option<&Map>,
    owner: Option<&str>,
    name: Option<&str>,
    generate_name: Option<&str>,
) -> Option<String> {
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    [
        label("app.kubernetes.io/name"),
        label("app"),
        owner,
        name,
        generate_name.map(|g| g.trim_end_matches('-')),
    ]
    .into_iter()
    .flatten()
    .map(str::trim)
    .find(|n| !n.is_empty())
    .map(str::to_owned)
}

/// The name of the workload that controls a pod, read from its controller `ownerReference`:
/// a ReplicaSet whose name is a Deployment's plus `-<pod-template-hash>` (the pod carries that
/// label) gives the Deployment's name, any other controller its own name. The admission
/// webhook passes it as the `owner` of [`workload_name`], so a pod made by a Deployment is
/// named as `skiff-xds inject` names that Deployment's template.
pub fn controller_name(pod: &Value) -> Option<String> {
    let metadata = pod.get("metadata")?;
    let controller = metadata
        .get("ownerReferences")?
        .as_seq()?
        .iter()
        .find(|r| r.get("controller") == Some(&Value::Bool(true)))?;
    let name = controller.get("name")?.as_str()?;
    let hash = metadata
        .pointer(&["labels", "pod-template-hash"])
        .and_then(Value::as_str);
    Some(controller_workload(
        controller.get("kind").and_then(Value::as_str),
        name,
        hash,
    ))
}

/// The workload named by a pod's controller (`kind`, `name`) given the pod's
/// `pod-template-hash` label: a Deployment's name for its ReplicaSet, else the controller's
/// own. The rule of [`controller_name`], for callers that hold typed objects.
pub fn controller_workload(
    kind: Option<&str>,
    name: &str,
    pod_template_hash: Option<&str>,
) -> String {
    let hash = pod_template_hash.filter(|h| !h.is_empty());
    let deployment = match (kind, hash) {
        (Some("ReplicaSet"), Some(hash)) => name
            .strip_suffix(hash)
            .and_then(|n| n.strip_suffix('-'))
            .filter(|n| !n.is_empty()),
        _ => None,
    };
    deployment.unwrap_or(name).to_owned()
}

fn optional_map<'a>(v: Option<&'a Value>, path: &str) -> Result<Option<&'a Map>, InjectError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Map(m)) => Ok(Some(m)),
        Some(other) => Err(InjectError::Shape {
            path: path.to_owned(),
            expected: "a mapping",
            found: other.kind(),
        }),
    }
}

fn optional_seq<'a>(v: Option<&'a Value>, path: &str) -> Result<Option<&'a [Value]>, InjectError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Seq(s)) => Ok(Some(s)),
        Some(other) => Err(InjectError::Shape {
            path: path.to_owned(),
            expected: "a list",
            found: other.kind(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_by_precedence() {
        let labels: Map = [
            ("app", Value::str("reviews")),
            ("app.kubernetes.io/name", Value::str("reviews-api")),
        ]
        .into_iter()
        .collect();
        let app_only: Map = [("app", Value::str("reviews"))].into_iter().collect();
        let name = |l, o, n, g| workload_name(l, o, n, g);
        assert_eq!(
            name(Some(&labels), Some("d"), None, None).as_deref(),
            Some("reviews-api")
        );
        assert_eq!(
            name(Some(&app_only), Some("d"), None, None).as_deref(),
            Some("reviews")
        );
        assert_eq!(name(None, Some("d"), Some("p"), None).as_deref(), Some("d"));
        assert_eq!(
            name(None, None, Some("p"), Some("g-")).as_deref(),
            Some("p")
        );
        assert_eq!(name(None, None, None, Some("web-")).as_deref(), Some("web"));
        assert_eq!(name(None, None, None, None), None);
    }

    #[test]
    fn controllers_name_their_pods() {
        let pod = |kind: &str, name: &str, hash: Option<&str>, controller: bool| {
            let mut labels = Map::new();
            if let Some(h) = hash {
                labels.insert("pod-template-hash", Value::str(h));
            }
            let owner = Value::map([
                ("kind", Value::str(kind)),
                ("name", Value::str(name)),
                ("controller", Value::Bool(controller)),
            ]);
            Value::map([(
                "metadata",
                Value::map([
                    ("labels", Value::Map(labels)),
                    ("ownerReferences", Value::Seq(vec![owner])),
                ]),
            )])
        };
        let name = |v: Value| controller_name(&v);
        let rs = "reviews-v1-5d9c8b7f4";
        assert_eq!(
            name(pod("ReplicaSet", rs, Some("5d9c8b7f4"), true)).as_deref(),
            Some("reviews-v1")
        );
        // A bare ReplicaSet, or one whose name does not end in the hash, keeps its name.
        assert_eq!(name(pod("ReplicaSet", rs, None, true)).as_deref(), Some(rs));
        assert_eq!(
            name(pod("ReplicaSet", rs, Some("other"), true)).as_deref(),
            Some(rs)
        );
        assert_eq!(
            name(pod("ReplicaSet", "abc", Some("abc"), true)).as_deref(),
            Some("abc")
        );
        assert_eq!(
            name(pod("StatefulSet", "db", None, true)).as_deref(),
            Some("db")
        );
        assert_eq!(name(pod("Job", "j", None, false)), None);
        assert_eq!(name(Value::str("not a pod")), None);
    }

    #[test]
    fn a_refused_pod_is_left_untouched() {
        let text = "metadata:\n  name: p\n  annotations:\n    skiff.dev/opaque-ports: x\nspec:\n  containers: []\n";
        let mut pod: Value = serde_saphyr::from_str(text).unwrap();
        let before = pod.clone();
        let map = pod.as_map_mut().unwrap();
        let errors = inject(map, "", None, &Settings::default()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(pod, before);
    }

    #[test]
    fn shapes_are_checked() {
        let mut pod: Value =
            serde_saphyr::from_str("spec:\n  initContainers: {}\n  containers: []\n").unwrap();
        let errors = inject(
            pod.as_map_mut().unwrap(),
            "spec.template",
            None,
            &Settings::default(),
        )
        .unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.template.spec.initContainers: expected a list, found a mapping"
        );
    }
}
