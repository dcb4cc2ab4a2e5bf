//! The category tree and the slugs that name its nodes.

use chrono::{DateTime, Utc};
use shopmesh_platform::problem::FieldError;
use uuid::Uuid;

use crate::domain::text::field_error;

/// A URL-friendly unique name: lower-case letters and digits in groups joined by single dashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim();
        let valid = (1..=100).contains(&value.len())
            && value.split('-').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(field_error(
                "slug",
                "must be lower-case letters and digits joined by single dashes, e.g. running-shoes",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A node of the category tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Category {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub parent_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}
