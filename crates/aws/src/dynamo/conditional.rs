//! Conditional writes on DynamoDB and the errors they end in: telling a refused condition from a
//! failure, for one item and for a transaction, and mapping the SDK's other errors to the store's.
//!
//! Every adapter on DynamoDB (jobs and tasks, agents, leases and allocations, the scaler's state)
//! writes under conditions, so this is where "the condition did not hold" is recognised, once.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::TransactWriteItem;
use aws_sdk_dynamodb::Client;
use titus_core::StoreError;

/// The errors of the SDK's operations that take a condition expression. Each operation has its
/// own error enum, so this names what they share.
pub(crate) trait ConditionalWriteError {
    fn is_condition_failed(&self) -> bool;
}

impl ConditionalWriteError for PutItemError {
    fn is_condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

impl ConditionalWriteError for DeleteItemError {
    fn is_condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

impl ConditionalWriteError for UpdateItemError {
    fn is_condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

/// Whether a write failed because its condition did not hold. What that means is the caller's:
/// a conflict, a lost lease, or nothing to do.
pub(crate) fn condition_failed<E: ConditionalWriteError>(err: &SdkError<E, HttpResponse>) -> bool {
    err.as_service_error().is_some_and(E::is_condition_failed)
}

/// A write whose refused condition means that the record changed, exists already or is gone:
/// `Conflict` on `entity` `id`, with `detail` saying what was expected (built only then). Other
/// errors go through [`sdk_error`] with `op`.
pub(crate) fn conflict_if_refused<T, E>(
    result: Result<T, SdkError<E, HttpResponse>>,
    op: &str,
    (entity, id): (&'static str, &str),
    detail: impl FnOnce() -> String,
) -> Result<T, StoreError>
where
    E: ConditionalWriteError + ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    result.map_err(|e| {
        if condition_failed(&e) {
            StoreError::Conflict {
                entity,
                id: id.to_owned(),
                detail: detail(),
            }
        } else {
            sdk_error(op, e)
        }
    })
}

/// The cancellation code of a transaction item whose condition did not hold.
const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// What a transaction came to, when it did not fail for another reason.
#[derive(Debug)]
pub(crate) enum Transacted {
    Committed,
    /// A condition did not hold, so nothing was written: each item's cancellation code, in the
    /// order of the items ("None" for an item that was not the cause).
    Refused(Vec<String>),
}

/// Whether the item at `index` of a refused transaction is one whose condition did not hold.
pub(crate) fn refused_at(codes: &[String], index: usize) -> bool {
    codes.get(index).is_some_and(|c| c == CONDITION_FAILED)
}

/// How many of these items' conditions did not hold.
pub(crate) fn refused_count(codes: &[String]) -> usize {
    codes.iter().filter(|c| *c == CONDITION_FAILED).count()
}

/// Runs one TransactWriteItems. A transaction cancelled for another reason than a condition (a
/// conflicting transaction in flight, throttling) is `Unavailable`, so that the caller retries.
pub(crate) async fn transact_write(
    client: &Client,
    items: Vec<TransactWriteItem>,
    op: &str,
) -> Result<Transacted, StoreError> {
    let err = match client
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await
    {
        Ok(_) => return Ok(Transacted::Committed),
        Err(err) => err,
    };
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        err.as_service_error()
    else {
        return Err(sdk_error(op, err));
    };
    let codes: Vec<String> = cancelled
        .cancellation_reasons()
        .iter()
        .map(|r| r.code().unwrap_or("None").to_owned())
        .collect();
    if refused_count(&codes) > 0 {
        Ok(Transacted::Refused(codes))
    } else {
        Err(StoreError::Unavailable(format!(
            "{op}: transaction cancelled: {codes:?}"
        )))
    }
}

/// Maps an SDK error to the store's error: throttling and transport trouble are retryable
/// (`Unavailable`), and so is any HTTP 5xx answer, whose body may not even name an error code;
/// anything else is `Internal` with the operation and AWS's code.
pub(crate) fn sdk_error<E>(op: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    const RETRYABLE: [&str; 6] = [
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    ];
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!(
                "{op}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&err)
            ))
        }
        _ => {
            let code = err.code().unwrap_or("Unknown").to_owned();
            let message = err.message().unwrap_or_default().to_owned();
            let server_error = err
                .raw_response()
                .is_some_and(|response| response.status().is_server_error());
            if server_error || RETRYABLE.contains(&code.as_str()) {
                StoreError::Unavailable(format!("{op}: {code}: {message}"))
            } else {
                StoreError::Internal(format!("{op}: {code}: {message}"))
            }
        }
    }
}
