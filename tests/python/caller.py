"""A caller of the pydantic models datamodel-code-generator makes from openapi.json (strict:
required keys without defaults, `extra='forbid'`), run by tests/api/clients.rs. Every answer is
parsed with `model_validate_json(..., strict=True)`: a success with its operation's model, a
problem with `Problem`. Any mismatch raises, and the run fails.

Usage: .venv/bin/python tests/python/caller.py BASE_URL TOKEN
(TOKEN: a user whose username and last_name are null; webhooks enabled)
"""

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "client"))
from models import Problem, Readiness, Status, User  # noqa: E402

base, token = sys.argv[1], sys.argv[2]
auth = {"Authorization": f"Bearer {token}"}


def call(method, path, headers=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def success(method, path, model, status=200, **kw):
    got, headers, body = call(method, path, **kw)
    assert got == status, (method, path, got, body)
    assert headers["X-Request-Id"], (method, path)
    if model is None:
        assert body == b"", body
        return None
    assert headers["Content-Type"].startswith("application/json"), headers["Content-Type"]
    return model.model_validate_json(body, strict=True)


def problem(method, path, status, **kw):
    got, headers, body = call(method, path, **kw)
    assert got == status, (method, path, got, body)
    assert headers["Content-Type"] == "application/problem+json", headers["Content-Type"]
    assert headers["X-Request-Id"], (method, path)
    p = Problem.model_validate_json(body, strict=True)
    assert p.status == status, p
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer"), headers
    return p.code


user = success("GET", "/users/me", User, headers=auth)
assert user.username is None and user.last_name is None, user
patched = success(
    "PATCH", "/users/me", User, headers=auth, body={"metadata": {"client": "pydantic", "gone": None}}
)
codes = {
    "nul": problem("PATCH", "/users/me", 422, headers=auth, body={"metadata": {"nul": "\u0000"}}),
    "badToken": problem("GET", "/users/me", 401, headers={"Authorization": "Bearer not.a.token"}),
    "noToken": problem("GET", "/users/me", 401),
    "webhook": problem(
        "POST",
        "/webhooks/clerk",
        400,
        headers={"svix-id": "msg_1", "svix-timestamp": "1", "svix-signature": "v1,bm9wZQ=="},
        body={"type": "user.updated", "data": {}},
    ),
}
success("DELETE", "/users/me", None, status=204, headers=auth)
again = success("GET", "/users/me", User, headers=auth)
assert again.id != user.id, "the record is created again"
ready = success("GET", "/readyz", Readiness)
success("GET", "/healthz", Status)
success("GET", "/db-test/ping", Status)

print(
    json.dumps(
        {
            "clerkId": user.clerk_id,
            "username": user.username,
            "lastName": user.last_name,
            "metadata": patched.metadata,
            "codes": codes,
            "ready": ready.status,
        }
    )
)
