-- Orders, their line snapshots, status history and the checkout saga's step log.

create table orders (
    id uuid primary key,
    user_id text not null,
    -- shopmesh.user.v1.Tier
    tier smallint not null,
    -- shopmesh.order.v1.OrderStatus
    status smallint not null,
    -- Per user: the same key is the same order.
    idempotency_key text not null,
    currency text not null,
    total_minor bigint not null check (total_minor >= 0),
    refunded_minor bigint not null default 0 check (refunded_minor >= 0 and refunded_minor <= total_minor),
    shipping_address jsonb not null,
    -- The provider's opaque token, needed to resume a charge after a restart; never card data.
    payment_method_token text not null,
    payment_id text not null default '',
    shipment_id text not null default '',
    -- shopmesh.order.v1.CancellationReason
    cancellation_reason smallint not null default 0,
    cancellation_note text not null default '',
    -- shopmesh.order.v1.SagaStep: the step recorded last, to resume or compensate.
    saga_step smallint not null,
    -- Whether the charge may have gone through (so compensation must look for it and refund it).
    charge_attempted boolean not null default false,
    -- Whether the committed stock must be put back (cancellation after payment).
    restock boolean not null default false,
    -- Who asked for a cancellation that the saga has yet to carry out, and why.
    cancel_requested boolean not null default false,
    cancel_actor text not null default '',
    -- shopmesh.order.v1.CancellationReason of that request.
    cancel_reason smallint not null default 0,
    saga_attempts integer not null default 0,
    -- The saga driver holding the order until then; expired leases are taken over by recovery.
    lease_until timestamptz,
    next_attempt_at timestamptz not null default now(),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (user_id, idempotency_key)
);

-- The customer's order list, newest first.
create index orders_user_created on orders (user_id, created_at desc, id desc);
create index orders_status_created on orders (status, created_at desc, id desc);
create index orders_created on orders (created_at desc, id desc);
-- What recovery scans: sagas that have not finished (7 = COMPLETED, 8 = COMPENSATED).
create index orders_unfinished on orders (next_attempt_at) where saga_step not in (7, 8);

create table order_lines (
    order_id uuid not null references orders (id) on delete cascade,
    position integer not null,
    product_id text not null,
    sku text not null,
    product_name text not null,
    unit_price_minor bigint not null check (unit_price_minor > 0),
    quantity integer not null check (quantity > 0 and quantity <= 99),
    primary key (order_id, position)
);

create table order_status_history (
    id bigserial primary key,
    order_id uuid not null references orders (id) on delete cascade,
    from_status smallint not null,
    to_status smallint not null,
    actor_id text not null default '',
    note text not null default '',
    changed_at timestamptz not null default now()
);
create index order_status_history_order on order_status_history (order_id, id);

-- Every saga step as recorded (before it is taken) and how it ended.
create table saga_log (
    id bigserial primary key,
    order_id uuid not null references orders (id) on delete cascade,
    step smallint not null,
    -- started | succeeded | failed | retrying
    outcome text not null,
    detail text not null default '',
    logged_at timestamptz not null default now()
);
create index saga_log_order on saga_log (order_id, id);
