"""Schemathesis hooks for Vigil: NDJSON request bodies.

openapi.json describes an NDJSON body as an array of events (one per line); schemathesis has
no serializer for these media types, so this one writes each generated item on its own line.
Loaded by scripts/schemathesis.sh through SCHEMATHESIS_HOOKS.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson", "application/ndjson")
def ndjson(ctx, value):
    if isinstance(value, list):
        return "".join(json.dumps(item) + "\n" for item in value).encode()
    # Negative cases may generate a non-array: send it as one line, as a client would.
    return (json.dumps(value) + "\n").encode()
