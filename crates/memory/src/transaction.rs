//! TransactWriteItems in memory: at most [`MAX_TRANSACTION_ITEMS`] actions, never two on one
//! item, every condition checked against the state before the transaction, and then all of it
//! written or none of it, with a cancellation reason per action (`ConditionalCheckFailed` or
//! `None`) as DynamoDB gives them. Every action costs twice its write units, refused or not.

use std::collections::HashSet;
use std::fmt;

use titus_core::ports::MAX_TRANSACTION_ITEMS;

use crate::world::State;

/// The cancellation reason of an action whose condition did not hold.
pub(crate) const CONDITION_FAILED: &str = "ConditionalCheckFailed";
/// The cancellation reason of an action that was not the cause.
pub(crate) const NOT_THE_CAUSE: &str = "None";

/// The tables an action can touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TableName {
    Jobs,
    Tasks,
    Agents,
    Leases,
    Idempotency,
    QuotaUsage,
}

type Condition<'a> = Box<dyn Fn(&State) -> bool + 'a>;
type Write<'a> = Box<dyn FnOnce(&mut State) + 'a>;

/// One action: a condition on one item and, unless it is only a check, a write of it.
pub(crate) struct Action<'a> {
    table: TableName,
    key: String,
    condition: Condition<'a>,
    write: Option<Write<'a>>,
}

impl fmt::Debug for Action<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Action")
            .field("table", &self.table)
            .field("key", &self.key)
            .field("check_only", &self.write.is_none())
            .finish()
    }
}

impl<'a> Action<'a> {
    /// A ConditionCheck.
    pub(crate) fn check(
        table: TableName,
        key: impl Into<String>,
        condition: impl Fn(&State) -> bool + 'a,
    ) -> Action<'a> {
        Action {
            table,
            key: key.into(),
            condition: Box::new(condition),
            write: None,
        }
    }

    /// A Put or Update under `condition`.
    pub(crate) fn write(
        table: TableName,
        key: impl Into<String>,
        condition: impl Fn(&State) -> bool + 'a,
        write: impl FnOnce(&mut State) + 'a,
    ) -> Action<'a> {
        Action {
            table,
            key: key.into(),
            condition: Box::new(condition),
            write: Some(Box::new(write)),
        }
    }
}

/// What a valid transaction came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transacted {
    Committed,
    /// Nothing was written: each action's cancellation reason, in order.
    Refused(Vec<&'static str>),
}

/// A transaction DynamoDB refuses outright (a ValidationException): nothing was checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Invalid {
    #[error(
        "ValidationException: {0} actions in one transaction; expected at most \
         {MAX_TRANSACTION_ITEMS}"
    )]
    TooManyActions(usize),
    #[error(
        "ValidationException: Transaction request cannot include multiple operations on one \
         item ({table:?} {key}); expected one action per item"
    )]
    SameItemTwice { table: TableName, key: String },
}

/// Whether the action at `index` of a refused transaction is one whose condition failed.
pub(crate) fn refused_at(codes: &[&str], index: usize) -> bool {
    codes.get(index).is_some_and(|c| *c == CONDITION_FAILED)
}

/// How many of these actions' conditions failed.
pub(crate) fn refused_count(codes: &[&str]) -> usize {
    codes.iter().filter(|c| **c == CONDITION_FAILED).count()
}

fn item_size(state: &State, table: TableName, key: &str) -> usize {
    match table {
        TableName::Jobs => state.jobs.get(key).map_or(0, |r| r.size),
        TableName::Tasks => state.tasks.get(key).map_or(0, |r| r.size),
        TableName::Agents => state.agents.get(key).map_or(0, |a| a.size(key)),
        TableName::Leases => state.leases.get(key).map_or(0, |l| l.size()),
        TableName::Idempotency => state.idempotency.get(key).map_or(0, |_| 150),
        TableName::QuotaUsage => state.usage.get(key).map_or(0, |_| 100),
    }
}

/// Runs one transaction on `state`.
pub(crate) fn transact(state: &mut State, actions: Vec<Action<'_>>) -> Result<Transacted, Invalid> {
    state.meter.request("DynamoDB.TransactWriteItems");
    if actions.len() > MAX_TRANSACTION_ITEMS {
        return Err(Invalid::TooManyActions(actions.len()));
    }
    let mut targets = HashSet::new();
    for action in &actions {
        if !targets.insert((action.table, action.key.as_str())) {
            return Err(Invalid::SameItemTwice {
                table: action.table,
                key: action.key.clone(),
            });
        }
    }
    let before: Vec<usize> = actions
        .iter()
        .map(|a| item_size(state, a.table, &a.key))
        .collect();
    let codes: Vec<&'static str> = actions
        .iter()
        .map(|a| {
            if (a.condition)(state) {
                NOT_THE_CAUSE
            } else {
                CONDITION_FAILED
            }
        })
        .collect();
    if refused_count(&codes) > 0 {
        for size in before {
            state.meter.write(size, 0, true);
        }
        return Ok(Transacted::Refused(codes));
    }
    let mut touched = Vec::with_capacity(actions.len());
    for (action, size_before) in actions.into_iter().zip(before) {
        if let Some(write) = action.write {
            write(state);
        }
        touched.push((action.table, action.key, size_before));
    }
    for (table, key, size_before) in touched {
        let after = item_size(state, table, &key);
        state.meter.write(size_before, after, true);
    }
    Ok(Transacted::Committed)
}
