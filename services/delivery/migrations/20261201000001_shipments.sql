-- Shipments, their lines, their tracking history and the order updates they owe.

create table shipments (
    id uuid primary key,
    -- One shipment per order: CreateShipment is idempotent on this key.
    order_id uuid not null unique,
    user_id text not null,
    tier text not null check (tier in ('STANDARD', 'VIP')),
    -- Lower goes first: the courier serves VIP shipments before standard ones.
    priority smallint generated always as (case when tier = 'VIP' then 0 else 1 end) stored,
    status text not null check (status in (
        'LABEL_CREATED', 'PENDING', 'PACKED', 'SHIPPED', 'IN_TRANSIT', 'OUT_FOR_DELIVERY',
        'DELIVERED', 'FAILED', 'RETURNED', 'CANCELLED')),
    -- Sequence number of the latest tracking event; every transition is conditional on it, so
    -- two concurrent transitions from the same state cannot both apply.
    last_event_seq integer not null check (last_event_seq >= 1),
    recipient text not null,
    line1 text not null,
    line2 text not null,
    city text not null,
    region text not null,
    postal_code text not null,
    country text not null,
    phone text not null,
    carrier text not null,
    tracking_number text not null,
    -- When the courier simulator may take the next step; null when it has nothing to do.
    next_step_at timestamptz,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    unique (carrier, tracking_number)
);

create index shipments_user on shipments (user_id, created_at);
create index shipments_courier_due on shipments (priority, next_step_at)
    where next_step_at is not null;

create table shipment_lines (
    shipment_id uuid not null references shipments (id) on delete cascade,
    line_no integer not null,
    product_id text not null,
    sku text not null,
    product_name text not null,
    quantity integer not null check (quantity > 0),
    primary key (shipment_id, line_no)
);

create table tracking_events (
    id uuid primary key,
    shipment_id uuid not null references shipments (id) on delete cascade,
    seq integer not null,
    status text not null,
    location text not null,
    note text not null,
    created_at timestamptz not null,
    unique (shipment_id, seq)
);

-- The order status changes the shipment owes the order service, written in the same
-- transaction as the tracking event that causes them, so none is lost when the order service
-- is down. At most one per target status and shipment; delivered in `id` order per shipment.
create table order_sync (
    id bigint generated always as identity primary key,
    shipment_id uuid not null references shipments (id) on delete cascade,
    order_id uuid not null,
    order_status text not null check (order_status in ('SHIPPED', 'COMPLETED')),
    note text not null,
    state text not null default 'pending' check (state in ('pending', 'done', 'rejected')),
    attempts integer not null default 0,
    -- Due time of the next attempt; also the lease of an attempt in flight.
    next_attempt_at timestamptz not null,
    last_error text,
    created_at timestamptz not null,
    done_at timestamptz,
    unique (shipment_id, order_status)
);

create index order_sync_pending on order_sync (next_attempt_at) where state = 'pending';
create index order_sync_shipment_pending on order_sync (shipment_id, id) where state = 'pending';
