-- One row per health probe of accounting's ingest: when a batch keeps failing, accounting writes here to
-- tell an engine that cannot write (disk full, read-only, gone) from messages the engine refuses. Only
-- the latter are dead-lettered. Rows expire after a day.
CREATE TABLE IF NOT EXISTS ingest_probe
(
    at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY at
TTL toDateTime(at) + INTERVAL 1 DAY;
