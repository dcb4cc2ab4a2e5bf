//! Page sizes of lists and searches: the platform's cap and default, with the product service's
//! wording of a refusal.

use shopmesh_platform::page;
pub use shopmesh_platform::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

/// A page size from a request: 0 means the default, more than the cap is refused.
pub fn page_size(raw: i32) -> Result<usize, String> {
    page::page_size(raw).ok_or_else(|| format!("page_size must be between 0 and {MAX_PAGE_SIZE}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_capped() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(100), Ok(100));
        assert!(page_size(101).is_err());
        assert!(page_size(-1).is_err());
    }
}
