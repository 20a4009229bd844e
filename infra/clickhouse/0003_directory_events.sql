-- Every directory integration event (DirectoryEvent envelope), for audit SQL. notification_id is unique:
-- accounting drops ids already present before inserting, ReplacingMergeTree is the safety net.
CREATE TABLE IF NOT EXISTS directory_events
(
    notification_id UInt64,
    type LowCardinality(String),
    aggregate_type LowCardinality(String),
    aggregate_id String,
    aggregate_version UInt64,
    actor String,
    occurred_at DateTime64(3, 'UTC'),
    data String,
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY notification_id;
