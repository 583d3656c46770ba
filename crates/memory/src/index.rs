//! A DynamoDB table in memory: items by key, each with its size, and global secondary indexes
//! that are sparse (an item is in an index only while it carries that index's key) and
//! eventually consistent: a write reaches the indexes `lag_ms` after it reaches the table, in
//! the order the writes happened, and an index entry holds the item as it was then (indexes
//! project every attribute, so a lagging read returns an older copy of the item).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use crate::metering::Meter;
use crate::pages::MAX_PAGE_BYTES;

/// An item's key in one index: partition value, sort value.
pub(crate) type IndexKey = (String, String);

/// An item kind and the indexes of its table.
pub(crate) trait Indexed {
    /// How many indexes the table has.
    const INDEXES: usize;
    /// The item's key in index `index`, if it is in it.
    fn index_key(&self, index: usize) -> Option<IndexKey>;
}

/// An item as stored: the record and its size in bytes.
#[derive(Debug)]
pub(crate) struct Row<T> {
    pub(crate) doc: Arc<T>,
    pub(crate) size: usize,
}

impl<T> Clone for Row<T> {
    fn clone(&self) -> Self {
        Row {
            doc: Arc::clone(&self.doc),
            size: self.size,
        }
    }
}

/// What one index query returned: items in index order, the bytes read, and where it stopped if
/// it stopped before the end of what it was asked for (its limit or 1 MB).
#[derive(Debug)]
pub(crate) struct QueryPage<T> {
    pub(crate) items: Vec<(IndexKey, String, Arc<T>)>,
    pub(crate) bytes: usize,
    pub(crate) last: Option<(IndexKey, String)>,
}

/// Where a query starts and ends in its partition.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Range<'a> {
    /// Newest (highest sort key) first.
    pub(crate) backward: bool,
    /// Start after this sort key and item id (the previous page's last).
    pub(crate) after: Option<(&'a str, &'a str)>,
    /// Only sort keys below this.
    pub(crate) below: Option<&'a str>,
}

type EntryKey = (String, String, String);

#[derive(Debug)]
struct Index<T> {
    entries: BTreeMap<EntryKey, Row<T>>,
    /// Each item's key in this index, to move or remove its entry.
    placed: HashMap<String, IndexKey>,
}

impl<T> Index<T> {
    fn new() -> Index<T> {
        Index {
            entries: BTreeMap::new(),
            placed: HashMap::new(),
        }
    }

    fn put(&mut self, id: &str, key: Option<IndexKey>, row: Option<&Row<T>>) {
        if let Some((p, s)) = self.placed.remove(id) {
            self.entries.remove(&(p, s, id.to_owned()));
        }
        if let (Some((p, s)), Some(row)) = (key, row) {
            self.entries
                .insert((p.clone(), s.clone(), id.to_owned()), row.clone());
            self.placed.insert(id.to_owned(), (p, s));
        }
    }

    fn query(&self, partition: &str, range: Range<'_>, limit: usize) -> QueryPage<T> {
        let start = (partition.to_owned(), String::new(), String::new());
        // The least string above `partition`, so the bound holds every key of the partition.
        let end = (format!("{partition}\0"), String::new(), String::new());
        let after = range
            .after
            .map(|(s, id)| (partition.to_owned(), s.to_owned(), id.to_owned()));
        let entries: Box<dyn Iterator<Item = (&EntryKey, &Row<T>)>> = match (range.backward, after)
        {
            (false, Some(after)) => Box::new(
                self.entries
                    .range((Bound::Excluded(after), Bound::Excluded(end))),
            ),
            (false, None) => Box::new(
                self.entries
                    .range((Bound::Included(start), Bound::Excluded(end))),
            ),
            (true, Some(after)) => Box::new(
                self.entries
                    .range((Bound::Included(start), Bound::Excluded(after)))
                    .rev(),
            ),
            (true, None) => Box::new(
                self.entries
                    .range((Bound::Included(start), Bound::Excluded(end)))
                    .rev(),
            ),
        };
        let mut page = QueryPage {
            items: Vec::new(),
            bytes: 0,
            last: None,
        };
        let limit = limit.max(1);
        for ((p, s, id), row) in entries {
            if range.below.is_some_and(|below| s.as_str() >= below) {
                if range.backward {
                    continue;
                }
                break;
            }
            if !page.items.is_empty() && page.bytes + row.size > MAX_PAGE_BYTES {
                page.last = page
                    .items
                    .last()
                    .map(|(key, id, _)| (key.clone(), id.clone()));
                break;
            }
            page.bytes += row.size;
            page.items
                .push(((p.clone(), s.clone()), id.clone(), Arc::clone(&row.doc)));
            if page.items.len() == limit {
                // As DynamoDB does: a query that reached its limit says where, even when
                // nothing follows.
                page.last = Some(((p.clone(), s.clone()), id.clone()));
                break;
            }
        }
        page
    }
}

#[derive(Debug)]
struct Pending<T> {
    due_ms: u64,
    id: String,
    row: Option<Row<T>>,
}

/// A table and its indexes.
#[derive(Debug)]
pub(crate) struct Table<T> {
    rows: HashMap<String, Row<T>>,
    indexes: Vec<Index<T>>,
    /// Writes the indexes have not seen yet, oldest first.
    backlog: VecDeque<Pending<T>>,
}

impl<T: Indexed + serde::Serialize> Table<T> {
    pub(crate) fn new() -> Table<T> {
        Table {
            rows: HashMap::new(),
            indexes: (0..T::INDEXES).map(|_| Index::new()).collect(),
            backlog: VecDeque::new(),
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Row<T>> {
        self.rows.get(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Every item, in no order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.rows.values().map(|row| &*row.doc)
    }

    /// Writes `doc` as item `id` at `now_ms`; its indexes see it from `now_ms + lag_ms`. Meters
    /// the index writes (the table write is the caller's: it knows the operation). Returns
    /// the item's size before and after.
    pub(crate) fn put(
        &mut self,
        id: &str,
        doc: T,
        now_ms: u64,
        lag_ms: u64,
        meter: &mut Meter,
    ) -> (usize, usize) {
        let row = Row {
            size: crate::pages::item_size(&doc),
            doc: Arc::new(doc),
        };
        let before = self.rows.get(id).map_or(0, |r| r.size);
        for index in 0..T::INDEXES {
            let old = self
                .rows
                .get(id)
                .and_then(|r| r.doc.index_key(index).map(|k| (k, r.size)));
            let new = row.doc.index_key(index);
            match (old, new) {
                (None, None) => {}
                (Some((old_key, old_size)), Some(new_key)) if old_key != new_key => {
                    meter.index_write(old_size);
                    meter.index_write(row.size);
                }
                (Some(_), Some(_)) | (None, Some(_)) => meter.index_write(row.size),
                (Some((_, old_size)), None) => meter.index_write(old_size),
            }
        }
        let after = row.size;
        self.rows.insert(id.to_owned(), row.clone());
        self.backlog.push_back(Pending {
            due_ms: now_ms.saturating_add(lag_ms),
            id: id.to_owned(),
            row: Some(row),
        });
        self.catch_up(now_ms);
        (before, after)
    }

    /// Applies to the indexes every write due by `now_ms`.
    fn catch_up(&mut self, now_ms: u64) {
        while self.backlog.front().is_some_and(|p| p.due_ms <= now_ms) {
            let Some(pending) = self.backlog.pop_front() else {
                break;
            };
            for (i, index) in self.indexes.iter_mut().enumerate() {
                let key = pending.row.as_ref().and_then(|r| r.doc.index_key(i));
                index.put(&pending.id, key, pending.row.as_ref());
            }
        }
    }

    /// One page of index `index`'s partition, as the index stands at `now_ms`.
    pub(crate) fn query(
        &mut self,
        index: usize,
        now_ms: u64,
        partition: &str,
        range: Range<'_>,
        limit: usize,
    ) -> QueryPage<T> {
        self.catch_up(now_ms);
        match self.indexes.get(index) {
            Some(index) => index.query(partition, range, limit),
            None => QueryPage {
                items: Vec::new(),
                bytes: 0,
                last: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Serialize)]
    struct Item {
        group: Option<&'static str>,
        order: u32,
    }

    impl Indexed for Item {
        const INDEXES: usize = 1;
        fn index_key(&self, _: usize) -> Option<IndexKey> {
            self.group
                .map(|g| (g.to_owned(), format!("{:04}", self.order)))
        }
    }

    fn ids(page: &QueryPage<Item>) -> Vec<&str> {
        page.items.iter().map(|(_, id, _)| id.as_str()).collect()
    }

    #[test]
    fn an_index_holds_only_items_with_its_key_in_sort_order_both_ways() {
        let mut table = Table::new();
        let mut meter = Meter::default();
        for (id, group, order) in [("c", Some("g"), 3), ("a", Some("g"), 1), ("b", None, 2)] {
            table.put(id, Item { group, order }, 0, 0, &mut meter);
        }

        let forward = table.query(0, 0, "g", Range::default(), 10);
        let backward = table.query(
            0,
            0,
            "g",
            Range {
                backward: true,
                ..Range::default()
            },
            10,
        );

        assert_eq!(ids(&forward), vec!["a", "c"]);
        assert_eq!(ids(&backward), vec!["c", "a"]);
        assert!(forward.last.is_none());
    }

    #[test]
    fn a_write_reaches_the_index_only_after_the_lag() {
        let mut table = Table::new();
        let mut meter = Meter::default();
        table.put(
            "a",
            Item {
                group: Some("g"),
                order: 1,
            },
            1_000,
            0,
            &mut meter,
        );
        table.put(
            "a",
            Item {
                group: None,
                order: 1,
            },
            2_000,
            500,
            &mut meter,
        );

        let during = table.query(0, 2_499, "g", Range::default(), 10);
        let after = table.query(0, 2_500, "g", Range::default(), 10);

        assert_eq!(
            ids(&during),
            vec!["a"],
            "the index still shows the old item"
        );
        assert!(after.items.is_empty());
        assert!(
            table.get("a").is_some_and(|r| r.doc.group.is_none()),
            "the table is current"
        );
    }

    #[test]
    fn a_query_stops_at_its_limit_and_says_where() {
        let mut table = Table::new();
        let mut meter = Meter::default();
        for order in 0..5 {
            let id = format!("i{order}");
            table.put(
                &id,
                Item {
                    group: Some("g"),
                    order,
                },
                0,
                0,
                &mut meter,
            );
        }

        let first = table.query(0, 0, "g", Range::default(), 2);
        let (key, id) = first.last.clone().unwrap();
        let next = table.query(
            0,
            0,
            "g",
            Range {
                after: Some((&key.1, &id)),
                ..Range::default()
            },
            10,
        );
        let below = table.query(
            0,
            0,
            "g",
            Range {
                below: Some("0003"),
                ..Range::default()
            },
            10,
        );

        assert_eq!(ids(&first), vec!["i0", "i1"]);
        assert_eq!(ids(&next), vec!["i2", "i3", "i4"]);
        assert_eq!(ids(&below), vec!["i0", "i1", "i2"]);
    }
}
