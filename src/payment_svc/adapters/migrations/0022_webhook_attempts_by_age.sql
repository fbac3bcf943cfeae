-- migrate: no-transaction
-- Retention deletes webhook attempts by age (the feed's retention), a batch
-- at a time: this index finds the oldest without scanning the table. Built
-- concurrently: attempts are written while it builds.
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_attempts_attempted_at ON webhook_attempts (attempted_at);
