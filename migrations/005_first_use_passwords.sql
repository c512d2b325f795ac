-- Passwords of the first-use authenticator (TLJH's default): set by a name's first login,
-- argon2id PHC strings. Keyed by name, as a name may log in before it is a user; they follow
-- a user's rename and go with its deletion.
CREATE TABLE first_use_passwords (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    updated INTEGER NOT NULL
);

CREATE TRIGGER first_use_passwords_follow_rename AFTER UPDATE OF name ON users
BEGIN
    UPDATE first_use_passwords SET name = NEW.name WHERE name = OLD.name;
END;

CREATE TRIGGER first_use_passwords_go_with_user AFTER DELETE ON users
BEGIN
    DELETE FROM first_use_passwords WHERE name = OLD.name;
END;
