-- Transactional outbox: order.created, order.paid, order.cancelled, order.shipped,
-- order.completed and order.refunded are written in the transaction of the status change they
-- describe (tied to the conditional update that made it) and published later by a relay
-- (published_at).
create table outbox (
    -- UUIDv7 (Uuid::now_v7()), the event id.
    id uuid primary key,
    -- Publication order; events of one order must leave in the order they happened.
    seq bigint generated always as identity unique,
    -- The routing key, e.g. "order.paid".
    event_type text not null,
    -- The order id.
    aggregate_id text not null,
    -- Type URL of the payload, "type.googleapis.com/shopmesh.events.v1.<Name>".
    payload_type text not null,
    -- The encoded protobuf payload message (the relay wraps it in an EventEnvelope).
    payload bytea not null,
    -- The x-request-id of the request that caused the change (see orders.correlation_id).
    correlation_id text not null default '',
    -- AMQP priority: 9 for VIP, 1 for standard on fulfilment events (order.paid), else 0.
    priority smallint not null default 0,
    created_at timestamptz not null default now(),
    published_at timestamptz
);

create index outbox_unpublished_idx on outbox (seq) where published_at is null;

-- The request ids the saga's events carry when the saga, not a request, makes the change: the
-- PlaceOrder request (order.paid, and a cancellation by the checkout itself) and the CancelOrder
-- request the saga has yet to carry out (order.cancelled). Empty when the caller sent none.
alter table orders
    add column correlation_id text not null default '',
    add column cancel_correlation_id text not null default '';
