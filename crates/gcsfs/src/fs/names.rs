//! Mapping between object keys and path components.
//!
//! An object `a/b/c` is file `c` in directory `a/b`; a directory is the prefix `a/b/`, which exists
//! explicitly (a marker object `a/b/`) or implicitly (some object starts with it). Keys that cannot
//! be paths are skipped by [`component`].

/// The longest file name most Linux filesystems (and the kernel's FUSE layer) accept.
pub const NAME_MAX: usize = 255;

/// Suffix under which a file stays reachable when a directory of the same name exists (the
/// directory wins); the same convention gcsfuse uses.
pub const CONFLICT_SUFFIX: char = '\n';

/// Why a name from the bucket cannot be shown as a path component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadName {
    Empty,
    Dot,
    TooLong,
    Nul,
}

/// Checks that `name` can be a path component; used for names coming from the bucket and from
/// the kernel alike.
pub fn check_component(name: &str) -> Result<(), BadName> {
    if name.is_empty() {
        Err(BadName::Empty)
    } else if name == "." || name == ".." {
        Err(BadName::Dot)
    } else if name.len() > NAME_MAX {
        Err(BadName::TooLong)
    } else if name.contains('\0') {
        Err(BadName::Nul)
    } else {
        Ok(())
    }
}

/// The child key of a directory prefix: `join("a/", "b") == "a/b"`.
pub fn join(dir_prefix: &str, name: &str) -> String {
    let mut s = String::with_capacity(dir_prefix.len() + name.len());
    s.push_str(dir_prefix);
    s.push_str(name);
    s
}

/// The prefix of a directory whose key is `key`: `dir_prefix("a/b") == "a/b/"`.
pub fn dir_prefix(key: &str) -> String {
    let mut s = String::with_capacity(key.len() + 1);
    s.push_str(key);
    s.push('/');
    s
}

/// Normalises `--only-dir`: strips leading/trailing slashes, adds one trailing slash; empty → "".
pub fn normalize_only_dir(dir: &str) -> String {
    let trimmed = dir.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        dir_prefix(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        assert_eq!(check_component("a"), Ok(()));
        assert_eq!(check_component(""), Err(BadName::Empty));
        assert_eq!(check_component("."), Err(BadName::Dot));
        assert_eq!(check_component(".."), Err(BadName::Dot));
        assert_eq!(check_component("..."), Ok(()));
        assert_eq!(check_component(&"x".repeat(255)), Ok(()));
        assert_eq!(check_component(&"x".repeat(256)), Err(BadName::TooLong));
        assert_eq!(check_component("a\0b"), Err(BadName::Nul));
    }

    #[test]
    fn keys() {
        assert_eq!(join("a/", "b"), "a/b");
        assert_eq!(join("", "b"), "b");
        assert_eq!(dir_prefix("a/b"), "a/b/");
        assert_eq!(normalize_only_dir("/x/y/"), "x/y/");
        assert_eq!(normalize_only_dir("x"), "x/");
        assert_eq!(normalize_only_dir("/"), "");
    }
}
