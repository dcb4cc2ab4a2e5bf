//! Product search: the validated query, filters and sort, and the keyset cursor of a page.

use shopmesh_platform::cursor;
use uuid::Uuid;

/// Longest full-text query.
pub const MAX_QUERY_CHARS: usize = 200;

/// How search results are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductSort {
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
}

impl ProductSort {
    fn code(self) -> &'static str {
        match self {
            Self::Relevance => "r",
            Self::PriceAsc => "pa",
            Self::PriceDesc => "pd",
            Self::Newest => "n",
        }
    }
}

/// A validated search: query, filters and the effective sort.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchFilter {
    pub q: Option<String>,
    pub category_id: Option<Uuid>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock_only: bool,
    pub include_inactive: bool,
    pub sort: ProductSort,
}

impl SearchFilter {
    /// The sort actually applied: relevance needs a query, without one it is newest first.
    pub fn effective_sort(q: Option<&str>, requested: Option<ProductSort>) -> ProductSort {
        match (q, requested) {
            (None, Some(ProductSort::Relevance) | None) => ProductSort::Newest,
            (Some(_), None) => ProductSort::Relevance,
            (_, Some(sort)) => sort,
        }
    }

    /// A stable 64-bit FNV-1a hash of everything a page token is only valid for.
    pub fn fingerprint(&self) -> u64 {
        let canonical = format!(
            "{:?}|{:?}|{:?}|{:?}|{}|{}|{}",
            self.q,
            self.category_id,
            self.min_price,
            self.max_price,
            self.in_stock_only,
            self.include_inactive,
            self.sort.code()
        );
        canonical
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    }
}

/// The sort key of the last row of a page.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SortKey {
    /// ts_rank, a PostgreSQL real; kept bit-exact so the next page compares equal values equal.
    Rank(f32),
    Price(i64),
    /// Newest first sorts by id alone.
    Id,
}

/// Where the next page of a search starts: after (key, id) in sort order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchCursor {
    pub key: SortKey,
    pub id: Uuid,
}

impl SearchCursor {
    pub fn encode(&self, filter: &SearchFilter) -> String {
        let fingerprint = format!("{:016x}", filter.fingerprint());
        let key = match self.key {
            SortKey::Rank(rank) => format!("{:08x}", rank.to_bits()),
            SortKey::Price(price) => price.to_string(),
            SortKey::Id => String::new(),
        };
        let id = self.id.to_string();
        cursor::encode(&["s1", &fingerprint, filter.sort.code(), &key, &id])
    }

    /// Decodes a token made by [`SearchCursor::encode`] for this same filter.
    pub fn decode(token: &str, filter: &SearchFilter) -> Result<Self, &'static str> {
        const MALFORMED: &str = "malformed page_token";
        let parts = cursor::decode(token, 5).ok_or(MALFORMED)?;
        if parts[0] != "s1" {
            return Err(MALFORMED);
        }
        let fingerprint = u64::from_str_radix(&parts[1], 16).map_err(|_| MALFORMED)?;
        if fingerprint != filter.fingerprint() || parts[2] != filter.sort.code() {
            return Err("page_token was made for a different query, filter or sort");
        }
        let key = match filter.sort {
            ProductSort::Relevance => u32::from_str_radix(&parts[3], 16)
                .map(|bits| SortKey::Rank(f32::from_bits(bits)))
                .map_err(|_| MALFORMED)?,
            ProductSort::PriceAsc | ProductSort::PriceDesc => {
                SortKey::Price(parts[3].parse().map_err(|_| MALFORMED)?)
            }
            ProductSort::Newest if parts[3].is_empty() => SortKey::Id,
            ProductSort::Newest => return Err(MALFORMED),
        };
        if let SortKey::Rank(rank) = key
            && !rank.is_finite()
        {
            return Err(MALFORMED);
        }
        let id = Uuid::parse_str(&parts[4]).map_err(|_| MALFORMED)?;
        Ok(Self { key, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(sort: ProductSort) -> SearchFilter {
        SearchFilter {
            q: Some("red shoe".into()),
            category_id: None,
            min_price: Some(100),
            max_price: None,
            in_stock_only: true,
            include_inactive: false,
            sort,
        }
    }

    #[test]
    fn search_cursors_round_trip_and_bind_to_their_filter() {
        let id = Uuid::now_v7();
        let relevance = filter(ProductSort::Relevance);
        let cursor = SearchCursor {
            key: SortKey::Rank(0.0607927),
            id,
        };
        let token = cursor.encode(&relevance);
        assert_eq!(SearchCursor::decode(&token, &relevance), Ok(cursor));

        let other = SearchFilter {
            q: Some("blue shoe".into()),
            ..relevance.clone()
        };
        assert!(SearchCursor::decode(&token, &other).is_err());
        assert!(SearchCursor::decode(&token, &filter(ProductSort::PriceAsc)).is_err());
        for bad in ["", "!!!", "bm90IGEgY3Vyc29y", &token[1..]] {
            assert!(SearchCursor::decode(bad, &relevance).is_err(), "{bad:?}");
        }

        let by_price = filter(ProductSort::PriceDesc);
        let cursor = SearchCursor {
            key: SortKey::Price(-3),
            id,
        };
        assert_eq!(
            SearchCursor::decode(&cursor.encode(&by_price), &by_price),
            Ok(cursor)
        );
    }

    #[test]
    fn relevance_needs_a_query() {
        assert_eq!(
            SearchFilter::effective_sort(None, Some(ProductSort::Relevance)),
            ProductSort::Newest
        );
        assert_eq!(
            SearchFilter::effective_sort(Some("x"), None),
            ProductSort::Relevance
        );
        assert_eq!(
            SearchFilter::effective_sort(None, Some(ProductSort::PriceAsc)),
            ProductSort::PriceAsc
        );
    }
}
