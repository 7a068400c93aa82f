//! Parsing and validation of a mesh file: every error names its field by path
//! (`services[2].routes[0].backendRefs[1].weight`), so a bad edit is refused before use.
//! `shape` parses; the other modules each own the rules of one part of the file.

mod authorization;
mod index;
mod report;
mod route;
mod service;
mod shape;
mod syntax;
mod workload;

use std::fmt;

pub use shape::parse;

use self::{index::MeshIndex, report::Report};
pub(crate) use self::{report::FieldPath, syntax::spiffe_id};
use crate::model::{MeshFile, MeshSettings};

/// One bad field: where it is and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path with indices, e.g. `services[2].routes[0].backendRefs[1].weight`;
    /// empty when the problem is the file as a whole (bad YAML, several documents).
    pub path: String,
    /// One line saying what is expected.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A mesh file that was refused, with every problem found, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Parses and validates a mesh file.
pub fn load(text: &str) -> Result<MeshFile, ConfigError> {
    let mesh = parse(text)?;
    validate(&mesh)?;
    Ok(mesh)
}

/// Checks what serde cannot: references, uniqueness, regexes and ranges. Reports every
/// problem, not just the first, in the order of the file's sections and fields.
pub fn validate(mesh: &MeshFile) -> Result<(), ConfigError> {
    check(mesh, &MeshIndex::new(mesh))
}

/// Parses and validates a mesh file that another source completes, such as the Kubernetes
/// source's ConfigMap: as [`load`], except that references to services and workloads the
/// file does not hold are not errors (the merged mesh is validated whole afterwards).
pub fn load_fragment(text: &str) -> Result<MeshFile, ConfigError> {
    let mesh = parse(text)?;
    check(&mesh, &MeshIndex::fragment(&mesh))?;
    Ok(mesh)
}

/// The rules of [`validate`] for a mesh file built around one received resource: references
/// to services and workloads the file does not hold are not errors (they are other resources,
/// and the control plane checked them), and the trust domain of identities is not checked.
pub(crate) fn validate_partial(mesh: &MeshFile) -> Result<(), ConfigError> {
    check(mesh, &MeshIndex::partial(mesh))
}

fn check(mesh: &MeshFile, index: &MeshIndex<'_>) -> Result<(), ConfigError> {
    let mut report = Report::default();
    check_settings(&mesh.mesh, &mut report);
    service::check_all(&mesh.services, index, &mut report);
    workload::check_all(&mesh.workloads, index, &mut report);
    authorization::check_all(&mesh.authorization, index, &mut report);
    report.finish()
}

fn check_settings(settings: &MeshSettings, report: &mut Report) {
    let at = FieldPath::root("mesh");
    report.check(
        &at.key("trustDomain"),
        syntax::dns_name(&settings.trust_domain),
    );
    if let Some(sampling) = settings.tracing.as_ref().and_then(|t| t.sampling) {
        report.between(&at.key("tracing").key("sampling"), sampling, 0.0, 1.0);
    }
}

/// What a mesh file holds, for one-line reports:
/// `3 services, 5 routes, 6 endpoints, 3 workloads, 1 authorization policy`.
pub fn summary(mesh: &MeshFile) -> String {
    let routes: usize = mesh.services.iter().map(|s| s.routes.len()).sum();
    let endpoints: usize = mesh.services.iter().map(|s| s.endpoints.len()).sum();
    [
        count(mesh.services.len(), "service", "services"),
        count(routes, "route", "routes"),
        count(endpoints, "endpoint", "endpoints"),
        count(mesh.workloads.len(), "workload", "workloads"),
        count(
            mesh.authorization.len(),
            "authorization policy",
            "authorization policies",
        ),
    ]
    .join(", ")
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
