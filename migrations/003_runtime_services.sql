-- Services created through the API (`POST /hub/api/services/NAME`) live only in the database:
-- `from_config` tells them from config services (which start-up adds and removes), and
-- `spec` keeps what they were created with (JSON, never the token), so they survive restarts.
ALTER TABLE services ADD COLUMN from_config INTEGER NOT NULL DEFAULT 1;
ALTER TABLE services ADD COLUMN spec TEXT;
