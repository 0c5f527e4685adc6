"""Items: ``/v1/items?ids=`` (names and categories), ``/v1/items/{item_id}/similar``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.bundle import NONE
from api.deps import BundleDep, ItemPath, K
from api.routes.catalogue import catalogue_item
from api.schemas import CatalogueItem, SimilarItem, SimilarResponse

router = APIRouter(prefix="/v1/items", tags=["recommend"])
MAX_IDS = 100


@router.get("", response_model=list[CatalogueItem], tags=["catalogue"])
def lookup(
    bundle: BundleDep,
    ids: Annotated[
        str, Query(min_length=1, max_length=20_000, description=f"Comma-separated, 1..{MAX_IDS}.")
    ],
) -> list[CatalogueItem]:
    """Title, category and popularity of catalogue items, in the order asked (unknown ids
    are left out)."""
    wanted = [i.strip() for i in ids.split(",") if i.strip()]
    if not wanted or len(wanted) > MAX_IDS:
        raise HTTPException(422, f"ids must name 1..{MAX_IDS} items, comma-separated")
    found = [bundle.index[i] for i in wanted if i in bundle.index]
    return [catalogue_item(bundle, ix) for ix in found]


@router.get("/{item_id}/similar", response_model=SimilarResponse)
def similar(bundle: BundleDep, item_id: ItemPath, k: K = 20) -> SimilarResponse:
    """Neighbours in the item embedding space; a cold item is placed by its title."""
    ix = bundle.index.get(item_id)
    if ix is None:
        raise HTTPException(
            404, f"unknown item {item_id!r}; POST /v1/score with a title places a new item"
        )
    if bundle.placed_by[ix] == NONE:
        raise HTTPException(404, f"item {item_id!r} has no embedding (not in the graph, no title)")
    idx, sims = bundle.similar(ix, k)
    return SimilarResponse(
        item_id=item_id,
        placed_by=str(bundle.placed_by[ix]),
        items=[
            SimilarItem(
                item_id=bundle.ids[i],
                title=bundle.titles[i],
                category=bundle.categories[i],
                similarity=round(float(s), 6),
            )
            for i, s in zip(idx.tolist(), sims.tolist(), strict=True)
        ],
    )
