-- Initial schema. Timestamps are integer microseconds since the Unix epoch (UTC).
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    last_activity INTEGER,
    cookie_id TEXT NOT NULL UNIQUE,
    encrypted_auth_state BLOB
);

-- One row per (user, server name); `url` is set while a server runs or starts.
CREATE TABLE spawners (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT '{}',
    user_options TEXT NOT NULL DEFAULT '{}',
    url TEXT,
    started INTEGER,
    last_activity INTEGER,
    UNIQUE (user_id, name)
);

CREATE TABLE groups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    properties TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE user_group_map (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
);

CREATE TABLE services (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE roles (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    scopes TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE user_role_map (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
);

CREATE TABLE group_role_map (
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, role_id)
);

CREATE TABLE service_role_map (
    service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (service_id, role_id)
);

CREATE TABLE oauth_clients (
    id INTEGER PRIMARY KEY,
    identifier TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    secret TEXT NOT NULL DEFAULT '',
    redirect_uri TEXT NOT NULL DEFAULT '',
    allowed_scopes TEXT NOT NULL DEFAULT '[]'
);

-- Only a hash of each token is stored; `prefix` (its first 4 characters) narrows the lookup.
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    hashed TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    service_id INTEGER REFERENCES services(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL DEFAULT 'jupyterhub' REFERENCES oauth_clients(identifier) ON DELETE CASCADE,
    session_id TEXT,
    created INTEGER NOT NULL,
    expires_at INTEGER,
    last_activity INTEGER,
    note TEXT NOT NULL DEFAULT '',
    scopes TEXT NOT NULL DEFAULT '[]',
    CHECK ((user_id IS NULL) <> (service_id IS NULL))
);
CREATE INDEX api_tokens_prefix ON api_tokens(prefix);

CREATE TABLE oauth_codes (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES oauth_clients(identifier) ON DELETE CASCADE,
    code TEXT NOT NULL UNIQUE,
    expires_at INTEGER NOT NULL,
    redirect_uri TEXT NOT NULL,
    session_id TEXT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    scopes TEXT NOT NULL DEFAULT '[]',
    code_challenge TEXT,
    code_challenge_method TEXT
);

INSERT INTO oauth_clients (identifier, description) VALUES ('jupyterhub', 'JupyterHub');
