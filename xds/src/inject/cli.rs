//! `skiff-xds inject -f FILE`: reads manifests (a file, or stdin for `-`), prints them injected
//! to stdout for `kubectl apply -f -`, and skipped pods and warnings to stderr. Owns the flags
//! and the output; any refused object fails the whole run, printing nothing to stdout.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::{
    manifest,
    settings::{DEFAULT_CONTROL_PLANE, Resources, Settings, default_image},
    syntax::{self, Quantity, Resource},
};

/// Every flag of `skiff-xds inject`. A pod's `skiff.dev/*` annotations override the image,
/// log level and resources given here.
#[derive(clap::Args, Debug, Clone)]
pub struct InjectArgs {
    /// Manifests to inject (YAML with any number of documents, or JSON); `-` reads stdin.
    /// Repeat for several files.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Image of the injected containers (`skiff-init`, `skiff-proxy`); it must hold `skiff` on
    /// PATH.
    #[arg(long, env = "SKIFF_INJECT_IMAGE", value_name = "IMAGE", default_value_t = default_image(), value_parser = syntax::image)]
    pub image: String,
    /// The control plane's discovery URL the sidecars connect to.
    #[arg(
        long,
        env = "SKIFF_INJECT_CONTROL_PLANE",
        value_name = "URL",
        default_value = DEFAULT_CONTROL_PLANE,
        value_parser = control_plane
    )]
    pub control_plane: String,
    /// The sidecars' log filter (SKIFF_LOG): a level or `target=level` directives.
    #[arg(long, env = "SKIFF_INJECT_LOG_LEVEL", value_name = "FILTER", default_value = "info", value_parser = syntax::log_level)]
    pub log_level: String,
    /// CPU the sidecar requests.
    #[arg(long, env = "SKIFF_INJECT_CPU_REQUEST", value_name = "QUANTITY", default_value = "10m", value_parser = cpu)]
    pub cpu_request: Quantity,
    /// Memory the sidecar requests.
    #[arg(long, env = "SKIFF_INJECT_MEMORY_REQUEST", value_name = "QUANTITY", default_value = "32Mi", value_parser = memory)]
    pub memory_request: Quantity,
    /// The sidecar's CPU limit. Default: none.
    #[arg(long, env = "SKIFF_INJECT_CPU_LIMIT", value_name = "QUANTITY", value_parser = cpu)]
    pub cpu_limit: Option<Quantity>,
    /// The sidecar's memory limit. Default: none.
    #[arg(long, env = "SKIFF_INJECT_MEMORY_LIMIT", value_name = "QUANTITY", value_parser = memory)]
    pub memory_limit: Option<Quantity>,
    /// Where the sidecars export spans over OTLP/gRPC (their OTEL_EXPORTER_OTLP_ENDPOINT),
    /// e.g. http://jaeger.skiff-system.svc:4317. Default: none, tracing off.
    #[arg(long, env = "SKIFF_INJECT_OTLP_ENDPOINT", value_name = "URL", value_parser = otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
}

/// The injection settings as `skiff-xds serve` takes them for its admission webhook: the
/// flags of `skiff-xds inject` prefixed `--inject-`, with the same environment twins, so one
/// environment configures both.
#[derive(clap::Args, Debug, Clone)]
pub struct InjectSettingsArgs {
    /// Image of the injected containers; it must hold `skiff` on PATH.
    #[arg(long, env = "SKIFF_INJECT_IMAGE", value_name = "IMAGE", default_value_t = default_image(), value_parser = syntax::image)]
    pub inject_image: String,
    /// The control plane's discovery URL injected sidecars connect to.
    #[arg(
        long,
        env = "SKIFF_INJECT_CONTROL_PLANE",
        value_name = "URL",
        default_value = DEFAULT_CONTROL_PLANE,
        value_parser = control_plane
    )]
    pub inject_control_plane: String,
    /// Injected sidecars' log filter (SKIFF_LOG).
    #[arg(long, env = "SKIFF_INJECT_LOG_LEVEL", value_name = "FILTER", default_value = "info", value_parser = syntax::log_level)]
    pub inject_log_level: String,
    /// CPU an injected sidecar requests.
    #[arg(long, env = "SKIFF_INJECT_CPU_REQUEST", value_name = "QUANTITY", default_value = "10m", value_parser = cpu)]
    pub inject_cpu_request: Quantity,
    /// Memory an injected sidecar requests.
    #[arg(long, env = "SKIFF_INJECT_MEMORY_REQUEST", value_name = "QUANTITY", default_value = "32Mi", value_parser = memory)]
    pub inject_memory_request: Quantity,
    /// An injected sidecar's CPU limit. Default: none.
    #[arg(long, env = "SKIFF_INJECT_CPU_LIMIT", value_name = "QUANTITY", value_parser = cpu)]
    pub inject_cpu_limit: Option<Quantity>,
    /// An injected sidecar's memory limit. Default: none.
    #[arg(long, env = "SKIFF_INJECT_MEMORY_LIMIT", value_name = "QUANTITY", value_parser = memory)]
    pub inject_memory_limit: Option<Quantity>,
    /// Where injected sidecars export spans over OTLP/gRPC. Default: none, tracing off.
    #[arg(long, env = "SKIFF_INJECT_OTLP_ENDPOINT", value_name = "URL", value_parser = otlp_endpoint)]
    pub inject_otlp_endpoint: Option<String>,
}

impl InjectSettingsArgs {
    /// The settings, or why the flags contradict each other.
    pub fn settings(&self) -> Result<Settings, String> {
        let settings = Settings {
            image: self.inject_image.clone(),
            control_plane: self.inject_control_plane.clone(),
            log_level: self.inject_log_level.clone(),
            resources: Resources {
                cpu_request: self.inject_cpu_request.clone(),
                memory_request: self.inject_memory_request.clone(),
                cpu_limit: self.inject_cpu_limit.clone(),
                memory_limit: self.inject_memory_limit.clone(),
            },
            otlp_endpoint: self.inject_otlp_endpoint.clone(),
        };
        check_resources(&settings.resources, "--inject-")?;
        Ok(settings)
    }
}

impl Default for InjectSettingsArgs {
    /// What the flags default to: [`Settings::default`].
    fn default() -> Self {
        let settings = Settings::default();
        InjectSettingsArgs {
            inject_image: settings.image,
            inject_control_plane: settings.control_plane,
            inject_log_level: settings.log_level,
            inject_cpu_request: settings.resources.cpu_request,
            inject_memory_request: settings.resources.memory_request,
            inject_cpu_limit: settings.resources.cpu_limit,
            inject_memory_limit: settings.resources.memory_limit,
            inject_otlp_endpoint: settings.otlp_endpoint,
        }
    }
}

fn cpu(text: &str) -> Result<Quantity, String> {
    Quantity::parse(text, Resource::Cpu)
}

fn memory(text: &str) -> Result<Quantity, String> {
    Quantity::parse(text, Resource::Memory)
}

fn otlp_endpoint(text: &str) -> Result<String, String> {
    http_url(text, "http://jaeger.skiff-system.svc:4317")
}

fn control_plane(text: &str) -> Result<String, String> {
    http_url(text, DEFAULT_CONTROL_PLANE)
}

/// An `http://` or `https://` URL with a host, as given; the error shows `example`.
fn http_url(text: &str, example: &str) -> Result<String, String> {
    match text.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some() =>
        {
            Ok(text.to_owned())
        }
        _ => Err(format!(
            "{text:?} is not an http:// or https:// URL (like {example})"
        )),
    }
}

impl InjectArgs {
    /// The settings, or why the flags contradict each other.
    pub fn settings(&self) -> Result<Settings, String> {
        let settings = Settings {
            image: self.image.clone(),
            control_plane: self.control_plane.clone(),
            log_level: self.log_level.clone(),
            resources: Resources {
                cpu_request: self.cpu_request.clone(),
                memory_request: self.memory_request.clone(),
                cpu_limit: self.cpu_limit.clone(),
                memory_limit: self.memory_limit.clone(),
            },
            otlp_endpoint: self.otlp_endpoint.clone(),
        };
        check_resources(&settings.resources, "--")?;
        Ok(settings)
    }
}

/// Refuses a request above its limit, naming the flags (`{prefix}cpu-request`, ...).
fn check_resources(resources: &Resources, prefix: &str) -> Result<(), String> {
    let pairs = [
        (
            "cpu-request",
            &resources.cpu_request,
            "cpu-limit",
            &resources.cpu_limit,
        ),
        (
            "memory-request",
            &resources.memory_request,
            "memory-limit",
            &resources.memory_limit,
        ),
    ];
    for (request_flag, request, limit_flag, limit) in pairs {
        if let Some(limit) = limit
            && request.exceeds(limit)
        {
            return Err(format!(
                "{prefix}{request_flag} {request} is above {prefix}{limit_flag} {limit}"
            ));
        }
    }
    Ok(())
}

/// Prints the injected manifests and exits 0, or prints every problem, one per line as
/// `skiff-xds inject: FILE: document N (Kind name): message`, and exits 1 with nothing on
/// stdout.
pub fn main(args: InjectArgs) -> ExitCode {
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skiff-xds inject: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = String::new();
    let mut failed = false;
    for (i, file) in args.files.iter().enumerate() {
        let shown = shown(file);
        let text = match read(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skiff-xds inject: {shown}: {e}");
                failed = true;
                continue;
            }
        };
        match manifest::inject(&text, &settings) {
            Ok(injected) => {
                for note in &injected.notes {
                    eprintln!("skiff-xds inject: {shown}: {note}");
                }
                if i > 0 {
                    if !out.is_empty() && !out.ends_with('\n') {
                        out.push('\n');
                    }
                    out.push_str("---\n");
                }
                out.push_str(&injected.text);
            }
            Err(errors) => {
                failed = true;
                for e in errors {
                    eprintln!("skiff-xds inject: {shown}: {e}");
                }
            }
        }
    }
    if failed {
        return ExitCode::FAILURE;
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-xds inject: writing stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn shown(file: &Path) -> String {
    if file == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    }
}

fn read(file: &Path) -> std::io::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}
