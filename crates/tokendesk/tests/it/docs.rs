//! The documents say only what the code and the tests back.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file under `dir` whose name ends with one of `endings`.
fn files(dir: &Path, endings: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !["target", "node_modules", ".venv"].contains(&name) {
                files(&path, endings, out);
            }
        } else if endings.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}

/// `docs/security.md` points every control to its tests (the last column of each table under
/// "Controls and their tests"); each named test exists: a Rust `fn`, a Python `def`, or the
/// title of a browser test.
#[test]
fn docs_security_names_only_tests_that_exist() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let mut sources = Vec::new();
    files(&root.join("crates"), &[".rs"], &mut sources);
    files(&root.join("tests"), &[".py", ".mjs"], &mut sources);
    let text: String = sources
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");

    let mut in_controls = false;
    let mut named = Vec::new();
    let mut problems = Vec::new();
    for line in doc.lines() {
        if line.starts_with("## ") {
            in_controls = line.starts_with("## Controls");
        }
        let row = line.trim();
        if !in_controls
            || !row.starts_with('|')
            || row.starts_with("|---")
            || row.starts_with("| Control")
        {
            continue;
        }
        let tests = row
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap_or_default();
        let names: Vec<&str> = tests.split('`').skip(1).step_by(2).collect();
        if names.is_empty() {
            problems.push(format!("a control without a test: {row}"));
        }
        for name in names {
            let exists = if name.contains(' ') {
                text.contains(&format!("test('{name}'"))
            } else {
                text.contains(&format!("fn {name}(")) || text.contains(&format!("def {name}("))
            };
            if !exists {
                problems.push(format!("no test is called {name:?}"));
            }
            named.push(name);
        }
    }
    assert!(
        problems.is_empty(),
        "docs/security.md:\n{}",
        problems.join("\n")
    );
    assert!(named.len() >= 40, "only {} tests named", named.len());
}
