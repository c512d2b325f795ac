//! Repository invariants: every source file says what it owns, ARCHITECTURE.md maps every
//! module (and nothing that is gone), and migrations are numbered and all embedded.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_starts_with_a_module_comment() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let missing: Vec<_> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("read");
            !text.trim_start().starts_with("//!")
        })
        .map(|p| p.strip_prefix(root()).unwrap_or(p).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header: {missing:?}"
    );
}

#[test]
fn architecture_maps_every_module() {
    let architecture =
        std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("lib.rs");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .and_then(|m| m.strip_suffix(';'))
        })
        .collect();
    for module in &modules {
        assert!(
            architecture.contains(&format!("### src/{module}\n")),
            "ARCHITECTURE.md lacks `### src/{module}`"
        );
    }
    for line in architecture
        .lines()
        .filter_map(|l| l.strip_prefix("### src/"))
    {
        assert!(
            modules.contains(&line.trim()),
            "ARCHITECTURE.md describes src/{line}, which lib.rs does not declare"
        );
    }
}

#[test]
fn migrations_are_numbered_consecutively_and_embedded() {
    let migrate = std::fs::read_to_string(root().join("src/db/migrate.rs")).expect("migrate.rs");
    let mut names: Vec<String> = std::fs::read_dir(root().join("migrations"))
        .expect("migrations")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    for (index, name) in names.iter().enumerate() {
        let number: usize = name[..3]
            .parse()
            .unwrap_or_else(|_| panic!("{name} does not start with a number"));
        assert_eq!(number, index + 1, "{name} is out of sequence");
        assert!(
            migrate.contains(&format!("migrations/{name}")),
            "{name} is not embedded in src/db/migrate.rs"
        );
    }
}

/// Whether `needle` occurs in `code` as whole words (no identifier character glued to it).
fn mentions(code: &str, needle: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(needle).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + needle.len()..].chars().next();
        let glued_before = needle.starts_with(ident) && before.is_some_and(ident);
        let glued_after = needle.ends_with(ident) && after.is_some_and(ident);
        !glued_before && !glued_after
    })
}

/// Handlers call `Hub` verbs; only `hub` (and `db` itself) reaches the database. Catches
/// `db::`, `crate::db`, `hub.db` and a `.db` field access split over lines.
#[test]
fn handlers_never_reach_the_database() {
    let mut files = Vec::new();
    for dir in ["src/api", "src/web", "src/oauth"] {
        if root().join(dir).is_dir() {
            rust_files(&root().join(dir), &mut files);
        }
    }
    for file in ["src/api.rs", "src/web.rs", "src/oauth.rs"] {
        if root().join(file).is_file() {
            files.push(root().join(file));
        }
    }
    assert!(!files.is_empty(), "no handler files found");
    let mut offences = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read");
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if ["db::", "crate::db", "hub.db", ".db"]
                .iter()
                .any(|needle| mentions(code, needle))
            {
                let shown = path.strip_prefix(root()).unwrap_or(path).display();
                offences.push(format!("{shown}:{}: {}", number + 1, code));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "handlers must call Hub verbs, not the database:\n{}",
        offences.join("\n")
    );
}
