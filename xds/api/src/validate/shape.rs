//! Parsing YAML into the model. A shape error (wrong type, unknown field, bad enum or
//! duration, duplicate key) is named by the path serde had reached; rules beyond shapes
//! live in the sibling modules.

use serde_path_to_error::{Path, Segment};
use serde_saphyr::Error as YamlError;

use super::{ConfigError, FieldError};
use crate::model::MeshFile;

/// Parses the YAML into the model; a shape error names the field path serde reached.
/// An empty document is an empty mesh.
pub fn parse(text: &str) -> Result<MeshFile, ConfigError> {
    let mut options = serde_saphyr::Options::default();
    // Snippets span several lines; `check` prints one line per error.
    options.with_snippet = false;
    let mut failed_at: Option<String> = None;
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        // The path travels beside the error: handing serde-saphyr an `Ok(Err(..))` here
        // would make it look for the rest of a document it never finished reading.
        serde_path_to_error::deserialize::<_, Option<MeshFile>>(de).map_err(|e| {
            failed_at = Some(render(e.path(), duplicate_key(e.inner())));
            e.into_inner()
        })
    });
    match parsed {
        Ok(mesh) => Ok(mesh.unwrap_or_default()),
        Err(e) => Err(ConfigError {
            errors: vec![FieldError {
                path: failed_at.unwrap_or_default(),
                message: describe(&e),
            }],
        }),
    }
}

fn duplicate_key(err: &YamlError) -> Option<&str> {
    match err {
        YamlError::DuplicateMappingKey { key, .. } => key.as_deref(),
        _ => None,
    }
}

/// serde-saphyr's own text, except where it gives advice about its API instead of the file.
fn describe(err: &YamlError) -> String {
    let what = match err {
        YamlError::DuplicateMappingKey { .. } => "duplicate key",
        YamlError::MultipleDocuments { .. } => "a mesh file is a single YAML document",
        other => return other.to_string(),
    };
    match err.location() {
        Some(at) => format!("{what} at line {}, column {}", at.line(), at.column()),
        None => what.to_owned(),
    }
}

/// `services[2].routes[0].backendRefs[1].weight`; the root is the empty string. A key serde
/// never got to record (a duplicate one) is `unread_key` when known, else `?`.
fn render(path: &Path, unread_key: Option<&str>) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        let key = match segment {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                continue;
            }
            Segment::Map { key } | Segment::Enum { variant: key } => key.as_str(),
            Segment::Unknown => unread_key.unwrap_or("?"),
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
    }
    out
}
