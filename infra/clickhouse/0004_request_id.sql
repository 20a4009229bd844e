-- The answer's x-request-id of each usage event (UsageRecorded.request_id): a client quoting the id of a
-- request finds its row. Empty for events published before the field existed.
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS request_id String DEFAULT '';
