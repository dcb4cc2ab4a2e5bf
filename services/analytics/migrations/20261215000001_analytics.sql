-- The analytics service's own database: one fact row per order (with its lines), the refunds
-- and the registrations, each written from events in the transaction that records the event in
-- the inbox table, so a redelivered event changes nothing twice. Every update is
-- order-independent: whatever order an order's events arrive in, its row ends the same.

-- The consumer runtime's deduplication: one row per event applied (shopmesh_platform::events).
create table inbox (
    consumer text not null,
    event_id uuid not null,
    event_type text not null,
    received_at timestamptz not null default now(),
    primary key (consumer, event_id)
);

-- One order as its events tell it.
create table order_facts (
    order_id uuid primary key,
    user_id text not null default '',
    -- When the order was placed: the occurred_at of order.created. Until that event arrives, the
    -- earliest occurred_at of the order's events seen so far (placed_known false).
    placed_at timestamptz not null,
    placed_known boolean not null default false,
    -- The occurred_at of order.paid; null until it arrives.
    paid_at timestamptz,
    -- The latest status: the event of highest rank wins (CREATED 1, PAID 2, SHIPPED 3,
    -- COMPLETED 4, CANCELLED and REFUNDED 5, which are final), so arrival order does not matter.
    status text not null check (status in ('CREATED', 'PAID', 'SHIPPED', 'COMPLETED', 'CANCELLED',
        'REFUNDED')),
    status_rank smallint not null check (status_rank between 1 and 5),
    -- The order total in minor units; zero in no currency until an event carrying it arrives.
    total_minor bigint not null default 0 check (total_minor >= 0),
    currency text not null default '',
    updated_at timestamptz not null default now()
);

create index order_facts_placed_at on order_facts (placed_at);
create index order_facts_paid_at on order_facts (paid_at) where paid_at is not null;

-- The lines of an order as placed (order.created and order.paid carry the same snapshot).
create table order_fact_lines (
    order_id uuid not null references order_facts (order_id) on delete cascade,
    line_no integer not null check (line_no >= 0),
    product_id text not null,
    sku text not null default '',
    product_name text not null default '',
    quantity integer not null check (quantity >= 0),
    line_total_minor bigint not null check (line_total_minor >= 0),
    primary key (order_id, line_no)
);

create index order_fact_lines_product on order_fact_lines (product_id);

-- One succeeded refund (payment.refunded), counted on the day it was made.
create table refunds (
    refund_id text primary key,
    payment_id text not null,
    order_id text not null,
    amount_minor bigint not null check (amount_minor >= 0),
    currency text not null,
    refunded_at timestamptz not null
);

create index refunds_refunded_at on refunds (refunded_at);

-- One registered account (user.registered), for the new customers of a range.
create table registrations (
    user_id text primary key,
    registered_at timestamptz not null
);

create index registrations_registered_at on registrations (registered_at);
