-- Vigil's event store (MySQL 8 / MariaDB 10.6+).
--
-- Ids are assigned by Vigil from blocks reserved in vigil_id_blocks (see
-- crates/vigil-store/ID_SCHEME.md): every INSERT names its ids, so events.id needs no
-- AUTO_INCREMENT and an acknowledged id is exactly its row's id on any autoinc lock mode,
-- any auto_increment_increment, with any number of Vigil instances.
--
-- Columns:
-- - source: 1-128 code points, any Unicode; utf8mb4_bin so filters match exactly.
-- - type: 1-64 of [A-Za-z0-9_.:-], so ascii; ascii_bin so filters are case-sensitive
--   like the API's own validation.
-- - level: an ENUM in increasing severity: one byte per row and per (level, id) index entry,
--   the database refuses any other spelling, ORDER BY level sorts by severity, and appending a
--   new level at the end is an instant ALTER on both MySQL 8 and MariaDB.
-- - payload: the object's JSON text exactly as sent minus insignificant whitespace. A text
--   column with a validity check, not the JSON type, because MySQL's binary JSON reorders keys
--   and the payload must round-trip byte for byte. MEDIUMTEXT because the 16 KiB payload limit
--   is configuration and TEXT stops at 64 KiB.
-- - occurred_at, created_at: UTC with millisecond precision (every Vigil session sets
--   time_zone = '+00:00'; DATETIME itself stores the wall-clock value it is given).
-- - request_id: [A-Za-z0-9._:-]{1,128} or a UUID, so ascii.
CREATE TABLE events (
    id          BIGINT UNSIGNED NOT NULL,
    source      VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    type        VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    level       ENUM('INFO', 'WARN', 'ERROR', 'CRITICAL') CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    payload     MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    occurred_at DATETIME(3) NULL,
    created_at  DATETIME(3) NOT NULL,
    request_id  VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (id),
    KEY events_type_id (type, id),
    KEY events_level_id (level, id),
    KEY events_source_id (source, id),
    KEY events_created_at_id (created_at, id),
    CONSTRAINT events_payload_is_json CHECK (payload IS NULL OR JSON_VALID(payload))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per id sequence. next_id is the first id not yet handed to any Vigil instance;
-- a reservation moves it forward in one autocommit UPDATE (LAST_INSERT_ID(next_id + n)).
CREATE TABLE vigil_id_blocks (
    name    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    next_id BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO vigil_id_blocks (name, next_id) VALUES ('events', 1);
