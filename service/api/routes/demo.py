"""The demo page at ``/``: static HTML, JS and CSS shipped in the package (no CDN, no build step), kept out of the
OpenAPI document because it is a page for people, not part of the API contract."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parents[1] / "static"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Only the files shipped beside the page are served: a lookup by name, so no path can leave the folder. (A package
# built without its package data still starts; its page answers 404.)
FILES = {p.name: p for p in (STATIC.iterdir() if STATIC.is_dir() else ()) if p.is_file() and p.suffix in MEDIA_TYPES}
# The page loads only its own files and talks only to this service; blob: for the user's own photo and video.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag) so an upgraded service serves its new page at once
}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix] + "; charset=utf-8", headers=HEADERS)


@router.get("/")
async def index() -> FileResponse:
    """The demo page: photo, video and webcam analysis in the browser, over the public API."""
    return _file("index.html")


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    return _file(name)
