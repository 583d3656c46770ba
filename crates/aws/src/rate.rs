//! The API's per-caller rate limits on DynamoDB: one counter item per caller, kind and window,
//! incremented by an UpdateItem whose condition is that the window is not full yet. Every API
//! process (each Lambda instance) counts against the same item; items expire by TTL a while
//! after their window.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use titus_core::ports::rate::BoxFuture;
use titus_core::ports::{window_of, RateDecision, RateLimiter, StoreError};

use crate::dynamo::conditional::{condition_failed, sdk_error};
use crate::resources::{attr, Names};

const COUNT: &str = "requests";
/// How long after its window a counter item stays (TTL deletes within days, at no cost).
const KEEP_AFTER_WINDOW_SECS: u64 = 3_600;

/// Counters in the stage's rate-limits table.
#[derive(Debug, Clone)]
pub struct DynamoRateLimiter {
    client: Client,
    table: String,
}

impl DynamoRateLimiter {
    pub fn new(client: Client, names: &Names) -> DynamoRateLimiter {
        DynamoRateLimiter {
            client,
            table: names.rate_limits_table(),
        }
    }
}

impl RateLimiter for DynamoRateLimiter {
    fn take<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        window_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<RateDecision, StoreError>> {
        Box::pin(async move {
            let (start, end) = window_of(now_ms, window_ms);
            if limit == 0 {
                return Ok(RateDecision::Limited {
                    retry_after_ms: end - now_ms,
                });
            }
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(attr::RATE_KEY, AttributeValue::S(format!("{key}#{start}")))
                .update_expression("ADD #count :one SET #expires = :expires")
                .condition_expression("attribute_not_exists(#count) OR #count < :limit")
                .expression_attribute_names("#count", COUNT)
                .expression_attribute_names("#expires", attr::EXPIRES_AT)
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .expression_attribute_values(":limit", AttributeValue::N(limit.to_string()))
                .expression_attribute_values(
                    ":expires",
                    AttributeValue::N((end / 1_000 + KEEP_AFTER_WINDOW_SECS).to_string()),
                )
                .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
                .send()
                .await;
            match result {
                Ok(output) => {
                    let count = output
                        .attributes()
                        .and_then(|a| a.get(COUNT))
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse::<u32>().ok())
                        .unwrap_or(limit);
                    Ok(RateDecision::Allowed {
                        remaining: limit.saturating_sub(count),
                    })
                }
                Err(err) if condition_failed(&err) => Ok(RateDecision::Limited {
                    retry_after_ms: end - now_ms,
                }),
                Err(err) => Err(sdk_error("UpdateItem rate counter", err)),
            }
        })
    }
}
