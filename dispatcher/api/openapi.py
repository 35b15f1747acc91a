"""The OpenAPI document: FastAPI's, plus what FastAPI cannot see.

The endpoints read their raw body themselves (the signature covers the exact
bytes), so FastAPI does not know the bodies' schemas. They are added here
from the real models: the submit body is one variant per ``messageType``
(the envelope of :class:`dispatcher.models.Envelope` with that type's
``messageInfo`` model), so generated examples are meaningful. The signing
query parameters are documented on every signed operation.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from dispatcher.api.routes import ReplayQuery, StatusQuery
from dispatcher.config import Settings
from dispatcher.limits import MAX_BATCH_MESSAGES, MIN_BATCH_MESSAGES
from dispatcher.models import INFO_MODELS, RESERVED_EXT_KEY, Envelope, Ext, MessageType

REF = "#/components/schemas/{model}"

DESCRIPTION = """\
The message center's sender API (seed section 2.1.4).

Every answer is the seed's envelope `{code, message, data, page, foot}` and its
HTTP status equals `code`.

**Signing (v2).** Signed operations take `client`, `channel`, `timestamp`,
`nonce` and `sign` in the query (plus the seed's `apiVersion` and `version`).
`sign` is the lowercase hex HMAC-SHA256, keyed by the client's secret, of
`{METHOD}\\n{path}\\n{query}\\n{body}`: the upper-case method, the URL path as
sent, the query parameters except `sign` sorted by name and joined as `k=v`
with `&`, then the raw body bytes. Every authentication failure is the same
401. See `docs/security.md` for a worked example.
"""


def _parameters(auth_enabled: bool) -> list[dict[str, Any]]:
    def param(name: str, description: str, required: bool = False) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": required,
            "schema": {"type": "string"},
            "description": description,
        }

    return [
        param("apiVersion", "API version (the seed sends `01`); signed, not interpreted"),
        param("client", "the caller's client id (DISPATCHER_CLIENTS)", auth_enabled),
        param("channel", "one of the client's allowed channels", auth_enabled),
        param("version", "the caller's version (the seed sends `2.0`); signed, not interpreted"),
        param(
            "timestamp",
            "unix seconds, within the signature window of server time",
            auth_enabled,
        ),
        param(
            "nonce",
            "1..128 of A-Z a-z 0-9 . _ ~ -, new for every request: the same (client, nonce) "
            "within the window is refused as a replay",
            auth_enabled,
        ),
        param(
            "sign",
            "lowercase hex HMAC-SHA256 (64 characters) of the canonical request; HMAC-MD5 "
            "(32) only for clients configured for it",
            auth_enabled,
        ),
    ]


def _body_schemas() -> dict[str, dict[str, Any]]:
    """Component schemas of the request bodies, keyed by component name."""
    models = [
        (model, "validation")
        for model in (*INFO_MODELS.values(), Ext, Envelope, StatusQuery, ReplayQuery)
    ]
    _, top = models_json_schema(models, by_alias=True, ref_template=REF)  # type: ignore[arg-type]
    components: dict[str, dict[str, Any]] = top.get("$defs", {})

    ext = components["Ext"]
    ext["propertyNames"] = {"not": {"const": RESERVED_EXT_KEY}}
    custom_news = components["CustomNewsInfo"]
    custom_news["additionalProperties"] = {"type": "string"}
    custom_news["maxProperties"] = 16

    base = components.pop("Envelope")
    variants = []
    for message_type, info_model in INFO_MODELS.items():
        variant = copy.deepcopy(base)
        name = "Submit" + message_type.name.title().replace("_", "")
        variant["title"] = name
        variant["description"] = f"messageType {int(message_type)}: {message_type.name.lower()}"
        properties = variant["properties"]
        properties["messageType"] = {"type": "integer", "const": int(message_type)}
        properties["messageInfo"] = {"$ref": REF.format(model=info_model.__name__)}
        if message_type in (MessageType.TEMPLATE, MessageType.EXTENSION):
            needed = "template" if message_type is MessageType.TEMPLATE else "expandMsg"
            properties["ext"] = {"allOf": [{"$ref": REF.format(model="Ext")}], "required": [needed]}
            variant["required"] = [*variant["required"], "ext"]
        else:
            properties["ext"] = {"anyOf": [{"$ref": REF.format(model="Ext")}, {"type": "null"}]}
        components[name] = variant
        variants.append({"$ref": REF.format(model=name)})
    components["SubmitRequest"] = {
        "title": "SubmitRequest",
        "description": "The seed's request body; messageInfo's shape depends on messageType.",
        "oneOf": variants,
    }
    components["BatchRequest"] = {
        "title": "BatchRequest",
        "description": "Messages judged and queued each on its own, as single submits would be.",
        "type": "object",
        "additionalProperties": False,
        "required": ["messages"],
        "properties": {
            "messages": {
                "type": "array",
                "minItems": MIN_BATCH_MESSAGES,
                "maxItems": MAX_BATCH_MESSAGES,
                "items": {"$ref": REF.format(model="SubmitRequest")},
            }
        },
    }
    return components


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of ``app``, built once and cached on it."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, body in _body_schemas().items():
        components.setdefault(name, body)
    parameters = _parameters(settings.auth_enabled)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            # Request validation errors are answered 400 in the envelope, never 422.
            operation.get("responses", {}).pop("422", None)
            if operation.pop("x-dispatcher-signed", False):
                operation["parameters"] = [*operation.get("parameters", []), *parameters]
            body = operation.pop("x-dispatcher-body", None)
            if body:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": REF.format(model=body)}}},
                }
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema
