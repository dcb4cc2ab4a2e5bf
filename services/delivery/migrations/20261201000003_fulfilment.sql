-- Fulfilment: the packing station consumes order.paid from a RabbitMQ priority queue (VIP
-- orders first) and records when it packed each order's shipment. A new shipment is created
-- with no courier step due (next_step_at null); packing makes it due, so the courier picks up
-- only fulfilled shipments. Shipments created before this migration keep their schedule.
alter table shipments add column fulfilled_at timestamptz;

-- The event consumer's deduplication: the id of every event a consumer of this service has
-- applied, written in the transaction of its effect, so a redelivery is applied only once.
create table inbox (
    consumer text not null,
    event_id uuid not null,
    event_type text not null,
    received_at timestamptz not null default now(),
    primary key (consumer, event_id)
);
