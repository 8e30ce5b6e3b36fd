//! The one rule for every path a node writes: relative to the host's output root and inside it.
//!
//! A writing node names a folder (SaveFrames' and SaveVideo's `directory` widget) and lct
//! resolves it here, nowhere else: the text must be a relative path without `..`, and every
//! folder on the way is created (if missing) and then resolved, links followed, and checked to
//! lie inside the resolved root. A graph sent to a shared server can therefore not write
//! outside the folder its host chose, whatever the string or the links already on disk.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

/// Why a folder was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OutputPathError {
    #[error("{given:?} is an absolute path; output folders are relative to the output root {}", root.display())]
    Absolute { given: String, root: PathBuf },
    #[error("{given:?} contains `..`; output folders must stay inside the output root {}", root.display())]
    ParentDir { given: String, root: PathBuf },
    #[error("{given:?} contains a backslash; use `/` between folder names")]
    Backslash { given: String },
    #[error("{given:?} leads to {}, outside the output root {} (through a link)", resolved.display(), root.display())]
    Escapes {
        given: String,
        resolved: PathBuf,
        root: PathBuf,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The folder `directory` inside `root`, created if missing; `root` itself for an empty or
/// `.` directory. The path returned is resolved (absolute, no links).
pub fn folder_inside(root: &Path, directory: &str) -> Result<PathBuf, OutputPathError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OutputPathError::Io { path, source }
    };
    let given = || directory.to_owned();
    if directory.contains('\\') {
        return Err(OutputPathError::Backslash { given: given() });
    }
    // The whole string is checked before anything is made.
    let mut names = Vec::new();
    for component in Path::new(directory).components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(OutputPathError::ParentDir {
                    given: given(),
                    root: root.to_path_buf(),
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(OutputPathError::Absolute {
                    given: given(),
                    root: root.to_path_buf(),
                })
            }
        }
    }
    // The root is the host's choice: made if missing, trusted, resolved once.
    std::fs::create_dir_all(root).map_err(io(root))?;
    let root = root.canonicalize().map_err(io(root))?;
    let mut folder = root.clone();
    for name in names {
        let next = folder.join(name);
        match std::fs::create_dir(&next) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&next)(e)),
        }
        // Resolve before going deeper: a link out of the root is refused before anything is
        // made beyond it.
        let resolved = next.canonicalize().map_err(io(&next))?;
        if !resolved.starts_with(&root) {
            return Err(OutputPathError::Escapes {
                given: given(),
                resolved,
                root,
            });
        }
        if !resolved.is_dir() {
            return Err(io(&next)(std::io::Error::new(
                ErrorKind::NotADirectory,
                "exists and is not a folder",
            )));
        }
        folder = resolved;
    }
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_folders_are_made_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let made = folder_inside(root.path(), "frames/./a/b").unwrap();
        let canonical = root.path().canonicalize().unwrap();
        assert_eq!(made, canonical.join("frames/a/b"));
        assert!(made.is_dir());
        assert_eq!(folder_inside(root.path(), "").unwrap(), canonical);
        assert_eq!(folder_inside(root.path(), ".").unwrap(), canonical);
        // A missing root is made (the host's choice).
        let nested = root.path().join("new/root");
        assert!(folder_inside(&nested, "x").unwrap().ends_with("new/root/x"));
    }

    #[test]
    fn every_way_out_is_refused_by_name_and_nothing_is_made_outside() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("out");
        std::fs::create_dir(&root).unwrap();
        for (given, expected) in [
            ("../x", "contains `..`"),
            ("a/../../x", "contains `..`"),
            ("a/..", "contains `..`"),
            ("/tmp/x", "is an absolute path"),
            ("//x", "is an absolute path"),
            ("a\\..\\..\\x", "backslash"),
        ] {
            let error = folder_inside(&root, given).unwrap_err();
            assert!(error.to_string().contains(expected), "{given}: {error}");
        }
        // A link inside the root that points out of it.
        let outside = base.path().join("elsewhere");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let error = folder_inside(&root, "link/deeper").unwrap_err();
        assert!(matches!(error, OutputPathError::Escapes { .. }), "{error}");
        assert!(
            error.to_string().contains("outside the output root"),
            "{error}"
        );
        assert!(!outside.join("deeper").exists());
        // A link that stays inside is fine.
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
        let made = folder_inside(&root, "alias/sub").unwrap();
        assert!(made.ends_with("out/real/sub"), "{}", made.display());
        let entries: Vec<_> = std::fs::read_dir(base.path()).unwrap().collect();
        assert_eq!(entries.len(), 2, "only out/ and elsewhere/ exist");
        // A refused string makes nothing on its way to the `..`.
        folder_inside(&root, "fresh/../../x").unwrap_err();
        assert!(!root.join("fresh").exists());
    }
}
