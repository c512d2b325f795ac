//! Scopes, roles and filters as JupyterHub 2+ defines them (being written: see issue #2).
