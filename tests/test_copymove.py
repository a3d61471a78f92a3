"""Copy-move evidence on real photos with known copies: rotation, scaling, mirroring, JPEG
re-saves, and the photos that must not crash or alarm (flat, repetitive, tiny, huge)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cflnet_sdk.runtime.copymove import (
    SCORE_THRESHOLD,
    CopyMoveDetector,
    CopyMoveEvidence,
    RegionPair,
    _colliding,
    _confidence,
    _shared,
    _Verified,
)
from cflnet_sdk.training.data.ops import jpeg_roundtrip
from tests.conftest import photo_array

DETECTOR = CopyMoveDetector()


def copy_move(rgb: np.ndarray, source: tuple[float, float], target: tuple[float, float],
              radius: float, angle: float = 0.0, scale: float = 1.0,
              mirror: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rgb`` with a disk around ``source`` copied to ``target`` (rotated, scaled, mirrored).

    Returns the forgery, the mask of source and copy, and the 2x3 source -> target transform.
    """
    height, width = rgb.shape[:2]
    src_mask = np.zeros((height, width), np.uint8)
    cv2.circle(src_mask, (round(source[0]), round(source[1])), round(radius), 1, -1)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    linear = scale * np.array([[c, -s], [s, c]]) @ np.diag([-1.0 if mirror else 1.0, 1.0])
    transform = np.hstack([linear, (np.array(target) - linear @ np.array(source))[:, None]])
    moved = cv2.warpAffine(rgb, transform, (width, height), flags=cv2.INTER_LINEAR)
    dst_mask = cv2.warpAffine(src_mask, transform, (width, height), flags=cv2.INTER_NEAREST)
    forged = np.where(dst_mask[..., None] > 0, moved, rgb)
    return forged, (src_mask | dst_mask) > 0, transform


def same_transform(found: tuple, true: np.ndarray, tolerance: float = 3.0) -> bool:
    """Whether ``found`` (or its inverse: source and copy swap roles) moves points as ``true``."""
    points = np.array([[100.0, 100.0], [300.0, 100.0], [100.0, 300.0]])
    found = np.array(found)
    for candidate in (found, cv2.invertAffineTransform(found)):
        moved = points @ candidate[:, :2].T + candidate[:, 2]
        if np.abs(moved - (points @ true[:, :2].T + true[:, 2])).max() < tolerance:
            return True
    return False


def check_found(evidence: CopyMoveEvidence, mask: np.ndarray,
                transform: np.ndarray) -> RegionPair:
    """The map localises source and copy, and a pair carries the true transform: returned."""
    assert evidence.probability.shape == mask.shape
    assert evidence.probability.dtype == np.float32
    assert roc_auc_score(mask.ravel(), evidence.probability.ravel()) > 0.9
    assert evidence.score >= SCORE_THRESHOLD
    return next(pair for pair in evidence.pairs if same_transform(pair.transform, transform))


@pytest.mark.parametrize(("name", "source", "kwargs"), [
    ("astronaut", (0.3, 0.35), {"angle": 35.0}),
    ("coffee", (0.3, 0.35), {"mirror": True}),
    ("chelsea", (0.55, 0.3), {"scale": 1.25, "angle": -15.0}),
])
def test_finds_rotated_scaled_and_mirrored_copies(name: str, source: tuple[float, float],
                                                  kwargs: dict) -> None:
    rgb = photo_array(name)
    height, width = rgb.shape[:2]
    forged, mask, transform = copy_move(rgb, (source[0] * width, source[1] * height),
                                        (0.75 * width, 0.68 * height), 0.1 * height, **kwargs)
    pair = check_found(DETECTOR.analyse(forged), mask, transform)
    assert pair.mirrored == kwargs.get("mirror", False)


def test_finds_copy_after_jpeg_resave() -> None:
    rgb = photo_array("astronaut")
    forged, mask, transform = copy_move(rgb, (150, 180), (380, 330), 50, angle=20.0)
    check_found(DETECTOR.analyse(jpeg_roundtrip(forged, 80)), mask, transform)


def test_small_photo_and_json() -> None:
    rgb = cv2.resize(photo_array("astronaut"), (384, 256), interpolation=cv2.INTER_AREA)
    forged, mask, transform = copy_move(rgb, (110, 90), (280, 170), 32)
    evidence = DETECTOR.analyse(forged)
    check_found(evidence, mask, transform)
    summary = json.loads(json.dumps(evidence.to_dict()))
    pair = summary["pairs"][0]
    assert {"source_box", "target_box", "transform", "inliers", "area"} <= set(pair)
    x0, y0, x1, y1 = pair["target_box"]
    assert 0 <= x0 < x1 <= 384 and 0 <= y0 < y1 <= 256


def test_search_window_gives_the_whole_image_answer() -> None:
    """Regions are sought in a window around their keypoints and grown while they reach its
    cut sides: starting from the tightest window gives what the whole image gives."""
    rgb = photo_array("astronaut")
    forged, mask, transform = copy_move(rgb, (150, 170), (370, 340), 95, angle=25.0)
    tight = CopyMoveDetector(search_grow=0.0).analyse(forged)
    whole = CopyMoveDetector(search_grow=100.0).analyse(forged)
    check_found(tight, mask, transform)
    assert tight.score == pytest.approx(whole.score, abs=1e-3)
    assert ((tight.probability >= 0.5) == (whole.probability >= 0.5)).mean() > 0.999


def test_exact_copy_too_plain_for_keypoints_is_found_by_its_blocks() -> None:
    """Equal 8x8 blocks vote for a pure translation (keypoint transforms turned off here)."""
    rgb = photo_array("coffee")
    forged = rgb.copy()
    forged[300:350, 420:480] = rgb[40:90, 30:90]  # off the 8x8 grid: (390, 260)
    evidence = CopyMoveDetector(max_pairs=0).analyse(forged)
    assert evidence.score > 0
    pair = evidence.pairs[0]
    assert same_transform(pair.transform, np.array([[1.0, 0, 390], [0, 1.0, 260]]))


def test_only_blocks_that_cannot_be_equal_skip_the_sort() -> None:
    """Blocks whose hash bucket holds no other block are left out of the sort: every equal
    hash stays, in the same order, so the sorted pairs are those of sorting all blocks."""
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 50_000, dtype=np.uint64) * np.uint64(2)
    hashes[rng.choice(50_000, 400, replace=False)] = hashes[rng.choice(50_000, 400)]
    index = np.flatnonzero(rng.random(50_000) < 0.9)
    kept = _colliding(hashes, index)
    assert np.all(np.diff(kept) > 0) and len(kept) < len(index) / 3

    def pairs(chosen: np.ndarray) -> np.ndarray:
        order = chosen[np.argsort(hashes[chosen], kind="stable")]
        same = np.flatnonzero(hashes[order[1:]] == hashes[order[:-1]])
        return np.stack([order[same], order[same + 1]])

    assert pairs(kept).shape[1] > 0
    np.testing.assert_array_equal(pairs(kept), pairs(index))


def test_unedited_photos_stay_quiet() -> None:
    for name in ("astronaut", "coffee", "chelsea"):
        assert DETECTOR.analyse(photo_array(name)).score < SCORE_THRESHOLD


def test_repetitive_texture_stays_quiet() -> None:
    brick = photo_array("brick")  # a photographed brick wall: genuine repeated structure
    evidence = DETECTOR.analyse(brick)
    assert evidence.score < SCORE_THRESHOLD
    assert (evidence.probability >= 0.5).mean() < 0.05


@pytest.mark.parametrize("value", [0, 128, 255])
def test_flat_images(value: int) -> None:
    evidence = DETECTOR.analyse(np.full((300, 400, 3), value, np.uint8))
    assert evidence.score == 0.0 and not evidence.pairs
    assert not evidence.probability.any()


def test_noise_and_gradient_images() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 255, 512, dtype=np.uint8)[None, :, None], (256, 512, 3))
    for rgb in (noise, np.ascontiguousarray(ramp)):
        assert DETECTOR.analyse(rgb).score < SCORE_THRESHOLD


@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 8, 3), (20, 300, 3), (40, 40, 3), (64, 64)])
def test_tiny_images_give_an_empty_map(shape: tuple[int, ...]) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    evidence = DETECTOR.analyse(rgb)
    assert evidence.probability.shape == shape[:2]
    assert evidence.score == 0.0 and not evidence.pairs


def test_big_photo_in_bounded_time() -> None:
    rgb = cv2.resize(photo_array("astronaut"), (4000, 3000), interpolation=cv2.INTER_CUBIC)
    forged, mask, transform = copy_move(rgb, (1200, 1100), (2900, 2000), 350, angle=25.0)
    start = time.perf_counter()
    evidence = DETECTOR.analyse(forged)
    assert time.perf_counter() - start < 20  # 12 MP: about 1 s per megapixel or less
    assert evidence.probability.shape == (3000, 4000)
    assert any(same_transform(pair.transform, transform, tolerance=8.0)
               for pair in evidence.pairs)
    inside = evidence.probability[mask].mean()
    assert inside > 0.5 and evidence.probability[~mask].mean() < 0.05


def test_module_imports_no_torch() -> None:
    code = "import sys, cflnet_sdk.runtime.copymove; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def verified(transform: list[list[float]], target: tuple[slice, slice],
             source: tuple[slice, slice]) -> _Verified:
    masks = np.zeros((2, 100, 100), bool)
    masks[0][target], masks[1][source] = True, True
    return _Verified(np.array(transform), masks[0], masks[1], 0.9, 20, 0.0)


def pairs(*found: _Verified) -> tuple[list[_Verified], list[np.ndarray]]:
    """Verified pairs and their regions (source and copy), as ``_evidence`` passes them."""
    return list(found), [one.target | one.source for one in found]


def test_regions_other_moves_also_match_are_shared() -> None:
    """A row of windows matches itself under two shifts, and each pair covers part of the
    other's regions; a copy found twice under the same move shares nothing."""
    shift = [[1.0, 0, 30], [0, 1.0, 0]]
    once = verified(shift, (slice(0, 20), slice(30, 50)), (slice(0, 20), slice(0, 20)))
    again = verified(shift, (slice(0, 20), slice(32, 52)), (slice(0, 20), slice(2, 22)))
    assert _shared(*pairs(once, again)) == [0.0, 0.0]
    longer = verified([[1.0, 0, 60], [0, 1.0, 0]], (slice(0, 20), slice(60, 80)),
                      (slice(0, 20), slice(0, 20)))
    assert _shared(*pairs(once, longer)) == [0.5, 0.5]
    assert _shared(*pairs(once)) == [0.0]


def test_shared_regions_lower_the_confidence() -> None:
    found = verified([[1.0, 0, 30], [0, 1.0, 0]], (slice(0, 20), slice(30, 50)),
                     (slice(0, 20), slice(0, 20)))
    alone, shared = _confidence(found, 0.0, DETECTOR), _confidence(found, 1.0, DETECTOR)
    assert shared == pytest.approx(alone * (1 - DETECTOR.shared_discount))
