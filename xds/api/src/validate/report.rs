//! Where a problem is and the list of problems found: `FieldPath` spells paths the way the
//! YAML is written (`services[2].routes[0].backendRefs[1].weight`), `Report` keeps them in order.

use std::fmt;

use super::{ConfigError, FieldError};

/// A field's position in the mesh file (or in one received resource): camelCase keys joined
/// by `.`, list items as `[i]`. The default is the root itself, the empty path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(String);

impl FieldPath {
    pub(crate) fn root(key: &str) -> Self {
        FieldPath(key.to_owned())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(key.to_owned())
        } else {
            FieldPath(format!("{}.{key}", self.0))
        }
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// The one error at this path.
    pub(crate) fn error(&self, message: impl Into<String>) -> FieldError {
        FieldError {
            path: self.0.clone(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every problem found so far, in the order the checks walk the file.
#[derive(Debug, Default)]
pub(super) struct Report {
    errors: Vec<FieldError>,
}

impl Report {
    pub(super) fn add(&mut self, at: &FieldPath, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: at.0.clone(),
            message: message.into(),
        });
    }

    /// Records the message of a failed check; a passed one leaves no trace.
    pub(super) fn check(&mut self, at: &FieldPath, verdict: Result<(), String>) {
        if let Err(message) = verdict {
            self.add(at, message);
        }
    }

    pub(super) fn at_least<T: PartialOrd + fmt::Display>(
        &mut self,
        at: &FieldPath,
        value: T,
        min: T,
    ) {
        if value < min {
            self.add(at, format!("must be at least {min}, got {value}"));
        }
    }

    pub(super) fn at_most<T: PartialOrd + fmt::Display>(
        &mut self,
        at: &FieldPath,
        value: T,
        max: T,
    ) {
        if value > max {
            self.add(at, format!("must be at most {max}, got {value}"));
        }
    }

    /// `min..=max`; NaN is within no range.
    pub(super) fn between<T: PartialOrd + fmt::Display>(
        &mut self,
        at: &FieldPath,
        value: T,
        min: T,
        max: T,
    ) {
        if !(min <= value && value <= max) {
            self.add(at, format!("must be from {min} to {max}, got {value}"));
        }
    }

    pub(super) fn positive(&mut self, at: &FieldPath, value: crate::Dur) {
        if value.get().is_zero() {
            self.add(at, "must be greater than 0");
        }
    }

    pub(super) fn finish(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                errors: self.errors,
            })
        }
    }
}
