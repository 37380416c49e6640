//! Artifact folders and deletion through the library: listing a folder's direct children,
//! deleting a file or a folder (recorded in the log, file removed), and the one path check
//! every front-end relies on.

use runlog::{ArtifactEntry, Error, Store, StoreOptions};

use crate::util::Store as TempStore;

fn open(dir: &TempStore) -> Store {
    Store::open_with(dir.dir.path(), StoreOptions::default()).unwrap()
}

fn names(entries: &[ArtifactEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| match entry {
            ArtifactEntry::File { path, size_bytes } => format!("{path}:{size_bytes}"),
            ArtifactEntry::Dir { path } => format!("{path}/"),
        })
        .collect()
}

#[test]
fn folders_list_their_direct_children() {
    let dir = TempStore::new();
    let store = open(&dir);
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let run = store
        .start_run(experiment, Default::default())
        .unwrap()
        .id();
    for (path, bytes) in [
        ("a.txt", &b"hello"[..]),
        ("d/b.txt", b"bb"),
        ("d/e/c.txt", b"c"),
    ] {
        store.log_artifact_bytes(run, path, bytes).unwrap();
    }
    assert_eq!(
        names(&store.list_artifacts(run, "").unwrap()),
        ["a.txt:5", "d/"]
    );
    assert_eq!(
        names(&store.list_artifacts(run, "d").unwrap()),
        ["d/b.txt:2", "d/e/"]
    );
    assert!(store.list_artifacts(run, "a.txt").unwrap().is_empty());
    assert!(store.list_artifacts(run, "nothing").unwrap().is_empty());
    assert!(matches!(
        store.list_artifacts(run, "../x"),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn a_deleted_artifact_is_gone_after_reopen_and_its_path_is_free_again() {
    let dir = TempStore::new();
    let store = open(&dir);
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let run = store
        .start_run(experiment, Default::default())
        .unwrap()
        .id();
    store.log_artifact_bytes(run, "keep.txt", b"k").unwrap();
    store.log_artifact_bytes(run, "m/a.bin", b"a").unwrap();
    store.log_artifact_bytes(run, "m/sub/b.bin", b"b").unwrap();
    let file = dir
        .dir
        .path()
        .join("artifacts")
        .join(run.to_string())
        .join("m/a.bin");
    assert!(file.exists());

    // A folder goes with everything under it; a prefix that is not a folder is not touched.
    let mut deleted = store.delete_artifacts(run, "m").unwrap();
    deleted.sort();
    assert_eq!(deleted, ["m/a.bin", "m/sub/b.bin"]);
    assert!(!file.exists());
    assert!(matches!(
        store.read_artifact(run, "m/a.bin"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.delete_artifacts(run, "m"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.delete_artifacts(run, "kee"),
        Err(Error::NotFound(_))
    ));
    for bad in ["..", "../keep.txt", "/keep.txt", "a\\b", "a\0b"] {
        assert!(
            matches!(
                store.delete_artifacts(run, bad),
                Err(Error::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    drop(store);

    let store = open(&dir);
    assert_eq!(
        names(&store.list_artifacts(run, "").unwrap()),
        ["keep.txt:1"]
    );
    // The path can be stored again, with new content.
    store.log_artifact_bytes(run, "m/a.bin", b"new").unwrap();
    assert_eq!(store.read_artifact(run, "m/a.bin").unwrap(), b"new");
    drop(store);
    let store = open(&dir);
    assert_eq!(store.read_artifact(run, "m/a.bin").unwrap(), b"new");
}

#[cfg(feature = "parquet")]
#[test]
fn deletion_survives_compaction() {
    let dir = TempStore::new();
    let store = open(&dir);
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let run = store
        .start_run(experiment, Default::default())
        .unwrap()
        .id();
    store.log_artifact_bytes(run, "x.txt", b"x").unwrap();
    store.log_artifact_bytes(run, "y.txt", b"y").unwrap();
    store.delete_artifacts(run, "x.txt").unwrap();
    store.close().unwrap();
    store.compact().unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(names(&store.list_artifacts(run, "").unwrap()), ["y.txt:1"]);
}
