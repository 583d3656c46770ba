//! Pages as DynamoDB serves them: a query stops after its limit or after 1 MB of items read,
//! whichever comes first, and says where it stopped; listings hand that on as an opaque cursor
//! (URL-safe base64 of the stopping key, in the DynamoDB adapter's own format, so a cursor from
//! one listing is refused by another the same way).

use serde::Serialize;

/// The most item bytes one Query or Scan reads before it returns a page.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// Bytes an item carries beyond its record's JSON: its key and index attributes, their names,
/// the version. An estimate, the same for every item of a kind.
pub(crate) const ITEM_ATTRIBUTE_BYTES: usize = 200;

/// An item's size as DynamoDB would count it, estimated from its record's JSON.
pub(crate) fn item_size<T: Serialize>(record: &T) -> usize {
    serde_json::to_vec(record).map_or(0, |json| json.len()) + ITEM_ATTRIBUTE_BYTES
}

/// The listings' cursor: the same as the DynamoDB adapter's.
pub(crate) use titus_core::ports::PageCursor as Cursor;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_at_least_its_json() {
        let size = item_size(&serde_json::json!({"a": "x".repeat(1000)}));

        assert!(size > 1000, "{size}");
    }
}
