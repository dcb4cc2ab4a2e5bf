-- Inventory: stock per SKU, reservations per order and the stock audit trail. Correctness lives
-- here: the check constraints make overselling impossible whatever the application does.

create table stock (
    sku text primary key references products (sku),
    product_id uuid not null unique references products (id),
    on_hand integer not null default 0,
    reserved integer not null default 0,
    low_stock_threshold integer not null default 5 check (low_stock_threshold >= 0),
    -- Whether available (on_hand - reserved) was at or below the threshold after the last change;
    -- a change that turns it on records exactly one inventory.low_stock event.
    low_stock boolean not null default false,
    updated_at timestamptz not null default now(),
    constraint stock_levels check (on_hand >= 0 and reserved >= 0 and reserved <= on_hand)
);

create index stock_low_idx on stock (sku) where on_hand - reserved <= low_stock_threshold;

create table reservations (
    -- One reservation per order: the idempotency key of Reserve.
    order_id uuid primary key,
    status text not null check (status in ('active', 'committed', 'released', 'expired')),
    expires_at timestamptz not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- The sweeper's work list.
create index reservations_active_expiry_idx on reservations (expires_at) where status = 'active';

create table reservation_lines (
    order_id uuid not null references reservations (order_id),
    sku text not null references stock (sku),
    quantity integer not null check (quantity > 0),
    primary key (order_id, sku)
);

create table stock_movements (
    id uuid primary key,
    -- Insertion order; a SKU's movements are written under its row lock, so this is also the
    -- order in which they happened.
    seq bigint generated always as identity unique,
    sku text not null references stock (sku),
    reason text not null check (
        reason in ('receiving', 'damage', 'correction', 'return', 'sale', 'reserve', 'release', 'expire')
    ),
    on_hand_delta integer not null,
    reserved_delta integer not null,
    on_hand_after integer not null check (on_hand_after >= 0),
    reserved_after integer not null check (reserved_after >= 0),
    -- The user id from the caller's access token; null when the service itself acted (sweeper).
    actor_id text,
    order_id uuid,
    note text not null default '',
    -- Makes a repeated Adjust return its first result instead of adjusting again.
    idempotency_key text constraint stock_movements_idempotency_key unique,
    created_at timestamptz not null default now(),
    check (on_hand_delta <> 0 or reserved_delta <> 0)
);

create index stock_movements_sku_seq_idx on stock_movements (sku, seq desc);
