//! The system tags MLflow records on a new run: who ran it, from what, at which commit.

use std::path::{Path, PathBuf};

use crate::ids::RunId;

/// `mlflow.user`.
pub const USER: &str = "mlflow.user";
/// `mlflow.source.name`.
pub const SOURCE_NAME: &str = "mlflow.source.name";
/// `mlflow.source.type`.
pub const SOURCE_TYPE: &str = "mlflow.source.type";
/// `mlflow.source.git.commit`.
pub const GIT_COMMIT: &str = "mlflow.source.git.commit";
/// `mlflow.runName`.
pub const RUN_NAME: &str = "mlflow.runName";
/// `mlflow.parentRunId`.
pub const PARENT_RUN_ID: &str = "mlflow.parentRunId";
/// `mlflow.note.content`: a run's notes.
pub const NOTE: &str = "mlflow.note.content";

/// The tags to set on a new run.
pub fn for_new_run(name: &str, parent: Option<RunId>) -> Vec<(&'static str, String)> {
    let mut tags = Vec::new();
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok());
    if let Some(user) = user.filter(|u| !u.is_empty()) {
        tags.push((USER, user));
    }
    if let Some(source) = std::env::args().next() {
        tags.push((SOURCE_NAME, source));
    }
    tags.push((SOURCE_TYPE, "LOCAL".to_string()));
    if let Some(commit) = std::env::current_dir()
        .ok()
        .and_then(|dir| git_commit(&dir))
    {
        tags.push((GIT_COMMIT, commit));
    }
    tags.extend(name_and_parent(name, parent));
    tags
}

/// The tags every new run gets, whoever creates it: its name and, when nested, its parent.
pub fn name_and_parent(name: &str, parent: Option<RunId>) -> Vec<(&'static str, String)> {
    let mut tags = vec![(RUN_NAME, name.to_string())];
    if let Some(parent) = parent {
        tags.push((PARENT_RUN_ID, parent.to_string()));
    }
    tags
}

/// The commit checked out in the git work tree containing `start`, read from `.git` directly
/// (no git binary needed): `HEAD`, then the ref it names, loose or packed.
pub fn git_commit(start: &Path) -> Option<String> {
    let git_dir = find_git_dir(start)?;
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return is_commit_id(head).then(|| head.to_string());
    };
    // Linked work trees keep shared refs in the common directory.
    let common = std::fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|| git_dir.clone());
    for dir in [&git_dir, &common] {
        if let Ok(id) = std::fs::read_to_string(dir.join(reference)) {
            let id = id.trim();
            if is_commit_id(id) {
                return Some(id.to_string());
            }
        }
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (id, name) = line.split_once(' ')?;
        (name == reference && is_commit_id(id)).then(|| id.to_string())
    })
}

fn find_git_dir(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let dot_git = dir.join(".git");
        if dot_git.is_dir() {
            return Some(dot_git);
        }
        // A linked work tree or submodule: `.git` is a file saying `gitdir: <path>`.
        let pointer = std::fs::read_to_string(&dot_git).ok()?;
        let target = pointer.trim().strip_prefix("gitdir: ")?;
        Some(dir.join(target))
    })
}

fn is_commit_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loose_packed_and_detached_heads() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        let id = "0123456789abcdef0123456789abcdef01234567";
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(git_commit(dir.path()), None);
        std::fs::write(
            git.join("packed-refs"),
            format!("# pack-refs\n{id} refs/heads/main\n"),
        )
        .unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        assert_eq!(git_commit(&nested).as_deref(), Some(id));
        let loose = "fedcba9876543210fedcba9876543210fedcba98";
        std::fs::write(git.join("refs/heads/main"), format!("{loose}\n")).unwrap();
        assert_eq!(git_commit(dir.path()).as_deref(), Some(loose));
        std::fs::write(git.join("HEAD"), format!("{id}\n")).unwrap();
        assert_eq!(git_commit(dir.path()).as_deref(), Some(id));
    }
}
