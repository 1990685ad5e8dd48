"""The demo page: `GET /` and its static files under `/static`.

Plain HTML, CSS and JavaScript in `app/service/static/` (shipped as package data), no
build step. The page calls the same `/encode` and `/decode` endpoints as any client.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def install_pages(app: FastAPI) -> None:
    """Serve the demo page at `/` and its assets at `/static/...`."""

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
