-- Transactional outbox: shipment.created and shipment.status_changed are written in the
-- transaction of the change they describe and published later by a relay (published_at).
create table outbox (
    -- UUIDv7, the event id.
    id uuid primary key,
    -- Publication order; events of one shipment must leave in the order they happened.
    seq bigint generated always as identity unique,
    -- The routing key: "shipment.created" or "shipment.status_changed".
    event_type text not null,
    -- The shipment id.
    aggregate_id text not null,
    -- Type URL of the payload, "type.googleapis.com/shopmesh.events.v1.<Name>".
    payload_type text not null,
    -- The encoded protobuf payload message (the relay wraps it in an EventEnvelope).
    payload bytea not null,
    -- The x-request-id of the RPC that caused the change; empty for the courier.
    correlation_id text not null default '',
    -- AMQP priority: shipment.created is a fulfilment event (9 VIP, 1 standard); others 0.
    priority smallint not null default 0,
    created_at timestamptz not null default now(),
    published_at timestamptz
);

create index outbox_unpublished_idx on outbox (seq) where published_at is null;
