"""Reading a client's request body: size cap, decompression, JSON object."""

import gzip
import json
import zlib

import zstandard
from django.conf import settings

from .errors import PayloadTooLarge, PoolerError


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.", param=None)


def decode_body(raw: bytes, content_encoding: str) -> bytes:
    """The body after Content-Encoding, never larger than POOLER_MAX_BODY_BYTES."""
    limit = settings.POOLER_MAX_BODY_BYTES
    if len(raw) > limit:
        raise _too_large(limit)
    encoding = (content_encoding or "identity").strip().lower()
    try:
        if encoding in ("", "identity"):
            return raw
        if encoding == "zstd":
            # max_output_size bounds decompression bombs; a frame without a size needs the stream reader.
            with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
                data = reader.read(limit + 1)
        elif encoding in ("gzip", "x-gzip"):
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = decompressor.decompress(raw, limit + 1)
        else:
            raise PoolerError(
                f"Unsupported Content-Encoding {encoding!r}; use zstd, gzip or none.",
                status=415,
                code="unsupported_content_encoding",
            )
    except (zstandard.ZstdError, zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise PoolerError(f"Request body is not valid {encoding}: {exc}", code="invalid_body_encoding") from None
    if len(data) > limit:
        raise _too_large(limit)
    return data


def parse_json_object(data: bytes) -> dict:
    try:
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid encoding or nesting"
        raise PoolerError(f"Request body is not valid JSON: {message}", code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise PoolerError("Request body must be a JSON object.", code="invalid_json")
    return parsed


def require_model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise PoolerError("Missing required parameter: 'model'.", code="missing_required_parameter", param="model")
    if len(model) > 100 or not model.isprintable():
        raise PoolerError("Invalid 'model': not a model name.", code="invalid_value", param="model")
    return model
