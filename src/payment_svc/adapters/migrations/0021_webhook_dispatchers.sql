-- The webhook dispatchers alive (SPEC §3d): each lease call says "I am
-- here until seen_until", so that replicas share the endpoints evenly (each
-- takes about its share of the enabled ones, and gives back what is above
-- it). A new table only: online.
CREATE TABLE webhook_dispatchers (
    dispatcher_id text        PRIMARY KEY,
    seen_until    timestamptz NOT NULL
);
