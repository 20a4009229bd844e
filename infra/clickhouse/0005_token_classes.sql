-- Every token class apart (issue 17): cache writes kept 5 minutes and 1 hour (Anthropic-style prompt caches)
-- and reasoning tokens, besides input (all prompt tokens), cached_tokens (read from the cache, part of
-- input) and output (all generated tokens, reasoning included); and the alias a client named a model by.
-- Rows written before this migration have zeros (those classes were counted as plain input or output).

ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS cache_write_5m_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS reasoning_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS alias String DEFAULT '';

-- The roll-ups sum the new counts too; their views are recreated to select them (the target tables keep
-- their rows: a view only forwards new inserts).
ALTER TABLE usage_by_minute ADD COLUMN IF NOT EXISTS cache_write_5m_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_by_minute ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_by_minute ADD COLUMN IF NOT EXISTS reasoning_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_by_hour ADD COLUMN IF NOT EXISTS cache_write_5m_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_by_hour ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_by_hour ADD COLUMN IF NOT EXISTS reasoning_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_by_day ADD COLUMN IF NOT EXISTS cache_write_5m_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_by_day ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt64 DEFAULT 0;
ALTER TABLE usage_by_day ADD COLUMN IF NOT EXISTS reasoning_tokens UInt64 DEFAULT 0;

DROP VIEW IF EXISTS usage_by_minute_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_by_minute_mv TO usage_by_minute AS
SELECT
    toStartOfMinute(occurred_at) AS bucket,
    org_id, team_id, user_id, token_id, model,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_5m_tokens) AS cache_write_5m_tokens,
    sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_nanos) AS cost_nanos
FROM usage_events
GROUP BY bucket, org_id, team_id, user_id, token_id, model;

DROP VIEW IF EXISTS usage_by_hour_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_by_hour_mv TO usage_by_hour AS
SELECT
    toStartOfHour(occurred_at) AS bucket,
    org_id, team_id, user_id, token_id, model,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_5m_tokens) AS cache_write_5m_tokens,
    sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_nanos) AS cost_nanos
FROM usage_events
GROUP BY bucket, org_id, team_id, user_id, token_id, model;

DROP VIEW IF EXISTS usage_by_day_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_by_day_mv TO usage_by_day AS
SELECT
    toDateTime(toStartOfDay(occurred_at), 'UTC') AS bucket,
    org_id, team_id, user_id, token_id, model,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_5m_tokens) AS cache_write_5m_tokens,
    sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_nanos) AS cost_nanos
FROM usage_events
GROUP BY bucket, org_id, team_id, user_id, token_id, model;
