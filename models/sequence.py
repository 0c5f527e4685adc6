"""A sequential transformer over the shopper's recent items (SASRec, Kang & McAuley 2018).

Causal self-attention over a shopper's items in the order they first touched them, trained to
predict the next new item at every position with a softmax over the catalogue (the full one up
to ``SequenceConfig.full_softmax_items`` items, else sampled: the positive against
``negatives`` uniformly drawn items, gSASRec's finding that many negatives matter). Item
embeddings are tied between input and output and start from the MiniLM title embeddings
reduced to the model's width by PCA (:func:`text_init`), so an item known only by its title
already has a place; one never trained keeps that place at serving (:func:`catalogue_table`).

At serving the API feeds ``user_interest.recent_items`` (Feast online, newest first, at most
20 distinct items; the same feature, point in time, in the ranker's training rows) oldest
first, and scores every catalogue item with the last position's state (:class:`SequenceScorer`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from core import names as n
from models.data import IdMap
from models.early_stop import EarlyStop

PAD = 0  # index 0 of the embedding table: padding; item i is row i + 1
SERVE_LENGTH = 20  # items read at serving: user_interest.recent_items holds 20


@dataclass(frozen=True)
class SequenceConfig:
    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50  # positions per training window (serving reads at most 20)
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 60
    patience: int = 3  # epochs without a better validation NDCG@20 before stopping
    full_softmax_items: int = 20_000  # beyond: sampled softmax
    negatives: int = 256
    seed: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class SASRec(nn.Module):
    """Item + position embeddings -> ``layers`` causal transformer blocks -> layer norm."""

    def __init__(self, n_items: int, cfg: SequenceConfig, init: np.ndarray | None = None):
        super().__init__()
        self.cfg = cfg
        self.items = nn.Embedding(n_items + 1, cfg.dim, padding_idx=PAD)
        nn.init.normal_(self.items.weight, std=cfg.dim**-0.5)
        if init is not None:
            with torch.no_grad():
                self.items.weight[1:] = torch.as_tensor(init, dtype=torch.float32)
                self.items.weight[PAD] = 0
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        layer = nn.TransformerEncoderLayer(
            cfg.dim,
            cfg.heads,
            dim_feedforward=cfg.dim * 2,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, L] (item rows, PAD on the left) -> states [B, L, D]."""
        length = seq.shape[1]
        pos = torch.arange(length, device=seq.device)
        x = self.items(seq) * math.sqrt(self.cfg.dim) + self.positions(pos)[None]
        x = x * (seq != PAD).unsqueeze(-1)  # padding carries nothing (SASRec's timeline mask)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        return self.norm(self.encoder(self.drop(x), mask=causal))

    def last_state(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, D]: the state after each sequence's last item (padding on the left)."""
        return self.forward(seq)[:, -1]


def text_init(text: np.ndarray, dim: int, has_text: np.ndarray | None = None) -> np.ndarray:
    """MiniLM title embeddings [I, 384] -> [I, dim] initial item embeddings: their first ``dim``
    principal components, scaled to SASRec's initial norm; an item without a title (``has_text``
    False) gets a small random vector instead. At least one item has a title."""
    x = text.astype(np.float64)
    mask = np.ones(len(x), dtype=bool) if has_text is None else np.asarray(has_text, dtype=bool)
    mean = x[mask].mean(axis=0)
    _, _, vt = np.linalg.svd(x[mask] - mean, full_matrices=False)
    basis = vt[:dim].T  # [384, dim]
    out = (x - mean) @ basis
    if basis.shape[1] < dim:
        out = np.pad(out, ((0, 0), (0, dim - basis.shape[1])))
    out /= max(float(np.linalg.norm(out[mask], axis=1).mean()), 1e-9)
    rng = np.random.default_rng(0)
    out[~mask] = rng.normal(scale=dim**-0.5, size=(int((~mask).sum()), dim))
    return (out * 0.5).astype(np.float32)


def sequences(events: pd.DataFrame, users: IdMap, items: IdMap) -> dict[int, list[int]]:
    """user row -> their known items (rows of ``items``) in the order first touched."""
    frame = events[[n.USER_ID, n.ITEM_ID, n.EVENT_TIMESTAMP]].assign(
        u=users.encode(events[n.USER_ID]), i=items.encode(events[n.ITEM_ID])
    )
    frame = frame[(frame.u >= 0) & (frame.i >= 0)].sort_values(n.EVENT_TIMESTAMP, kind="stable")
    frame = frame.drop_duplicates(["u", "i"], keep="first")
    return {int(u): g["i"].tolist() for u, g in frame.groupby("u", sort=False)}


def pad_left(seqs: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """Item rows -> [B, length] embedding rows (row + 1), the last ``length``, PAD on the left."""
    out = torch.zeros((len(seqs), length), dtype=torch.long)
    for b, s in enumerate(seqs):
        tail = list(s)[-length:]
        if tail:
            out[b, length - len(tail) :] = torch.as_tensor(tail, dtype=torch.long) + 1
    return out


def windows(seqs: dict[int, list[int]], length: int) -> torch.Tensor:
    """Training windows [W, length + 1]: each sequence cut into pieces of ``length + 1`` items
    (inputs and next-item targets), from its end, PAD on the left of the shortest."""
    pieces = []
    for s in seqs.values():
        for end in range(len(s), 1, -length):
            pieces.append(s[max(0, end - length - 1) : end])
    return pad_left(pieces, length + 1)


class SequenceModel:
    """SASRec trained on the shoppers' item sequences; scores every item after a sequence."""

    def __init__(self, n_items: int, cfg: SequenceConfig, init: np.ndarray | None = None):
        torch.manual_seed(cfg.seed)
        self.cfg, self.n_items = cfg, n_items
        self.net = SASRec(n_items, cfg, init)

    def _loss(self, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        h = self.net(inputs)  # [B, L, D]
        keep = (targets != PAD) & (inputs != PAD)
        h, y = h[keep], targets[keep]  # [N, D], [N] embedding rows
        table = self.net.items.weight
        if self.n_items <= self.cfg.full_softmax_items:
            logits = h @ table[1:].T  # [N, I]
            return nn.functional.cross_entropy(logits, y - 1)
        neg = torch.randint(1, self.n_items + 1, (self.cfg.negatives,), generator=gen)
        pos_logit = (h * table[y]).sum(-1, keepdim=True)  # [N, 1]
        neg_logit = h @ table[neg].T  # [N, K]
        neg_logit = neg_logit.masked_fill(neg[None] == y[:, None], -torch.inf)
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return nn.functional.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long))

    def fit(
        self,
        seqs: dict[int, list[int]],
        validate: Callable[[SequenceModel], float] | None = None,
        epochs: int | None = None,
        desc: str = "sasrec",
    ) -> dict[str, list[float]]:
        """Train on ``seqs``; with ``validate`` (validation NDCG@20 of the model), stop after
        ``patience`` epochs without a better one and keep the best epoch's weights."""
        data = windows(seqs, self.cfg.max_len)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)
        hist: dict[str, list[float]] = {"loss": [], "val_ndcg@20": [], "epoch_seconds": []}
        stopper = EarlyStop(self.cfg.patience)
        bar = tqdm(range(epochs or self.cfg.max_epochs), desc=desc, unit="epoch")
        for _ in bar:
            started = time.perf_counter()
            self.net.train()
            order = torch.randperm(len(data), generator=gen)
            total = 0.0
            for start in range(0, len(data), self.cfg.batch_size):
                loss = self._loss(data[order[start : start + self.cfg.batch_size]], gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
            self.net.eval()
            hist["loss"].append(total / max(1, math.ceil(len(data) / self.cfg.batch_size)))
            hist["epoch_seconds"].append(time.perf_counter() - started)
            if validate is None:
                continue
            score = validate(self)
            hist["val_ndcg@20"].append(score)
            bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}", val=f"{score:.4f}")
            if stopper.should_stop(score, self.net):
                break
        stopper.restore_best(self.net)
        self.net.eval()
        return hist

    @torch.no_grad()
    def scores(self, seqs: Sequence[Sequence[int]], length: int | None = None) -> np.ndarray:
        """Item-row sequences (oldest first) -> scores [B, I] for every item as the next."""
        states = self.net.last_state(pad_left(seqs, length or self.cfg.max_len))
        return (states @ self.net.items.weight[1:].T).numpy()

    def item_table(self) -> np.ndarray:
        """[I, D] the trained item embeddings (rows of the items it was trained on)."""
        return self.net.items.weight[1:].detach().numpy().copy()

    def scorer(self, seqs: dict[int, list[int]], length: int | None = None):
        """user rows [B] -> scores [B, I] after each user's sequence (models.evaluate's form)."""
        return lambda users: self.scores([seqs.get(int(u), []) for u in users], length)


def catalogue_table(
    trained: np.ndarray, items: IdMap, catalogue: IdMap, init: np.ndarray | None
) -> np.ndarray:
    """The serving item table [C, D]: the trained embedding of each catalogue item the model
    knew, else its title's initial embedding (``init`` [C, D], rows in catalogue order; zeros
    without titles)."""
    table = np.zeros((len(catalogue), trained.shape[1]), dtype=np.float32)
    if init is not None:
        table[:] = init
    rows = np.array([catalogue.index[i] for i in items.ids], dtype=np.int64)
    table[rows] = trained
    return table


class SequenceScorer:
    """The serving form: the transformer's weights and the catalogue's item table; scores
    every catalogue item after a shopper's recent items."""

    def __init__(self, net: SASRec, table: np.ndarray, length: int = SERVE_LENGTH) -> None:
        self.net = copy.deepcopy(net).eval()
        self.length = min(length, net.cfg.max_len)  # the positions it has
        self.table = torch.as_tensor(table, dtype=torch.float32)  # [C, D]
        self.placed = (self.table != 0).any(dim=1).numpy()  # [C] rows with a place
        with torch.no_grad():  # the input side reads the same table (PAD row first)
            self.net.items = nn.Embedding.from_pretrained(
                torch.cat([torch.zeros(1, table.shape[1]), self.table]), padding_idx=PAD
            )

    @classmethod
    def of(cls, model: SequenceModel) -> SequenceScorer:
        """A trained model over the items it was trained on (rows of its own item order)."""
        return cls(model.net, model.item_table())

    @classmethod
    def load(
        cls, state: dict[str, torch.Tensor], table: np.ndarray, config: dict
    ) -> SequenceScorer:
        """The serving form from saved weights (``torch.load(..., weights_only=True)``), the
        catalogue's item table [C, D] and the model's config (the artifact's manifest)."""
        cfg = SequenceConfig(**config)
        net = SASRec(state["items.weight"].shape[0] - 1, cfg)
        net.load_state_dict(state)
        return cls(net, table)

    @torch.no_grad()
    def scores(self, idx: Sequence[int]) -> np.ndarray | None:
        """Catalogue rows of the shopper's items, oldest first -> scores [C]; None without any."""
        if not len(idx):
            return None
        state = self.net.last_state(pad_left([list(idx)], self.length))[0]
        return (self.table @ state).numpy()
