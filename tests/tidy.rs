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

/// Only `src/systemd` speaks D-Bus: no other Rust file names the `zbus` crate in code (a log
/// filter string such as `"zbus=warn"` is not a use).
#[test]
fn zbus_is_used_only_under_src_systemd() {
    let mut files = Vec::new();
    for dir in ["src", "tests", "examples", "benches"] {
        let dir = root().join(dir);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
    }
    let systemd_dir = root().join("src/systemd");
    // Assembled, so that this file does not match itself.
    let krate = ["z", "bus"].concat();
    let needles = [
        format!("{krate}::"),
        format!("use {krate}"),
        format!("{krate}!"),
    ];
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| !path.starts_with(&systemd_dir) && **path != root().join("src/systemd.rs"))
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).expect("read");
            let name = path
                .strip_prefix(root())
                .unwrap_or(path)
                .display()
                .to_string();
            text.lines()
                .enumerate()
                .filter(|(_, line)| {
                    let code = line.split("//").next().unwrap_or_default();
                    needles.iter().any(|n| code.contains(n.as_str()))
                })
                .map(|(n, _)| format!("{name}:{}", n + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "zbus used outside src/systemd (go through `systemd::Systemd`): {offenders:?}"
    );
}
