"""Early stopping on a validation score, shared by the trained models (models.lightgcn,
models.sequence)."""

from __future__ import annotations

import math

import torch


class EarlyStop:
    """Keeps the best validation score's weights; stops after ``patience`` epochs without a
    better one."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.waited = patience, -math.inf, 0
        self.state: dict[str, torch.Tensor] | None = None

    def should_stop(self, score: float, model: torch.nn.Module) -> bool:
        if score > self.best:
            self.best, self.waited = score, 0
            self.state = {k: v.clone() for k, v in model.state_dict().items()}
            return False
        self.waited += 1
        return self.waited >= self.patience

    def restore_best(self, model: torch.nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)
