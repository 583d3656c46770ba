//! The opaque cursor of the store's listings, shared by every implementation of the store: where
//! a listing stopped (which partition of its query plan, and the last key returned there), as
//! URL-safe base64 of JSON, so that it is opaque to clients but checked on the way back: a cursor
//! from another listing, or forged, is refused before it reaches the store.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ports::store::StoreError;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageCursor {
    /// The partition of the listing's query plan the next page starts in.
    #[serde(rename = "p")]
    pub partition: usize,
    /// The last key returned there, as (attribute name, value), in the listing's key order.
    #[serde(rename = "k")]
    pub key: Vec<(String, String)>,
}

impl PageCursor {
    /// The cursor a client passed back (none or empty: the first page), checked to be one of
    /// the listing whose key attributes are `key_attrs`.
    pub fn decode(text: Option<&str>, key_attrs: &[&str]) -> Result<PageCursor, StoreError> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(PageCursor::default());
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| StoreError::InvalidCursor("not base64url".to_owned()))?;
        let cursor: PageCursor = serde_json::from_slice(&bytes)
            .map_err(|_| StoreError::InvalidCursor("not a cursor of this listing".to_owned()))?;
        let names: Vec<&str> = cursor.key.iter().map(|(k, _)| k.as_str()).collect();
        if names != key_attrs {
            return Err(StoreError::InvalidCursor(
                "not a cursor of this listing".to_owned(),
            ));
        }
        Ok(cursor)
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The value of one key attribute, if the cursor has a key.
    pub fn value(&self, attribute: &str) -> Option<&str> {
        self.key
            .iter()
            .find(|(k, _)| k == attribute)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses a cursor whose partition attribute is not the one queried: a cursor of a listing
    /// with other filters (DynamoDB refuses a start key outside the queried partition).
    pub fn check_partition(
        &self,
        attribute: &str,
        queried: Option<&str>,
    ) -> Result<(), StoreError> {
        if self.key.is_empty() {
            return Ok(());
        }
        let value = self.value(attribute);
        if value.is_none() || value != queried {
            return Err(StoreError::InvalidCursor(
                "it belongs to a listing with other filters".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTRS: [&str; 3] = ["taskId", "jobId", "createdKey"];

    fn cursor() -> PageCursor {
        PageCursor {
            partition: 1,
            key: ATTRS
                .iter()
                .map(|a| ((*a).to_owned(), format!("{a}-value")))
                .collect(),
        }
    }

    #[test]
    fn a_cursor_is_opaque_and_round_trips() {
        let text = cursor().encode();

        assert!(!text.contains("jobId-value"), "{text}");
        assert_eq!(PageCursor::decode(Some(&text), &ATTRS).unwrap(), cursor());
        assert_eq!(
            PageCursor::decode(None, &ATTRS).unwrap(),
            PageCursor::default()
        );
    }

    #[test]
    fn a_cursor_of_another_listing_or_no_cursor_at_all_is_invalid() {
        let other = ["jobId", "owner", "createdKey"];

        for bad in [
            PageCursor::decode(Some(&cursor().encode()), &other),
            PageCursor::decode(Some("!!"), &ATTRS),
            PageCursor::decode(Some(&URL_SAFE_NO_PAD.encode(b"[1]")), &ATTRS),
            PageCursor::decode(Some(&URL_SAFE_NO_PAD.encode(b"{}")), &ATTRS),
        ] {
            assert!(matches!(bad, Err(StoreError::InvalidCursor(_))), "{bad:?}");
        }
        assert!(cursor().check_partition("jobId", Some("other")).is_err());
        assert!(cursor()
            .check_partition("jobId", Some("jobId-value"))
            .is_ok());
    }
}
