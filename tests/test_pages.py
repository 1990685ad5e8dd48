"""The demo page's files, served by the app itself and shipped with the package (app/service/pages.py)."""

import fnmatch
import re
import tomllib

import httpx
import pytest
from conftest import ROOT

from app.service.pages import STATIC_DIR

pytestmark = pytest.mark.anyio


async def test_the_demo_page_is_served_at_the_root(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for element in ('id="pad"', 'id="upload"', 'id="input28"', 'id="strip"', 'id="latents"', 'id="status"'):
        assert element in response.text


async def test_the_favicon_is_served(client: httpx.AsyncClient) -> None:
    page = (await client.get("/")).text
    assert '<link rel="icon" href="/favicon.ico"' in page
    response = await client.get("/favicon.ico")  # browsers ask for it whatever the page links
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/x-icon"
    assert response.content.startswith(b"\x00\x00\x01\x00")  # an ICO file


async def test_every_asset_the_page_names_is_served(client: httpx.AsyncClient) -> None:
    page = (await client.get("/")).text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert sorted(assets) == ["/static/demo.css", "/static/demo.js"]
    types = {".css": "text/css", ".js": "text/javascript"}
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["content-type"].startswith(types[asset[asset.rindex(".") :]])


async def test_the_page_uses_the_public_endpoints_only(client: httpx.AsyncClient) -> None:
    script = (await client.get("/static/demo.js")).text
    assert set(re.findall(r'"(/[a-z]+)"', script)) == {"/encode", "/decode", "/models"}


def test_the_static_files_are_package_data() -> None:
    """A non-editable install (the container's) must carry the page."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["app.service"]
    for path in STATIC_DIR.iterdir():
        relative = path.relative_to(STATIC_DIR.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
