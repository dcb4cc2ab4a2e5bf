-- AMQP priority of each event (fulfilment events carry the customer's tier), read by the relay.
alter table outbox add column priority smallint not null default 0;
