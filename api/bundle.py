"""A trained artifact, loaded for serving: catalogue, embeddings, text index, ranker.

Every catalogue item gets a vector in the GNN's item space: its trained embedding when it was in
the graph, else its title projected by the learned text projection (cold items), else none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from core import names as n
from core.catalogue import Entry
from models import artifact
from models.ranker_features import ItemSpace
from models.sequence import SequenceScorer
from models.text import TextProjection

GRAPH, TEXT, NONE = "graph", "text", "none"


def _normalise(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass
class Bundle:
    version: str
    path: Path
    index: dict[str, int]  # item_id -> catalogue index ("idx" everywhere in api/)
    ids: list[str]
    titles: list[str | None]
    categories: list[str | None]
    vectors: np.ndarray  # [C, D] GNN item space (zeros where placed_by == none)
    unit_vectors: np.ndarray  # [C, D] L2-normalised, for similarity
    placed_by: np.ndarray  # [C] graph | text | none
    users: dict[str, int]
    user_vectors: np.ndarray  # [U, D]
    seen: sp.csr_matrix  # [U, C] items each trained user bought or rated
    text: np.ndarray | None  # [C, 384] L2-normalised title embeddings
    projection: np.ndarray | None  # [384 + 1, D]
    ranker: object | None
    popularity: np.ndarray  # [C] distinct users per item in training
    available: np.ndarray  # [C] bool (the catalogue's own flag; all True without one)
    retrievable: np.ndarray  # [C] bool: available and placed in the item space
    popular: np.ndarray  # catalogue idx of available items, most popular first
    by_category: dict[str, np.ndarray]  # category -> its available idx, most popular first
    segments: dict[tuple[str, str], np.ndarray]  # (attribute, value) -> popular idx there
    user_segments: dict[str, list[tuple[str, str]]]  # user -> their (attribute, value)s
    space: ItemSpace  # the vectors the user vector and the GNN score are computed from
    source: artifact.Artifact  # the artifact as read (the live catalogue is laid over it)
    brands: list[str | None]
    catalogue_version: int = 0  # the live catalogue's version laid over it (0: none)

    @classmethod
    def load(cls, path: Path) -> Bundle:
        """The serving bundle of the artifact at ``path``; IncompleteArtifact when its files
        do not fit together (the caller keeps what it serves)."""
        art = artifact.read(path)
        try:
            return cls._build(art, path, art)
        except (KeyError, IndexError, ValueError) as exc:
            raise artifact.IncompleteArtifact(
                f"{path}: its files do not fit together ({exc.__class__.__name__}: {exc})"
            ) from exc

    def with_catalogue(
        self,
        entries: Mapping[str, Entry],
        encode: Callable[[list[str]], np.ndarray] | None,
        version: int,
    ) -> Bundle:
        """This artifact with the live catalogue's ``entries`` laid over it
        (:func:`models.artifact.with_catalogue`): new items placed by their titles, availability
        as the shop last said. Built from the artifact as read, so an entry changed twice
        counts once."""
        art = artifact.with_catalogue(self.source, entries, encode)
        bundle = Bundle._build(art, self.path, self.source)
        bundle.catalogue_version = version
        return bundle

    @classmethod
    def _build(cls, art: artifact.Artifact, path: Path, source: artifact.Artifact) -> Bundle:
        cat = art.catalogue
        index = {item: ix for ix, item in enumerate(cat[n.ITEM_ID])}
        graph_idx = np.array([index[i] for i in art.items], dtype=np.int64)
        vectors = np.zeros((len(cat), art.item_embeddings.shape[1]), dtype=np.float32)
        placed = np.full(len(cat), NONE, dtype=object)
        vectors[graph_idx] = art.item_embeddings
        placed[graph_idx] = GRAPH
        text = projection = None
        if art.text_embeddings is not None:
            text, projection = _normalise(art.text_embeddings), art.text_projection
            titled = cat[n.TITLE].fillna("").str.strip().ne("").to_numpy()
            cold = titled & (placed == NONE)
            vectors[cold] = TextProjection(projection)(text[cold])
            placed[cold] = TEXT
        available = cat[artifact.AVAILABLE].to_numpy(bool)
        order = np.argsort(-cat[artifact.POPULARITY].to_numpy(), kind="stable")
        popular = order[available[order]]
        segments, user_segments = _segments(art, index, available)
        users = {u: i for i, u in enumerate(art.users) if u != artifact.FORGOTTEN_USER}
        popularity = cat[artifact.POPULARITY].to_numpy(np.float32)
        seen = art.seen if art.seen is not None else sp.csr_matrix((len(users), len(cat)))
        gf = art.graph_filter
        if gf is not None and gf.shape != (len(cat), len(cat)):
            raise ValueError(f"graph filter {gf.shape} for a catalogue of {len(cat)} items")
        sequence = None
        if art.sequence_weights is not None and art.sequence_items is not None:
            if len(art.sequence_items) != len(cat):
                raise ValueError(
                    f"sequence items {art.sequence_items.shape} for a catalogue of {len(cat)}"
                )
            config = art.manifest["hyper_parameters"]["sequence"]
            sequence = SequenceScorer.load(art.sequence_weights, art.sequence_items, config)
        space = ItemSpace(
            users,
            art.user_embeddings,
            index,
            vectors,
            popularity,
            placed != NONE,
            seen,
            gf,
            sequence,
        )
        return cls(
            version=art.manifest["version"],
            path=Path(path).resolve(),
            index=index,
            ids=[str(i) for i in cat[n.ITEM_ID]],
            titles=[t if isinstance(t, str) and t.strip() else None for t in cat[n.TITLE]],
            categories=[c if isinstance(c, str) and c else None for c in cat[n.CATEGORY]],
            vectors=vectors,
            unit_vectors=_normalise(vectors),
            placed_by=placed,
            users=users,
            user_vectors=art.user_embeddings,
            seen=seen,
            text=text,
            projection=projection,
            ranker=art.ranker,
            popularity=popularity,
            available=available,
            retrievable=available & (placed != NONE),
            popular=popular,
            by_category=_by_category(popular, cat[n.CATEGORY].fillna("").to_numpy()),
            segments=segments,
            user_segments=user_segments,
            space=space,
            source=source,
            brands=(
                [b if isinstance(b, str) and b else None for b in cat[n.BRAND]]
                if n.BRAND in cat
                else [None] * len(cat)
            ),
        )

    # -- users ----------------------------------------------------------------------------
    def user_vector(self, user_id: str, recent: list[str], live_weight: float) -> np.ndarray | None:
        """[D]: :meth:`models.ranker_features.ItemSpace.user_vector` over the catalogue (the
        same function training builds the ranker's GNN score with)."""
        return self.space.user_vector(user_id, recent, live_weight)

    def gnn_scores(self, vec: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
        """[N]: ``vec`` · each candidate's vector; NaN where either is unknown."""
        return self.space.gnn_scores(vec, idx)

    def filter_scores(self, user_id: str, recent: list[str]) -> np.ndarray | None:
        """[C]: the graph filter over the user's bought items and ``recent`` ones
        (:meth:`models.ranker_features.ItemSpace.filter_scores`); None without a filter."""
        return self.space.filter_scores(user_id, recent)

    def forget(self, user_id: str) -> None:
        """Serve ``user_id`` as a stranger from now on (their row of the served arrays is
        zeroed; the files are rewritten by models.artifact.forget_user)."""
        row = self.users.pop(user_id, None)
        self.user_segments.pop(user_id, None)
        if row is not None:
            self.user_vectors[row] = 0  # the source's array too (a catalogue change rebuilds)
            self.source.users[row] = artifact.FORGOTTEN_USER

    def seen_idx(self, user_id: str) -> np.ndarray:
        if user_id not in self.users:
            return np.zeros(0, dtype=np.int64)
        return self.seen[self.users[user_id]].indices

    # -- items ----------------------------------------------------------------------------
    def retrieve(self, vec: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``count`` available items by dot product with ``vec`` [D]: (idx, scores)."""
        scores = self.vectors @ vec
        scores[~self.retrievable] = -np.inf
        return _top(scores, count)

    def place(
        self, refs: list[tuple[str, str | None]], encoder: Any
    ) -> tuple[np.ndarray, list[str]]:
        """Vectors [N, D] for (item_id, title) pairs and how each was placed: its catalogue
        vector (graph or text), else its title through the text projection, else none (zeros)."""
        vectors = np.zeros((len(refs), self.vectors.shape[1]), dtype=np.float32)
        placed: list[str] = []
        new: list[tuple[int, str]] = []
        for j, (item_id, title) in enumerate(refs):
            ix = self.index.get(item_id)
            if ix is not None and self.placed_by[ix] != NONE:
                vectors[j] = self.vectors[ix]
                placed.append(str(self.placed_by[ix]))
            elif title and title.strip() and self.projection is not None and encoder is not None:
                new.append((j, title))
                placed.append(TEXT)
            else:
                placed.append(NONE)
        if new:
            text = encoder.encode([t for _, t in new])
            vectors[[j for j, _ in new]] = TextProjection(self.projection)(text)
        return vectors, placed

    def sequence_scores(self, recent: list[str]) -> np.ndarray | None:
        """[C]: the sequential transformer's next-item scores after ``recent`` (newest first;
        :meth:`models.ranker_features.ItemSpace.sequence_scores`); None without a model."""
        return self.space.sequence_scores(recent)

    def retrieve_filtered(self, scores: np.ndarray, count: int) -> np.ndarray:
        """Top ``count`` available items by the graph filter's ``scores`` [C] (only items it
        relates to the shopper's: a score of exactly 0 is no evidence)."""
        scores = np.where(self.available & (scores != 0), scores, -np.inf)
        return _top(scores, count)[0]

    def retrieve_sequenced(self, scores: np.ndarray, count: int) -> np.ndarray:
        """Top ``count`` available items by the sequence model's ``scores`` [C], among the
        items it places (an item with neither a title nor training has no place)."""
        placed = self.space.sequence.placed
        return _top(np.where(self.available & placed, scores, -np.inf), count)[0]

    def similar(self, ix: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine neighbours of catalogue ``ix`` in the item space, itself excluded."""
        sims = self.unit_vectors @ self.unit_vectors[ix]
        sims[ix] = -np.inf
        sims[~self.retrievable] = -np.inf
        return _top(sims, k)

    def diverse_popular(self, count: int, categories: list[str] | None = None) -> list[int]:
        """Popular items taken round-robin across categories (``categories`` first)."""
        order = [c for c in (categories or []) if c in self.by_category]
        order += [c for c in islice(self.by_category, 20) if c not in order]  # by top item
        picked: list[int] = []
        depth = 0
        while len(picked) < count and depth < 50:
            for c in order:
                idx = self.by_category[c]
                if depth < len(idx):
                    picked.append(int(idx[depth]))
                    if len(picked) == count:
                        break
            depth += 1
        if len(picked) < count:
            have = set(picked)
            picked += [int(r) for r in self.popular if r not in have][: count - len(picked)]
        return picked

    def segment_of(self, user_id: str, ix: int) -> tuple[str, str] | None:
        """The first of the user's demographic segments where ``ix`` is popular."""
        for seg in self.user_segments.get(user_id, []):
            if ix in self.segments.get(seg, ()):
                return seg
        return None

    def item(self, ix: int) -> tuple[str, str | None, str | None]:
        """(item_id, title, category) of catalogue ``ix``."""
        return self.ids[ix], self.titles[ix], self.categories[ix]


def _top(scores: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` highest finite ``scores`` [N], best first: (indices, scores)."""
    count = min(count, int(np.isfinite(scores).sum()))
    top = np.argpartition(-scores, count - 1)[:count] if count else np.zeros(0, np.int64)
    top = top[np.argsort(-scores[top], kind="stable")]
    return top, scores[top]


def _by_category(popular: np.ndarray, cats: np.ndarray) -> dict[str, np.ndarray]:
    """category -> its available catalogue indices, most popular first."""
    out: dict[str, list[int]] = {}
    for ix in popular:
        if cats[ix]:
            out.setdefault(cats[ix], []).append(int(ix))
    return {c: np.array(idx) for c, idx in out.items()}


def _segments(
    art: artifact.Artifact, index: dict[str, int], available: np.ndarray
) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, list[tuple[str, str]]]]:
    """Demographic segments of the artifact (absent when the dataset has no user attributes)."""
    if art.segments is None or art.user_attributes is None:
        return {}, {}
    seg = art.segments[art.segments[n.ITEM_ID].isin(index)]
    seg = seg.assign(idx=seg[n.ITEM_ID].map(index))
    seg = seg[available[seg["idx"].to_numpy()]]
    segments = {
        (str(a), str(v)): g["idx"].to_numpy(np.int64)
        for (a, v), g in seg.groupby(["attribute", "value"], sort=False)
    }
    attrs = art.user_attributes
    cols = [c for c in attrs.columns if c != n.USER_ID]
    user_segments = {
        str(u): [(c, str(v)) for c, v in zip(cols, values, strict=True) if (c, str(v)) in segments]
        for u, *values in attrs[[n.USER_ID, *cols]].itertuples(index=False)
    }
    return segments, user_segments
