-- One row per UsageRecorded event. event_id is unique: accounting drops ids already present before each
-- insert, and ReplacingMergeTree collapses any duplicate that slips through (same event, same sort key).
-- The sort key starts with the hour so that time-range reports and the duplicate check read few granules.
CREATE TABLE IF NOT EXISTS usage_events
(
    event_id String,
    occurred_at DateTime64(3, 'UTC'),
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3),
    kind LowCardinality(String),
    token_id String,
    user_id String,
    service_account_id String,
    team_id String,
    org_id String,
    endpoint LowCardinality(String),
    model LowCardinality(String),
    route LowCardinality(String),
    status_code UInt16,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_tokens UInt64,
    cost_nanos Int64,
    latency_ms Float64,
    ttft_ms Nullable(Float64),
    streamed Bool,
    cut_short Bool,
    tool String,
    batch_id String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (toStartOfHour(occurred_at), org_id, event_id);
