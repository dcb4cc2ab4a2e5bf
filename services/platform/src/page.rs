//! Page sizes of every list and search: the one cap and the one default. Each service words its
//! own refusal (the field it names differs), so this answers only whether a size is acceptable.

/// Largest page any list or search returns.
pub const MAX_PAGE_SIZE: usize = 100;
/// Page size when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// The number of items to return for a requested page size: 0 means [`DEFAULT_PAGE_SIZE`],
/// 1..=[`MAX_PAGE_SIZE`] is taken as asked, and anything else (negative, above the cap) is
/// `None`, to be refused as a bad argument.
pub fn page_size<T: TryInto<usize>>(requested: T) -> Option<usize> {
    match requested.try_into() {
        Ok(0) => Some(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Some(size),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_the_default() {
        assert_eq!(page_size(0_i32), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(0_u32), Some(DEFAULT_PAGE_SIZE));
    }

    #[test]
    fn sizes_up_to_the_cap_are_taken_as_asked() {
        assert_eq!(page_size(1_i32), Some(1));
        assert_eq!(page_size(100_i32), Some(100));
        assert_eq!(page_size(100_u32), Some(MAX_PAGE_SIZE));
        assert_eq!(page_size(7_usize), Some(7));
    }

    #[test]
    fn negative_and_oversized_pages_are_refused() {
        assert_eq!(page_size(101_i32), None);
        assert_eq!(page_size(-1_i32), None);
        assert_eq!(page_size(i32::MIN), None);
        assert_eq!(page_size(u32::MAX), None);
    }
}
