//! The one policy for tests that need root: they fail, saying how to run them; they never
//! pass without having run. Included by path into each test crate that has such tests.

/// Fail the calling test unless it runs as root. `why` says what the test does with root.
#[track_caller]
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root ({why}): run as root (`sudo -E cargo test --test {target}`; \
         `bash tests/run.sh` does)",
        target = env!("CARGO_CRATE_NAME"),
    );
}
