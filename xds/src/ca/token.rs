//! Bootstrap tokens: the YAML map `<namespace>/<workload>: <token>` given by
//! `--bootstrap-tokens`, and the constant-time check of a caller's token against it.
//! Tokens are secrets: nothing here prints one, `Debug` included.

use std::{collections::HashMap, fmt, path::Path};

use super::error::CaError;

/// The tokens that prove each workload, keyed by `<namespace>/<workload>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BootstrapTokens {
    by_workload: HashMap<String, String>,
}

impl fmt::Debug for BootstrapTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut workloads: Vec<&str> = self.by_workload.keys().map(String::as_str).collect();
        workloads.sort_unstable();
        f.debug_struct("BootstrapTokens")
            .field("workloads", &workloads)
            .finish_non_exhaustive()
    }
}

impl BootstrapTokens {
    /// Reads and checks the token file.
    pub fn load(path: &Path) -> Result<Self, CaError> {
        let text = std::fs::read_to_string(path).map_err(|source| CaError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the file's text; `path` only names the file in errors. Keys must be
    /// `<namespace>/<workload>`; tokens are trimmed, as the proxy trims its token file, and
    /// must not be empty (an empty token would prove anyone).
    pub fn parse(path: &Path, text: &str) -> Result<Self, CaError> {
        // An empty file (or one of comments only) is an empty map, not an error.
        let raw: Option<HashMap<String, String>> =
            serde_saphyr::from_str(text).map_err(|e: serde_saphyr::Error| {
                let at = e.location();
                CaError::TokensSyntax {
                    path: path.to_owned(),
                    line: at.map_or(0, |l| l.line()),
                    column: at.map_or(0, |l| l.column()),
                }
            })?;
        let mut by_workload = HashMap::new();
        for (key, token) in raw.unwrap_or_default() {
            let entry_error = |problem| CaError::TokenEntry {
                path: path.to_owned(),
                key: key.clone(),
                problem,
            };
            match key.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {}
                _ => return Err(entry_error("the key must be <namespace>/<workload>")),
            }
            let token = token.trim();
            if token.is_empty() {
                return Err(entry_error("the token is empty"));
            }
            by_workload.insert(key, token.to_owned());
        }
        Ok(BootstrapTokens { by_workload })
    }

    /// Whether `token` proves `workload` (`<namespace>/<name>`). An unknown workload is
    /// refused like a wrong token.
    pub fn admits(&self, workload: &str, token: &str) -> bool {
        match self.by_workload.get(workload) {
            Some(expected) => constant_time_eq(expected.as_bytes(), token.trim().as_bytes()),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.by_workload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_workload.is_empty()
    }
}

/// Equality whose time does not depend on where the inputs differ, nor on their lengths:
/// both are hashed first, then every byte of the digests is compared.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    let diff = da
        .as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BootstrapTokens, CaError> {
        BootstrapTokens::parse(Path::new("tokens.yaml"), text)
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3cret", b"s3cres"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret "));
        assert!(!constant_time_eq(b"s3cret", b""));
        assert!(!constant_time_eq(b"a", b"b"));
    }

    #[test]
    fn admits_only_the_workloads_own_token() {
        let tokens = parse("default/reviews: abc\nshop/cart: \"  xyz \"\n").expect("valid");
        assert_eq!(tokens.len(), 2);
        assert!(tokens.admits("default/reviews", "abc"));
        assert!(
            tokens.admits("default/reviews", "abc\n"),
            "trimmed like a token file"
        );
        assert!(
            tokens.admits("shop/cart", "xyz"),
            "the file's token is trimmed too"
        );
        assert!(!tokens.admits("default/reviews", "xyz"));
        assert!(!tokens.admits("shop/cart", "abc"));
        assert!(!tokens.admits("default/ratings", "abc"));
        assert!(!tokens.admits("default/reviews", ""));
    }

    #[test]
    fn a_numeric_token_is_a_string() {
        let tokens = parse("default/reviews: 012345\n").expect("valid");
        assert!(tokens.admits("default/reviews", "012345"));
    }

    #[test]
    fn an_empty_file_admits_no_one() {
        let tokens = parse("# nothing yet\n").expect("an empty map");
        assert!(tokens.is_empty());
        assert!(!tokens.admits("default/reviews", ""));
    }

    #[test]
    fn bad_entries_are_named() {
        for (text, key) in [
            ("reviews: abc\n", "reviews"),
            ("/reviews: abc\n", "/reviews"),
            ("default/: abc\n", "default/"),
            ("a/b/c: abc\n", "a/b/c"),
            ("default/reviews: \"  \"\n", "default/reviews"),
        ] {
            match parse(text) {
                Err(CaError::TokenEntry { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected a refused entry, got {other:?}"),
            }
        }
        assert!(matches!(
            parse("[a, b]\n"),
            Err(CaError::TokensSyntax { .. })
        ));
    }

    #[test]
    fn a_refused_file_never_shows_a_token() {
        for text in [
            "default/reviews: [hunter2]\n",
            "default/reviews: {a: hunter2}\n",
        ] {
            let err = parse(text).expect_err("not a string token");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn debug_never_shows_a_token() {
        let tokens = parse("default/reviews: hunter2\n").expect("valid");
        let shown = format!("{tokens:?}");
        assert!(shown.contains("default/reviews"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
