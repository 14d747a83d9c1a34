-- Idempotency records (POST /api/events with an Idempotency-Key): one row per keyed request
-- that stored events, written in the same transaction as the events, so a row exists exactly
-- when its request's events do (crates/vigil-store/src/idempotency.rs says why).
--
-- - key_hash: SHA-256 of the key and its scope (the token that sent it), 64 hex digits; the
--   key itself is never stored.
-- - body_hash: SHA-256 of the request body, to tell a retry from another request reusing a key.
-- - request_id: the request that stored the events (their requestId, and the replayed answer's).
-- - ids: the answered ids as ranges ("101-600,4097-4596"); MEDIUMTEXT, as a bulk of scattered
--   ids could pass TEXT's 64 KiB.
-- - created_at, expires_at: milliseconds since the Unix epoch; expires_at is created_at plus
--   VIGIL_IDEMPOTENCY_TTL. Expired rows are ignored by lookups and purged in small batches
--   along the expires_at index.
CREATE TABLE vigil_idempotency_keys (
    key_hash   CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    body_hash  CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    request_id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    ids        MEDIUMTEXT CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (key_hash),
    KEY vigil_idempotency_keys_expires_at (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
