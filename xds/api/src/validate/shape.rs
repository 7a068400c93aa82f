//! Parsing YAML into the model. A shape error (wrong type, unknown field, bad enum or
//! duration, duplicate key) is named by the path serde had reached and told in the file's
//! words ("must be a list"); rules beyond shapes live in the sibling modules.

use serde_path_to_error::{Path, Segment};
use serde_saphyr::Error as YamlError;

use super::{ConfigError, FieldError, route};
use crate::model::MeshFile;

/// Parses the YAML into the model; a shape error names the field path serde reached.
/// An empty document is an empty mesh.
pub fn parse(text: &str) -> Result<MeshFile, ConfigError> {
    let mut options = serde_saphyr::Options::default();
    // Snippets span several lines; `check` prints one line per error.
    options.with_snippet = false;
    let mut failed_at: Option<(String, Place)> = None;
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        // The path travels beside the error: handing serde-saphyr an `Ok(Err(..))` here
        // would make it look for the rest of a document it never finished reading.
        serde_path_to_error::deserialize::<_, Option<MeshFile>>(de).map_err(|e| {
            failed_at = Some((
                render(e.path(), duplicate_key(e.inner())),
                Place::of(e.path()),
            ));
            e.into_inner()
        })
    });
    match parsed {
        Ok(mesh) => Ok(mesh.unwrap_or_default()),
        Err(e) => {
            let (path, place) = failed_at.unwrap_or_default();
            Err(ConfigError {
                errors: vec![FieldError {
                    path,
                    message: describe(&e, &place, text),
                }],
            })
        }
    }
}

fn duplicate_key(err: &YamlError) -> Option<&str> {
    match err {
        YamlError::DuplicateMappingKey { key, .. } => key.as_deref(),
        _ => None,
    }
}

/// What is wrong, in the words of the file, then where: `must be a list, got a mapping at
/// line 3, column 16`. Errors with no mesh-file meaning keep serde-saphyr's own text.
fn describe(err: &YamlError, place: &Place, text: &str) -> String {
    let found = err
        .location()
        .map(|at| Found::at(text, at.line(), at.column()));
    let got = |found: &Option<Found>| match found {
        Some(f) => format!(", got {}", f.described()),
        None => String::new(),
    };
    let what = match err {
        YamlError::DuplicateMappingKey { .. } => "duplicate key".to_owned(),
        YamlError::MultipleDocuments { .. } => "a mesh file is a single YAML document".to_owned(),
        YamlError::InvalidScalar { ty, .. } => {
            let expect = place.expect().unwrap_or(match *ty {
                "u8" => Expect::Integer(0, u8::MAX.into()),
                "u16" => Expect::Integer(0, u16::MAX.into()),
                "u32" => Expect::Integer(0, u32::MAX.into()),
                "u64" => Expect::Integer(0, u64::MAX),
                "boolean" => Expect::Bool,
                _ => Expect::Number(None),
            });
            format!("must be {}{}", expect.noun(), got(&found))
        }
        YamlError::Unexpected {
            expected: "sequence start",
            ..
        } => format!("must be a list{}", got(&found)),
        YamlError::Unexpected {
            expected: "mapping start",
            ..
        } => format!("must be a mapping{}", got(&found)),
        YamlError::Unexpected {
            expected: "string scalar" | "scalar",
            ..
        }
        | YamlError::ExternallyTaggedEnumExpectedScalarOrMapping { .. } => {
            let noun = place
                .expect()
                .map_or_else(|| "a single value".to_owned(), Expect::noun);
            format!("must be {noun}{}", got(&found))
        }
        YamlError::NullIntoString { .. } => "must be a string, got nothing".to_owned(),
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => format!("must be one of {}, got {variant}", expected.join(", ")),
        YamlError::SerdeUnknownField { expected, .. } => {
            format!("unknown field, expected one of {}", expected.join(", "))
        }
        YamlError::SerdeMissingField { field, .. } => format!("missing required field `{field}`"),
        YamlError::Message { msg, .. } if msg == "invalid socket address syntax" => {
            format!("must be {}{}", Expect::Address.noun(), got(&found))
        }
        YamlError::Message { msg, .. } => msg.clone(),
        other => return other.to_string(),
    };
    match err.location() {
        Some(at) => format!("{what} at line {}, column {}", at.line(), at.column()),
        None => what,
    }
}

/// Where serde stopped, as far as the message needs it: the last key, and for a list item
/// the key of its list.
#[derive(Debug, Default)]
struct Place {
    key: Option<String>,
    item_of: Option<String>,
    /// The key above `key`: `path` for `path.type`, `labels` for `labels.app`, and the
    /// list's key for a field of a list item (`headers` for `headers[0].type`).
    parent: Option<String>,
}

impl Place {
    fn of(path: &Path) -> Self {
        let segments: Vec<&Segment> = path.iter().collect();
        let key_of = |s: Option<&&Segment>| match s {
            Some(Segment::Map { key }) | Some(Segment::Enum { variant: key }) => Some(key.clone()),
            _ => None,
        };
        match segments.split_last() {
            Some((Segment::Seq { .. }, rest)) => Place {
                key: None,
                item_of: key_of(rest.last()),
                parent: None,
            },
            Some((last, rest)) => Place {
                key: key_of(Some(last)),
                item_of: None,
                parent: key_of(rest.last()).or_else(|| key_of(rest.iter().rev().nth(1))),
            },
            None => Place::default(),
        }
    }

    /// What the model holds at this place, where a message can say more than the type.
    fn expect(&self) -> Option<Expect> {
        if let Some(list) = self.item_of.as_deref() {
            return match list {
                "retriableStatusCodes" => Some(Expect::Integer(100, 599)),
                "ports" => Some(Expect::Port),
                "addresses" => Some(Expect::Address),
                "retryOn" => Some(Expect::OneOf(RETRY_ON)),
                _ => Some(Expect::Text),
            };
        }
        if self.parent.as_deref() == Some("labels") {
            return Some(Expect::Text);
        }
        let at_least_one = Expect::Integer(1, u32::MAX.into());
        Some(match self.key.as_deref()? {
            "weight" => Expect::Integer(0, route::MAX_WEIGHT.into()),
            "attempts" => Expect::Integer(1, route::MAX_ATTEMPTS.into()),
            "maxBodyBytes" => Expect::Integer(0, route::MAX_RETRY_BODY),
            "grpcStatus" => Expect::Integer(0, route::MAX_GRPC_STATUS.into()),
            "status" => Expect::Integer(200, 599),
            "maxEjectionPercent" => Expect::Integer(0, 100),
            "maxConnections" | "maxPendingRequests" | "maxRequests" | "maxRetries"
            | "consecutiveErrors" | "requestsPerSecond" | "burst" => at_least_one,
            "minRetriesPerSecond" => Expect::Integer(0, u32::MAX.into()),
            "percent" => Expect::Number(Some("from 0 to 100")),
            "ratio" | "sampling" => Expect::Number(Some("from 0 to 1")),
            "nonIdempotent" => Expect::Bool,
            "connectTimeout" | "interval" | "baseEjectionTime" | "request" | "backendRequest"
            | "base" | "max" | "duration" => Expect::Duration,
            "address" | "listen" | "app" => Expect::Address,
            "protocol" => Expect::OneOf("auto, http1, http2, grpc, tcp"),
            "loadBalancer" => Expect::OneOf("p2c-ewma, round-robin"),
            "mtls" => Expect::OneOf("strict, permissive, disabled"),
            "action" => Expect::OneOf("allow, deny"),
            "mode" => Expect::OneOf("enforce, audit"),
            "type" if self.parent.as_deref() == Some("path") => {
                Expect::OneOf("Exact, PathPrefix, RegularExpression")
            }
            "type" => Expect::OneOf("Exact, RegularExpression"),
            _ => Expect::Text,
        })
    }
}

const RETRY_ON: &str = "5xx, gateway-error, reset, connect-failure, refused-stream, \
    retriable-4xx, retriable-status-codes, cancelled, deadline-exceeded, resource-exhausted, \
    unavailable";

/// The kind of value a scalar field holds, as a message names it.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// An integer in `min..=max`: the field's own bound where it has one, else its type's.
    Integer(u64, u64),
    Port,
    /// A number, with its range in words where the field has one.
    Number(Option<&'static str>),
    Bool,
    Duration,
    Address,
    OneOf(&'static str),
    Text,
}

impl Expect {
    fn noun(self) -> String {
        match self {
            Expect::Integer(min, max) => format!("an integer from {min} to {max}"),
            Expect::Port => "a port from 1 to 65535".to_owned(),
            Expect::Number(Some(range)) => format!("a number {range}"),
            Expect::Number(None) => "a number".to_owned(),
            Expect::Bool => "true or false".to_owned(),
            Expect::Duration => "a duration such as 250ms or 2s".to_owned(),
            Expect::Address => "an ip:port address".to_owned(),
            Expect::OneOf(values) => format!("one of {values}"),
            Expect::Text => "a string".to_owned(),
        }
    }
}

/// What the file holds where serde stopped: a list, a mapping, or a scalar as written.
enum Found {
    List,
    Mapping,
    Nothing,
    Scalar(String),
}

impl Found {
    /// Reads the node that starts at 1-based `line` and `column` of `text`.
    fn at(text: &str, line: u64, column: u64) -> Found {
        let row = usize::try_from(line.saturating_sub(1)).unwrap_or(usize::MAX);
        let col = usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX);
        let Some(rest) = text
            .lines()
            .nth(row)
            .map(|l| l.chars().skip(col).collect::<String>())
        else {
            return Found::Nothing;
        };
        let rest = rest.trim_end();
        if rest.starts_with('[') || rest == "-" || rest.starts_with("- ") {
            return Found::List;
        }
        if rest.starts_with('{') {
            return Found::Mapping;
        }
        let scalar = if let Some(quoted) = rest.strip_prefix('"') {
            quoted.split('"').next().unwrap_or_default().to_owned()
        } else if let Some(quoted) = rest.strip_prefix('\'') {
            quoted.split('\'').next().unwrap_or_default().to_owned()
        } else {
            let end = rest
                .find([',', ']', '}'])
                .into_iter()
                .chain(rest.find(" #"))
                .min()
                .unwrap_or(rest.len());
            let plain = rest[..end].trim();
            // `key: value` here is a block mapping where a scalar was wanted.
            if plain.ends_with(':') || plain.contains(": ") {
                return Found::Mapping;
            }
            plain.to_owned()
        };
        if scalar.is_empty() || scalar == "~" || scalar == "null" {
            Found::Nothing
        } else {
            Found::Scalar(scalar)
        }
    }

    fn described(&self) -> String {
        match self {
            Found::List => "a list".to_owned(),
            Found::Mapping => "a mapping".to_owned(),
            Found::Nothing => "nothing".to_owned(),
            // Numbers as written, other text quoted so its edges show.
            Found::Scalar(s) if s.parse::<f64>().is_ok() => s.clone(),
            Found::Scalar(s) => format!("{s:?}"),
        }
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
