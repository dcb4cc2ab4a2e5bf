-- Transactional outbox: events are written in the transaction of the change they describe and
-- published later by a relay, which sets published_at.

create table outbox (
    id uuid primary key,
    -- Publication order; events of one aggregate must leave in the order they happened.
    seq bigint generated always as identity unique,
    -- The routing key, e.g. "inventory.low_stock".
    event_type text not null,
    -- Product id for product.*, SKU for inventory.*.
    aggregate_id text not null,
    -- Type URL of the payload, "type.googleapis.com/shopmesh.events.v1.<Name>".
    payload_type text not null,
    -- The encoded protobuf payload message (the relay wraps it in an EventEnvelope).
    payload bytea not null,
    correlation_id text not null default '',
    created_at timestamptz not null default now(),
    published_at timestamptz
);

create index outbox_unpublished_idx on outbox (seq) where published_at is null;
