-- Events the order service has applied (shipment.status_changed), by consumer and event id: a
-- redelivered event finds its row here and changes nothing.
create table inbox (
    consumer text not null,
    event_id uuid not null,
    event_type text not null,
    received_at timestamptz not null default now(),
    primary key (consumer, event_id)
);
