//! Page sizes of lists and searches.

/// Largest page any list or search returns.
pub const MAX_PAGE_SIZE: usize = 100;
/// Page size when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// A page size from a request: 0 means the default, more than the cap is refused.
pub fn page_size(raw: i32) -> Result<usize, String> {
    match usize::try_from(raw) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(format!("page_size must be between 0 and {MAX_PAGE_SIZE}")),
    }
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
