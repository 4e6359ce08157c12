//! ARCHITECTURE.md's checkable invariants: which crates each crate may use
//! (its "Crate dependencies" table against `cargo metadata`), and that only
//! the CLI reads environment variables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The "Crate dependencies" table: crate → the Steadfast crates it may use.
fn allowed_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let architecture = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    let section = architecture
        .split("## Crate dependencies")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"Crate dependencies\" section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
            let [krate, uses] = cells.as_slice() else {
                return None;
            };
            krate.starts_with("steadfast-").then(|| {
                let uses = uses
                    .split(',')
                    .map(str::trim)
                    .filter(|name| name.starts_with("steadfast-"))
                    .map(str::to_owned)
                    .collect();
                ((*krate).to_owned(), uses)
            })
        })
        .collect()
}

/// Each workspace crate's normal (not dev, not build) Steadfast dependencies.
fn actual_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let uses = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dependency| dependency["kind"].is_null())
                .filter_map(|dependency| dependency["name"].as_str())
                .filter(|name| name.starts_with("steadfast-"))
                .map(str::to_owned)
                .collect();
            (package["name"].as_str().unwrap().to_owned(), uses)
        })
        .collect()
}

#[test]
fn each_crate_uses_only_the_crates_architecture_md_allows() {
    let allowed = allowed_dependencies();
    let actual = actual_dependencies();
    assert_eq!(
        allowed.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "ARCHITECTURE.md lists every crate of the workspace, and no other"
    );
    for (krate, uses) in &actual {
        let extra: Vec<_> = uses.difference(&allowed[krate]).collect();
        assert!(
            extra.is_empty(),
            "{krate} depends on {extra:?}, which ARCHITECTURE.md does not allow"
        );
    }
    // What the code map promises in words, pinned here too.
    assert_eq!(
        allowed["steadfast-sdk"],
        BTreeSet::from(["steadfast-protocol".to_owned()]),
        "the SDK sees the protocol crate only"
    );
    assert!(
        allowed["steadfast-core"].is_empty(),
        "the core depends on no other crate"
    );
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn only_the_cli_reads_environment_variables() {
    // By design (ARCHITECTURE.md, the CLI's invariants): the standard OTEL_*
    // variables inside the telemetry initialiser the CLI calls; and the test
    // support that finds the test PostgreSQL server.
    let exceptions = [
        "crates/steadfast-server/src/telemetry.rs",
        "crates/steadfast-postgres/src/test_support.rs",
    ];
    let reads = ["env::var(", "env::var_os(", "env::vars(", "env::vars_os(", "env = \""];
    let mut files = Vec::new();
    for krate in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let krate = krate.unwrap().path();
        if krate.file_name().is_some_and(|name| name != "steadfast-cli") {
            rust_files(&krate.join("src"), &mut files);
        }
    }
    assert!(files.len() > 20, "found the crates' sources: {}", files.len());
    let mut offenders = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(workspace())
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if exceptions.contains(&relative.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if reads.iter().any(|read| line.contains(read)) {
                offenders.push(format!("{relative}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "environment variables read outside the CLI:\n{}",
        offenders.join("\n")
    );
}
