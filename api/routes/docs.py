"""The OpenAPI document and its two viewers, served as routes of ours so that they take the
same API keys as ``/agents/*`` (FastAPI's built-in docs routes take no dependencies)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

OPENAPI_PATH = "/openapi.json"

docs = APIRouter(include_in_schema=False)


@docs.get(OPENAPI_PATH)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request), title=f"{request.app.title} - Swagger UI"
    )


@docs.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=_openapi_url(request), title=f"{request.app.title} - ReDoc")


def _openapi_url(request: Request) -> str:
    return str(request.scope.get("root_path", "")) + OPENAPI_PATH
