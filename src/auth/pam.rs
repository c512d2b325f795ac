//! PAM (being written: see issue #6).
