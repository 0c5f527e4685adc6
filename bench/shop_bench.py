"""The shop page in headless Chromium (bench/browser.py) for ``make bench``: the page, the
API, the live job (``ig stream``) and Redis are real, as in the browser test.

- ``shop_first_shelf_ms``: navigation start to the first shelf on screen (the page's own
  ``performance.now()``), median over ``loads`` fresh page loads;
- ``shop_click_to_shelf_update_ms``: a product click to the refreshed shelf on screen (the
  view posted, the live job's features online, the profile and the shelf read again), p50
  (and p90) over ``clicks`` clicks on popular products of varied categories;
- ``shop_assets_bytes``: the page's own HTML, CSS and script.

Standalone (builds its own project, merges the keys into bench/results/latest.json):
``python bench/shop_bench.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import SHOP_DIR  # noqa: E402
from core.redis_server import free_port  # noqa: E402
from core.settings import Settings  # noqa: E402

KEY = "bench-shop-key"


def shop_figures(
    settings: Settings, artifacts: Path, workdir: Path, loads: int = 5, clicks: int = 20
) -> dict[str, Any]:
    from bench.browser import ShopPage, chromium
    from cli.shop import shop_stack, wait_live_job

    tag = uuid.uuid4().hex[:8]
    s = settings.model_copy(
        update={
            "artifacts_dir": artifacts,
            "api_key": SecretStr(KEY),
            "events_stream": f"bench:shop:{tag}:events",
            "dead_letter_stream": f"bench:shop:{tag}:dead",
        }
    )
    users = json.loads((artifacts / "latest" / "users.json").read_text())
    user = users[len(users) // 2]
    log = workdir / "shop-stream.log"
    with shop_stack(s, free_port(), workdir / "shop-recovery", log) as (base, job):
        wait_live_job(s, job, log, timeout=900)
        driver = chromium()
        try:
            page = ShopPage(driver)
            first = []
            for _ in range(loads):
                page.open(base, KEY, user=user)
                first.append(page.timings()["firstShelfMs"])
            grid = page.script(
                "return [...document.querySelectorAll('#grid .card')].map(b => b.dataset.itemId)"
            )
            for item in grid[:clicks]:
                page.open_product(item)
            updates = page.timings()["updates"]
        finally:
            driver.quit()
    assets = sum(p.stat().st_size for p in SHOP_DIR.iterdir() if p.is_file())
    return {
        "shop_first_shelf_ms": round(float(np.median(first)), 1),
        "shop_first_shelf_loads": loads,
        "shop_click_to_shelf_update_ms": round(float(np.percentile(updates, 50)), 1),
        "shop_click_to_shelf_update_p90_ms": round(float(np.percentile(updates, 90)), 1),
        "shop_clicks": len(updates),
        "shop_assets_bytes": assets,
    }


def main() -> int:
    """Build a project (bench/run.py's steps), measure, merge into latest.json."""
    from bench.run import build_project, serving_artifacts
    from core.redis_server import RedisServer
    from core.settings import get_settings

    out = ROOT / "bench" / "results" / "latest.json"
    with tempfile.TemporaryDirectory(prefix="ig-bench-shop-") as tmp:
        redis = RedisServer(free_port(), Path(tmp) / "redis")
        proc = redis.start(daemonize=False)
        try:
            build_project(Path(tmp), redis)
            artifacts = serving_artifacts(Path(tmp))
            figures = shop_figures(get_settings(), artifacts, Path(tmp))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    results = json.loads(out.read_text()) if out.exists() else {}
    results |= figures
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"merged into {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
