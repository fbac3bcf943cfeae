-- migrate: no-transaction
-- The settlement diff lists every client's payments by creation time.
-- Built concurrently: inserts go on during the build. Databases that applied
-- this file's first text (the same index, built in a transaction) keep it
-- (migrate.SUPERSEDED).
CREATE INDEX CONCURRENTLY IF NOT EXISTS payments_created ON payments (created_at DESC, id DESC);
