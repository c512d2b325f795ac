-- Why a server last stopped or failed to start, shown to the user on their next page.
ALTER TABLE spawners ADD COLUMN last_failure TEXT;
ALTER TABLE spawners ADD COLUMN display_name TEXT NOT NULL DEFAULT '';
-- Who an OAuth client belongs to: a user's server or a service.
ALTER TABLE oauth_clients ADD COLUMN owner_user TEXT;
ALTER TABLE oauth_clients ADD COLUMN owner_server TEXT;
ALTER TABLE oauth_clients ADD COLUMN owner_service TEXT;
