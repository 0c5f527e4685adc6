"""Items: ``/v1/items/{item_id}/similar``."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.bundle import NONE
from api.deps import BundleDep, ItemPath, K
from api.schemas import SimilarItem, SimilarResponse

router = APIRouter(prefix="/v1/items", tags=["recommend"])


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
