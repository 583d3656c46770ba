"""The local AWS emulator: moto's server with two extensions, failure injection for Lambda and
serialized DynamoDB operations.

moto's Lambda without Docker ({"lambda": {"use_docker": false}}) answers each invocation with the
next result queued through POST /moto-api/static/lambda-simple/response, and can only succeed. A
queued result of the form

    {"__titusFunctionError": "Unhandled", "payload": {"errorType": "StoreUnavailable", ...}}

is answered the way real Lambda answers a function that returned an error: the
X-Amz-Function-Error header set to the marker's value, and the payload as the body. Step Functions
then fails the task with the payload's errorType, so the scheduler loop's Retry and Catch run as
they do on AWS.

moto's server answers requests on many threads, and its DynamoDB is not safe for that: a
TransactWriteItems deep-copies the tables it touches and, when a condition fails, puts the copies
back, undoing whatever another thread wrote in the meantime (measured here: 20 of 300 concurrent ADDs to one item lost, and an agent's
allocation driven below zero while a placement and a release ran at once). DynamoDB itself
applies each item write and each transaction atomically, so the launcher runs moto's DynamoDB
item operations one at a time. Everything else is moto unchanged. Takes moto_server's arguments
(-H, -p).
"""

import functools
import json
import sys
import threading

from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

MARKER = "__titusFunctionError"
_moto_invoke = LambdaSimpleBackend.invoke


def _invoke(self, function_name, qualifier, body, headers, response_headers):
    result = _moto_invoke(self, function_name, qualifier, body, headers, response_headers)
    try:
        queued = json.loads(result)
    except ValueError:
        return result
    if not (isinstance(queued, dict) and MARKER in queued):
        return result
    response_headers["x-amz-function-error"] = str(queued[MARKER])
    return json.dumps(queued.get("payload")).encode()


LambdaSimpleBackend.invoke = _invoke

_dynamodb_lock = threading.RLock()


def _serialized(operation):
    @functools.wraps(operation)
    def run_alone(*args, **kwargs):
        with _dynamodb_lock:
            return operation(*args, **kwargs)

    return run_alone


for _name in (
    "put_item",
    "get_item",
    "query",
    "scan",
    "update_item",
    "delete_item",
    "transact_write_items",
    "transact_get_items",
    "batch_get_item",
    "batch_write_item",
):
    setattr(DynamoDBBackend, _name, _serialized(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    sys.exit(main())
