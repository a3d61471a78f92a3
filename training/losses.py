"""CFL-Net losses: class-weighted cross-entropy plus the patch contrastive loss (paper Eq. 2),
and, ours, a loss on the image-level score.

The contrastive loss is computed exactly as the paper writes it, one image at a time with an
analytic gradient, so no batch x 4096 x 4096 similarity tensor and none of autograd's copies of
it are ever kept: peak memory is a few patches^2 matrices of one image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from cflnet_sdk.prediction import TOP_FRACTION

CE_CLASS_WEIGHTS = (0.0892, 0.9108)  # pristine, tampered (DESIGN section 3)


def _resample_matrix(size_in: int, size_out: int, patch: int, device, dtype) -> torch.Tensor:
    """(size_out // patch, size_in) matrix = average-pool(patch) after bilinear upsampling
    (align_corners=True) from ``size_in`` to ``size_out``: both ops are linear, so one matmul
    per axis replaces materialising the full-resolution embedding map."""
    eye = torch.eye(size_in, device=device, dtype=dtype)[None]  # (1, size_in, size_in)
    upsampled = F.interpolate(eye, size=size_out, mode="linear", align_corners=True)
    return F.avg_pool1d(upsampled, patch, patch)[0].T  # (size_out // patch, size_in)


def patch_embeddings(embeddings: torch.Tensor, size: tuple[int, int], patch_size: int
                     ) -> torch.Tensor:
    """Embeddings (B, D, h, w) -> L2-normalised patch embeddings (B, N, D) on a ``size`` grid."""
    h, w = embeddings.shape[-2:]
    rows = _resample_matrix(h, size[0], patch_size, embeddings.device, embeddings.dtype)
    cols = _resample_matrix(w, size[1], patch_size, embeddings.device, embeddings.dtype)
    pooled = rows @ embeddings @ cols.T  # (B, D, H/p, W/p)
    return F.normalize(pooled.flatten(2).transpose(1, 2), dim=-1)


def patch_labels(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Binary mask (B, H, W) -> patch labels (B, N): tampered share > 0.5 (a tie is pristine)."""
    pooled = F.avg_pool2d(mask.float()[:, None], patch_size, patch_size)
    return pooled.flatten(1) > 0.5


CHUNK_ELEMENTS = 1 << 22  # 16 MiB of float32 per temporary: reused by malloc, not re-faulted


def _anchor_block(z: torch.Tensor, lse_negative: torch.Tensor, temperature: float,
                  need_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Loss of the anchors of one class against their positives (the rest of the class).

    For anchor i with negatives' m_i = logsumexp_k s_ik, each positive term of Eq. 2 is
    -log(e^{s_ij} / (e^{s_ij} + e^{m_i})) = softplus(m_i - s_ij): stable, and free of the
    authors' column-max shift. Returns the loss sum, dL/dm_i and dL/dz through this block's
    similarities (or None). Anchors go in row chunks, so temporaries stay small.
    """
    n = z.shape[0]
    if n < 2:  # a lone anchor has no positive: it counts 0
        return z.new_zeros(()), z.new_zeros(n), None
    weight = 1.0 / (n - 1)  # every anchor of the class has n - 1 positives
    loss, pull_sums = z.new_zeros(()), z.new_empty(n)
    grad = torch.zeros_like(z) if need_grad else None
    step = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        margin = torch.addmm(lse_negative[rows, None], z[rows], z.T, alpha=-1.0 / temperature)
        margin[:, rows].diagonal().fill_(float("-inf"))  # j != i: softplus = sigmoid = 0
        loss += F.softplus(margin).sum()
        if grad is not None:
            pull = margin.sigmoid_()  # -dL/ds_ij / weight; s = z z^T feeds both factors
            pull_sums[rows] = pull.sum(dim=1)
            grad[rows].addmm_(pull, z, alpha=-weight)
            grad.addmm_(pull.T, z[rows], alpha=-weight)
    return loss * weight, pull_sums * weight, grad


def _image_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float, need_grad: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum over the anchors of one image and its gradient w.r.t. ``z`` (patches, dim).

    Patches are split by label, so positives and negatives are dense blocks of the similarity
    matrix and no N x N mask is ever built; an image of one class has no negatives: loss 0.
    """
    pristine, tampered = (~labels).nonzero()[:, 0], labels.nonzero()[:, 0]
    if len(pristine) == 0 or len(tampered) == 0:
        return z.new_zeros(()), (torch.zeros_like(z) if need_grad else None)
    z0, z1 = z[pristine], z[tampered]
    cross = z0 @ z1.T / temperature  # s between pristine (rows) and tampered (columns)
    lse0, lse1 = torch.logsumexp(cross, dim=1), torch.logsumexp(cross, dim=0)
    loss0, dm0, grad0 = _anchor_block(z0, lse0, temperature, need_grad)
    loss1, dm1, grad1 = _anchor_block(z1, lse1, temperature, need_grad)
    if not need_grad:
        return loss0 + loss1, None
    # d m_i / d s_ik is the softmax over anchor i's negatives (rows for class 0, columns for 1)
    grad01 = (cross - lse0[:, None]).exp_().mul_(dm0[:, None])
    grad01 += (cross - lse1[None, :]).exp_().mul_(dm1[None, :])
    grad = torch.zeros_like(z)
    grad[pristine] = grad01 @ z1
    grad[tampered] = grad01.T @ z0
    if grad0 is not None:
        grad[pristine] += grad0
    if grad1 is not None:
        grad[tampered] += grad1
    return loss0 + loss1, grad / temperature


class _PatchContrast(torch.autograd.Function):
    """Sum of the anchor losses; its gradient is computed with the loss, image by image."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
        need_grad = ctx.needs_input_grad[0]
        results = [_image_loss(z[b], labels[b], temperature, need_grad) for b in range(len(z))]
        ctx.save_for_backward(torch.stack([g for _, g in results]) if need_grad else None)
        return torch.stack([loss for loss, _ in results]).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        (grad_z,) = ctx.saved_tensors
        return grad_output * grad_z, None, None


def patch_contrastive_loss(embeddings: torch.Tensor, mask: torch.Tensor, patch_size: int = 4,
                           temperature: float = 0.1) -> torch.Tensor:
    """Paper Eq. 2: supervised contrastive loss between patch embeddings of each image.

    ``embeddings`` (B, D, h, w) at any stride are brought to the mask size (bilinear,
    align_corners=True), average-pooled per ``patch_size`` patch and L2-normalised; ``mask``
    (B, H, W) or (B, 1, H, W) is binary with tampered = 1. Anchors without a positive or a
    negative contribute 0 and still count in the mean over anchors; the batch mean follows.
    """
    if mask.dim() == 4:
        mask = mask[:, 0]
    with torch.autocast(embeddings.device.type, enabled=False):  # similarities need float32
        z = patch_embeddings(embeddings.float(), mask.shape[-2:], patch_size)
        labels = patch_labels(mask, patch_size)
        total = _PatchContrast.apply(z, labels, temperature)
    return total / (z.shape[0] * z.shape[1])


def _upsampled(logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits bilinearly upsampled (align_corners=True) to the mask's size, and the mask as
    (B, H, W): where the inference output is defined, so the losses see what users see."""
    if mask.dim() == 4:
        mask = mask[:, 0]
    logits = F.interpolate(logits.float(), size=mask.shape[-2:], mode="bilinear",
                           align_corners=True)
    return logits, mask


def weighted_cross_entropy(logits: torch.Tensor, mask: torch.Tensor,
                           class_weights: tuple[float, ...] = CE_CLASS_WEIGHTS) -> torch.Tensor:
    """Class-weighted CE on logits upsampled to the mask size (bilinear, align_corners=True)."""
    logits, mask = _upsampled(logits, mask)
    weight = torch.tensor(class_weights, device=logits.device, dtype=logits.dtype)
    return F.cross_entropy(logits, mask.long(), weight=weight)


def image_score_loss(logits: torch.Tensor, mask: torch.Tensor,
                     top_fraction: float = TOP_FRACTION) -> torch.Tensor:
    """Binary cross-entropy of each image's score against whether any of it was tampered.

    The score is the SDK's ``Prediction.score``: the mean of the image's top ``top_fraction``
    tamper probabilities at the mask size. Ours, not the paper's: its pixel CE weighs an
    unedited photo's pixels by 0.0892 each, so a handful of confident pixels costs almost
    nothing, yet they alone are what calls an unedited photo tampered. Supervising the
    image-level score directly is how MVSS-Net (Chen et al., ICCV 2021) keeps false alarms down.
    """
    logits, mask = _upsampled(logits, mask)
    probability = logits.softmax(dim=1)[:, 1].flatten(1)
    count = max(1, round(probability.shape[1] * top_fraction))
    score = probability.topk(count, dim=1).values.mean(dim=1)
    tampered = mask.flatten(1).any(dim=1).to(score.dtype)
    return F.binary_cross_entropy(score.clamp(1e-6, 1 - 1e-6), tampered)


class CFLNetLoss(nn.Module):
    """CE + ``contrastive_weight`` x patch contrastive loss (+ ``image_weight`` x the image-score
    loss, ours: 0, the paper's, by default); contrastive weight 0 is the CE-only ablation."""

    def __init__(self, contrastive_weight: float = 1.0, patch_size: int = 4,
                 temperature: float = 0.1, class_weights: tuple[float, ...] = CE_CLASS_WEIGHTS,
                 image_weight: float = 0.0):
        super().__init__()
        self.contrastive_weight = contrastive_weight
        self.patch_size = patch_size
        self.temperature = temperature
        self.class_weights = class_weights
        self.image_weight = image_weight

    def forward(self, logits: torch.Tensor, embeddings: torch.Tensor, mask: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        ce = weighted_cross_entropy(logits, mask, self.class_weights)
        contrastive = image = torch.zeros_like(ce)
        if self.contrastive_weight:
            contrastive = patch_contrastive_loss(embeddings, mask, self.patch_size,
                                                 self.temperature)
        if self.image_weight:
            image = image_score_loss(logits, mask)
        loss = ce + self.contrastive_weight * contrastive + self.image_weight * image
        return {"loss": loss, "ce": ce, "contrastive": contrastive, "image": image}
