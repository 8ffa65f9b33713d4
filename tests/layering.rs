//! The crate's layering, kept true by a check rather than by memory (rerun checks its
//! crate layering the same way): every `crate::X` path in a top-level module of `src/`
//! must name a module that the layer may use. The allowed arrows are written once here
//! and once in `docs/ARCHITECTURE.md`; a test holds the two against each other.
//!
//! Until the engine branch of issue 10 is merged, `session -> engine` (the run rule,
//! `engine::extent`, moving to `volume`) and `train -> eval` (dataset discovery moving
//! to `dataset`) still exist on this branch: the table below is the target, and
//! `imports_follow_the_layers` names those two arrows until the moves land.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module and the modules it may use (besides [`LEAVES`]).
const LAYERS: &[(&str, &[&str])] = &[
    ("volume", &[]),
    ("io", &["volume"]),
    ("display", &["volume"]),
    ("model", &["volume"]),
    ("engine", &["model", "volume"]),
    ("session", &["io", "volume"]),
    ("dataset", &["io", "volume"]),
    ("pacs", &[]),
    ("eval", &["dataset", "engine", "io", "model", "volume"]),
    ("train", &["dataset", "engine", "io", "model", "volume"]),
    (
        "cli",
        &[
            "dataset", "display", "engine", "eval", "io", "model", "pacs", "session", "train",
            "volume",
        ],
    ),
    (
        "ui",
        &[
            "cli", "dataset", "display", "engine", "eval", "io", "model", "pacs", "session",
            "train", "volume",
        ],
    ),
];

/// Modules below every layer that any module may use: atomic file writing and the
/// lookup of the shared test data. They use nothing of the crate themselves.
const LEAVES: &[&str] = &["files", "testing"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs`, `main.rs`).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The modules a line of code names as `crate::X` (also `crate::{X, Y::..}`).
fn crate_references(line: &str) -> Vec<String> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        // `icseg_crate::` or `some_crate::` are not ours.
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = item.trim().split("::").next().unwrap_or_default();
                if !name.is_empty() {
                    out.push(name.to_string());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

/// Every `(from, to)` module pair the code has, with a file and line as an example.
fn arrows() -> BTreeMap<(String, String), String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut arrows = BTreeMap::new();
    for file in files {
        let Some(from) = module_of(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            for to in crate_references(line) {
                if to != from && to != "self" {
                    let place = format!("{}:{}", file.display(), n + 1);
                    arrows.entry((from.clone(), to)).or_insert(place);
                }
            }
        }
    }
    arrows
}

fn allowed(from: &str, to: &str) -> bool {
    LEAVES.contains(&to)
        || LAYERS
            .iter()
            .any(|(m, uses)| *m == from && uses.contains(&to))
}

#[test]
fn imports_follow_the_layers() {
    let wrong: Vec<String> = arrows()
        .into_iter()
        .filter(|((from, to), _)| !allowed(from, to))
        .map(|((from, to), place)| format!("{from} -> {to} (e.g. {place})"))
        .collect();
    assert!(
        wrong.is_empty(),
        "imports against the layering of docs/ARCHITECTURE.md:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn every_module_has_a_place_in_the_layers() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let known: BTreeSet<&str> = LAYERS
        .iter()
        .map(|(m, _)| *m)
        .chain(LEAVES.iter().copied())
        .collect();
    let unknown: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(f))
        .filter(|m| !known.contains(m.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "modules missing from the layer table (tests/layering.rs and docs/ARCHITECTURE.md): {unknown:?}"
    );
}

#[test]
fn the_leaves_use_nothing_of_the_crate() {
    let from_leaves: Vec<String> = arrows()
        .into_iter()
        .filter(|((from, _), _)| LEAVES.contains(&from.as_str()))
        .map(|((from, to), place)| format!("{from} -> {to} ({place})"))
        .collect();
    assert!(from_leaves.is_empty(), "{from_leaves:?}");
}

/// The "depends on" column of `docs/ARCHITECTURE.md`'s module table, per module: the
/// modules named in backticks; "all" and "all but `ui`" as written.
fn documented_layers() -> BTreeMap<String, BTreeSet<String>> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(doc).expect("docs/ARCHITECTURE.md is readable");
    let every: BTreeSet<String> = LAYERS.iter().map(|(m, _)| m.to_string()).collect();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let module = cells[0].trim_matches('`').to_string();
        let uses = cells[cells.len() - 1];
        let named: BTreeSet<String> = uses
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        let set = if uses.starts_with("all but") {
            &(&every - &named) - &BTreeSet::from([module.clone()])
        } else if uses == "all" {
            &every - &BTreeSet::from([module.clone()])
        } else {
            named
        };
        out.insert(module, set);
    }
    out
}

#[test]
fn the_architecture_document_shows_the_same_arrows() {
    let documented = documented_layers();
    for (module, uses) in LAYERS {
        let here: BTreeSet<String> = uses.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            documented.get(*module),
            Some(&here),
            "docs/ARCHITECTURE.md's table row for `{module}` differs from tests/layering.rs"
        );
    }
    for leaf in LEAVES {
        assert_eq!(
            documented.get(*leaf),
            Some(&BTreeSet::new()),
            "docs/ARCHITECTURE.md should list `{leaf}` as using nothing"
        );
    }
}

#[test]
fn references_are_read_from_use_lines_and_paths() {
    assert_eq!(
        crate_references("use crate::io::{self, LoadError};"),
        ["io"]
    );
    assert_eq!(
        crate_references("use crate::{engine::Engine, volume::Axis};"),
        ["engine", "volume"]
    );
    assert_eq!(
        crate_references("    let v = crate::volume::Volume::new(g);"),
        ["volume"]
    );
    assert!(crate_references("//! see [`crate::eval::discover_cases`]").is_empty());
    assert!(crate_references("use dicom_pixeldata::PixelDecoder;").is_empty());
}
