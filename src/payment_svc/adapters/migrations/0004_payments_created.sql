-- The settlement diff lists every client's payments by creation time.
CREATE INDEX payments_created ON payments (created_at DESC, id DESC);
