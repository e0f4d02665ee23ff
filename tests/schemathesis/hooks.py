"""Schemathesis hooks for doppel's API fuzzing (tests/schemathesis.rs).

`role_allows_request` fails a test case when a key got a 2xx for a request its role may not
make. The role under test comes from the DOPPEL_ROLE environment variable:

- viewer: reads only (GET, and the POSTs that change nothing: rule checks, tests, dry runs,
  WebSocket tickets);
- operator: reads, changes desired state (PATCH /v1/things/{name}/shadow without
  `reported`), rules (PUT and DELETE /v1/rules/{name}), jobs (PUT /v1/jobs/{id}, POST
  /v1/jobs/{id}/cancel) and artifacts (PUT and DELETE /v1/artifacts/{name});
- admin (or unset): everything, so the check passes.
"""

import json

import schemathesis

SHADOW_SUFFIX = "/shadow"


def _touches_reported(body):
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return False
    if not isinstance(body, dict):
        return False
    if "state" not in body:
        return False
    state = body["state"]
    # `"state": null` clears reported as well as desired.
    return state is None or (isinstance(state, dict) and "reported" in state)


# POSTs that change nothing: checking a rule, running its tests, a dry run, a ticket for the
# change stream (which any key may open).
READ_ONLY_POSTS = {"/v1/rules/check", "/v1/rules/{name}/test", "/v1/rules/{name}/dry-run", "/v1/ws/ticket"}


def _allowed(role, method, path, body):
    if method == "GET" or role == "admin":
        return True
    if method == "POST" and path in READ_ONLY_POSTS:
        return True
    if role == "operator":
        if path in ("/v1/rules/{name}", "/v1/artifacts/{name}") and method in ("PUT", "DELETE"):
            return True
        if (path, method) in (("/v1/jobs/{id}", "PUT"), ("/v1/jobs/{id}/cancel", "POST")):
            return True
        return (
            method == "PATCH"
            and path.startswith("/v1/things/")
            and path.endswith(SHADOW_SUFFIX)
            and not _touches_reported(body)
        )
    return False


@schemathesis.check
def role_allows_request(ctx, response, case):
    import os

    role = os.environ.get("DOPPEL_ROLE", "admin")
    method = case.method.upper()
    if 200 <= response.status_code < 300 and not _allowed(
        role, method, case.path, case.body
    ):
        raise AssertionError(
            f"a {role} key got {response.status_code} for {method} {case.path}"
        )
    return None
