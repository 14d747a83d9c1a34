-- Vigil's event store, embedded (SQLite 3.37+ for STRICT; the bundled library is newer).
--
-- The same table, indexes and id scheme as migrations/mysql (after 0002), so the list plans of
-- crates/vigil-store/src/sql/list.rs are the same on both backends; only the types differ:
--
-- - id: INTEGER PRIMARY KEY is the rowid, so the primary key is the table's own b-tree. Ids are
--   still named by every INSERT, from blocks reserved in vigil_id_blocks (see
--   crates/vigil-store/ID_SCHEME.md, "SQLite"): never chosen by SQLite.
-- - source, type, level, request_id: TEXT, compared with the default BINARY collation, so
--   filters match exactly and case-sensitively, as utf8mb4_bin/ascii_bin do on MySQL.
-- - level: text with a check instead of MySQL's ENUM; the list plans bind level names.
-- - payload: the object's JSON text exactly as sent minus insignificant whitespace, with a
--   validity check (json_valid with no flags accepts RFC 8259 text only, not JSON5).
-- - occurred_at, created_at: milliseconds since the Unix epoch (UTC), exact integers; the
--   API's JSON is encoded from these by vigil-core, byte-identical to the MySQL backend's.
-- STRICT makes SQLite refuse a value of the wrong type instead of storing it as given.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    type        TEXT NOT NULL,
    level       TEXT NOT NULL CHECK (level IN ('INFO', 'WARN', 'ERROR', 'CRITICAL')),
    payload     TEXT NULL CHECK (payload IS NULL OR json_valid(payload)),
    occurred_at INTEGER NULL,
    created_at  INTEGER NOT NULL,
    request_id  TEXT NOT NULL
) STRICT;

-- The indexes of migrations/mysql/0002_list_indexes.sql (its comments give the reasons), so
-- every list is read from an index in id order and stops after one page.
CREATE INDEX events_level_id ON events (level, id);
CREATE INDEX events_type_level_id ON events (type, level, id);
CREATE INDEX events_source_level_id ON events (source, level, id);
CREATE INDEX events_created_at_id ON events (created_at, id);

-- One row per id sequence; next_id is the first id not yet handed to any Vigil process that
-- opened this file. A reservation moves it forward in one autocommit UPDATE … RETURNING, under
-- SQLite's single write lock, so two processes on one file never get overlapping blocks.
CREATE TABLE vigil_id_blocks (
    name    TEXT NOT NULL PRIMARY KEY,
    next_id INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO vigil_id_blocks (name, next_id) VALUES ('events', 1);
