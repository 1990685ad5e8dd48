"""The demo page: `GET /`, its static files under `/static`, and `/favicon.ico`; and /docs.

Plain HTML, CSS and JavaScript in `app/service/static/` (shipped as package data), no
build step. The page calls the same `/encode` and `/decode` endpoints as any client.

/docs is FastAPI's Swagger UI page with its JavaScript and CSS served from the package
(`static/swagger-ui/`, see its README) instead of a CDN: a service like this one often
runs where there is no internet, and there FastAPI's default /docs is a blank page.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
DOCS_URL = "/docs"  # the app is made with docs_url=None: this module serves it
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


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

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
