"""Losses that torch does not ship in the form a classifier sweep wants. Each takes the
model's output (logits, or log-probabilities for NLLLoss) and integer class targets."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class OneHotMSELoss(nn.Module):
    """Mean squared error between the logits and one-hot targets (as in Hui & Belkin, 2021)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(logits, F.one_hot(target, logits.shape[1]).to(logits.dtype))


class FocalLoss(nn.Module):
    """Multi-class focal loss: cross-entropy scaled by (1 - p_true)^gamma (Lin et al., 2017)."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        return (-(1 - log_p.exp()).pow(self.gamma) * log_p).mean()


def wants_log_probs(loss: nn.Module) -> bool:
    """NLLLoss expects log-probabilities, so the model must end in log-softmax."""
    return isinstance(loss, nn.NLLLoss)
