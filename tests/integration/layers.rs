//! The crate's modules form layers: each top-level module under `src/` uses only modules in
//! lower layers, so the dependency graph has no cycle. `docs/ARCHITECTURE.md` draws the same
//! `LAYERS` as this test; the test reads the `crate::` paths of every file under `src/` (test
//! modules and doc links included: they are dependencies too) and fails on any edge that does
//! not point down, unless it is one of the few `EXCEPTIONS` listed with its reason and the exact
//! files that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of lower layers only, never one of its own layer.
const LAYERS: &[&[&str]] = &[
    &["util", "layout", "limits", "ids"],
    &["error", "summary"],
    &["io"],
    &["periodic", "parquet_file"],
    &["wal"],
    &["catalog"],
    &["artifact"],
    &["compaction"],
    &["tracking"],
    &["query", "export", "verify", "ingest"],
    // MLflow's protocol over the engine's public API; its front-ends (the HTTP server, the
    // Python plugin) sit above it.
    &["mlflow"],
    // The HTTP transport over the protocol; nothing in the library uses it.
    &["server"],
];

/// An edge that does not point down, allowed only from `files` (paths under `src/`).
struct Exception {
    from: &'static str,
    to: &'static str,
    files: &'static [&'static str],
    reason: &'static str,
}

const EXCEPTIONS: &[Exception] = &[
    Exception {
        from: "ids",
        to: "error",
        files: &["ids.rs"],
        reason: "parsing a RunId reports a crate::Error, whose variants name ids: the two are \
                 the crate's vocabulary and are used together everywhere",
    },
    Exception {
        from: "compaction",
        to: "tracking",
        files: &[
            "compaction/writer.rs",
            "compaction/stats.rs",
            "compaction/background.rs",
            "compaction/warm.rs",
            "compaction/step_pages.rs",
        ],
        reason: "compaction extends Store: `impl Store` blocks add compact(), \
                 compaction_stats() and warm_compacted_files(), and the background compactor \
                 holds a weak StoreInner; step_pages.rs only in its test, which compacts \
                 through a Store to get real encoded pages; these files sit above tracking, \
                 the rest of compaction below it",
    },
];

/// Top-level modules and the `crate::` roots that are re-exports of them (`crate::Error`).
fn modules_and_reexports(src: &Path) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let is_module_dir = path.is_dir() && name != "bin";
        let is_module_file = path.extension().is_some_and(|e| e == "rs") && name != "lib";
        if is_module_dir || is_module_file {
            modules.insert(name);
        }
    }
    let mut reexports = BTreeMap::new();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    // Whole statements, so a `pub use` that rustfmt wraps over several lines is read too.
    let code: String = lib
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join(" ");
    for statement in code.split(';') {
        // After any attribute (`#[cfg(...)] pub use ...`).
        let Some(at) = statement.find("pub use ") else {
            continue;
        };
        let rest = &statement[at + "pub use ".len()..];
        let module = rest.split("::").next().unwrap().to_string();
        let items = rest[module.len()..]
            .trim_start_matches("::")
            .trim_end_matches(';');
        for item in items
            .trim()
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
        {
            let name = item.split_whitespace().last().unwrap_or("").to_string();
            if !name.is_empty() {
                reexports.insert(name, module.clone());
            }
        }
    }
    (modules, reexports)
}

/// The first path segment after each `crate::` in `text`, groups (`crate::{a, b}`) expanded.
fn crate_roots(text: &str) -> Vec<String> {
    let mut roots = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        roots.push(identifier(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            roots.push(identifier(rest));
        }
    }
    roots
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Edges between top-level modules, each with the files (under `src/`) that make it.
fn module_graph(src: &Path) -> BTreeMap<(String, String), BTreeSet<String>> {
    let (modules, reexports) = modules_and_reexports(src);
    let mut files = Vec::new();
    for module in &modules {
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(src.join(format!("{module}.rs")));
        }
    }
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let from = identifier(&relative);
        let text = std::fs::read_to_string(&file).unwrap();
        // Plain comments name modules without using them; doc comments are kept (a doc
        // link is a dependency of the docs).
        let code: String = text
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !l.starts_with("//") || l.starts_with("///") || l.starts_with("//!")
            })
            .collect::<Vec<_>>()
            .join("\n");
        for root in crate_roots(&code) {
            let to = reexports.get(&root).cloned().unwrap_or(root);
            assert!(
                modules.contains(&to),
                "{relative}: crate::{to} is not a top-level module"
            );
            if to != from {
                edges
                    .entry((from.clone(), to))
                    .or_default()
                    .insert(relative.clone());
            }
        }
    }
    edges
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn every_module_is_in_a_layer() {
    let (modules, _) = modules_and_reexports(&src_dir());
    let unplaced: Vec<_> = modules.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules in no layer (add them to LAYERS and ARCHITECTURE.md): {unplaced:?}"
    );
}

#[test]
fn the_mlflow_protocol_sits_between_the_engine_and_its_front_ends() {
    let mlflow = layer_of("mlflow").unwrap();
    for below in ["tracking", "query", "catalog", "wal"] {
        assert!(
            layer_of(below).unwrap() < mlflow,
            "{below} must sit below mlflow"
        );
    }
    assert!(layer_of("server").unwrap() > mlflow);
    // Nothing below it uses it (module_dependencies_point_down checks every edge; this names
    // the one that matters most).
    let edges = module_graph(&src_dir());
    let users: Vec<_> = edges
        .keys()
        .filter(|(from, to)| to == "mlflow" && layer_of(from).is_some_and(|l| l < mlflow))
        .collect();
    assert!(users.is_empty(), "modules below mlflow use it: {users:?}");
}

#[test]
fn module_dependencies_point_down() {
    let edges = module_graph(&src_dir());
    let mut violations = Vec::new();
    for ((from, to), files) in &edges {
        let (Some(from_layer), Some(to_layer)) = (layer_of(from), layer_of(to)) else {
            continue;
        };
        if to_layer < from_layer {
            continue;
        }
        let exception = EXCEPTIONS.iter().find(|e| e.from == from && e.to == to);
        let unexcused: Vec<_> = files
            .iter()
            .filter(|f| !exception.is_some_and(|e| e.files.contains(&f.as_str())))
            .collect();
        if !unexcused.is_empty() {
            violations.push(format!(
                "{from} -> {to} (layer {from_layer} -> {to_layer}) in {unexcused:?}"
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies that do not point down:\n{}",
        violations.join("\n")
    );
}

#[test]
fn exceptions_are_still_needed() {
    let edges = module_graph(&src_dir());
    for exception in EXCEPTIONS {
        let key = (exception.from.to_string(), exception.to.to_string());
        let files = edges.get(&key).cloned().unwrap_or_default();
        for file in exception.files {
            assert!(
                files.contains(*file),
                "exception {} -> {} lists {file}, which no longer makes that edge ({}): remove it",
                exception.from,
                exception.to,
                exception.reason,
            );
        }
    }
}

/// Without the exceptions the graph has no cycle; with them, every cycle runs through one.
#[test]
fn no_cycle_but_through_an_exception() {
    let edges = module_graph(&src_dir());
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        if !EXCEPTIONS.iter().any(|e| e.from == from && e.to == to) {
            next.entry(from).or_default().push(to);
        }
    }
    // Depth-first search; a node met again while on the path closes a cycle.
    fn visit<'a>(
        node: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for to in next.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(to, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in next.keys() {
        let cycle = visit(node, &next, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "module cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}
