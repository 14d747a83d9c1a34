-- Indexes for GET /api/events: every list is read in id order from an index and stops after
-- one page (crates/vigil-store/src/sql/list.rs has the plans).
--
-- An index (a, b, id) yields rows newest first only once a and b are fixed, so a filter is
-- read as one branch per value combination, merged by UNION ALL. level has four values, so
-- an index with level second also serves filters that leave level open (four branches).
-- That lets composite indexes replace the single-column ones instead of joining them:
--
-- - (type, id)   -> (type, level, id): type=GAS&level=WARN (the original service's
--   filters) reads exactly the page instead of filtering level after reading type, which
--   with a rare level (CRITICAL) meant reading most of a type's rows; type alone reads four
--   branches (at most 4 x page rows).
-- - (source, id) -> (source, level, id): the same for source and source+level.
-- - source+type (one sensor's GAS events) is read from (source, level, id) with type
--   filtered after: a few pages while a sensor sends few types. A (source, type, id) index
--   would read exactly the page, but measured on the ingest load test (wrk -t2 -c64 single
--   events, scripts/bench.sh) a fifth secondary index cost about 7% of ingest throughput
--   and a quarter more MariaDB CPU per row; ingest speed is the harder requirement.
-- - (level, id) and (created_at, id) stay: level alone, and time windows (a small window is
--   read whole from (created_at, id) and sorted).
--
-- Cost on ingest: each INSERT updates every secondary index; this keeps four, as 0001 had.
-- A filter on all three columns is read from (source, level, id) with type filtered after.
ALTER TABLE events
    DROP INDEX events_type_id,
    DROP INDEX events_source_id,
    ADD INDEX events_type_level_id (type, level, id),
    ADD INDEX events_source_level_id (source, level, id);
