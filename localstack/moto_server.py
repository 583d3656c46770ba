"""The local AWS emulator: moto's server with one extension, failure injection for Lambda.

moto's Lambda without Docker ({"lambda": {"use_docker": false}}) answers each invocation with the
next result queued through POST /moto-api/static/lambda-simple/response, and can only succeed. A
queued result of the form

    {"__titusFunctionError": "Unhandled", "payload": {"errorType": "StoreUnavailable", ...}}

is answered the way real Lambda answers a function that returned an error: the
X-Amz-Function-Error header set to the marker's value, and the payload as the body. Step Functions
then fails the task with the payload's errorType, so the scheduler loop's Retry and Catch run as
they do on AWS. Everything else is moto unchanged. Takes moto_server's arguments (-H, -p).
"""

import json
import sys

from moto.awslambda_simple.models import LambdaSimpleBackend
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

if __name__ == "__main__":
    sys.exit(main())
