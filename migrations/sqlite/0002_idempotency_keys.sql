-- Idempotency records, as migrations/mysql/0003_idempotency_keys.sql (its comments give the
-- columns' meaning): written in the same transaction as the request's events.
CREATE TABLE vigil_idempotency_keys (
    key_hash   TEXT NOT NULL PRIMARY KEY,
    body_hash  TEXT NOT NULL,
    request_id TEXT NOT NULL,
    ids        TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX vigil_idempotency_keys_expires_at ON vigil_idempotency_keys (expires_at);
