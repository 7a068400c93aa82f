//! What injection adds to a pod, built as values: the `skiff-init` container (`skiff init`
//! with the pod's exclusions), the `skiff-proxy` native sidecar (`skiff run` in xDS mode)
//! and the projected token volume. Decides nothing; `pod` decides where they go.

use super::{
    annotations::Overrides,
    settings::{
        ADMIN_PORT, INBOUND_PORT, INIT_CONTAINER, OUTBOUND_PORT, PROXY_CONTAINER, PROXY_UID,
        TOKEN_AUDIENCE, TOKEN_EXPIRATION_SECONDS, TOKEN_FILE, TOKEN_MOUNT_PATH, TOKEN_VOLUME,
    },
    value::Value,
};

/// Where the pod's sidecar connects and what it calls itself.
pub struct Identity<'a> {
    pub control_plane: &'a str,
    pub workload: &'a str,
}

/// `skiff-init`: runs `skiff init` as root with only NET_ADMIN and NET_RAW, then exits.
pub fn init_container(o: &Overrides) -> Value {
    let mut args = vec![
        "init".to_owned(),
        "--proxy-uid".to_owned(),
        PROXY_UID.to_string(),
    ];
    let mut flag = |name: &str, items: Vec<String>| {
        if !items.is_empty() {
            args.push(name.to_owned());
            args.push(items.join(","));
        }
    };
    let ports = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>();
    flag("--exclude-inbound-ports", ports(&o.skip_inbound_ports));
    flag("--exclude-outbound-ports", ports(&o.skip_outbound_ports));
    flag("--exclude-outbound-cidrs", o.skip_outbound_cidrs.clone());
    Value::map([
        ("name", Value::str(INIT_CONTAINER)),
        ("image", Value::str(&o.image)),
        ("command", Value::strs(["skiff"])),
        ("args", Value::strs(args.iter().map(String::as_str))),
        ("resources", resources(o)),
        (
            "securityContext",
            Value::map([
                ("runAsUser", Value::UInt(0)),
                ("runAsNonRoot", false.into()),
                ("privileged", false.into()),
                ("allowPrivilegeEscalation", false.into()),
                (
                    "capabilities",
                    Value::map([
                        ("add", Value::strs(["NET_ADMIN", "NET_RAW"])),
                        ("drop", Value::strs(["ALL"])),
                    ]),
                ),
            ]),
        ),
        // `kubectl describe pod` then shows why the redirect failed (no NET_ADMIN, say).
        (
            "terminationMessagePolicy",
            Value::str("FallbackToLogsOnError"),
        ),
    ])
}

/// `skiff-proxy`: `skiff run` in xDS mode as uid 1337, a native sidecar (restartPolicy:
/// Always), probed on the admin port, with the projected token mounted read-only.
pub fn proxy_container(o: &Overrides, id: &Identity<'_>) -> Value {
    let field = |name: &str, path: &str| {
        Value::map([
            ("name", Value::str(name)),
            (
                "valueFrom",
                Value::map([("fieldRef", Value::map([("fieldPath", Value::str(path))]))]),
            ),
        ])
    };
    let literal = |name: &str, value: &str| {
        Value::map([("name", Value::str(name)), ("value", Value::str(value))])
    };
    let mut env = vec![
        field("SKIFF_POD_NAME", "metadata.name"),
        field("SKIFF_NAMESPACE", "metadata.namespace"),
        field("SKIFF_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field("SKIFF_POD_IP", "status.podIP"),
        literal("SKIFF_XDS", id.control_plane),
        literal("SKIFF_WORKLOAD", id.workload),
        literal(
            "SKIFF_TOKEN_FILE",
            &format!("{TOKEN_MOUNT_PATH}/{TOKEN_FILE}"),
        ),
        // The kubelet probes the pod's address, not loopback.
        literal("SKIFF_ADMIN_ADDR", &format!("0.0.0.0:{ADMIN_PORT}")),
        // Both families, where `skiff init` redirects them (ip6tables only on an IPv6 pod);
        // on a pod without IPv6 the proxy skips the IPv6 addresses.
        literal(
            "SKIFF_OUTBOUND_ADDR",
            &format!("127.0.0.1:{OUTBOUND_PORT},[::1]:{OUTBOUND_PORT}"),
        ),
        literal(
            "SKIFF_INBOUND_ADDR",
            &format!("0.0.0.0:{INBOUND_PORT},[::]:{INBOUND_PORT}"),
        ),
        literal("SKIFF_LOG", &o.log_level),
    ];
    if let Some(ports) = &o.opaque_ports {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        env.push(literal("SKIFF_OPAQUE_PORTS", &list.join(",")));
    }
    if let Some(endpoint) = &o.otlp_endpoint {
        // Spans go there, named after the workload (the proxy's default service.name).
        env.push(literal("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
    }
    let probe = |path: &str, extra: Vec<(&str, Value)>| {
        let mut p = Value::map([(
            "httpGet",
            Value::map([
                ("path", Value::str(path)),
                ("port", Value::UInt(ADMIN_PORT)),
            ]),
        )]);
        if let Some(m) = p.as_map_mut() {
            for (k, v) in extra {
                m.insert(k, v);
            }
        }
        p
    };
    Value::map([
        ("name", Value::str(PROXY_CONTAINER)),
        ("image", Value::str(&o.image)),
        ("command", Value::strs(["skiff"])),
        ("args", Value::strs(["run"])),
        ("env", Value::Seq(env)),
        (
            "ports",
            Value::Seq(vec![Value::map([
                ("name", Value::str("skiff-admin")),
                ("containerPort", Value::UInt(ADMIN_PORT)),
                ("protocol", Value::str("TCP")),
            ])]),
        ),
        ("resources", resources(o)),
        (
            "securityContext",
            Value::map([
                ("runAsUser", Value::UInt(PROXY_UID)),
                ("runAsGroup", Value::UInt(PROXY_UID)),
                ("runAsNonRoot", true.into()),
                ("readOnlyRootFilesystem", true.into()),
                ("allowPrivilegeEscalation", false.into()),
                ("privileged", false.into()),
                ("capabilities", Value::map([("drop", Value::strs(["ALL"]))])),
                (
                    "seccompProfile",
                    Value::map([("type", Value::str("RuntimeDefault"))]),
                ),
            ]),
        ),
        // Until /ready answers, the app's containers do not start (up to 5 minutes).
        (
            "startupProbe",
            probe(
                "/ready",
                vec![
                    ("periodSeconds", Value::UInt(1)),
                    ("failureThreshold", Value::UInt(300)),
                ],
            ),
        ),
        (
            "readinessProbe",
            probe("/ready", vec![("periodSeconds", Value::UInt(5))]),
        ),
        (
            "livenessProbe",
            probe("/live", vec![("periodSeconds", Value::UInt(10))]),
        ),
        (
            "volumeMounts",
            Value::Seq(vec![Value::map([
                ("name", Value::str(TOKEN_VOLUME)),
                ("mountPath", Value::str(TOKEN_MOUNT_PATH)),
                ("readOnly", true.into()),
            ])]),
        ),
        ("restartPolicy", Value::str("Always")),
    ])
}

/// The projected service-account token of audience `skiff` the sidecar proves itself with.
pub fn token_volume() -> Value {
    Value::map([
        ("name", Value::str(TOKEN_VOLUME)),
        (
            "projected",
            Value::map([(
                "sources",
                Value::Seq(vec![Value::map([(
                    "serviceAccountToken",
                    Value::map([
                        ("audience", Value::str(TOKEN_AUDIENCE)),
                        ("expirationSeconds", Value::UInt(TOKEN_EXPIRATION_SECONDS)),
                        ("path", Value::str(TOKEN_FILE)),
                    ]),
                )])]),
            )]),
        ),
    ])
}

fn resources(o: &Overrides) -> Value {
    let pair = |cpu: Option<&str>, memory: Option<&str>| {
        let mut m = super::value::Map::new();
        if let Some(cpu) = cpu {
            m.insert("cpu", Value::str(cpu));
        }
        if let Some(memory) = memory {
            m.insert("memory", Value::str(memory));
        }
        m
    };
    let mut r = super::value::Map::new();
    r.insert(
        "requests",
        Value::Map(pair(
            Some(o.cpu_request.as_str()),
            Some(o.memory_request.as_str()),
        )),
    );
    let limits = pair(
        o.cpu_limit.as_ref().map(|q| q.as_str()),
        o.memory_limit.as_ref().map(|q| q.as_str()),
    );
    if !limits.is_empty() {
        r.insert("limits", Value::Map(limits));
    }
    Value::Map(r)
}
