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

/// The files in src that may run programs. Everything else asks one of them, so what the
/// hub executes (and with which environment) is found in a few places.
const MAY_RUN_PROGRAMS: &[&str] = &[
    "src/auth/accounts.rs",    // useradd (create_system_users)
    "src/hub/spawn.rs",        // pre_spawn_hook
    "src/spawner.rs",          // setup_user_env: the admin creates the servers' venv
    "src/spawner/local.rs",    // user servers as child processes
    "src/spawner/user_env.rs", // --dev makes its Python environment
    "src/systemd/journal.rs",  // journalctl
];

#[test]
fn only_allowed_files_run_programs() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut offenders = Vec::new();
    for path in &files {
        let relative = path
            .strip_prefix(root())
            .unwrap_or(path)
            .display()
            .to_string();
        if MAY_RUN_PROGRAMS.contains(&relative.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("read");
        for (number, line) in text.lines().enumerate() {
            if line.contains("Command::new") && !line.trim_start().starts_with("//") {
                offenders.push(format!("{relative}:{}", number + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "`Command::new` outside the allow-list (MAY_RUN_PROGRAMS in tests/tidy.rs): {offenders:?}"
    );
}

/// Words of ARCHITECTURE.md that look like Rust file paths, as written (`src/proxy/h1.rs`,
/// or `proxy/h1.rs` inside the module's section).
fn rust_paths_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "_./*-".contains(c)))
        .map(|word| word.trim_end_matches('.'))
        .filter(|word| word.ends_with(".rs"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn architecture_names_only_files_that_exist() {
    let architecture =
        std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let src = root().join("src");
    let mut missing = Vec::new();
    for path in rust_paths_in(&architecture) {
        if path.contains('*') {
            continue;
        }
        let under_src = match path.strip_prefix("src/") {
            Some(rest) => rest.to_owned(),
            // `proxy/h1.rs` is a source path when `proxy` is a module directory; other
            // paths (`tests/proxy.rs`, `examples/…`, a bare `hub.rs`) are not about src.
            None => match path.split_once('/') {
                Some((first, _)) if src.join(first).is_dir() => path.clone(),
                _ => continue,
            },
        };
        if !src.join(&under_src).is_file() {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names files that do not exist: {missing:?}"
    );
}

#[test]
fn architecture_names_every_source_file() {
    let architecture =
        std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let named: Vec<String> = rust_paths_in(&architecture)
        .into_iter()
        .map(|p| p.strip_prefix("src/").map(str::to_owned).unwrap_or(p))
        .collect();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut unnamed: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let relative = path
                .strip_prefix(root().join("src"))
                .unwrap_or(path)
                .display()
                .to_string();
            // A module's root file (`src/hub.rs`) is named by its `### src/hub` heading.
            let heading = relative
                .strip_suffix(".rs")
                .filter(|m| !m.contains('/'))
                .is_some_and(|m| architecture.contains(&format!("### src/{m}\n")));
            (!heading && !named.contains(&relative)).then(|| format!("src/{relative}"))
        })
        .collect();
    unnamed.sort();
    assert!(
        unnamed.is_empty(),
        "ARCHITECTURE.md does not name these files (as `src/a/b.rs`, or `a/b.rs` in the \
         module's section): {unnamed:?}"
    );
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

#[test]
fn the_proxy_is_a_leaf_that_knows_no_hub() {
    // The proxy is handed a route table and settings; it never reaches into the hub, the
    // database or the API, so it can be benchmarked and run alone (`jupyterhub proxy`).
    let mut files = Vec::new();
    rust_files(&root().join("src/proxy"), &mut files);
    files.push(root().join("src/proxy.rs"));
    let mut offenders = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                if !rest.starts_with("proxy") {
                    offenders.push(format!(
                        "{}:{}: {}",
                        path.strip_prefix(root()).unwrap_or(path).display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "src/proxy must not use other modules of the crate:\n{}",
        offenders.join("\n")
    );
}

/// A file that grows past this before its unit tests is doing several jobs: split it along
/// upstream's seams (a handler module, a table, a layer) instead.
const MAX_LINES_BEFORE_TESTS: usize = 900;

#[test]
fn no_source_file_is_over_900_lines_before_its_tests() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut long = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read");
        let before_tests = text
            .lines()
            .take_while(|line| line.trim() != "#[cfg(test)]")
            .count();
        // A file of unit tests only (`rbac/tests.rs`) is all tests.
        let is_tests = path.file_name().is_some_and(|n| n == "tests.rs");
        if before_tests > MAX_LINES_BEFORE_TESTS && !is_tests {
            long.push(format!(
                "{} ({before_tests} lines)",
                path.strip_prefix(root()).unwrap_or(path).display()
            ));
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_LINES_BEFORE_TESTS} lines before #[cfg(test)]: {long:?}"
    );
}

/// Every field of the config's structs (`pub NAME:` in src/config.rs) is read somewhere as
/// `.NAME`: an option the hub accepts does something or is refused in `Config::validate`,
/// never parsed and ignored.
#[test]
fn every_config_key_is_read_somewhere() {
    let config = std::fs::read_to_string(root().join("src/config.rs")).expect("config.rs");
    let before_tests = config.split("#[cfg(test)]").next().unwrap_or(&config);
    let fields: Vec<&str> = before_tests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|rest| rest.split_once(':').map(|(name, _)| name))
        .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .filter(|name| !["fn", "const", "struct", "enum", "use", "mod", "type"].contains(name))
        .collect();
    assert!(fields.len() > 50, "found only {fields:?}");
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let texts: Vec<String> = files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    let unread: Vec<&str> = fields
        .into_iter()
        .filter(|field| {
            let needle = format!(".{field}");
            !texts.iter().any(|text| {
                text.match_indices(&needle).any(|(at, _)| {
                    // `.field` as a whole word, not the start of a longer name.
                    !text[at + needle.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            })
        })
        .collect();
    assert!(
        unread.is_empty(),
        "config keys nothing reads (use them, or refuse them in Config::validate): {unread:?}"
    );
}
