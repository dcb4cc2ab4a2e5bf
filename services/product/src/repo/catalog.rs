//! PostgreSQL adapter of [`CatalogRepo`]: products with full-text search, the category tree,
//! and the stock record every product is created with.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::{
    Actor, Category, Currency, Money, MovementReason, NewProduct, Product, ProductFields,
    ProductSort, SearchCursor, SearchFilter, Sku, Slug, SortKey,
};
use crate::events::OutboxEvent;
use crate::repo::sql::{NewMovement, Tx, insert_movement, insert_outbox, stored_sku};
use crate::repo::{CatalogRepo, ImportCounts, ImportRow, RepoError};

/// Products and categories in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgCatalogRepo {
    pool: PgPool,
}

impl PgCatalogRepo {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

const PRODUCT_COLUMNS: &str = "p.id, p.sku, p.name, p.description, p.category_id, \
     p.price_minor, p.currency, p.image_urls, p.attributes, p.active, p.version, p.created_at, \
     p.updated_at, p.deleted_at, coalesce(s.on_hand - s.reserved, 0) as available";

const PRODUCT_FROM: &str = "from products p left join stock s on s.product_id = p.id";

/// The names of a category and its ancestors, for the search vector. `param` is the bind
/// parameter holding the category id.
fn category_names(param: &str) -> String {
    format!(
        "coalesce((with recursive up(id, parent_id, name) as ( \
           select id, parent_id, name from categories where id = {param} \
           union all \
           select c.id, c.parent_id, c.name from categories c join up on c.id = up.parent_id \
         ) select string_agg(name, ' ') from up), '')"
    )
}

#[derive(Debug, FromRow)]
struct ProductRow {
    id: Uuid,
    sku: String,
    name: String,
    description: String,
    category_id: Option<Uuid>,
    price_minor: i64,
    currency: String,
    image_urls: Vec<String>,
    attributes: Value,
    active: bool,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    available: i32,
}

impl ProductRow {
    fn product(self) -> Result<Product, RepoError> {
        let currency = Currency::parse("currency", &self.currency).map_err(|_| {
            RepoError::Backend(anyhow::anyhow!(
                "stored currency is invalid: {}",
                self.currency
            ))
        })?;
        let attributes = match self.attributes {
            Value::Object(map) => map,
            _ => {
                return Err(RepoError::Backend(anyhow::anyhow!(
                    "stored attributes are not an object"
                )));
            }
        };
        Ok(Product {
            id: self.id,
            sku: stored_sku(&self.sku)?,
            fields: ProductFields {
                name: self.name,
                description: self.description,
                category_id: self.category_id,
                price: Money {
                    amount_minor: self.price_minor,
                    currency,
                },
                image_urls: self.image_urls,
                attributes,
                active: self.active,
            },
            version: self.version,
            available: self.available,
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
        })
    }
}

#[derive(Debug, FromRow)]
struct SearchRow {
    #[sqlx(flatten)]
    product: ProductRow,
    rank: f32,
}

#[derive(Debug, FromRow)]
struct CategoryRow {
    id: Uuid,
    name: String,
    slug: String,
    parent_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl From<CategoryRow> for Category {
    fn from(row: CategoryRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            slug: row.slug,
            parent_id: row.parent_id,
            created_at: row.created_at,
        }
    }
}

async fn product_in(tx: &mut Tx, id: Uuid) -> Result<Product, RepoError> {
    let sql = format!("select {PRODUCT_COLUMNS} {PRODUCT_FROM} where p.id = $1");
    sqlx::query_as::<_, ProductRow>(&sql)
        .bind(id)
        .fetch_one(&mut **tx)
        .await?
        .product()
}

fn attributes_json(fields: &ProductFields) -> Value {
    Value::Object(fields.attributes.clone())
}

/// Creates the stock record of a new product, with a RECEIVING movement for initial stock. A
/// product born at or below its threshold starts flagged low without an event: the event marks
/// a crossing, and there was none.
async fn create_stock(
    tx: &mut Tx,
    product_id: Uuid,
    sku: &Sku,
    initial_stock: i32,
    threshold: i32,
    actor: &Actor,
) -> Result<(), RepoError> {
    sqlx::query(
        "insert into stock (sku, product_id, on_hand, low_stock_threshold, low_stock) \
         values ($1, $2, $3, $4, $3 <= $4)",
    )
    .bind(sku.as_str())
    .bind(product_id)
    .bind(initial_stock)
    .bind(threshold)
    .execute(&mut **tx)
    .await?;
    if initial_stock > 0 {
        let movement = NewMovement {
            sku: sku.as_str(),
            reason: MovementReason::Receiving,
            on_hand_delta: initial_stock,
            reserved_delta: 0,
            on_hand_after: initial_stock,
            reserved_after: 0,
            order_id: None,
            note: "initial stock",
            idempotency_key: None,
        };
        insert_movement(tx, &movement, actor).await?;
    }
    Ok(())
}

#[async_trait]
impl CatalogRepo for PgCatalogRepo {
    async fn ping(&self) -> Result<(), RepoError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn product(&self, id: Uuid) -> Result<Option<Product>, RepoError> {
        let sql = format!("select {PRODUCT_COLUMNS} {PRODUCT_FROM} where p.id = $1");
        sqlx::query_as::<_, ProductRow>(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(ProductRow::product)
            .transpose()
    }

    #[tracing::instrument(skip(self))]
    async fn product_by_sku(&self, sku: &Sku) -> Result<Option<Product>, RepoError> {
        let sql = format!("select {PRODUCT_COLUMNS} {PRODUCT_FROM} where p.sku = $1");
        sqlx::query_as::<_, ProductRow>(&sql)
            .bind(sku.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(ProductRow::product)
            .transpose()
    }

    #[tracing::instrument(skip(self, ids), fields(ids = ids.len()))]
    async fn products(&self, ids: &[Uuid]) -> Result<Vec<Product>, RepoError> {
        let sql = format!("select {PRODUCT_COLUMNS} {PRODUCT_FROM} where p.id = any($1::uuid[])");
        sqlx::query_as::<_, ProductRow>(&sql)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(ProductRow::product)
            .collect()
    }

    #[tracing::instrument(skip(self))]
    async fn search(
        &self,
        filter: &SearchFilter,
        after: Option<&SearchCursor>,
        limit: usize,
    ) -> Result<Vec<(Product, SearchCursor)>, RepoError> {
        let mut qb = QueryBuilder::<Postgres>::new("");
        if let Some(category_id) = filter.category_id {
            qb.push("with recursive tree(id) as (select id from categories where id = ");
            qb.push_bind(category_id);
            qb.push(" union all select c.id from categories c join tree t on c.parent_id = t.id) ");
        }
        qb.push("select ");
        qb.push(PRODUCT_COLUMNS);
        let ranked = filter.q.is_some();
        qb.push(if ranked {
            ", ts_rank(p.search_vector, query) as rank"
        } else {
            ", 0::real as rank"
        });
        qb.push(" from products p join stock s on s.product_id = p.id");
        if let Some(q) = &filter.q {
            qb.push(" cross join websearch_to_tsquery('english', ");
            qb.push_bind(q.as_str());
            qb.push(") as query");
        }
        qb.push(" where p.deleted_at is null");
        if !filter.include_inactive {
            qb.push(" and p.active");
        }
        if ranked {
            qb.push(" and p.search_vector @@ query");
        }
        if filter.category_id.is_some() {
            qb.push(" and p.category_id in (select id from tree)");
        }
        if let Some(min) = filter.min_price {
            qb.push(" and p.price_minor >= ");
            qb.push_bind(min);
        }
        if let Some(max) = filter.max_price {
            qb.push(" and p.price_minor <= ");
            qb.push_bind(max);
        }
        if filter.in_stock_only {
            qb.push(" and s.on_hand - s.reserved > 0");
        }
        if let Some(cursor) = after {
            match (filter.sort, cursor.key) {
                (ProductSort::Relevance, SortKey::Rank(rank)) if ranked => {
                    qb.push(" and (ts_rank(p.search_vector, query), p.id) < (");
                    qb.push_bind(rank);
                    qb.push(", ");
                    qb.push_bind(cursor.id);
                    qb.push(")");
                }
                (ProductSort::PriceAsc, SortKey::Price(price)) => {
                    qb.push(" and (p.price_minor, p.id) > (");
                    qb.push_bind(price);
                    qb.push(", ");
                    qb.push_bind(cursor.id);
                    qb.push(")");
                }
                (ProductSort::PriceDesc, SortKey::Price(price)) => {
                    qb.push(" and (p.price_minor, p.id) < (");
                    qb.push_bind(price);
                    qb.push(", ");
                    qb.push_bind(cursor.id);
                    qb.push(")");
                }
                (ProductSort::Newest | ProductSort::Relevance, _) => {
                    qb.push(" and p.id < ");
                    qb.push_bind(cursor.id);
                }
                (sort, key) => {
                    return Err(RepoError::Backend(anyhow::anyhow!(
                        "cursor key {key:?} does not fit sort {sort:?}"
                    )));
                }
            }
        }
        qb.push(match filter.sort {
            ProductSort::Relevance if ranked => " order by rank desc, p.id desc",
            ProductSort::PriceAsc => " order by p.price_minor, p.id",
            ProductSort::PriceDesc => " order by p.price_minor desc, p.id desc",
            ProductSort::Relevance | ProductSort::Newest => " order by p.id desc",
        });
        qb.push(" limit ");
        qb.push_bind(i64::try_from(limit).unwrap_or(i64::MAX));

        let rows: Vec<SearchRow> = qb.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                let key = match filter.sort {
                    ProductSort::Relevance if ranked => SortKey::Rank(row.rank),
                    ProductSort::PriceAsc | ProductSort::PriceDesc => {
                        SortKey::Price(row.product.price_minor)
                    }
                    ProductSort::Relevance | ProductSort::Newest => SortKey::Id,
                };
                let cursor = SearchCursor {
                    key,
                    id: row.product.id,
                };
                Ok((row.product.product()?, cursor))
            })
            .collect()
    }

    #[tracing::instrument(skip(self, product, actor), fields(sku = %product.sku))]
    async fn create_product(
        &self,
        product: &NewProduct,
        actor: &Actor,
    ) -> Result<Product, RepoError> {
        let f = &product.fields;
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "insert into products (id, sku, name, description, category_id, category_names, \
             price_minor, currency, image_urls, attributes, active) \
             values ($1, $2, $3, $4, $5, {}, $6, $7, $8, $9, $10)",
            category_names("$5")
        );
        sqlx::query(&sql)
            .bind(product.id)
            .bind(product.sku.as_str())
            .bind(&f.name)
            .bind(&f.description)
            .bind(f.category_id)
            .bind(f.price.amount_minor)
            .bind(f.price.currency.as_str())
            .bind(&f.image_urls)
            .bind(attributes_json(f))
            .bind(f.active)
            .execute(&mut *tx)
            .await?;
        create_stock(
            &mut tx,
            product.id,
            &product.sku,
            product.initial_stock,
            product.low_stock_threshold,
            actor,
        )
        .await?;
        let created = product_in(&mut tx, product.id).await?;
        insert_outbox(&mut tx, &OutboxEvent::product_created(&created), actor).await?;
        tx.commit().await?;
        Ok(created)
    }

    #[tracing::instrument(skip(self, fields, actor))]
    async fn update_product(
        &self,
        id: Uuid,
        expected_version: i64,
        fields: &ProductFields,
        changed: &[&str],
        actor: &Actor,
    ) -> Result<Option<Product>, RepoError> {
        let mut tx = self.pool.begin().await?;
        // Optimistic concurrency: the write only happens at the version the caller read.
        let sql = format!(
            "update products set name = $3, description = $4, category_id = $5, \
             category_names = {}, price_minor = $6, currency = $7, image_urls = $8, \
             attributes = $9, active = $10, version = version + 1, updated_at = now() \
             where id = $1 and version = $2 and deleted_at is null returning id",
            category_names("$5")
        );
        let updated: Option<Uuid> = sqlx::query_scalar(&sql)
            .bind(id)
            .bind(expected_version)
            .bind(&fields.name)
            .bind(&fields.description)
            .bind(fields.category_id)
            .bind(fields.price.amount_minor)
            .bind(fields.price.currency.as_str())
            .bind(&fields.image_urls)
            .bind(attributes_json(fields))
            .bind(fields.active)
            .fetch_optional(&mut *tx)
            .await?;
        if updated.is_none() {
            return Ok(None);
        }
        let product = product_in(&mut tx, id).await?;
        insert_outbox(
            &mut tx,
            &OutboxEvent::product_updated(&product, changed),
            actor,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(product))
    }

    #[tracing::instrument(skip(self, actor))]
    async fn delete_product(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        actor: &Actor,
    ) -> Result<Option<Product>, RepoError> {
        let mut tx = self.pool.begin().await?;
        let deleted: Option<Uuid> = sqlx::query_scalar(
            "update products set active = false, deleted_at = now(), version = version + 1, \
             updated_at = now() \
             where id = $1 and deleted_at is null and ($2::bigint is null or version = $2) \
             returning id",
        )
        .bind(id)
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await?;
        if deleted.is_none() {
            return Ok(None);
        }
        let product = product_in(&mut tx, id).await?;
        insert_outbox(&mut tx, &OutboxEvent::product_deleted(&product), actor).await?;
        tx.commit().await?;
        Ok(Some(product))
    }

    #[tracing::instrument(skip(self, rows, actor), fields(rows = rows.len()))]
    async fn import(&self, rows: &[ImportRow], actor: &Actor) -> Result<ImportCounts, RepoError> {
        let mut counts = ImportCounts::default();
        let mut tx = self.pool.begin().await?;
        // Lock the products the batch matches (in a fixed order), so the comparison below stays
        // true until commit.
        let skus: Vec<&str> = rows.iter().map(|row| row.sku.as_str()).collect();
        let sql = format!(
            "select {PRODUCT_COLUMNS} {PRODUCT_FROM} where p.sku = any($1::text[]) \
             order by p.sku for update of p"
        );
        let existing: HashMap<String, Product> = sqlx::query_as::<_, ProductRow>(&sql)
            .bind(&skus)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|row| row.product().map(|p| (p.sku.as_str().to_owned(), p)))
            .collect::<Result<_, _>>()?;

        let upsert = format!(
            "insert into products (id, sku, name, description, category_id, category_names, \
             price_minor, currency, image_urls, attributes, active) \
             values ($1, $2, $3, $4, $5, {}, $6, $7, $8, $9, $10) \
             on conflict (sku) do update set name = excluded.name, \
             description = excluded.description, category_id = excluded.category_id, \
             category_names = excluded.category_names, price_minor = excluded.price_minor, \
             currency = excluded.currency, image_urls = excluded.image_urls, \
             attributes = excluded.attributes, active = excluded.active, \
             version = products.version + 1, updated_at = now() \
             returning id, (xmax = 0) as created",
            category_names("$5")
        );
        // Rows are written in one fixed order, so two overlapping imports cannot deadlock on the
        // products they both create.
        let mut ordered: Vec<&ImportRow> = rows.iter().collect();
        ordered.sort_by(|a, b| a.sku.cmp(&b.sku));
        for row in ordered {
            let before = existing.get(row.sku.as_str());
            if before.is_some_and(|p| p.fields == row.fields) {
                counts.unchanged += 1;
                continue;
            }
            let f = &row.fields;
            let (id, created): (Uuid, bool) = sqlx::query_as(&upsert)
                .bind(Uuid::now_v7())
                .bind(row.sku.as_str())
                .bind(&f.name)
                .bind(&f.description)
                .bind(f.category_id)
                .bind(f.price.amount_minor)
                .bind(f.price.currency.as_str())
                .bind(&f.image_urls)
                .bind(attributes_json(f))
                .bind(f.active)
                .fetch_one(&mut *tx)
                .await?;
            if created {
                // A new product gets its stock record; an existing one keeps its stock.
                create_stock(
                    &mut tx,
                    id,
                    &row.sku,
                    row.initial_stock,
                    row.low_stock_threshold,
                    actor,
                )
                .await?;
                let product = product_in(&mut tx, id).await?;
                insert_outbox(&mut tx, &OutboxEvent::product_created(&product), actor).await?;
                counts.created += 1;
            } else {
                let product = product_in(&mut tx, id).await?;
                let changed = before
                    .map(|b| b.fields.changed_fields(&product.fields))
                    .unwrap_or_else(|| crate::domain::UPDATABLE_FIELDS.to_vec());
                insert_outbox(
                    &mut tx,
                    &OutboxEvent::product_updated(&product, &changed),
                    actor,
                )
                .await?;
                counts.updated += 1;
            }
        }
        tx.commit().await?;
        Ok(counts)
    }

    #[tracing::instrument(skip(self))]
    async fn categories(&self) -> Result<Vec<Category>, RepoError> {
        // Depth-first by name: every parent comes before its children.
        let rows: Vec<CategoryRow> = sqlx::query_as(
            "with recursive tree as ( \
               select id, name, slug, parent_id, created_at, array[lower(name), id::text] as path \
               from categories where parent_id is null \
               union all \
               select c.id, c.name, c.slug, c.parent_id, c.created_at, \
                      t.path || array[lower(c.name), c.id::text] \
               from categories c join tree t on c.parent_id = t.id \
             ) select id, name, slug, parent_id, created_at from tree order by path",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Category::from).collect())
    }

    async fn existing_categories(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, RepoError> {
        Ok(
            sqlx::query_scalar("select id from categories where id = any($1::uuid[])")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(skip(self))]
    async fn create_category(
        &self,
        name: &str,
        slug: &Slug,
        parent_id: Option<Uuid>,
    ) -> Result<Category, RepoError> {
        let row: CategoryRow = sqlx::query_as(
            "insert into categories (id, name, slug, parent_id) values ($1, $2, $3, $4) \
             returning id, name, slug, parent_id, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(slug.as_str())
        .bind(parent_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    #[tracing::instrument(skip(self))]
    async fn ensure_category(
        &self,
        name: &str,
        slug: &Slug,
        parent_id: Option<Uuid>,
    ) -> Result<Category, RepoError> {
        let inserted: Option<CategoryRow> = sqlx::query_as(
            "insert into categories (id, name, slug, parent_id) values ($1, $2, $3, $4) \
             on conflict (slug) do nothing returning id, name, slug, parent_id, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(slug.as_str())
        .bind(parent_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = inserted {
            return Ok(row.into());
        }
        let row: CategoryRow = sqlx::query_as(
            "select id, name, slug, parent_id, created_at from categories where slug = $1",
        )
        .bind(slug.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }
}
