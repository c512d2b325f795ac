//! Tests that hold thousands of sockets raise their own descriptor limit (the proxy child
//! they start inherits it). Included by path into each test crate that needs it.

/// Raise this process's descriptor limit to the hard limit; fail, saying how to fix it, when
/// even that is below `need`.
pub fn raise_descriptor_limit(need: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        hard >= need,
        "this test needs {need} file descriptors but the hard limit is {hard}; \
         raise it (`ulimit -Hn`, or LimitNOFILE= for a service) and run again"
    );
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
    }
}
