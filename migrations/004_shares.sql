-- Sharing (JupyterHub 5): a share grants a user or a group scopes on one server; a share code
-- is a secret (stored hashed, as tokens are) that a user exchanges for a share of their own.
-- Rows go with the server, its owner and the user or group they were granted to.
CREATE TABLE shares (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    spawner_id INTEGER NOT NULL REFERENCES spawners(id) ON DELETE CASCADE,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    group_id INTEGER REFERENCES groups(id) ON DELETE CASCADE,
    scopes TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    CHECK ((user_id IS NULL) != (group_id IS NULL))
);
CREATE UNIQUE INDEX shares_spawner_user ON shares (spawner_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX shares_spawner_group ON shares (spawner_id, group_id) WHERE group_id IS NOT NULL;
CREATE INDEX shares_owner ON shares (owner_id);
CREATE INDEX shares_user ON shares (user_id);
CREATE INDEX shares_group ON shares (group_id);

CREATE TABLE share_codes (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    spawner_id INTEGER NOT NULL REFERENCES spawners(id) ON DELETE CASCADE,
    scopes TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    hashed TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    exchange_count INTEGER NOT NULL DEFAULT 0,
    last_exchanged_at INTEGER
);
CREATE INDEX share_codes_prefix ON share_codes (prefix);
CREATE INDEX share_codes_owner ON share_codes (owner_id);
CREATE INDEX share_codes_spawner ON share_codes (spawner_id);
