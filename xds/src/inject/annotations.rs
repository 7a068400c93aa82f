//! The pod annotations injection reads (`skiff.dev/*`): whether to inject at all, and the
//! overrides of the redirect, the sidecar's settings and resources. Every bad value is reported
//! with the annotation's name; an unknown `skiff.dev/` annotation is a warning.

use super::{
    error::InjectError,
    settings::Settings,
    syntax::{self, Quantity, Resource},
    value::{Map, Value},
};

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
}

/// The pod's overrides on top of `settings`, and a warning per unknown `skiff.dev/`
/// annotation. All bad annotations are reported together.
pub fn overrides(
    annotations: &Map,
    settings: &Settings,
) -> Result<(Overrides, Vec<String>), Vec<InjectError>> {
    let mut errors = Vec::new();
    let mut get = |name: &str| match text(annotations, name) {
        Ok(v) => v,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let raw: Vec<Option<&str>> = KNOWN.iter().map(|name| get(name)).collect();
    let value = |name: &str| KNOWN.iter().position(|k| *k == name).and_then(|i| raw[i]);
    let mut parsed = |name: &str, parse: &dyn Fn(&str) -> Result<(), String>| {
        if let Some(v) = value(name)
            && let Err(reason) = parse(v)
        {
            errors.push(bad(name, reason));
        }
    };
    // Validate every value first, so all problems are reported at once.
    parsed(SKIP_INBOUND_PORTS, &|v| syntax::ports(v).map(drop));
    parsed(SKIP_OUTBOUND_PORTS, &|v| syntax::ports(v).map(drop));
    parsed(SKIP_OUTBOUND_CIDRS, &|v| syntax::cidrs(v).map(drop));
    parsed(OPAQUE_PORTS, &|v| syntax::ports(v).map(drop));
    parsed(PROXY_LOG_LEVEL, &|v| syntax::log_level(v).map(drop));
    parsed(PROXY_IMAGE, &|v| syntax::image(v).map(drop));
    parsed(PROXY_CPU_REQUEST, &|v| {
        Quantity::parse(v, Resource::Cpu).map(drop)
    });
    parsed(PROXY_CPU_LIMIT, &|v| {
        Quantity::parse(v, Resource::Cpu).map(drop)
    });
    parsed(PROXY_MEMORY_REQUEST, &|v| {
        Quantity::parse(v, Resource::Memory).map(drop)
    });
    parsed(PROXY_MEMORY_LIMIT, &|v| {
        Quantity::parse(v, Resource::Memory).map(drop)
    });
    if !errors.is_empty() {
        return Err(errors);
    }

    let ports = |name| value(name).and_then(|v| syntax::ports(v).ok());
    let quantity = |name, resource| value(name).and_then(|v| Quantity::parse(v, resource).ok());
    let r = &settings.resources;
    let overrides = Overrides {
        skip_inbound_ports: ports(SKIP_INBOUND_PORTS).unwrap_or_default(),
        skip_outbound_ports: ports(SKIP_OUTBOUND_PORTS).unwrap_or_default(),
        skip_outbound_cidrs: value(SKIP_OUTBOUND_CIDRS)
            .and_then(|v| syntax::cidrs(v).ok())
            .unwrap_or_default(),
        opaque_ports: ports(OPAQUE_PORTS).filter(|p| !p.is_empty()),
        log_level: value(PROXY_LOG_LEVEL)
            .and_then(|v| syntax::log_level(v).ok())
            .unwrap_or_else(|| settings.log_level.clone()),
        image: value(PROXY_IMAGE).map_or_else(|| settings.image.clone(), str::to_owned),
        cpu_request: quantity(PROXY_CPU_REQUEST, Resource::Cpu)
            .unwrap_or_else(|| r.cpu_request.clone()),
        memory_request: quantity(PROXY_MEMORY_REQUEST, Resource::Memory)
            .unwrap_or_else(|| r.memory_request.clone()),
        cpu_limit: quantity(PROXY_CPU_LIMIT, Resource::Cpu).or_else(|| r.cpu_limit.clone()),
        memory_limit: quantity(PROXY_MEMORY_LIMIT, Resource::Memory)
            .or_else(|| r.memory_limit.clone()),
    };

    let from = |name: &str, what: &str| {
        if value(name).is_some() {
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
            PROXY_CPU_REQUEST,
            PROXY_CPU_LIMIT,
        ),
        (
            Resource::Memory,
            &overrides.memory_request,
            &overrides.memory_limit,
            PROXY_MEMORY_REQUEST,
            PROXY_MEMORY_LIMIT,
        ),
    ];
    for (resource, request, limit, request_name, limit_name) in checks {
        if let Some(limit) = limit
            && request.exceeds(limit)
        {
            errors.push(InjectError::RequestAboveLimit {
                resource: resource.to_string(),
                request: request.to_string(),
                limit: limit.to_string(),
                request_from: from(request_name, &format!("{resource} request")),
                limit_from: from(limit_name, &format!("{resource} limit")),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let warnings = annotations
        .iter()
        .filter_map(|(k, _)| {
            let suffix = k.strip_prefix("skiff.dev/")?;
            (!KNOWN.contains(&k)).then(|| {
                let hint = KNOWN
                    .iter()
                    .find(|known| close(&known["skiff.dev/".len()..], suffix))
                    .map(|known| format!(" (did you mean {known}?)"))
                    .unwrap_or_default();
                format!("annotation {k} is not one Skiff reads; ignored{hint}")
            })
        })
        .collect();
    Ok((overrides, warnings))
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
