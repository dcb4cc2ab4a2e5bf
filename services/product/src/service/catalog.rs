//! Catalog use cases: products, search and categories.

use std::collections::HashSet;
use std::sync::Arc;

use shopmesh_platform::problem::FieldError;
use uuid::Uuid;

use crate::config::ProductConfig;
use crate::domain::{
    self, Actor, Category, Currency, MAX_BATCH_GET, MAX_IMPORT_ROWS, MAX_PRICE_MINOR,
    MAX_QUERY_CHARS, NewProduct, Product, ProductDraft, ProductFields, ProductSort, SearchCursor,
    SearchFilter, Sku, Slug, apply_mask, field_error, parse_etag,
};
use crate::error::Error;
use crate::repo::{CatalogRepo, ImportCounts, ImportRow, RepoError};

/// A search as a caller sent it.
#[derive(Clone, Debug, Default)]
pub struct SearchRequest {
    pub q: String,
    pub category_id: String,
    /// (amount in minor units, currency)
    pub min_price: Option<(i64, String)>,
    pub max_price: Option<(i64, String)>,
    pub in_stock_only: bool,
    /// `None` picks relevance with a query and newest without.
    pub sort: Option<ProductSort>,
    pub page_size: i32,
    pub page_token: String,
    pub include_inactive: bool,
}

/// One page of search results.
#[derive(Clone, Debug)]
pub struct SearchPage {
    pub products: Vec<Product>,
    pub next_page_token: Option<String>,
}

/// One row of an import as a caller sent it.
#[derive(Clone, Debug, Default)]
pub struct ImportRowDraft {
    pub row_number: i64,
    pub draft: ProductDraft,
    pub initial_stock: i32,
    /// Problems found while converting the row at the edge (e.g. attributes that are not JSON).
    pub edge_errors: Vec<FieldError>,
}

/// Why one row of an import was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    pub row_number: i64,
    pub sku: String,
    pub field: String,
    pub message: String,
}

/// The fate of one import batch.
#[derive(Clone, Debug)]
pub enum BatchOutcome {
    Committed(ImportCounts),
    Rejected(Vec<RowError>),
}

pub struct CatalogService {
    repo: Arc<dyn CatalogRepo>,
    config: ProductConfig,
}

fn product_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw.trim()).map_err(|_| Error::BadArgument("product_id must be a UUID".into()))
}

fn price_bound(
    name: &str,
    bound: Option<&(i64, String)>,
    catalog: Currency,
) -> Result<Option<i64>, Error> {
    let Some((amount, currency)) = bound else {
        return Ok(None);
    };
    let mut errors = Vec::new();
    if *amount < 0 {
        errors.push(field_error(
            &format!("{name}.amount_minor"),
            "must not be negative",
        ));
    } else if *amount > MAX_PRICE_MINOR {
        errors.push(field_error(
            &format!("{name}.amount_minor"),
            format!("must be at most {MAX_PRICE_MINOR}"),
        ));
    }
    match Currency::parse(&format!("{name}.currency"), currency) {
        Ok(code) if code == catalog => {}
        Ok(_) => errors.push(field_error(
            &format!("{name}.currency"),
            format!("must be the catalog currency {catalog}"),
        )),
        Err(err) => errors.push(err),
    }
    if errors.is_empty() {
        Ok(Some(*amount))
    } else {
        Err(Error::Invalid(errors))
    }
}

impl CatalogService {
    pub fn new(repo: Arc<dyn CatalogRepo>, config: ProductConfig) -> Self {
        Self { repo, config }
    }

    pub async fn ready(&self) -> Result<(), Error> {
        Ok(self.repo.ping().await?)
    }

    #[tracing::instrument(skip(self))]
    pub async fn get(&self, id: &str) -> Result<Product, Error> {
        self.repo
            .product(product_id(id)?)
            .await?
            .ok_or(Error::NotFound("product"))
    }

    #[tracing::instrument(skip(self))]
    pub async fn get_by_sku(&self, sku: &str) -> Result<Product, Error> {
        let sku = Sku::parse(sku)?;
        self.repo
            .product_by_sku(&sku)
            .await?
            .ok_or(Error::NotFound("product"))
    }

    /// The products with these ids in request order (duplicates once), and the ids that name
    /// none (malformed ones included: they name no product either).
    #[tracing::instrument(skip(self, ids), fields(ids = ids.len()))]
    pub async fn batch_get(&self, ids: &[String]) -> Result<(Vec<Product>, Vec<String>), Error> {
        let mut seen = HashSet::new();
        let requested: Vec<&String> = ids.iter().filter(|id| seen.insert(id.as_str())).collect();
        if requested.len() > MAX_BATCH_GET {
            return Err(Error::BadArgument(format!(
                "at most {MAX_BATCH_GET} distinct product ids per call"
            )));
        }
        let parsed: Vec<Uuid> = requested
            .iter()
            .filter_map(|id| Uuid::parse_str(id.trim()).ok())
            .collect();
        let found = self.repo.products(&parsed).await?;
        let mut products = Vec::with_capacity(found.len());
        let mut not_found = Vec::new();
        for id in requested {
            match Uuid::parse_str(id.trim())
                .ok()
                .and_then(|uuid| found.iter().find(|p| p.id == uuid))
            {
                Some(product) => products.push(product.clone()),
                None => not_found.push(id.clone()),
            }
        }
        Ok((products, not_found))
    }

    #[tracing::instrument(skip(self, request), fields(q = %request.q))]
    pub async fn search(
        &self,
        request: &SearchRequest,
        caller_is_admin: bool,
    ) -> Result<SearchPage, Error> {
        if request.include_inactive && !caller_is_admin {
            return Err(Error::PermissionDenied(
                "include_inactive is for admins only",
            ));
        }
        let page_size = domain::page_size(request.page_size).map_err(Error::BadArgument)?;
        let q = request.q.trim();
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::BadArgument(format!(
                "q must be at most {MAX_QUERY_CHARS} characters"
            )));
        }
        // The query reaches PostgreSQL, which refuses NUL in text: one line of printable text.
        if domain::has_control(q) {
            return Err(Error::BadArgument(
                "q must not contain control characters".into(),
            ));
        }
        let q = (!q.is_empty()).then(|| q.to_owned());
        let category_id =
            domain::optional_id("category_id", &request.category_id).map_err(Error::from)?;
        let catalog = self.config.catalog_currency;
        let min_price = price_bound("min_price", request.min_price.as_ref(), catalog)?;
        let max_price = price_bound("max_price", request.max_price.as_ref(), catalog)?;
        if let (Some(min), Some(max)) = (min_price, max_price)
            && min > max
        {
            return Err(Error::field("min_price", "must not exceed max_price"));
        }
        let filter = SearchFilter {
            sort: SearchFilter::effective_sort(q.as_deref(), request.sort),
            q,
            category_id,
            min_price,
            max_price,
            in_stock_only: request.in_stock_only,
            include_inactive: request.include_inactive,
        };
        let after = match request.page_token.trim() {
            "" => None,
            token => Some(
                SearchCursor::decode(token, &filter)
                    .map_err(|message| Error::BadArgument(message.into()))?,
            ),
        };
        let mut rows = self
            .repo
            .search(&filter, after.as_ref(), page_size + 1)
            .await?;
        let next_page_token = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last().map(|(_, cursor)| cursor.encode(&filter))
        } else {
            None
        };
        Ok(SearchPage {
            products: rows.into_iter().map(|(product, _)| product).collect(),
            next_page_token,
        })
    }

    fn low_stock_threshold(&self, requested: i32) -> Result<i32, FieldError> {
        match requested {
            0 => Ok(self.config.default_low_stock_threshold),
            t if t > 0 => Ok(t),
            _ => Err(field_error("low_stock_threshold", "must not be negative")),
        }
    }

    #[tracing::instrument(skip(self, draft, actor), fields(sku = %draft.sku))]
    pub async fn create(
        &self,
        draft: &ProductDraft,
        initial_stock: i32,
        low_stock_threshold: i32,
        actor: &Actor,
    ) -> Result<Product, Error> {
        let mut errors = Vec::new();
        let sku = Sku::parse(&draft.sku).map_err(|e| errors.push(e)).ok();
        let fields = ProductFields::parse(draft, self.config.catalog_currency)
            .map_err(|e| errors.extend(e))
            .ok();
        if initial_stock < 0 {
            errors.push(field_error("initial_stock", "must not be negative"));
        }
        let threshold = self
            .low_stock_threshold(low_stock_threshold)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let (Some(sku), Some(fields), true) = (sku, fields, errors.is_empty()) else {
            return Err(Error::Invalid(errors));
        };
        let product = NewProduct {
            id: Uuid::now_v7(),
            sku,
            fields,
            initial_stock,
            low_stock_threshold: threshold,
        };
        match self.repo.create_product(&product, actor).await {
            Ok(created) => Ok(created),
            Err(RepoError::Unique(constraint)) if constraint == "products_sku_key" => {
                Err(Error::SkuTaken(product.sku))
            }
            Err(RepoError::ForeignKey(_)) => Err(Error::field("category_id", "unknown category")),
            Err(err) => Err(err.into()),
        }
    }

    /// Changes the fields named in `mask` (all editable ones when it is empty), only if the
    /// product is still at the version `etag` names.
    #[tracing::instrument(skip(self, patch, actor))]
    pub async fn update(
        &self,
        id: &str,
        patch: &ProductDraft,
        mask: &[String],
        etag: &str,
        actor: &Actor,
    ) -> Result<Product, Error> {
        let id = product_id(id)?;
        if etag.trim().is_empty() {
            return Err(Error::field("etag", "is required"));
        }
        let expected = parse_etag(etag).ok_or(Error::StaleEtag)?;
        let current = self
            .repo
            .product(id)
            .await?
            .ok_or(Error::NotFound("product"))?;
        if current.deleted_at.is_some() {
            return Err(Error::FailedPrecondition("the product is deleted".into()));
        }
        if current.version != expected {
            return Err(Error::StaleEtag);
        }
        let merged = apply_mask(&current.to_draft(), patch, mask).map_err(Error::BadArgument)?;
        let fields = ProductFields::parse(&merged, self.config.catalog_currency)?;
        let changed = current.fields.changed_fields(&fields);
        if changed.is_empty() {
            return Ok(current);
        }
        match self
            .repo
            .update_product(id, expected, &fields, &changed, actor)
            .await
        {
            Ok(Some(updated)) => Ok(updated),
            // Someone else wrote (or deleted) it between our read and our write.
            Ok(None) => match self.repo.product(id).await? {
                Some(p) if p.deleted_at.is_some() => {
                    Err(Error::FailedPrecondition("the product is deleted".into()))
                }
                Some(_) => Err(Error::StaleEtag),
                None => Err(Error::NotFound("product")),
            },
            Err(RepoError::ForeignKey(_)) => Err(Error::field("category_id", "unknown category")),
            Err(err) => Err(err.into()),
        }
    }

    /// Soft-deletes a product; deleting a deleted product succeeds and changes nothing.
    #[tracing::instrument(skip(self, actor))]
    pub async fn delete(&self, id: &str, etag: &str, actor: &Actor) -> Result<Product, Error> {
        let id = product_id(id)?;
        let expected = match etag.trim() {
            "" => None,
            raw => Some(parse_etag(raw).ok_or(Error::StaleEtag)?),
        };
        if let Some(deleted) = self.repo.delete_product(id, expected, actor).await? {
            return Ok(deleted);
        }
        match self.repo.product(id).await? {
            Some(p) if p.deleted_at.is_some() => Ok(p),
            Some(_) => Err(Error::StaleEtag),
            None => Err(Error::NotFound("product")),
        }
    }

    /// Validates a batch row by row and applies it all-or-nothing.
    #[tracing::instrument(skip(self, rows, actor), fields(rows = rows.len()))]
    pub async fn import_batch(
        &self,
        rows: &[ImportRowDraft],
        actor: &Actor,
    ) -> Result<BatchOutcome, Error> {
        if rows.len() > MAX_IMPORT_ROWS {
            return Ok(BatchOutcome::Rejected(vec![RowError {
                row_number: 0,
                sku: String::new(),
                field: String::new(),
                message: format!("a batch holds at most {MAX_IMPORT_ROWS} rows"),
            }]));
        }
        let mut errors = Vec::new();
        let mut valid = Vec::with_capacity(rows.len());
        let mut skus = HashSet::new();
        let threshold = self.config.default_low_stock_threshold;
        for row in rows {
            let mut row_errors = row.edge_errors.clone();
            let sku = Sku::parse(&row.draft.sku)
                .map_err(|e| row_errors.push(e))
                .ok();
            let fields = ProductFields::parse(&row.draft, self.config.catalog_currency)
                .map_err(|e| row_errors.extend(e))
                .ok();
            if row.initial_stock < 0 {
                row_errors.push(field_error("initial_stock", "must not be negative"));
            }
            if let Some(sku) = &sku
                && !skus.insert(sku.clone())
            {
                row_errors.push(field_error("sku", "appears more than once in this batch"));
            }
            let reported_sku = sku.as_ref().map_or_else(
                || row.draft.sku.trim().to_owned(),
                |s| s.as_str().to_owned(),
            );
            errors.extend(row_errors.iter().map(|e| RowError {
                row_number: row.row_number,
                sku: reported_sku.clone(),
                field: e.field.clone(),
                message: e.message.clone(),
            }));
            if let (Some(sku), Some(fields), true) = (sku, fields, row_errors.is_empty()) {
                valid.push((
                    row.row_number,
                    ImportRow {
                        sku,
                        fields,
                        initial_stock: row.initial_stock,
                        low_stock_threshold: threshold,
                    },
                ));
            }
        }

        let wanted: Vec<Uuid> = valid
            .iter()
            .filter_map(|(_, row)| row.fields.category_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !wanted.is_empty() {
            let known: HashSet<Uuid> = self
                .repo
                .existing_categories(&wanted)
                .await?
                .into_iter()
                .collect();
            for (row_number, row) in &valid {
                if let Some(category) = row.fields.category_id
                    && !known.contains(&category)
                {
                    errors.push(RowError {
                        row_number: *row_number,
                        sku: row.sku.as_str().to_owned(),
                        field: "category_id".into(),
                        message: "unknown category".into(),
                    });
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.row_number);
            return Ok(BatchOutcome::Rejected(errors));
        }
        let rows: Vec<ImportRow> = valid.into_iter().map(|(_, row)| row).collect();
        Ok(BatchOutcome::Committed(
            self.repo.import(&rows, actor).await?,
        ))
    }

    pub async fn categories(&self) -> Result<Vec<Category>, Error> {
        Ok(self.repo.categories().await?)
    }

    #[tracing::instrument(skip(self))]
    pub async fn create_category(
        &self,
        name: &str,
        slug: &str,
        parent_id: &str,
    ) -> Result<Category, Error> {
        let mut errors = Vec::new();
        let name = domain::required_text("name", name, 100)
            .map_err(|e| errors.push(e))
            .ok();
        let slug = Slug::parse(slug).map_err(|e| errors.push(e)).ok();
        let parent_id = domain::optional_id("parent_id", parent_id)
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        let (Some(name), Some(slug), true) = (name, slug, errors.is_empty()) else {
            return Err(Error::Invalid(errors));
        };
        match self.repo.create_category(&name, &slug, parent_id).await {
            Ok(category) => Ok(category),
            Err(RepoError::Unique(_)) => Err(Error::SlugTaken(slug.as_str().to_owned())),
            Err(RepoError::ForeignKey(_)) => {
                Err(Error::field("parent_id", "unknown parent category"))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The category with this slug, created when missing (seeding).
    pub async fn ensure_category(
        &self,
        name: &str,
        slug: &str,
        parent_id: Option<Uuid>,
    ) -> Result<Category, Error> {
        let slug = Slug::parse(slug)?;
        Ok(self.repo.ensure_category(name, &slug, parent_id).await?)
    }
}
