//! The pod annotations injection reads (`skiff.dev/*`): whether to inject at all, and the
//! overrides of the redirect, the sidecar's settings and resources. Every bad value is reported
//! with the annotation's name; an unknown `skiff.dev/` annotation is a warning.

use super::{
    error::InjectError,
    settings::Settings,
    syntax::{self, Quantity, Resource},
    value::{Map, Value},
};

/// What every Skiff annotation starts with.
pub const PREFIX: &str = "skiff.dev/";
pub const INJECT: &str = "skiff.dev/inject";
pub const SKIP_INBOUND_PORTS: &str = "skiff.dev/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "skiff.dev/skip-outbound-ports";
pub const SKIP_OUTBOUND_CIDRS: &str = "skiff.dev/skip-outbound-cidrs";
pub const OPAQUE_PORTS: &str = "skiff.dev/opaque-ports";
pub const PROXY_LOG_LEVEL: &str = "skiff.dev/proxy-log-level";
pub const PROXY_CPU_REQUEST: &str = "skiff.dev/proxy-cpu-request";
pub const PROXY_MEMORY_REQUEST: &str = "skiff.dev/proxy-memory-request";
pub const PROXY_CPU_LIMIT: &str = "skiff.dev/proxy-cpu-limit";
pub const PROXY_MEMORY_LIMIT: &str = "skiff.dev/proxy-memory-limit";
pub const PROXY_IMAGE: &str = "skiff.dev/proxy-image";

/// Every annotation injection understands.
pub const KNOWN: [&str; 11] = [
    INJECT,
    SKIP_INBOUND_PORTS,
    SKIP_OUTBOUND_PORTS,
    SKIP_OUTBOUND_CIDRS,
    OPAQUE_PORTS,
    PROXY_LOG_LEVEL,
    PROXY_CPU_REQUEST,
    PROXY_MEMORY_REQUEST,
    PROXY_CPU_LIMIT,
    PROXY_MEMORY_LIMIT,
    PROXY_IMAGE,
];

/// `skiff.dev/inject`: `enabled` (or absent) injects, `disabled` leaves the pod alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enabled,
    Disabled,
}

/// Reads `skiff.dev/inject`.
pub fn mode(annotations: &Map) -> Result<Mode, InjectError> {
    match text(annotations, INJECT)? {
        None | Some("enabled") => Ok(Mode::Enabled),
        Some("disabled") => Ok(Mode::Disabled),
        Some(other) => Err(bad(INJECT, format!("{other:?}: use enabled or disabled"))),
    }
}

/// What one pod gets: the injector's settings with the pod's annotations applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Overrides {
    /// `skiff init --exclude-inbound-ports`.
    pub skip_inbound_ports: Vec<u16>,
    /// `skiff init --exclude-outbound-ports`.
    pub skip_outbound_ports: Vec<u16>,
    /// `skiff init --exclude-outbound-cidrs`.
    pub skip_outbound_cidrs: Vec<String>,
    /// `SKIFF_OPAQUE_PORTS`; `None` keeps the proxy's default list.
    pub opaque_ports: Option<Vec<u16>>,
    pub log_level: String,
    pub image: String,
    pub cpu_request: Quantity,
    pub memory_request: Quantity,
    pub cpu_limit: Option<Quantity>,
    pub memory_limit: Option<Quantity>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, from the injector's settings.
    pub otlp_endpoint: Option<String>,
}

/// The pod's overrides on top of `settings`, and a warning per unknown `skiff.dev/`
/// annotation. All bad annotations are reported together.
pub fn overrides(
    annotations: &Map,
    settings: &Settings,
) -> Result<(Overrides, Vec<String>), Vec<InjectError>> {
    let mut errors = Vec::new();
    let e = &mut errors;
    let a = annotations;
    let cpu = |v: &str| Quantity::parse(v, Resource::Cpu);
    let memory = |v: &str| Quantity::parse(v, Resource::Memory);
    let skip_inbound_ports = read(a, e, SKIP_INBOUND_PORTS, syntax::ports);
    let skip_outbound_ports = read(a, e, SKIP_OUTBOUND_PORTS, syntax::ports);
    let skip_outbound_cidrs = read(a, e, SKIP_OUTBOUND_CIDRS, syntax::cidrs);
    let opaque_ports = read(a, e, OPAQUE_PORTS, syntax::ports);
    let log_level = read(a, e, PROXY_LOG_LEVEL, syntax::log_level);
    let image = read(a, e, PROXY_IMAGE, syntax::image);
    let cpu_request = read(a, e, PROXY_CPU_REQUEST, cpu);
    let cpu_limit = read(a, e, PROXY_CPU_LIMIT, cpu);
    let memory_request = read(a, e, PROXY_MEMORY_REQUEST, memory);
    let memory_limit = read(a, e, PROXY_MEMORY_LIMIT, memory);
    if !errors.is_empty() {
        return Err(errors);
    }

    let r = &settings.resources;
    let overrides = Overrides {
        skip_inbound_ports: skip_inbound_ports.unwrap_or_default(),
        skip_outbound_ports: skip_outbound_ports.unwrap_or_default(),
        skip_outbound_cidrs: skip_outbound_cidrs.unwrap_or_default(),
        opaque_ports: opaque_ports.filter(|p| !p.is_empty()),
        log_level: log_level.unwrap_or_else(|| settings.log_level.clone()),
        image: image.unwrap_or_else(|| settings.image.clone()),
        cpu_request: cpu_request.clone().unwrap_or_else(|| r.cpu_request.clone()),
        memory_request: memory_request
            .clone()
            .unwrap_or_else(|| r.memory_request.clone()),
        cpu_limit: cpu_limit.clone().or_else(|| r.cpu_limit.clone()),
        memory_limit: memory_limit.clone().or_else(|| r.memory_limit.clone()),
        otlp_endpoint: settings.otlp_endpoint.clone(),
    };

    // Where a request or limit came from, for the message when one exceeds the other.
    let from = |annotated: bool, name: &str, what: &str| {
        if annotated {
            name.to_owned()
        } else {
            format!("the injector's {what}")
        }
    };
    let checks = [
        (
            Resource::Cpu,
            &overrides.cpu_request,
            &overrides.cpu_limit,
            from(cpu_request.is_some(), PROXY_CPU_REQUEST, "cpu request"),
            from(cpu_limit.is_some(), PROXY_CPU_LIMIT, "cpu limit"),
        ),
        (
            Resource::Memory,
            &overrides.memory_request,
            &overrides.memory_limit,
            from(
                memory_request.is_some(),
                PROXY_MEMORY_REQUEST,
                "memory request",
            ),
            from(memory_limit.is_some(), PROXY_MEMORY_LIMIT, "memory limit"),
        ),
    ];
    for (resource, request, limit, request_from, limit_from) in checks {
        if let Some(limit) = limit
            && request.exceeds(limit)
        {
            errors.push(InjectError::RequestAboveLimit {
                resource: resource.to_string(),
                request: request.to_string(),
                limit: limit.to_string(),
                request_from,
                limit_from,
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let warnings = annotations
        .iter()
        .filter_map(|(k, _)| {
            let suffix = k.strip_prefix(PREFIX)?;
            (!KNOWN.contains(&k)).then(|| {
                let hint = KNOWN
                    .iter()
                    .find(|known| close(&known[PREFIX.len()..], suffix))
                    .map(|known| format!(" (did you mean {known}?)"))
                    .unwrap_or_default();
                format!("annotation {k} is not one Skiff reads; ignored{hint}")
            })
        })
        .collect();
    Ok((overrides, warnings))
}

/// Annotation `name` parsed by `parse`; `None` when absent or bad (the reason then in `errors`).
fn read<T>(
    annotations: &Map,
    errors: &mut Vec<InjectError>,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    match text(annotations, name) {
        Ok(v) => parse(v?)
            .map_err(|reason| errors.push(bad(name, reason)))
            .ok(),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// The string value of annotation `name`; a value of another type is an error (the API
/// server would refuse it too).
fn text<'a>(annotations: &'a Map, name: &str) -> Result<Option<&'a str>, InjectError> {
    match annotations.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim())),
        Some(other) => Err(bad(
            name,
            format!(
                "the value is {}; annotation values must be strings (quote it)",
                other.kind()
            ),
        )),
    }
}

fn bad(annotation: &str, reason: String) -> InjectError {
    InjectError::Annotation {
        annotation: annotation.to_owned(),
        reason,
    }
}

/// Whether `a` and `b` differ by at most two single-character edits (a typo, a plural).
fn close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1);
        }
        prev = row;
    }
    prev[b.len()] <= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> Map {
        pairs.iter().map(|(k, v)| (*k, Value::str(*v))).collect()
    }

    #[test]
    fn no_annotations_means_the_settings() {
        let settings = Settings::default();
        let (o, warnings) = overrides(&Map::new(), &settings).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(o.image, settings.image);
        assert_eq!(o.log_level, "info");
        assert_eq!(o.cpu_request.as_str(), "10m");
        assert_eq!(o.memory_request.as_str(), "32Mi");
        assert_eq!((o.cpu_limit, o.memory_limit), (None, None));
        assert_eq!(o.opaque_ports, None);
        assert!(o.skip_inbound_ports.is_empty() && o.skip_outbound_cidrs.is_empty());
    }

    #[test]
    fn every_bad_annotation_is_named() {
        let a = annotations(&[
            (SKIP_INBOUND_PORTS, "80,http"),
            (SKIP_OUTBOUND_CIDRS, "10.0.0.0/40"),
            (PROXY_CPU_REQUEST, "lots"),
            (PROXY_MEMORY_LIMIT, "64m"),
            (PROXY_LOG_LEVEL, "loud"),
        ]);
        let errors = overrides(&a, &Settings::default()).unwrap_err();
        let named: Vec<String> = errors
            .iter()
            .map(|e| match e {
                InjectError::Annotation { annotation, .. } => annotation.clone(),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(
            named,
            [
                SKIP_INBOUND_PORTS,
                SKIP_OUTBOUND_CIDRS,
                PROXY_LOG_LEVEL,
                PROXY_CPU_REQUEST,
                PROXY_MEMORY_LIMIT
            ]
        );
        assert_eq!(
            errors[0].to_string(),
            r#"annotation skiff.dev/skip-inbound-ports: "http" is not a port (1-65535)"#
        );
    }

    #[test]
    fn a_request_above_its_limit_names_both_sources() {
        let a = annotations(&[(PROXY_CPU_LIMIT, "5m")]);
        let errors = overrides(&a, &Settings::default()).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "the injector's cpu request (10m) is above skiff.dev/proxy-cpu-limit (5m); the cpu request must not exceed the limit"
        );
        let a = annotations(&[(PROXY_MEMORY_REQUEST, "1Gi"), (PROXY_MEMORY_LIMIT, "1G")]);
        assert!(overrides(&a, &Settings::default()).is_err());
        let a = annotations(&[(PROXY_CPU_REQUEST, "0.1"), (PROXY_CPU_LIMIT, "100m")]);
        assert!(overrides(&a, &Settings::default()).is_ok());
    }

    #[test]
    fn a_non_string_value_is_refused() {
        let mut a = Map::new();
        a.insert(SKIP_INBOUND_PORTS, Value::UInt(8080));
        let errors = overrides(&a, &Settings::default()).unwrap_err();
        assert!(
            errors[0].to_string().contains("must be strings"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn unknown_skiff_annotations_warn_with_a_hint() {
        let a = annotations(&[
            ("skiff.dev/proxy-cpu-requests", "10m"),
            ("example.com/other", "x"),
        ]);
        let (_, warnings) = overrides(&a, &Settings::default()).unwrap();
        assert_eq!(
            warnings,
            [
                "annotation skiff.dev/proxy-cpu-requests is not one Skiff reads; ignored (did you mean skiff.dev/proxy-cpu-request?)"
            ]
        );
    }

    #[test]
    fn inject_mode() {
        assert_eq!(mode(&Map::new()), Ok(Mode::Enabled));
        assert_eq!(
            mode(&annotations(&[(INJECT, "disabled")])),
            Ok(Mode::Disabled)
        );
        assert!(mode(&annotations(&[(INJECT, "false")])).is_err());
    }
}
