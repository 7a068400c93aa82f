//! The path authorization decides on: the request path normalized the way an app is likely
//! to read it, so `/x/../admin`, `//admin` or `/%61dmin` cannot slip past a policy on
//! `/admin/*`. Percent-encoded unreserved characters are decoded (RFC 3986 §6.2.2.2), runs of
//! `/` merged, and `.` and `..` segments removed (§5.2.4). The forwarded path is unchanged.

use std::borrow::Cow;

/// `path` normalized; borrowed when it is already normal (the common case).
pub fn normalize(path: &str) -> Cow<'_, str> {
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let absolute = decoded.starts_with('/');
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" => trailing = i == last && i > 0,
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    if absolute {
        normal.push('/');
    }
    normal.push_str(&out.join("/"));
    if trailing && !out.is_empty() {
        normal.push('/');
    }
    Cow::Owned(normal)
}

/// No escape, no empty, `.` or `..` segment.
fn is_normal(path: &str) -> bool {
    !path.contains('%')
        && !path.contains("//")
        && !path.split('/').any(|seg| seg == "." || seg == "..")
}

/// Decodes `%XX` where XX is an unreserved character (ALPHA, DIGIT, `-`, `.`, `_`, `~`);
/// every other escape, `%2F` included, stays as it is.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(c) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|c| c.is_ascii_alphanumeric() || b"-._~".contains(c))
        {
            out.push(char::from(c));
            i += 3;
            continue;
        }
        // Copy up to the next '%' at once (keeps multi-byte UTF-8 whole).
        let next = path[i + 1..].find('%').map_or(bytes.len(), |n| i + 1 + n);
        out.push_str(&path[i..next]);
        i = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/admin", "/a/b/", "/a.b/c..d", "*"] {
            assert!(matches!(normalize(p), Cow::Borrowed(_)), "{p}");
        }
    }

    #[test]
    fn tricks_that_reach_admin_normalize_to_admin() {
        for p in [
            "/x/../admin",
            "//admin",
            "/./admin",
            "/%61dmin",
            "/%2e%2e/admin",
            "/x/%2E%2E/admin",
            "/../../admin",
        ] {
            assert_eq!(normalize(p), "/admin", "{p}");
        }
        assert_eq!(normalize("/admin/./x//y/"), "/admin/x/y/");
        assert_eq!(normalize("/admin/.."), "/");
    }

    #[test]
    fn reserved_escapes_stay_encoded() {
        assert_eq!(normalize("/a%2Fb/%3F"), "/a%2Fb/%3F");
        assert_eq!(normalize("/bad%zz/%"), "/bad%zz/%");
        assert_eq!(normalize("/é%41/"), "/éA/");
    }
}
