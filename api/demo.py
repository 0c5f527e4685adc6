"""``ig api-demo``: start the API on a free port and print a few real calls and their answers."""

from __future__ import annotations

import json

import requests

from core.redis_server import free_port
from core.settings import Settings


def _show(method: str, url: str, base: str, **kwargs: object) -> dict:
    r = requests.request(method, base + url, timeout=30, **kwargs)  # type: ignore[arg-type]
    body = r.json()
    print(f"\n$ {method} {url}  -> {r.status_code}")
    items = body.get("items") if isinstance(body, dict) else None
    if isinstance(items, list):
        head = {k: v for k, v in body.items() if k != "items"}
        print(json.dumps(head))
        for item in items:
            title = item.get("title") or ""
            extra = item.get("reason") or f"similarity {item.get('similarity')}"
            print(f"  {item['item_id']:>8}  {title[:40]:40}  {extra}")
    else:
        print(json.dumps(body)[:600])
    return body


def run(settings: Settings) -> int:
    from api.app import create_app
    from api.bundle import Bundle
    from api.fuzz import serving
    from models.artifact import ArtifactError

    try:
        bundle = Bundle.load(settings.artifacts_dir / "latest")
    except (ArtifactError, FileNotFoundError) as exc:
        print(f"no model to serve ({exc}): run `make train` first")
        return 2
    user = max(bundle.users, key=lambda u: bundle.seen[bundle.users[u]].nnz)
    item = bundle.ids[int(bundle.popular[0])]
    with serving(create_app(settings), free_port()) as base:
        _show("GET", "/ready", base)
        _show("GET", f"/v1/recommend/{user}?k=5", base)
        _show("GET", "/v1/recommend/a-brand-new-shopper?k=5", base)
        _show("GET", f"/v1/search?q=red+heart+candle&user_id={user}&k=5", base)
        _show("GET", f"/v1/items/{item}/similar?k=5", base)
        _show("GET", "/v1/recommend/someone?k=500", base)
    return 0
