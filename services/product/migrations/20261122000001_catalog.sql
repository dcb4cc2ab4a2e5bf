-- Catalog: the category tree and the products.

create table categories (
    id uuid primary key,
    name text not null check (char_length(name) between 1 and 100),
    slug text not null
        constraint categories_slug_key unique
        constraint categories_slug_format check (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and char_length(slug) <= 100),
    -- Parents are created before their children and never change, so the tree cannot form a cycle.
    parent_id uuid references categories (id),
    created_at timestamptz not null default now()
);

create index categories_parent_id_idx on categories (parent_id);

create table products (
    id uuid primary key,
    sku text not null
        constraint products_sku_key unique
        constraint products_sku_format check (sku ~ '^[A-Z0-9][A-Z0-9-]{0,38}[A-Z0-9]$'),
    name text not null check (char_length(name) between 1 and 200),
    description text not null default '' check (char_length(description) <= 5000),
    category_id uuid references categories (id),
    -- Names of the category and all its ancestors, kept by the service so that the search vector
    -- (a generated column, which can only read its own row) can weigh them.
    category_names text not null default '',
    price_minor bigint not null constraint products_price_not_negative check (price_minor >= 0),
    -- ISO 4217 alphabetic code; the service checks it against its list of codes.
    currency char(3) not null check (currency ~ '^[A-Z]{3}$'),
    image_urls text[] not null default '{}',
    attributes jsonb not null default '{}' check (jsonb_typeof(attributes) = 'object'),
    active boolean not null default true,
    -- Bumped by every write; the product's ETag.
    version bigint not null default 1 check (version >= 1),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    search_vector tsvector generated always as (
        setweight(to_tsvector('english'::regconfig, name), 'A')
        || setweight(to_tsvector('simple'::regconfig, sku), 'B')
        || setweight(to_tsvector('english'::regconfig, category_names), 'B')
        || setweight(to_tsvector('english'::regconfig, description), 'C')
    ) stored
);

create index products_search_vector_idx on products using gin (search_vector);
create index products_category_id_idx on products (category_id);
-- Keyset pages of the live catalog: newest first (UUIDv7 order) and by price.
create index products_live_id_idx on products (id) where deleted_at is null;
create index products_live_price_idx on products (price_minor, id) where deleted_at is null;
