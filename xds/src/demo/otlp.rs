//! `skiff-xds demo --otlp URL`: the collector URL checked, and the `OTEL_*` environment every
//! sidecar is started with, so its spans reach that collector within a second and under its
//! workload's name.

use http::Uri;

/// Environment variable naming the OTLP/gRPC collector; the flag's environment twin, and what
/// the sidecars read.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The traces-only endpoint, which wins over [`ENDPOINT_VAR`] in the proxy: removed from the
/// sidecars' environment so `--otlp` is the one that counts.
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

/// The service name on every span; the demo pins it to the workload, whatever the user's
/// shell holds.
pub const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";

/// How long the proxy's batch processor waits before it exports.
pub const SCHEDULE_DELAY_VAR: &str = "OTEL_BSP_SCHEDULE_DELAY";

/// The demo's batch delay in milliseconds (the proxy's default is 5000): traces show up in the
/// UI about a second after the request.
pub const DEMO_SCHEDULE_DELAY_MS: &str = "1000";

/// Jaeger's UI, where the printed instructions send the user.
pub const JAEGER_UI: &str = "http://localhost:16686";

/// One change to a sidecar's inherited environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvChange {
    Set(&'static str, String),
    Remove(&'static str),
}

/// Checks an `--otlp` value: an `http://` or `https://` URL with a host, as the proxy's
/// exporter takes it (`http://127.0.0.1:4317`). Returns it without a trailing `/`.
pub fn parse_endpoint(value: &str) -> Result<String, String> {
    let value = value.trim();
    let uri: Uri = value
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected e.g. http://127.0.0.1:4317"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(String::from(
                "must start with http:// or https:// (e.g. http://127.0.0.1:4317)",
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(String::from(
            "has no host; expected e.g. http://127.0.0.1:4317",
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// What the sidecar of `workload` gets on top of the demo's own environment: nothing without
/// an endpoint; with one, the endpoint, the workload as service name, and the demo's batch
/// delay unless `user_delay` (the user set [`SCHEDULE_DELAY_VAR`] themselves, which then
/// passes through).
pub fn sidecar_env(endpoint: Option<&str>, workload: &str, user_delay: bool) -> Vec<EnvChange> {
    let Some(endpoint) = endpoint else {
        return Vec::new();
    };
    let mut env = vec![
        EnvChange::Set(ENDPOINT_VAR, endpoint.to_owned()),
        EnvChange::Remove(TRACES_ENDPOINT_VAR),
        EnvChange::Set(SERVICE_NAME_VAR, workload.to_owned()),
    ];
    if !user_delay {
        env.push(EnvChange::Set(
            SCHEDULE_DELAY_VAR,
            DEMO_SCHEDULE_DELAY_MS.to_owned(),
        ));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_endpoint_changes_nothing() {
        assert_eq!(sidecar_env(None, "web-v1", false), []);
        assert_eq!(sidecar_env(None, "web-v1", true), []);
    }

    #[test]
    fn endpoint_names_the_collector_the_workload_and_a_short_delay() {
        let env = sidecar_env(Some("http://127.0.0.1:4317"), "reviews-v2", false);
        assert_eq!(
            env,
            [
                EnvChange::Set(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "http://127.0.0.1:4317".to_owned()
                ),
                EnvChange::Remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
                EnvChange::Set("OTEL_SERVICE_NAME", "reviews-v2".to_owned()),
                EnvChange::Set("OTEL_BSP_SCHEDULE_DELAY", "1000".to_owned()),
            ]
        );
    }

    #[test]
    fn a_users_batch_delay_passes_through() {
        let env = sidecar_env(Some("http://jaeger:4317"), "client", true);
        assert!(
            !env.iter()
                .any(|c| matches!(c, EnvChange::Set("OTEL_BSP_SCHEDULE_DELAY", _))),
            "{env:?}"
        );
        assert!(env.contains(&EnvChange::Set(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://jaeger:4317".to_owned()
        )));
    }

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:4317").as_deref(),
            Ok("http://127.0.0.1:4317")
        );
        assert_eq!(
            parse_endpoint(" https://collector.example:4317/ ").as_deref(),
            Ok("https://collector.example:4317")
        );
        for bad in [
            "127.0.0.1:4317",
            "grpc://127.0.0.1:4317",
            "http://",
            "",
            "not a url",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} accepted");
        }
    }
}
