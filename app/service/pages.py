"""The demo page: `GET /`, its static files under `/static`, and `/favicon.ico`.

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

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        # Browsers ask for it on their own, whatever the page links: answer rather than 404.
        return FileResponse(STATIC_DIR / "favicon.ico", media_type="image/x-icon")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
