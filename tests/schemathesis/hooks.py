"""Schemathesis hooks for tests/openapi.rs (loaded through SCHEMATHESIS_HOOKS).

The admin API speaks TOML (the policy document) and plain text (health, metrics, the
page's files). Schemathesis knows neither as a body it may send or a response it may
check, so: TOML request bodies go on the wire as UTF-8 text, and textual responses are
handed to the schema as the string they are, so that `const`, `pattern` and `minLength`
in admin/openapi.yaml are checked rather than skipped.
"""

import json

import schemathesis

TEXT_RESPONSES = (
    "application/toml",
    "text/plain",
    "text/html",
    "text/javascript",
    "text/css",
)


@schemathesis.serializer("application/toml")
def toml_text(ctx, value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        # negative cases make numbers, lists and objects: send their JSON as the text
        value = json.dumps(value)
    return value.encode("utf-8", "surrogatepass")


@schemathesis.deserializer(*TEXT_RESPONSES)
def as_text(ctx, response):
    return response.content.decode("utf-8")
