-- Why a server last stopped or failed to start, shown to the user on their next page.
ALTER TABLE spawners ADD COLUMN last_failure TEXT;
ALTER TABLE spawners ADD COLUMN display_name TEXT NOT NULL DEFAULT '';
