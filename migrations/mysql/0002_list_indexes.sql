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
-- - new (source, type, id): source+type (one sensor's GAS events) reads exactly the page; via
--   (source, level, id) with type filtered after, a type that a source rarely or never sends
--   meant reading all of that source's rows.
-- - (level, id) and (created_at, id) stay: level alone, and time windows (a small window is
--   read whole from (created_at, id) and sorted).
--
-- Cost on ingest: each INSERT updates every secondary index; this leaves five, one more
-- than 0001. On the 2-core dev box (shared, noisy), 200,000 rows in 1000-row
-- INSERT ... SELECT batches took 2.8-4.4 s with 0001's four indexes, 4.6-4.8 s with five and
-- 4.9-5.8 s with six; with these five, Store::insert loaded 1,000,000 rows in 5000-row
-- batches in 29 s (about 34,000 rows/s, 128 MB buffer pool). A filter on all three columns
-- is read from (source, type, id) with level filtered after (a few pages at most while
-- levels are not rare within one source's type).
ALTER TABLE events
    DROP INDEX events_type_id,
    DROP INDEX events_source_id,
    ADD INDEX events_type_level_id (type, level, id),
    ADD INDEX events_source_level_id (source, level, id),
    ADD INDEX events_source_type_id (source, type, id);
