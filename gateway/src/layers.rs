//! The crate's layers, and the test that keeps its imports pointing down: a module may name
//! (`crate::…`) only modules of a lower layer, never one beside or above it. The layers are
//! described in docs/architecture.md.

/// Every top-level module and its layer, lowest first.
const LAYERS: &[(&str, u8)] = &[
    ("problem", 0),
    ("observe", 1),
    ("backplane", 1),
    ("limits", 2),
    ("hub", 2),
    ("wire", 2),
    ("core", 3),
    ("exchange", 4),
    ("actions", 5),
    ("pipeline", 6),
    ("edge", 7),
    ("app", 8),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
}

/// The top-level modules a line of code names through `crate::`, with `crate::{a, b::c}`
/// groups opened. Comments are not code.
fn named_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            for item in group.split(',') {
                let first = item.trim().split("::").next().unwrap_or("");
                if !first.is_empty() {
                    names.push(first.to_owned());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_point_down() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|name| name.trim_end_matches(".rs"))
            .unwrap_or("");
        if top == "main" || top == "layers" {
            continue;
        }
        let own = layer(top).unwrap_or_else(|| {
            panic!(
                "{top} (src/{}) is in no layer: add it to LAYERS",
                relative.display()
            )
        });
        let text = std::fs::read_to_string(file).expect("readable");
        for (number, line) in text.lines().enumerate() {
            for named in named_modules(line) {
                if named == top {
                    continue;
                }
                match layer(&named) {
                    Some(theirs) if theirs < own => {}
                    _ => upward.push(format!(
                        "src/{}:{}: {top} names {named}",
                        relative.display(),
                        number + 1
                    )),
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point down:\n{}",
        upward.join("\n")
    );
}

#[test]
fn groups_and_comments_are_read() {
    assert_eq!(
        named_modules("use crate::{core::state, observe::metrics}; // crate::app"),
        ["core", "observe"]
    );
    assert_eq!(
        named_modules("    crate::wire::target::normalize(p)"),
        ["wire"]
    );
}
