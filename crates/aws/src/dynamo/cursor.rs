//! The opaque pagination cursor of the store's listings: where a listing stopped, checked on
//! the way back so that a cursor from another listing never reaches DynamoDB.

use titus_core::StoreError;

use super::codec::{s, string_attr, Item};

/// The key attributes of `item` named by `key_attrs`, in that order: a cursor's key.
pub(super) fn key_of(item: &Item, key_attrs: &[&str]) -> Result<Vec<(String, String)>, StoreError> {
    key_attrs
        .iter()
        .map(|name| Ok(((*name).to_owned(), string_attr(item, name)?)))
        .collect()
}

/// The listings' cursor, shared with every store implementation.
pub(super) use titus_core::ports::PageCursor as Cursor;

/// The cursor's key as DynamoDB's `ExclusiveStartKey`, if it has one.
pub(super) fn key_item(cursor: &Cursor) -> Option<Item> {
    (!cursor.key.is_empty()).then(|| cursor.key.iter().map(|(k, v)| (k.clone(), s(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::attr;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    #[test]
    fn a_cursor_round_trips_and_a_foreign_one_is_refused() {
        let attrs = [attr::JOB_ID, attr::JOB_STATE, attr::CREATED_KEY];
        let cursor = Cursor {
            partition: 2,
            key: attrs
                .iter()
                .map(|a| ((*a).to_owned(), "v".to_owned()))
                .collect(),
        };
        let decoded = Cursor::decode(Some(&cursor.encode()), &attrs).unwrap();
        assert_eq!(decoded.partition, 2);
        assert_eq!(decoded.key, cursor.key);

        let other = [attr::TASK_ID, attr::JOB_ID, attr::CREATED_KEY];
        assert!(matches!(
            Cursor::decode(Some(&cursor.encode()), &other),
            Err(StoreError::InvalidCursor(_))
        ));
        assert!(matches!(
            Cursor::decode(Some("!!!"), &attrs),
            Err(StoreError::InvalidCursor(_))
        ));
        assert!(matches!(
            Cursor::decode(Some(&URL_SAFE_NO_PAD.encode(b"{}")), &attrs),
            Err(StoreError::InvalidCursor(_))
        ));
    }
}
