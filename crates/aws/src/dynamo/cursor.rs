//! The opaque pagination cursor of the store's listings: where a listing stopped, checked on
//! the way back so that a cursor from another listing never reaches DynamoDB.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use titus_core::StoreError;

use super::codec::{s, string_attr, Item};

/// The key attributes of `item` named by `key_attrs`, in that order: a cursor's key.
pub(super) fn key_of(item: &Item, key_attrs: &[&str]) -> Result<Vec<(String, String)>, StoreError> {
    key_attrs
        .iter()
        .map(|name| Ok(((*name).to_owned(), string_attr(item, name)?)))
        .collect()
}

/// Where a listing stopped: which partition of the query plan, and the last key returned there.
/// Encoded as URL-safe base64 of JSON, so it is opaque to clients but checkable on the way back.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Cursor {
    #[serde(rename = "p")]
    pub(super) partition: usize,
    #[serde(rename = "k")]
    pub(super) key: Vec<(String, String)>,
}

impl Cursor {
    pub(super) fn decode(text: Option<&str>, key_attrs: &[&str]) -> Result<Cursor, StoreError> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(Cursor::default());
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| StoreError::InvalidCursor("not base64url".to_owned()))?;
        let cursor: Cursor = serde_json::from_slice(&bytes)
            .map_err(|_| StoreError::InvalidCursor("not a cursor of this listing".to_owned()))?;
        let names: Vec<&str> = cursor.key.iter().map(|(k, _)| k.as_str()).collect();
        if names != key_attrs {
            return Err(StoreError::InvalidCursor(
                "not a cursor of this listing".to_owned(),
            ));
        }
        Ok(cursor)
    }

    pub(super) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// A cursor from a listing with other filters (or forged) must not reach DynamoDB, which
    /// refuses a start key outside the queried partition with a ValidationException.
    pub(super) fn check_partition(
        &self,
        attribute: &str,
        queried: Option<&String>,
    ) -> Result<(), StoreError> {
        if self.key.is_empty() {
            return Ok(());
        }
        let value = self
            .key
            .iter()
            .find(|(k, _)| k == attribute)
            .map(|(_, v)| v);
        if value.is_none() || value != queried {
            return Err(StoreError::InvalidCursor(
                "it belongs to a listing with other filters".to_owned(),
            ));
        }
        Ok(())
    }

    pub(super) fn key_item(&self) -> Option<Item> {
        (!self.key.is_empty()).then(|| self.key.iter().map(|(k, v)| (k.clone(), s(v))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::attr;

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
