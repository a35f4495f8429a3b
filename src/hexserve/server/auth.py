"""`--api-key`: every /v1 route needs `Authorization: Bearer <key>` (what OpenAI clients send);
/health and /metrics stay open for probes and scrapers, as in vLLM."""

from __future__ import annotations

import secrets

from fastapi import Request

from hexserve.server.errors import APIError


def require_api_key(api_key: str | None):
    async def check(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise APIError(401, "missing or wrong API key; send Authorization: Bearer <key>", code="invalid_api_key")

    return check
