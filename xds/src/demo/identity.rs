//! The demo's identity files: one random bootstrap token per workload, in `tokens.yaml` for
//! the control plane and `tokens/<workload>.token` for its sidecar (0600 each), and where the
//! CA keeps its anchor (`ca/`, created by the control plane on first start).

use std::{
    fmt::Write as _,
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use ring::rand::{SecureRandom, SystemRandom};

/// The CA directory inside the demo directory.
pub const CA_DIR: &str = "ca";
const TOKENS_DIR: &str = "tokens";

/// Where `workload`'s sidecar reads its token.
pub fn token_path(dir: &Path, workload: &str) -> PathBuf {
    dir.join(TOKENS_DIR).join(format!("{workload}.token"))
}

/// Writes a fresh token per workload and the control plane's map of them; returns the map's
/// path.
pub fn write_tokens<'a>(
    dir: &Path,
    workloads: impl Iterator<Item = &'a str>,
) -> io::Result<PathBuf> {
    fs::create_dir_all(dir.join(TOKENS_DIR))?;
    let rng = SystemRandom::new();
    let mut map = String::new();
    for w in workloads {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes)
            .map_err(|_| io::Error::other("no randomness for a token"))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(map, "default/{w}: {token}");
        write_private(&token_path(dir, w), &token)?;
    }
    let path = dir.join("tokens.yaml");
    write_private(&path, &map)?;
    Ok(path)
}

/// Writes a secret readable by its owner only.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn every_workload_gets_its_own_private_token_listed_in_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let map = write_tokens(dir.path(), ["a", "b"].into_iter()).unwrap();
        let text = fs::read_to_string(&map).unwrap();
        let a = fs::read_to_string(token_path(dir.path(), "a")).unwrap();
        let b = fs::read_to_string(token_path(dir.path(), "b")).unwrap();
        assert_ne!(a, b);
        assert!(text.contains(&format!("default/a: {}", a.trim())));
        assert!(text.contains(&format!("default/b: {}", b.trim())));
        for p in [map, token_path(dir.path(), "a")] {
            assert_eq!(fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
