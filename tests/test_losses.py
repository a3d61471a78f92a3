"""The patch contrastive loss is paper Eq. 2, checked against a plain per-anchor loop; the image
score loss against the SDK's own ``image_score``."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from cflnet_sdk.training.losses import (  # noqa: E402
    CFLNetLoss,
    image_score_loss,
    patch_contrastive_loss,
    patch_labels,
    weighted_cross_entropy,
)


def eq2_loop(embeddings, mask, patch_size=4, temperature=0.1):
    """Eq. 2 written out anchor by anchor, in float64, from the DESIGN's words."""
    up = F.interpolate(embeddings.double(), size=mask.shape[-2:], mode="bilinear",
                       align_corners=True)
    z = F.normalize(F.avg_pool2d(up, patch_size).flatten(2).transpose(1, 2), dim=-1)
    labels = F.avg_pool2d(mask.double()[:, None], patch_size).flatten(1) > 0.5
    total = 0.0
    for b in range(z.shape[0]):
        sim = (z[b] @ z[b].T / temperature).tolist()
        y = labels[b].tolist()
        n = len(y)
        image = 0.0
        for i in range(n):
            positives = [j for j in range(n) if j != i and y[j] == y[i]]
            negatives = [k for k in range(n) if y[k] != y[i]]
            if not positives or not negatives:
                continue  # counts as 0 and still in the mean
            negative_sum = sum(math.exp(sim[i][k]) for k in negatives)
            terms = [-math.log(math.exp(sim[i][j]) / (math.exp(sim[i][j]) + negative_sum))
                     for j in positives]
            image += sum(terms) / len(terms)
        total += image / n
    return total / z.shape[0]


@pytest.fixture()
def case():
    torch.manual_seed(1221)
    embeddings = torch.randn(4, 16, 4, 4, requires_grad=True)
    mask = torch.zeros(4, 32, 32)
    mask[0, :, :12] = 1                    # mixed image
    mask[0, 0:2, 20:24] = 1                # a patch exactly half tampered: pristine
    mask[1] = 0                            # all pristine
    mask[2] = 1                            # all tampered
    mask[3] = (torch.rand(32, 32) > 0.6).float()
    return embeddings, mask


def test_equals_per_anchor_loop(case):
    embeddings, mask = case
    assert patch_labels(mask, 4)[0].view(8, 8)[0, 5].item() is False  # the tie is pristine
    got = patch_contrastive_loss(embeddings, mask).item()
    expected = eq2_loop(embeddings.detach(), mask)
    assert got == pytest.approx(expected, rel=1e-5)


def test_single_class_images_contribute_zero(case):
    embeddings, mask = case
    for b in (1, 2):
        loss = patch_contrastive_loss(embeddings[b:b + 1], mask[b:b + 1])
        assert loss.item() == 0.0


def test_gradient_matches_autograd_of_loop_formula(case):
    embeddings, mask = case
    patch_contrastive_loss(embeddings, mask).backward()
    analytic = embeddings.grad.clone()
    embeddings.grad = None
    torch.autograd.backward(_autograd_eq2(embeddings, mask))
    assert torch.isfinite(analytic).all()
    assert torch.allclose(analytic, embeddings.grad, atol=1e-6, rtol=1e-4)


def _autograd_eq2(embeddings, mask, patch_size=4, temperature=0.1):
    """Eq. 2 with dense masks, differentiated by autograd: the gradient reference."""
    up = F.interpolate(embeddings, size=mask.shape[-2:], mode="bilinear", align_corners=True)
    z = F.normalize(F.avg_pool2d(up, patch_size).flatten(2).transpose(1, 2), dim=-1)
    labels = patch_labels(mask, patch_size)
    total = 0
    for b in range(z.shape[0]):
        sim = z[b] @ z[b].T / temperature
        same = labels[b][:, None] == labels[b][None, :]
        positive = same & ~torch.eye(len(sim), dtype=torch.bool)
        lse = torch.logsumexp(sim.masked_fill(same, float("-inf")), dim=1, keepdim=True)
        valid = torch.isfinite(lse) & (positive.sum(1, keepdim=True) > 0)
        lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        per_anchor = (F.softplus(lse - sim) * positive).sum(1, keepdim=True)
        per_anchor = per_anchor / positive.sum(1, keepdim=True).clamp(min=1)
        total = total + (per_anchor * valid).mean()
    return total / z.shape[0]


def test_stable_for_low_temperature(case):
    embeddings, mask = case
    loss = patch_contrastive_loss(embeddings, mask, temperature=0.005)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(embeddings.grad).all()


def test_full_size_stride8_embeddings_are_upsampled(torch_threads):
    torch.manual_seed(0)
    embeddings = torch.randn(1, 8, 4, 4)
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:24, 8:24] = 1
    assert patch_contrastive_loss(embeddings, mask).item() == pytest.approx(
        eq2_loop(embeddings, mask), rel=1e-5)


def test_bf16_autocast_keeps_float32_similarities(case):
    embeddings, mask = case
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = patch_contrastive_loss(embeddings, mask)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(eq2_loop(embeddings.detach(), mask), rel=1e-5)


def test_weighted_cross_entropy_matches_torch():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8)
    mask = (torch.rand(2, 64, 64) > 0.5).float()
    up = F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=True)
    expected = F.cross_entropy(up, mask.long(), weight=torch.tensor([0.0892, 0.9108]))
    assert weighted_cross_entropy(logits, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_combined_loss_and_ce_only_ablation(case):
    embeddings, mask = case
    logits = torch.randn(4, 2, 4, 4)
    full = CFLNetLoss()(logits, embeddings, mask)
    ablation = CFLNetLoss(contrastive_weight=0.0)(logits, embeddings, mask)
    assert full["loss"].item() == pytest.approx(
        full["ce"].item() + full["contrastive"].item(), rel=1e-6)
    assert ablation["loss"].item() == pytest.approx(full["ce"].item(), rel=1e-6)
    assert ablation["contrastive"].item() == 0.0


def _logits_for(probability: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose tamper probability is ``probability`` (B, H, W)."""
    margin = torch.logit(probability.clamp(1e-4, 1 - 1e-4))
    return torch.stack([torch.zeros_like(margin), margin], dim=1)


def test_image_score_loss_is_bce_of_the_sdk_score():
    from cflnet_sdk.prediction import image_score

    torch.manual_seed(1)
    probability = torch.rand(3, 16, 16) * 0.3
    probability[0, 2:4, 2:4] = 0.95  # a few confident pixels on an unedited image
    mask = torch.zeros(3, 16, 16)
    mask[1, 5:9, 5:9] = 1  # images 1 and 2 are tampered, image 0 is not
    mask[2, 0, 0] = 1
    scores = torch.tensor([image_score(p.numpy()) for p in probability.double()],
                          dtype=torch.float64)
    expected = F.binary_cross_entropy(scores, torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    got = image_score_loss(_logits_for(probability.double()), mask)
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)


def test_image_score_loss_punishes_confident_pixels_on_unedited_photos_only():
    quiet = torch.full((1, 32, 32), 0.05)
    spotted = quiet.clone()
    spotted[0, :2, :5] = 0.99  # 10 pixels: the top 1% of 1024
    unedited, forged = torch.zeros(1, 32, 32), torch.zeros(1, 32, 32)
    forged[0, :2, :5] = 1
    assert image_score_loss(_logits_for(spotted), unedited) > 30 * image_score_loss(
        _logits_for(quiet), unedited)
    assert image_score_loss(_logits_for(spotted), forged) < 0.05
    logits = _logits_for(spotted).requires_grad_()
    image_score_loss(logits, unedited).backward()
    touched = logits.grad[0, 1].abs() > 0
    assert touched[:2, :5].all() and touched.sum() == 10  # only the top pixels are pushed


def test_image_weight_adds_the_image_term_and_is_off_by_default(case):
    embeddings, mask = case
    logits = torch.randn(4, 2, 4, 4)
    paper = CFLNetLoss()(logits, embeddings, mask)
    ours = CFLNetLoss(image_weight=0.5)(logits, embeddings, mask)
    assert paper["image"].item() == 0.0
    assert ours["image"].item() == pytest.approx(image_score_loss(logits, mask).item())
    assert ours["loss"].item() == pytest.approx(
        paper["loss"].item() + 0.5 * ours["image"].item(), rel=1e-6)
