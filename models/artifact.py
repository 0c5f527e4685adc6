"""A serving artifact: its file and column names, ``save`` (training) and ``read`` (serving).

An artifact is a folder ``<artifacts>/<version>/`` (``latest`` links to the newest):
weights, embeddings, the serving catalogue, the text index, the ranker, metrics, a plot and
``manifest.json`` (feature service, dims, data snapshot, metrics, git sha). Training writes it
with :func:`save`; the API reads it with :func:`read` (api.bundle builds on that).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from core import catalogue
from core import names as n
from core.catalogue import Entry
from models.ranker import Ranker

MANIFEST = "manifest.json"
WEIGHTS = "lightgcn.pt"
USER_EMBEDDINGS = "user_embeddings.npy"  # [U, D]
ITEM_EMBEDDINGS = "item_embeddings.npy"  # [I, D], rows in ITEMS order
USERS = "users.json"  # trained user ids, rows of USER_EMBEDDINGS
ITEMS = "items.json"  # graph item ids, rows of ITEM_EMBEDDINGS
CATALOGUE = "catalogue.parquet"  # every item: CATALOGUE_COLUMNS
SEEN = "seen.npz"  # [U, C] what each trained user bought or rated (catalogue columns)
SEGMENTS = "segments.parquet"  # attribute, value, item_id, users
USER_ATTRIBUTES = "user_attributes.parquet"  # user_id + the segment attributes
TEXT_EMBEDDINGS = "catalogue_text_embeddings.npy"  # [C, 384]
TEXT_PROJECTION = "text_projection.npy"  # [384 + 1, D]
COLD_ITEMS = "cold_items.json"
GRAPH_FILTER = "graph_filter.npz"  # [C, C] item-item weights (models.graph_filter), catalogue rows
SEQUENCE_WEIGHTS = "sequence.pt"  # the sequential transformer's weights (models.sequence)
SEQUENCE_ITEMS = "sequence_items.npy"  # [C, D] its item table, catalogue rows
RANKER = "ranker.skops"  # the ranker's trees in skops' format (no code is run to load it)
RANKER_COLUMNS = "ranker.json"  # the ranker's input columns, in order, and its blend
# What a ranker file may hold beyond skops' default-trusted types: loading refuses the rest.
RANKER_TYPES = {"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"}
METRICS = "metrics.json"
PLOT = "training.png"
LATEST = "latest"
EVALUATION = "evaluation_artifact"  # manifest key of a served artifact: where its figures come from
REQUIRED = (MANIFEST, CATALOGUE, ITEMS, USERS)

# Catalogue columns beside item_id, title, category.
POPULARITY = "popularity"  # distinct users in train+val
IN_GRAPH = "in_graph"
AVAILABLE = catalogue.AVAILABLE


class ArtifactError(RuntimeError):
    """An artifact folder that is missing or incomplete."""


class IncompleteArtifact(ArtifactError):
    """An artifact folder that exists but was not fully written (or was damaged since)."""


FILES = "files"  # manifest key: every file of the artifact, written before the manifest


@dataclass
class Artifact:
    """Everything a training run hands to serving (absent parts are ``None``)."""

    manifest: dict[str, Any]
    users: list[str]
    items: list[str]
    user_embeddings: np.ndarray
    item_embeddings: np.ndarray
    catalogue: pd.DataFrame
    seen: sp.csr_matrix | None = None
    text_embeddings: np.ndarray | None = None
    text_projection: np.ndarray | None = None
    cold_items: list[str] = field(default_factory=list)
    ranker: Ranker | None = None
    segments: pd.DataFrame | None = None
    user_attributes: pd.DataFrame | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] | None = None
    graph_filter: sp.csr_matrix | None = None
    sequence_weights: dict[str, torch.Tensor] | None = None
    sequence_items: np.ndarray | None = None


def save(artifact: Artifact, out_root: Path, promote: bool = True) -> Path:
    """Write ``artifact`` to ``out_root/<manifest version>`` and (``promote``) point ``latest``
    at it."""
    out = out_root / artifact.manifest["version"]
    out.mkdir(parents=True)
    if artifact.weights is not None:
        torch.save(artifact.weights, out / WEIGHTS)
    np.save(out / USER_EMBEDDINGS, artifact.user_embeddings)
    np.save(out / ITEM_EMBEDDINGS, artifact.item_embeddings)
    (out / USERS).write_text(json.dumps(artifact.users))
    (out / ITEMS).write_text(json.dumps(artifact.items))
    artifact.catalogue.to_parquet(out / CATALOGUE, index=False)
    if artifact.seen is not None:
        sp.save_npz(out / SEEN, artifact.seen)
    if artifact.segments is not None and len(artifact.segments):
        artifact.segments.to_parquet(out / SEGMENTS, index=False)
        artifact.user_attributes.to_parquet(out / USER_ATTRIBUTES, index=False)  # type: ignore[union-attr]
    if artifact.text_embeddings is not None and artifact.text_projection is not None:
        np.save(out / TEXT_EMBEDDINGS, artifact.text_embeddings)
        np.save(out / TEXT_PROJECTION, artifact.text_projection)
        (out / COLD_ITEMS).write_text(json.dumps(artifact.cold_items))
    if artifact.graph_filter is not None:
        sp.save_npz(out / GRAPH_FILTER, artifact.graph_filter)
    if artifact.sequence_weights is not None and artifact.sequence_items is not None:
        torch.save(artifact.sequence_weights, out / SEQUENCE_WEIGHTS)
        np.save(out / SEQUENCE_ITEMS, artifact.sequence_items)
    if artifact.ranker is not None:
        save_ranker(artifact.ranker, out)
    (out / METRICS).write_text(json.dumps(artifact.metrics, indent=2, default=float))
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    # the manifest goes last and names every file: a folder without it, or without one of
    # them, was not fully written (read() refuses it)
    (out / MANIFEST).write_text(json.dumps({**artifact.manifest, FILES: files}, indent=2))
    if promote:
        point_latest(out_root, out.name)
    return out


SERVED_LOG = "served.log"  # "<promote|rollback> <version>" per line: what latest pointed at
PROMOTE, ROLLBACK = "promote", "rollback"


def point_latest(root: Path, version: str, action: str = PROMOTE) -> None:
    """``root/latest`` -> ``version``, swapped in one rename (a reader resolving ``latest``
    finds the old artifact or the new one, never no link), and the move recorded in
    ``served.log`` (:func:`served_stack`)."""
    tmp = Path(root) / f".{LATEST}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(version)
    os.replace(tmp, Path(root) / LATEST)
    with open(Path(root) / SERVED_LOG, "a") as f:
        f.write(f"{action} {version}\n")


def served_stack(root: Path) -> list[str]:
    """The versions served, oldest first, as promotions pushed them and rollbacks popped them:
    the last is what ``latest`` serves, the one before it what a rollback returns to."""
    log = Path(root) / SERVED_LOG
    stack: list[str] = []
    for line in log.read_text().splitlines() if log.exists() else []:
        action, _, version = line.partition(" ")
        if action == PROMOTE:
            stack.append(version)
        elif action == ROLLBACK:  # off with the current one; back to ``version`` or onto it
            if stack:
                stack.pop()
            if version in stack:
                del stack[len(stack) - stack[::-1].index(version) :]
            else:
                stack.append(version)
    return stack


def latest_version(root: Path) -> str | None:
    """The version ``root/latest`` points at (None: no link)."""
    link = Path(root) / LATEST
    return os.readlink(link) if link.is_symlink() else None


def read(path: Path) -> Artifact:
    """The artifact at ``path`` (weights and metrics are not needed to serve: not read)."""
    path = Path(path).resolve()
    missing = [f for f in REQUIRED if not (path / f).exists()]
    if missing:
        raise IncompleteArtifact(
            f"{path}: not a complete serving artifact (missing {', '.join(missing)})"
        )
    try:
        return _read(path)
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        zipfile.BadZipFile,
    ) as exc:
        raise IncompleteArtifact(
            f"{path}: an unreadable artifact ({exc.__class__.__name__}: {exc})"
        ) from exc


def _read(path: Path) -> Artifact:
    manifest = json.loads((path / MANIFEST).read_text())
    gone = [f for f in manifest.get(FILES, []) if not (path / f).exists()]
    if gone:
        raise FileNotFoundError(f"{', '.join(gone)} listed in its manifest but not there")
    ranker = load_ranker(path) if (path / RANKER).exists() else None
    text = (path / TEXT_EMBEDDINGS).exists()
    segments = (path / SEGMENTS).exists()
    graph_filter = (path / GRAPH_FILTER).exists()
    sequence = (path / SEQUENCE_WEIGHTS).exists()
    return Artifact(
        manifest=manifest,
        users=json.loads((path / USERS).read_text()),
        items=json.loads((path / ITEMS).read_text()),
        user_embeddings=np.load(path / USER_EMBEDDINGS).astype(np.float32),
        item_embeddings=np.load(path / ITEM_EMBEDDINGS).astype(np.float32),
        catalogue=pd.read_parquet(path / CATALOGUE),
        seen=sp.load_npz(path / SEEN).tocsr() if (path / SEEN).exists() else None,
        text_embeddings=np.load(path / TEXT_EMBEDDINGS) if text else None,
        text_projection=np.load(path / TEXT_PROJECTION).astype(np.float32) if text else None,
        ranker=ranker,
        segments=pd.read_parquet(path / SEGMENTS) if segments else None,
        user_attributes=pd.read_parquet(path / USER_ATTRIBUTES) if segments else None,
        graph_filter=sp.load_npz(path / GRAPH_FILTER).tocsr() if graph_filter else None,
        # tensors only: weights_only refuses anything that would run code
        sequence_weights=(
            torch.load(path / SEQUENCE_WEIGHTS, weights_only=True) if sequence else None
        ),
        sequence_items=np.load(path / SEQUENCE_ITEMS).astype(np.float32) if sequence else None,
    )


def save_ranker(ranker: Ranker, folder: Path) -> None:
    """The ranker's model in skops' format (scikit-learn's safe persistence: a file of data that
    loading checks type by type, never code run by unpickling) and its columns as JSON."""
    import skops.io as sio

    sio.dump(ranker.model, folder / RANKER)
    (folder / RANKER_COLUMNS).write_text(json.dumps(ranker.describe()))


def load_ranker(folder: Path) -> Ranker:
    """The ranker saved by :func:`save_ranker`; ValueError if its file holds any type beyond
    skops' trusted ones and ``RANKER_TYPES``."""
    import skops.io as sio

    unexpected = set(sio.get_untrusted_types(file=folder / RANKER)) - RANKER_TYPES
    if unexpected:
        raise ValueError(f"{RANKER} holds types this project does not load: {sorted(unexpected)}")
    described = json.loads((folder / RANKER_COLUMNS).read_text())
    if isinstance(described, list):  # before the blend: the columns alone, the trees alone
        described = {"columns": described}
    ranker = Ranker(**described)
    ranker.model = sio.load(folder / RANKER, trusted=sorted(RANKER_TYPES))
    return ranker


FORGOTTEN_USER = ""  # what takes a forgotten shopper's place in users.json (keeps every row)


def forget_user(root: Path, user_id: str) -> int:
    """Remove ``user_id`` from every artifact under ``root`` (every version, for rollback too):
    their id in users.json becomes ``FORGOTTEN_USER`` and their rows of the user embeddings,
    the graph model's weights (users' rows come first) and the purchase matrix become zeros;
    their demographic row goes. Each file is replaced whole (written aside, then renamed).
    The next training leaves them out for good. Returns the artifacts changed."""
    changed = 0
    versions = Path(root).iterdir() if Path(root).is_dir() else iter(())
    for path in sorted(p for p in versions if p.is_dir() and not p.is_symlink()):
        users_file = path / USERS
        users = json.loads(users_file.read_text()) if users_file.exists() else []
        if user_id not in users:
            continue
        row = users.index(user_id)
        embeddings = np.load(path / USER_EMBEDDINGS)
        embeddings[row] = 0
        with _replacing(path / USER_EMBEDDINGS) as f:
            np.save(f, embeddings)
        if (path / WEIGHTS).exists():
            weights = torch.load(path / WEIGHTS, weights_only=True)
            for tensor in weights.values():
                if tensor.ndim == 2 and tensor.shape[0] >= len(users):
                    tensor[row] = 0
            with _replacing(path / WEIGHTS) as f:
                torch.save(weights, f)
        if (path / SEEN).exists():
            seen = sp.load_npz(path / SEEN).tolil()
            seen[row] = 0
            with _replacing(path / SEEN) as f:
                sp.save_npz(f, seen.tocsr())
        if (path / USER_ATTRIBUTES).exists():
            attrs = pd.read_parquet(path / USER_ATTRIBUTES)
            attrs = attrs[attrs[n.USER_ID].astype(str) != user_id]
            with _replacing(path / USER_ATTRIBUTES) as f:
                attrs.to_parquet(f, index=False)
        users[row] = FORGOTTEN_USER
        with _replacing(users_file) as f:
            f.write(json.dumps(users).encode())
        changed += 1
    return changed


@contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; renamed over ``path`` when the block
    ends without an error (readers see the old file or the new one, never a part)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        yield f
    tmp.replace(path)


def new_version(dataset: str) -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{dataset}"


def evaluated_path(path: Path) -> Path:
    """The artifact whose figures ``path`` reports: itself, or the evaluated one its manifest
    names (a served artifact, trained on every event, is measured by the evaluated one)."""
    manifest = path / MANIFEST
    name = json.loads(manifest.read_text()).get(EVALUATION) if manifest.exists() else None
    return path.resolve().parent / name if name else path


def with_catalogue(
    art: Artifact,
    entries: Mapping[str, Entry],
    encode: Callable[[list[str]], np.ndarray] | None,
) -> Artifact:
    """``art`` with the live catalogue's ``entries`` (core.catalogue) laid over its catalogue:
    a known item takes the entry's title, category, brand and availability (a None keeps the
    artifact's value); a new item is appended (no popularity, not in the graph) with its title
    embedded by ``encode`` (texts -> [N, 384]) so that serving places it by the artifact's text
    projection. Every array over the catalogue grows with it (new rows and columns empty)."""
    if not entries:
        return art
    old = art.catalogue[n.TITLE].tolist()
    cat = catalogue.lay_over(art.catalogue, entries)
    cat[POPULARITY] = cat[POPULARITY].fillna(0).astype(np.int64)
    cat[IN_GRAPH] = cat[IN_GRAPH].fillna(False).astype(bool)
    cat[AVAILABLE] = cat[AVAILABLE].astype(bool)
    titles = cat[n.TITLE].tolist()
    retitled = [  # new titled items and items whose title changed
        r
        for r, t in enumerate(titles)
        if isinstance(t, str) and t.strip() and (r >= len(old) or t != old[r])
    ]
    grow = len(cat) - len(art.catalogue)
    text = art.text_embeddings
    if text is not None:
        text = np.vstack([text, np.zeros((grow, text.shape[1]), dtype=text.dtype)])
        if retitled and encode is not None:
            text[retitled] = encode([titles[r] for r in retitled])
    size = len(cat)
    seen = art.seen
    if seen is not None and grow:
        seen = sp.csr_matrix((seen.data, seen.indices, seen.indptr), shape=(seen.shape[0], size))
    gf = art.graph_filter
    if gf is not None and grow:
        indptr = np.concatenate([gf.indptr, np.full(grow, gf.indptr[-1], dtype=gf.indptr.dtype)])
        gf = sp.csr_matrix((gf.data, gf.indices, indptr), shape=(size, size))
    seq = art.sequence_items
    if seq is not None and grow:
        seq = np.vstack([seq, np.zeros((grow, seq.shape[1]), dtype=seq.dtype)])
    return replace(
        art, catalogue=cat, text_embeddings=text, seen=seen, graph_filter=gf, sequence_items=seq
    )
