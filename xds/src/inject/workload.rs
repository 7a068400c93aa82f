//! Kubernetes objects that hold pods: which kinds (Pod, Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, Job, CronJob), where each keeps its pod template, and what names the workload.
//! Any other object is not a workload and passes through.

use std::fmt;

use super::{
    error::InjectError,
    pod::{self, Report},
    settings::Settings,
    value::Value,
};

/// A kind of object that holds a pod or a pod template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl Kind {
    /// The kind of an object from its `apiVersion` and `kind`; `None` when it holds no pod
    /// (a kind of another API group, a CRD's `Deployment`, say, is not one of these).
    pub fn of(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let (kind, groups): (Kind, &[&str]) = match kind {
            "Pod" => (Kind::Pod, &[""]),
            "Deployment" => (Kind::Deployment, &["apps", "extensions"]),
            "StatefulSet" => (Kind::StatefulSet, &["apps"]),
            "DaemonSet" => (Kind::DaemonSet, &["apps", "extensions"]),
            "ReplicaSet" => (Kind::ReplicaSet, &["apps", "extensions"]),
            "Job" => (Kind::Job, &["batch"]),
            "CronJob" => (Kind::CronJob, &["batch"]),
            _ => return None,
        };
        groups.contains(&group).then_some(kind)
    }

    /// The keys from the object down to its pod (template): empty for a Pod.
    pub fn template_path(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &[],
            Kind::Deployment
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::ReplicaSet
            | Kind::Job => &["spec", "template"],
            Kind::CronJob => &["spec", "jobTemplate", "spec", "template"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `Kind name` or `Kind namespace/name`, to say which object a message is about.
pub fn describe(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
    let meta = |key| obj.pointer(&["metadata", key]).and_then(Value::as_str);
    match (meta("namespace"), meta("name").or(meta("generateName"))) {
        (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
        (None, Some(name)) => format!("{kind} {name}"),
        _ => kind.to_owned(),
    }
}

/// The workload kind of `obj`, if it is one.
pub fn kind_of(obj: &Value) -> Option<Kind> {
    let text = |key| obj.get(key).and_then(Value::as_str);
    Kind::of(text("apiVersion")?, text("kind")?)
}

/// Injects the pod of `obj` in place. `None`: not a workload, left alone.
pub fn inject(obj: &mut Value, settings: &Settings) -> Option<Result<Report, Vec<InjectError>>> {
    let kind = kind_of(obj)?;
    let path = kind.template_path();
    let owner = match kind {
        Kind::Pod => None,
        _ => obj
            .pointer(&["metadata", "name"])
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let mut node = obj;
    for key in path {
        node = match node.as_map_mut().and_then(|m| m.get_mut(key)) {
            Some(next) => next,
            None => {
                return Some(Err(vec![InjectError::NoTemplate {
                    kind: kind.to_string(),
                    path: path.join("."),
                }]));
            }
        };
    }
    let Some(template) = node.as_map_mut() else {
        return Some(Err(vec![InjectError::Shape {
            path: path.join("."),
            expected: "a mapping",
            found: node.kind(),
        }]));
    };
    Some(pod::inject(
        template,
        &path.join("."),
        owner.as_deref(),
        settings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_group() {
        assert_eq!(Kind::of("v1", "Pod"), Some(Kind::Pod));
        assert_eq!(Kind::of("apps/v1", "Deployment"), Some(Kind::Deployment));
        assert_eq!(Kind::of("batch/v1", "CronJob"), Some(Kind::CronJob));
        assert_eq!(Kind::of("apps.kruise.io/v1alpha1", "StatefulSet"), None);
        assert_eq!(Kind::of("v1", "Service"), None);
        assert_eq!(Kind::of("apps/v1", "Pod"), None);
    }

    #[test]
    fn a_workload_without_template_is_refused() {
        let mut obj: Value = serde_saphyr::from_str(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {}\n",
        )
        .unwrap();
        let errors = inject(&mut obj, &Settings::default()).unwrap().unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.jobTemplate.spec.template: missing; a CronJob needs a pod template"
        );
        assert_eq!(describe(&obj), "CronJob c");
    }
}
