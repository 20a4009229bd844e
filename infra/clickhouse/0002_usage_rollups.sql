-- Roll-ups by minute, hour and day per org, team, user, token and model. SummingMergeTree adds rows with
-- the same key when parts merge, so queries still aggregate with sum() ... GROUP BY.
-- They are exact because accounting never inserts an event id twice into usage_events.
CREATE TABLE IF NOT EXISTS usage_by_minute
(
    bucket DateTime('UTC'),
    org_id String,
    team_id String,
    user_id String,
    token_id String,
    model LowCardinality(String),
    requests UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_tokens UInt64,
    cost_nanos Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, org_id, team_id, user_id, token_id, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_by_minute_mv TO usage_by_minute AS
SELECT
    toStartOfMinute(occurred_at) AS bucket,
    org_id, team_id, user_id, token_id, model,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cost_nanos) AS cost_nanos
FROM usage_events
GROUP BY bucket, org_id, team_id, user_id, token_id, model;

CREATE TABLE IF NOT EXISTS usage_by_hour AS usage_by_minute
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, org_id, team_id, user_id, token_id, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_by_hour_mv TO usage_by_hour AS
SELECT
    toStartOfHour(occurred_at) AS bucket,
    org_id, team_id, user_id, token_id, model,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cost_nanos) AS cost_nanos
FROM usage_events
GROUP BY bucket, org_id, team_id, user_id, token_id, model;

CREATE TABLE IF NOT EXISTS usage_by_day AS usage_by_minute
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, org_id, team_id, user_id, token_id, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_by_day_mv TO usage_by_day AS
SELECT
    toDateTime(toStartOfDay(occurred_at), 'UTC') AS bucket,
    org_id, team_id, user_id, token_id, model,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cost_nanos) AS cost_nanos
FROM usage_events
GROUP BY bucket, org_id, team_id, user_id, token_id, model;
