-- The notification service's own database: its copy of the recipients (from user.* events), the
-- users' inbox, the e-mails still to send, and the users' preferences. A notification and its
-- e-mail job are written in the transaction that records the event in the inbox table, so a
-- redelivered event creates neither twice.

-- The consumer runtime's deduplication: one row per event applied (shopmesh_platform::events).
create table inbox (
    consumer text not null,
    event_id uuid not null,
    event_type text not null,
    received_at timestamptz not null default now(),
    primary key (consumer, event_id)
);

-- Who notifications go to, kept from user.registered and user.updated.
create table recipients (
    user_id text primary key,
    email text not null,
    name text not null default '',
    -- When the change this row reflects happened (the event's occurred_at): an older event,
    -- re-driven late, does not overwrite a newer one.
    changed_at timestamptz not null,
    updated_at timestamptz not null default now()
);

create table notifications (
    -- UUIDv7.
    id uuid primary key,
    user_id text not null,
    kind text not null check (kind in ('welcome', 'order_paid', 'payment_failed', 'order_shipped',
        'order_delivered', 'order_refunded', 'order_cancelled')),
    -- 'email' when an e-mail was queued for it, 'in_app' when only the inbox has it.
    channel text not null check (channel in ('in_app', 'email')),
    subject text not null,
    body text not null,
    -- The fact it tells, e.g. 'order_delivered:<order id>': one notification per fact, whichever
    -- event brought it (order.completed and shipment.status_changed DELIVERED tell one delivery).
    fact text not null,
    -- The event it was written for.
    event_id uuid not null,
    read_at timestamptz,
    created_at timestamptz not null default now(),
    constraint notifications_one_per_fact unique (user_id, fact)
);

-- The inbox newest first, and its unread part.
create index notifications_by_user on notifications (user_id, created_at desc, id desc);
create index notifications_unread_by_user on notifications (user_id, created_at desc, id desc)
    where read_at is null;

-- E-mails to send. What goes out is copied here when the job is written, so deleting the in-app
-- notification does not change (or lose) its e-mail, and sending never touches the inbox.
create table email_jobs (
    id uuid primary key,
    notification_id uuid not null unique,
    user_id text not null,
    to_address text not null,
    to_name text not null default '',
    subject text not null,
    body text not null,
    -- pending: to be sent at next_attempt_at; sent; failed: given up (last_error says why).
    status text not null default 'pending' check (status in ('pending', 'sent', 'failed')),
    -- Sending attempts so far; a claim counts as one.
    attempts integer not null default 0 check (attempts >= 0),
    last_error text,
    -- When a pending job is due; a claimed job is pushed out by the claim's lease, so a sender
    -- that dies mid-send leaves it to be tried again.
    next_attempt_at timestamptz not null default now(),
    created_at timestamptz not null default now(),
    sent_at timestamptz,
    constraint email_jobs_sent_at check ((status = 'sent') = (sent_at is not null))
);

create index email_jobs_due on email_jobs (next_attempt_at) where status = 'pending';

-- The kinds a user does not want by e-mail (they still reach the inbox).
create table email_mutes (
    user_id text not null,
    kind text not null check (kind in ('welcome', 'order_paid', 'payment_failed', 'order_shipped',
        'order_delivered', 'order_refunded', 'order_cancelled')),
    created_at timestamptz not null default now(),
    primary key (user_id, kind)
);
