"""The least an HTTP submit endpoint can do: FastAPI, the same pydantic validation, no Redis.

Served like the real API (uvicorn, 2 workers, no access log) as the P4 baseline:
``uvicorn benchmarks.bare_api:app --workers 2``.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dispatcher.api.paths import SUBMIT
from dispatcher.channels.easemob import check_size
from dispatcher.errors import InvalidMessage
from dispatcher.ids import new_message_id
from dispatcher.models import parse_message

app = FastAPI()


@app.post(SUBMIT)
async def submit(request: Request) -> JSONResponse:
    body = await request.body()
    try:
        message = parse_message(json.loads(body))
        message_id = message.getMessageId or new_message_id("m0")
        check_size(message_id, message, 5120)
    except InvalidMessage as exc:
        return JSONResponse({"code": 400, "message": str(exc)}, status_code=400)
    return JSONResponse({"code": 200, "message": "ok", "data": {"getMessageId": message_id}})
