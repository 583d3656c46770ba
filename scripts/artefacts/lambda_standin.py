#!/usr/bin/env python3
"""A stand-in for the Lambda Runtime API, to start a built `bootstrap` as Lambda would.

For each case file given (JSON: {"binary", "env", "event", "expect", and optionally "expectLog", a
subset one JSON line of the bootstrap's output must contain}), it serves the Runtime API
on a free loopback port, starts `<asset dir>/<binary>/bootstrap` with AWS_LAMBDA_RUNTIME_API
pointing at it and the Lambda environment variables set, hands it the case's event on its first
`GET /next`, and waits for its `POST /response` (or `/error`, or the process's exit). The answer
must contain `expect` (a JSON subset: objects by key, lists element by element, values equal;
`bodyJson` is matched against an API Gateway response's decoded body). `${TITUS_STAGE}` in a case
is replaced by the stage.
It prints one line per case with the time from the process's start to its first answer, and exits
non-zero when any case failed, naming what differed.

Usage: lambda_standin.py ASSET_DIR CASE.json... (environment: the emulator endpoint, the stage)
"""

import base64
import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
import uuid

ANSWER_TIMEOUT_S = 60


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    """One invocation: the event to hand out, and the answer received."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_):  # the bootstrap's own log is what matters
        pass

    def _reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        state = self.server.state
        if self.path != "/2018-06-01/runtime/invocation/next":
            return self._reply(404, b'{"errorMessage":"no such route"}')
        if state["handed_out"]:
            # Lambda freezes the process between invocations; here it waits until it is stopped.
            state["done"].wait()
            return self._reply(500, b'{"errorMessage":"stand-in stopping"}')
        state["handed_out"] = True
        body = json.dumps(state["event"]).encode()
        deadline_ms = int(time.time() * 1000) + 60_000
        self._reply(
            200,
            body,
            [
                ("Content-Type", "application/json"),
                ("Lambda-Runtime-Aws-Request-Id", state["request_id"]),
                ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                ("Lambda-Runtime-Invoked-Function-Arn", state["function_arn"]),
                ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0"),
            ],
        )

    def do_POST(self):
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        prefix = "/2018-06-01/runtime/"
        kind = None
        if self.path == prefix + "init/error":
            kind = "init_error"
        elif self.path == f"{prefix}invocation/{state['request_id']}/response":
            kind = "response"
        elif self.path == f"{prefix}invocation/{state['request_id']}/error":
            kind = "error"
        if kind is None:
            return self._reply(404, b'{"errorMessage":"no such route"}')
        state["answer"] = (kind, body, time.monotonic())
        state["answered"].set()
        self._reply(202, b'{"status":"OK"}', [("Content-Type", "application/json")])


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A bootstrap stopped while it waits for its next event drops the connection: expected.
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            super().handle_error(request, client_address)


def contains(actual, expected, path="$"):
    """Where `actual` does not contain `expected`, as a message; None when it does."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {json.dumps(actual)[:200]}"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key}: missing (have {sorted(actual)})"
            problem = contains(actual[key], value, f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual)[:200]}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            problem = contains(a, e, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if actual != expected:
        return f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual)[:200]}"
    return None


def run_case(asset_dir, case_path):
    with open(case_path) as f:
        case = json.loads(f.read().replace("${TITUS_STAGE}", os.environ.get("TITUS_STAGE", "")))
    name = os.path.splitext(os.path.basename(case_path))[0]
    bootstrap = os.path.join(asset_dir, case["binary"], "bootstrap")
    if not os.access(bootstrap, os.X_OK):
        return name, None, f"{bootstrap} is missing or not executable"
    state = {
        "event": case["event"],
        "request_id": str(uuid.uuid4()),
        "function_arn": f"arn:aws:lambda:us-east-1:123456789012:function:{case['binary']}",
        "handed_out": False,
        "answered": threading.Event(),
        "done": threading.Event(),
        "answer": None,
    }
    server = Server(("127.0.0.1", 0), RuntimeApi)
    server.state = state
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update(
        {
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": case["binary"],
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{case['binary']}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "standin",
            "_HANDLER": "bootstrap",
            "LAMBDA_TASK_ROOT": os.path.dirname(bootstrap),
        }
    )
    env.update({k: str(v) for k, v in case.get("env", {}).items()})
    log_path = os.path.join(asset_dir, f"{name}.standin.log")
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([bootstrap], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + ANSWER_TIMEOUT_S
        while not state["answered"].wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                break
        state["done"].set()
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
    server.shutdown()
    if state["answer"] is None:
        why = f"exited with {process.returncode}" if process.returncode else "timed out"
        return name, None, f"no answer ({why}); log: {log_path}: {tail(log_path)}"
    kind, body, at = state["answer"]
    elapsed_ms = (at - started) * 1000
    if kind != "response":
        return name, elapsed_ms, f"answered {kind}: {body.decode(errors='replace')[:400]}"
    try:
        answer = json.loads(body)
    except ValueError:
        return name, elapsed_ms, f"the answer is not JSON: {body[:200]!r}"
    expect = dict(case["expect"])
    body_expect = expect.pop("bodyJson", None)
    problem = contains(answer, expect)
    if not problem and body_expect is not None:
        problem = contains(http_body(answer), body_expect, "$.body")
    if problem:
        return name, elapsed_ms, f"unexpected answer: {problem}"
    log_expect = case.get("expectLog")
    if log_expect is not None and not any(
        contains(line, log_expect) is None for line in json_lines(log_path)
    ):
        return name, elapsed_ms, f"no log line contains {json.dumps(log_expect)}; log: {log_path}"
    return name, elapsed_ms, None


def json_lines(path):
    """The JSON objects among a log's lines."""
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                yield line


def http_body(answer):
    """The JSON body of an API Gateway response."""
    body = answer.get("body") or ""
    if answer.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    try:
        return json.loads(body)
    except ValueError:
        return body


def tail(path, lines=5):
    with open(path, errors="replace") as f:
        return " | ".join(f.read().strip().splitlines()[-lines:])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    asset_dir, cases = sys.argv[1], sys.argv[2:]
    failed = 0
    for case_path in cases:
        name, elapsed_ms, problem = run_case(asset_dir, case_path)
        took = f"{elapsed_ms:7.1f} ms" if elapsed_ms is not None else "      -   "
        print(f"  {name:<22} start to first answer {took}  {'FAILED: ' + problem if problem else 'ok'}")
        failed += problem is not None
    if failed:
        sys.exit(f"{failed} of {len(cases)} bootstraps did not answer as expected")


if __name__ == "__main__":
    main()
