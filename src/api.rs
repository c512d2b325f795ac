//! The REST API under `/hub/api`.
