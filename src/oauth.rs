//! The OAuth2 provider (being written: see issue #5).
