"""OpenAI-style error bodies: {"error": {"message", "type", "param", "code"}}, so that the official
clients raise their typed exceptions (BadRequestError, AuthenticationError, RateLimitError, ...)."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         429: "rate_limit_exceeded", 500: "internal_server_error", 503: "service_unavailable"}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = TYPES.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def validation_error(exc: RequestValidationError) -> APIError:
    """Pydantic's first complaint as one line naming the field (vLLM answers these with 400, not 422)."""
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return APIError(400, f"request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})",
                        code="json_invalid")
    # Union members appear in the location (e.g. prompt.str); keep the field path a user would write.
    field = ".".join(p for p in loc if not _is_type_name(p)) or None
    if first.get("type") == "missing" and not field:
        return APIError(400, "request body is missing; send a JSON object", code="missing")
    msg = first.get("msg", "invalid value")
    return APIError(400, f"{field}: {msg}" if field else msg, param=field, code=first.get("type"))


def _is_type_name(part: str) -> bool:
    scalar = part in {"str", "int", "float", "bool", "list", "none"}
    return scalar or part.startswith(("list[", "function-", "constrained"))


async def api_error_handler(_: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def validation_error_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_error(exc).response()
