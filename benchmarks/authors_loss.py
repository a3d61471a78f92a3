"""A direct re-implementation of the authors' contrastive-loss formulation, for benchmarks only.

It follows the steps of their training code: full (B, N, N) similarity, the diagonal zeroed,
a per-column max subtracted before exp, dense masks, and autograd through every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def authors_patch_contrastive_loss(embeddings: torch.Tensor, mask: torch.Tensor,
                                   patch_size: int = 4, temperature: float = 0.1
                                   ) -> torch.Tensor:
    size = mask.shape[-2:]
    features = F.interpolate(embeddings, size=size, mode="bilinear", align_corners=True)
    features = F.avg_pool2d(features, patch_size, patch_size)
    b, c = features.shape[:2]
    features = F.normalize(features.view(b, c, -1).transpose(1, 2), dim=-1)
    labels = F.avg_pool2d(mask.float()[:, None], patch_size, patch_size)
    labels = (labels > 0.5).float().view(b, 1, -1)

    same = torch.eq(labels, labels.transpose(1, 2)).float()
    different = 1 - same
    logits = torch.matmul(features, features.transpose(1, 2)) / temperature
    off_diagonal = 1 - torch.eye(logits.shape[-1])
    logits = logits * off_diagonal
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    logits = torch.exp(logits)
    negatives = torch.sum(logits * different, dim=-1)
    ratio = logits / (logits + negatives.unsqueeze(-1) + 1e-18)
    loss = -torch.log(ratio + 1e-18) * same * off_diagonal
    loss = loss.sum(dim=-1) / (same.sum(dim=-1) - 1 + 1e-18)
    return loss.mean(dim=-1).mean()
