"""Schemathesis hooks for scripts/fuzz: serializers for the import endpoint's media types."""

import csv
import io
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    rows = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(row) for row in rows).encode()


@schemathesis.serializer("text/csv")
def text_csv(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in value if isinstance(value, list) else [value]:
        writer.writerow(row if isinstance(row, list) else [row])
    return buffer.getvalue().encode()
