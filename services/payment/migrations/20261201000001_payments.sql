-- Payments, refunds, the ledger of money movements, and the payment methods tokenized for them.
-- The invariants that must hold under concurrency are constraints here, not checks in code:
-- one payment per order, at most one capture per payment, refunds never above the amount.

-- A tokenized card: what the provider's vault would hold for us. Never the full number or the
-- security code.
create table payment_methods (
    token text primary key,
    -- The user who tokenized it; only their charges may use it.
    user_id text not null,
    brand text not null,
    last4 text not null check (last4 ~ '^[0-9]{4}$'),
    exp_month integer not null check (exp_month between 1 and 12),
    exp_year integer not null check (exp_year between 2000 and 9999),
    -- What the test provider does with this card (derived from the number at tokenization).
    scenario text not null check (scenario in ('succeed', 'decline', 'insufficient_funds', 'transient')),
    -- The payment that used this single-use token; null until charged.
    payment_id uuid unique,
    created_at timestamptz not null default now()
);

create table payments (
    id uuid primary key,
    -- The idempotency key of Charge: one payment per order.
    order_id uuid not null unique,
    user_id text not null,
    amount_minor bigint not null check (amount_minor > 0),
    currency text not null check (currency ~ '^[A-Z]{3}$'),
    refunded_minor bigint not null default 0,
    status text not null check (status in ('PENDING', 'SUCCEEDED', 'FAILED', 'PARTIALLY_REFUNDED', 'REFUNDED')),
    failure_reason text check (failure_reason in ('CARD_DECLINED', 'INSUFFICIENT_FUNDS', 'EXPIRED_CARD',
        'INVALID_PAYMENT_METHOD', 'FRAUD_SUSPECTED', 'PROCESSOR_ERROR')),
    decline_code text not null default '',
    failure_message text not null default '',
    provider_reference text not null default '',
    card_brand text not null default '',
    card_last4 text not null default '',
    -- Provider calls made for this payment (retries of transient failures included).
    attempts integer not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint payments_refunded_within_amount check (refunded_minor >= 0 and refunded_minor <= amount_minor),
    -- Only a succeeded payment has refunds; a fully refunded one has given everything back.
    constraint payments_refund_status check (
        (status in ('PENDING', 'FAILED', 'SUCCEEDED') and refunded_minor = 0)
        or (status = 'PARTIALLY_REFUNDED' and refunded_minor > 0 and refunded_minor < amount_minor)
        or (status = 'REFUNDED' and refunded_minor = amount_minor)
    ),
    constraint payments_failure_reason check ((status = 'FAILED') = (failure_reason is not null))
);

create index payments_user_id on payments (user_id);

create table refunds (
    id uuid primary key,
    payment_id uuid not null references payments (id),
    idempotency_key text not null,
    amount_minor bigint not null check (amount_minor > 0),
    currency text not null,
    reason text not null,
    note text not null default '',
    status text not null check (status in ('PENDING', 'SUCCEEDED', 'FAILED')),
    failure_message text not null default '',
    -- The admin who asked; empty when a service did.
    requested_by text not null default '',
    created_at timestamptz not null default now(),
    constraint refunds_idempotency unique (payment_id, idempotency_key)
);

-- Every money movement: one capture per succeeded payment, one row per succeeded refund.
create table ledger_entries (
    id bigint generated always as identity primary key,
    payment_id uuid not null references payments (id),
    refund_id uuid unique references refunds (id),
    kind text not null check (kind in ('capture', 'refund')),
    amount_minor bigint not null check (amount_minor > 0),
    currency text not null,
    created_at timestamptz not null default now(),
    constraint ledger_refund_has_refund check ((kind = 'refund') = (refund_id is not null))
);

-- A payment is captured at most once, whatever the retries and concurrent repeats of Charge.
create unique index ledger_one_capture_per_payment on ledger_entries (payment_id) where kind = 'capture';

-- Transactional outbox: payment.succeeded, payment.failed and payment.refunded are written in the
-- transaction of the change they describe and published later by a relay (published_at).
create table outbox (
    id uuid primary key,
    -- Publication order; events of one payment must leave in the order they happened.
    seq bigint generated always as identity unique,
    -- The routing key, e.g. "payment.succeeded".
    event_type text not null,
    -- The payment id.
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
