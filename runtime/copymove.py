"""Copy-move evidence: regions of a photo that were copied to another place in the same photo.

A copy carries the photo's own noise, demosaicing and compression, so trace detectors such as
CFL-Net cannot see it; matching the photo against itself can. The method (written here from the
published descriptions; no code was taken from their GPL/AGPL implementations):

1. SIFT keypoints on the grey photo at a reduced working size, each with its descriptor and the
   descriptor of its mirror image (a fixed permutation of the SIFT bins), so flipped copies match.
2. Self-matching with the generalised 2NN test (Amerini et al., 2011): a keypoint matches its
   nearest neighbours while each is clearly closer than the next; itself, its own mirror and
   points nearer than ``min_offset`` never count.
3. Matches are grouped by where they start and end, and each group gets a RANSAC similarity
   transform (source -> target). Transforms that scale too much or move by less than
   ``min_offset`` are dropped. Exact copies too small or plain for keypoints are proposed as
   pure translations by hashing every 8x8 block and counting the offsets of equal blocks.
4. Dense verification: the photo's detail is warped by each transform and by its inverse and
   compared with itself by local normalised cross-correlation; regions that agree, contain the
   matched points and are large enough are the copy and its source. Genuine look-alikes
   (windows, tiles, twin objects) match as keypoints but rarely pixel by pixel; periodic or
   symmetric structure, which also matches under the transform applied twice, and repeated
   structure, whose regions several moves match, are discounted.

Matching runs at ``match_max_side`` and verification at ``verify_max_pixels`` at most, so a
50-megapixel photo costs bounded memory: the only full-size arrays are the caller's photo and
the returned map. Imports numpy and OpenCV only (no torch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from cflnet_sdk.errors import ImageError

# The operating point of ``CopyMoveEvidence.score``: the training photos' 0.5% point (0.5465, as
# they are and re-saved at q75), rounded up; `python benchmarks/copymove.py operating-point`
# chooses it and docs/copymove.md gives what it costs.
SCORE_THRESHOLD = 0.55
_SPARE_NEIGHBOURS = 8  # extra neighbours fetched to replace those too close in the photo
_MIN_SIDE = 32  # smaller photos hold nothing a copy-move detector can verify
_EPS = 1e-6
_EDGE = 8  # pixels by which filters near a window's cut side differ from the whole image's


@dataclass(frozen=True)
class RegionPair:
    """One copied region: where it came from, where it went, and the transform between them.

    Boxes are ``(x0, y0, x1, y1)`` in the photo's pixels (x1, y1 exclusive); ``transform`` is the
    2x3 affine matrix mapping source coordinates to target coordinates at the photo's size.
    """

    source_box: tuple[int, int, int, int]
    target_box: tuple[int, int, int, int]
    transform: tuple[tuple[float, float, float], tuple[float, float, float]]
    inliers: int  # keypoint matches that agree with the transform
    area: int  # pixels of the photo marked as source or copy by this pair
    similarity: float  # mean local correlation inside the verified regions, in [0, 1]
    mirrored: bool  # the copy was flipped (the transform reverses orientation)
    confidence: float  # this pair's share of the image-level score, in [0, 1]

    def to_dict(self) -> dict:
        """JSON-ready fields (lists, ints, floats, bools)."""
        out = asdict(self)
        out["source_box"], out["target_box"] = list(self.source_box), list(self.target_box)
        out["transform"] = [list(row) for row in self.transform]
        return out


@dataclass(frozen=True)
class CopyMoveEvidence:
    """What :meth:`CopyMoveDetector.analyse` found in one photo."""

    probability: np.ndarray  # float32 HxW in [0, 1] at the photo's size: sources and copies
    score: float  # image-level copy-move score in [0, 1]; 0 when nothing was verified
    pairs: list[RegionPair] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready summary: score, image size, flagged share and pairs (not the map)."""
        height, width = self.probability.shape[:2]
        flagged = (float((self.probability >= SCORE_THRESHOLD).mean()) if self.probability.size
                   else 0.0)
        return {"score": self.score, "height": height, "width": width,
                "flagged_share": flagged, "pairs": [pair.to_dict() for pair in self.pairs]}


@dataclass(frozen=True)
class _Matches:
    """Keypoint matches at the working scale: ``src[i] -> dst[i]``, both directions present."""

    src: np.ndarray  # (M, 2) float32
    dst: np.ndarray  # (M, 2) float32
    distance: np.ndarray  # (M,) descriptor distance, smaller is surer
    reverse: np.ndarray  # (M,) index of the same match in the other direction
    mirrored: np.ndarray  # (M,) bool: matched a mirrored descriptor (a flipped copy)


@dataclass(frozen=True)
class _Verified:
    """A transform confirmed pixel by pixel, at the verification scale."""

    transform: np.ndarray  # 2x3 source -> target, verification scale
    target: np.ndarray  # bool mask of the copy
    source: np.ndarray  # bool mask of the source
    similarity: float
    inliers: int
    repeats: float  # how well the copy also matches the photo moved twice (see _repeats)


@dataclass(frozen=True)
class CopyMoveDetector:
    """Finds copy-moves by keypoint self-matching and dense verification.

    Defaults were chosen by measurement on NoSo, a synthetic copy-move set and unedited camera
    photos (``benchmarks/copymove.py``, ``docs/copymove.md``).
    """

    match_max_side: int = 1600  # keypoints are found at this longest side at most (speed)
    verify_max_pixels: int = 4_000_000  # dense verification size cap (memory on huge photos)
    max_keypoints: int = 8000  # strongest SIFT keypoints kept
    contrast_threshold: float = 0.01  # SIFT's; lower than its 0.04 to reach flat copies
    ratio: float = 0.7  # generalised 2NN: next neighbour accepted while d_k / d_k+1 < ratio
    neighbours: int = 8  # nearest neighbours examined per keypoint
    min_offset: float = 0.015  # shortest copy displacement, as a share of the diagonal
    min_inliers: int = 3  # matches a transform needs before it is verified
    ransac_threshold: float = 3.0  # RANSAC reprojection error, pixels at the working scale
    group_radius: float = 0.15  # matches grouped within this share of the longest side
    max_scale: float = 3.0  # copies scaled by more than this (or less than 1/this) are ignored
    max_pairs: int = 8  # keypoint transforms verified per photo, most inliers first
    min_block_variance: float = 1.0  # grey variance an 8x8 block needs to vote (JPEG-flat: no)
    min_votes: int = 24  # equal 8x8 blocks needed to propose a pure translation
    max_translations: int = 3  # translations proposed by identical blocks
    window: int = 7  # correlation window, pixels at the verification scale
    search_grow: float = 0.5  # regions are first sought this share of their points' extent out
    fine_sigma: float = 0.8  # detail compared = grey blurred by this sigma (JPEG noise out)
    detail_sigma: float = 3.0  # ... minus grey blurred by this one (shading and gradients out)
    similarity_threshold: float = 0.6  # local correlation that counts as a copy
    min_area: float = 0.0005  # smallest verified region, as a share of the photo
    min_similarity: float = 0.75  # mean correlation a verified region must reach
    support_inliers: float = 4.0  # confidence: similarity^3 * (1 - exp(-inliers / this))
    repeat_discount: float = 0.5  # ... * (1 - this * repeats): periodic and symmetric structure
    shared_discount: float = 0.5  # ... * (1 - this * shared): regions other moves match too

    def analyse(self, rgb: np.ndarray) -> CopyMoveEvidence:
        """Copy-move evidence for an HxWx3 uint8 RGB photo (HxW grey accepted) at its own size."""
        if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
            raise ImageError(f"copy-move analysis needs an HxWx3 uint8 RGB array, got "
                             f"{rgb.dtype} with shape {rgb.shape}; decode it with "
                             "cflnet_sdk.images.load_image first")
        height, width = rgb.shape[:2]
        if min(height, width) < _MIN_SIDE:
            return _empty(height, width)
        grey, verify_scale = _grey(rgb, self.verify_max_pixels)
        match_scale = min(1.0, self.match_max_side / max(grey.shape))
        small = _resized(grey, match_scale)
        transforms = _transforms(_self_matches(small, self), small.shape, self)
        if small.shape == (height, width):  # resizing breaks the equality of copied pixels
            transforms += _new(_translations(small, self), transforms)
        detail = _Detail.of(grey, self)
        verified = []
        for transform, src, dst in transforms:
            found = _verify(detail, _rescale(transform, 1 / match_scale), src / match_scale,
                            dst / match_scale, self)
            if found is not None:
                verified.append(found)
        return _evidence(verified, (height, width), verify_scale, self)


def _empty(height: int, width: int) -> CopyMoveEvidence:
    return CopyMoveEvidence(np.zeros((height, width), np.float32), 0.0, [])


def _grey(rgb: np.ndarray, max_pixels: int) -> tuple[np.ndarray, float]:
    """The grey photo shrunk to at most ``max_pixels`` (area-averaged), and the scale used.

    Shrinks before converting so no full-size grey or float copy of a huge photo is made.
    """
    height, width = rgb.shape[:2]
    scale = min(1.0, (max_pixels / (height * width)) ** 0.5)
    small = _resized(np.ascontiguousarray(rgb), scale)
    if small.ndim == 3:
        small = cv2.cvtColor(np.ascontiguousarray(small[..., :3]), cv2.COLOR_RGB2GRAY)
    return small, scale


def _resized(image: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _keypoints(grey: np.ndarray, params: CopyMoveDetector) -> tuple[np.ndarray, ...]:
    """Keypoint positions, RootSIFT descriptors, and the descriptors of their mirror images.

    Mirroring a patch about its keypoint's orientation axis flips the SIFT grid's rows and
    negates every orientation bin: the mirrored descriptor costs a permutation, not a second
    SIFT pass (checked against SIFT on the flipped photo: identical).
    """
    sift = cv2.SIFT_create(nfeatures=params.max_keypoints,
                           contrastThreshold=params.contrast_threshold)
    keypoints, desc = sift.detectAndCompute(grey, None)
    if desc is None or len(keypoints) < 2:
        empty = np.zeros((0, 2), np.float32)
        return empty, np.zeros((0, 128), np.float32), np.zeros((0, 128), np.float32)
    points = np.array([k.pt for k in keypoints], np.float32)
    desc = np.sqrt(desc / (desc.sum(1, keepdims=True) + _EPS))  # RootSIFT: Hellinger distance
    mirrored = desc.reshape(-1, 4, 4, 8)[:, ::-1][..., (8 - np.arange(8)) % 8].reshape(-1, 128)
    return points, desc.astype(np.float32), np.ascontiguousarray(mirrored, np.float32)


def _self_matches(grey: np.ndarray, params: CopyMoveDetector) -> _Matches:
    """Generalised-2NN matches of the photo's keypoints among themselves and their mirrors.

    Neighbours come from FLANN's randomised k-d trees (an exact search costs seconds on
    8000 keypoints); a copy's descriptors are near-identical, which approximate search finds
    with 2 trees and 32 leaves checked as well as with 4 and 64, in about half the time
    (docs/copymove.md).
    """
    points, desc, mirrored = _keypoints(grey, params)
    count = len(points)
    if count < 3:
        return _as_matches(points, np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32))
    base = np.concatenate([desc, mirrored])
    k = min(params.neighbours + _SPARE_NEIGHBOURS, len(base))
    cv2.setRNGSeed(0)
    index = cv2.flann_Index(base, {"algorithm": 1, "trees": 2})  # 1: randomised k-d trees
    found, squared = index.knnSearch(desc, k, params={"checks": 32})
    found = found.astype(np.int64)
    dist = np.sqrt(np.maximum(squared, 0))
    offsets = points[found % count] - points[:, None]
    dist[np.hypot(offsets[..., 0], offsets[..., 1]) < _min_offset(grey.shape, params)] = np.inf
    order = np.argsort(dist, axis=1, kind="stable")[:, :params.neighbours + 1]
    return _as_matches(points, np.take_along_axis(found, order, 1),
                       np.take_along_axis(dist, order, 1), params.ratio)


def _min_offset(shape: tuple[int, ...], params: CopyMoveDetector) -> float:
    return max(6.0, params.min_offset * float(np.hypot(*shape[:2])))


def _as_matches(points: np.ndarray, found: np.ndarray, dist: np.ndarray,
                ratio: float = 0.0) -> _Matches:
    """Generalised 2NN over each keypoint's sorted neighbours, as unique matches both ways.

    The k-th neighbour counts while d_j / d_(j+1) < ratio for every j <= k (Amerini et al.); a
    mirror-image neighbour (index >= count) stands for its keypoint, flipped.
    """
    count = len(points)
    passed = (dist[:, :-1] < ratio * dist[:, 1:]) & np.isfinite(dist[:, :-1])
    accepted = np.cumprod(passed, axis=1).astype(bool) if passed.size else passed
    query, cols = np.nonzero(accepted)
    other, distance = found[query, cols], dist[query, cols].astype(np.float32)
    mirror = other >= count
    other = other % max(count, 1)
    key = np.minimum(query, other) * (2 * count) + np.maximum(query, other) * 2 + mirror
    _, first = np.unique(key, return_index=True)
    query, other, distance = query[first], other[first], distance[first]
    total = len(query)
    src = np.concatenate([points[query], points[other]]).reshape(-1, 2)
    dst = np.concatenate([points[other], points[query]]).reshape(-1, 2)
    reverse = np.concatenate([np.arange(total) + total, np.arange(total)])
    return _Matches(src, dst, np.concatenate([distance, distance]), reverse,
                    np.concatenate([mirror[first], mirror[first]]))


def _transforms(matches: _Matches, shape: tuple[int, ...],
                params: CopyMoveDetector) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Affine transforms (source -> target) of groups of matches, surest first, with inliers.

    Each still-unexplained match, surest first, seeds a group of the matches (flipped or not,
    like the seed) that start near its start and end near its end; RANSAC fits the group, then
    the fit collects every match it explains, and those (in both directions) are explained.
    A transform and its inverse are found once; the ``max_pairs`` with most inliers are kept.
    """
    radius = params.group_radius * max(shape[:2])
    free = np.ones(len(matches.src), bool)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for seed in np.argsort(matches.distance, kind="stable"):
        if not free[seed]:
            continue
        free[seed] = free[matches.reverse[seed]] = False
        same_kind = matches.mirrored == matches.mirrored[seed]
        group = np.append(np.nonzero(free & same_kind & _near(matches, seed, radius))[0], seed)
        fit = _fit(matches.src[group], matches.dst[group], bool(matches.mirrored[seed]), params)
        if fit is None:
            continue
        inliers = np.nonzero(_residuals(fit, matches.src, matches.dst)
                             < params.ransac_threshold)[0]
        if len(inliers) < params.min_inliers:
            continue
        free[inliers] = free[matches.reverse[inliers]] = False
        if _plausible(fit, matches.src[inliers], matches.dst[inliers], shape, params):
            found.append((fit, matches.src[inliers], matches.dst[inliers]))
    found.sort(key=lambda candidate: -len(candidate[1]))
    return found[:params.max_pairs]


def _near(matches: _Matches, seed: int, radius: float) -> np.ndarray:
    start = np.abs(matches.src - matches.src[seed]).max(1) <= radius
    return start & (np.abs(matches.dst - matches.dst[seed]).max(1) <= radius)


def _fit(src: np.ndarray, dst: np.ndarray, mirrored: bool,
         params: CopyMoveDetector) -> np.ndarray | None:
    """RANSAC similarity transform (rotation, uniform scale, shift; flipped for mirrored
    matches), refined on its inliers; None when too few matches agree.

    Copies are moved, turned, resized and flipped, not sheared: two matches fix a similarity,
    so small copies with few keypoints still get one, and shears never pass as copies.
    """
    if len(src) < params.min_inliers:
        return None
    flip = np.array([-1.0 if mirrored else 1.0, 1.0], np.float32)
    transform, inliers = cv2.estimateAffinePartial2D(
        src * flip, dst, method=cv2.RANSAC, ransacReprojThreshold=params.ransac_threshold,
        maxIters=500, refineIters=10)
    if transform is None or int(inliers.sum()) < params.min_inliers:
        return None
    transform[:, 0] *= flip[0]
    return transform


def _residuals(transform: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    return np.linalg.norm(src @ transform[:, :2].T + transform[:, 2] - dst, axis=1)


def _plausible(transform: np.ndarray, src: np.ndarray, dst: np.ndarray, shape: tuple[int, ...],
               params: CopyMoveDetector) -> bool:
    """False for transforms that genuine photos produce: degenerate, tiny moves, point clumps."""
    singular = np.linalg.svd(transform[:, :2], compute_uv=False)
    if singular[1] < 1 / params.max_scale or singular[0] > params.max_scale:
        return False
    if np.median(np.linalg.norm(dst - src, axis=1)) < _min_offset(shape, params):
        return False
    distinct = np.unique(np.round(src / 3.0), axis=0)
    return len(distinct) >= min(3, params.min_inliers)


def _translations(grey: np.ndarray,
                  params: CopyMoveDetector) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pure translations voted for by identical blocks: copies too small or flat for keypoints.

    Every 8x8 block is summarised by its 16 2x2-cell sums and hashed; sorting the hashes puts
    equal blocks side by side, and each side-by-side pair votes for its offset. Only exact
    copies vote (a coarser, JPEG-tolerant quantisation added nothing measurable but false
    alarms); blocks of nearly constant grey never vote.
    """
    if min(grey.shape) < 16:
        return []
    values = grey.astype(np.float32)
    cells = cv2.boxFilter(values, -1, (2, 2), normalize=False, anchor=(0, 0))
    mean = cv2.boxFilter(values, -1, (8, 8), anchor=(0, 0))
    variance = cv2.boxFilter(values * values, -1, (8, 8), anchor=(0, 0)) - mean * mean
    height, width = grey.shape[0] - 7, grey.shape[1] - 7
    textured = variance[:height, :width] >= params.min_block_variance
    votes = _offset_votes(_block_hashes(cells, height, width), textured,
                          _min_offset(grey.shape, params), params)
    return [(np.array([[1, 0, offset[0]], [0, 1, offset[1]]], np.float64), src + 3.5,
             src + 3.5 + offset) for offset, src in votes]


def _block_hashes(cells: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 64-bit hash per 8x8 block of its 16 2x2-cell sums.

    A sum of four bytes fits in 10 bits, so each row of four cells packs exactly into 40 bits;
    the block's four rows are then hashed (half the passes of hashing cell by cell).
    """
    sums = cells.astype(np.uint64)
    rows = sums[:, :width] << np.uint64(30)
    for shift, col in ((20, 2), (10, 4), (0, 6)):
        rows |= sums[:, col:col + width] << np.uint64(shift)
    hashes = rows[:height].copy()
    with np.errstate(over="ignore"):
        for row in (2, 4, 6):
            hashes *= np.uint64(0x9E3779B97F4A7C15)
            hashes += rows[row:row + height]
    return hashes


def _colliding(hashes: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The blocks of ``index`` whose hash's top bits another block of ``index`` shares.

    Equal blocks always do, so sorting only these finds the same pairs in the same order as
    sorting all, for a fraction of the blocks: with four buckets per block, about a fifth.
    """
    bits = max(1, int(np.ceil(np.log2(4 * max(len(index), 1)))))
    buckets = (hashes[index] >> np.uint64(64 - bits)).astype(np.intp)
    return index[np.bincount(buckets, minlength=1 << bits)[buckets] > 1]


def _offset_votes(hashes: np.ndarray, valid: np.ndarray, min_offset: float,
                  params: CopyMoveDetector) -> list[tuple[np.ndarray, np.ndarray]]:
    """Offsets (dx, dy) shared by at least ``min_votes`` equal-block pairs, most voted first."""
    width = hashes.shape[1]
    index = _colliding(hashes.ravel(), np.flatnonzero(valid))
    order = index[np.argsort(hashes.ravel()[index], kind="stable")]
    same = np.flatnonzero(hashes.ravel()[order[1:]] == hashes.ravel()[order[:-1]])
    first, second = order[same], order[same + 1]
    dx = second % width - first % width
    dy = second // width - first // width
    flip = (dy < 0) | ((dy == 0) & (dx < 0))
    dx, dy = np.where(flip, -dx, dx), np.where(flip, -dy, dy)
    start = np.where(flip, second, first)
    # JPEG decodes equal coefficient blocks to equal pixels, so flat areas repeat on the 8x8 grid
    off_grid = (dx % 8 != 0) | (dy % 8 != 0)
    far = (np.hypot(dx, dy) >= min_offset) & off_grid
    dx, dy, start = dx[far], dy[far], start[far]
    key = dy * (4 * width) + dx + 2 * width
    _, inverse, votes = np.unique(key, return_inverse=True, return_counts=True)
    ranked = np.argsort(-votes, kind="stable")
    out = []
    for k in ranked[:params.max_translations]:
        if votes[k] < params.min_votes:
            break
        chosen = start[inverse == k]
        src = np.stack([chosen % width, chosen // width], 1).astype(np.float32)
        offset = np.array([dx[inverse == k][0], dy[inverse == k][0]], np.float32)
        out.append((offset, src))
    return out


def _new(candidates: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
         known: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list:
    """Candidates whose transform (or its inverse) was not already found by keypoints."""
    return [c for c in candidates if not any(_same_move(c[0], k[0]) for k in known)]


def _same_move(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two transforms move pixels alike, either one taken in either direction."""
    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return np.abs(a[:, :2] - b[:, :2]).max() < 0.05 and np.abs(a[:, 2] - b[:, 2]).max() < 3

    return same(a, b) or same(cv2.invertAffineTransform(a), b)


def _rescale(transform: np.ndarray, scale: float) -> np.ndarray:
    """The same transform in coordinates scaled by ``scale`` (pixel centres kept aligned)."""
    shift = (scale - 1) / 2
    to_big = np.array([[scale, 0, shift], [0, scale, shift], [0, 0, 1]])
    full = to_big @ np.vstack([transform, [0, 0, 1]]) @ np.linalg.inv(to_big)
    return full[:2]


@dataclass(frozen=True)
class _Detail:
    """A band of the photo's detail, and its local mean and variance over the correlation
    window, which every transform's correlation shares (so they are computed once).

    Shading and gradients match anywhere, so they carry no evidence; the finest detail (noise,
    JPEG ringing) does not survive a re-save.
    """

    pixels: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    window: int

    @classmethod
    def of(cls, grey: np.ndarray, params: CopyMoveDetector) -> _Detail:
        values = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), params.fine_sigma)
        pixels = values - cv2.GaussianBlur(values, (0, 0), params.detail_sigma)
        box = (params.window, params.window)
        mean = cv2.blur(pixels, box)
        return cls(pixels, mean, cv2.blur(pixels * pixels, box) - mean * mean, params.window)

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape

    @property
    def size(self) -> int:
        return self.pixels.size


def _verify(detail: _Detail, transform: np.ndarray, src: np.ndarray, dst: np.ndarray,
            params: CopyMoveDetector) -> _Verified | None:
    """Regions where the photo equals itself moved by ``transform``, or None if too small."""
    min_area = max(16, params.min_area * detail.size)
    target = _matched_region(detail, transform, dst, params)
    if target is None or target.area < min_area:  # most candidates in unedited photos end here
        return None
    source = _matched_region(detail, cv2.invertAffineTransform(transform), src, params)
    if source is None or source.area < min_area:
        return None
    similarity = float(np.concatenate([target.values, source.values]).mean())
    if similarity < params.min_similarity:
        return None
    repeats = _repeats(detail, transform, target, src, params)
    return _Verified(transform, target.whole(detail.shape), source.whole(detail.shape),
                     similarity, len(src), repeats)


def _repeats(detail: _Detail, transform: np.ndarray, target: _Region, src: np.ndarray,
             params: CopyMoveDetector) -> float:
    """How well the photo also matches itself under the transform applied twice, in [0, 1].

    Genuine repeated structure matches there too: a periodic pattern (tiles, windows, fabric)
    matches at twice its period, and a symmetric object (mirror or 180-degree symmetry) is
    mapped onto itself by a transform whose square is the identity. A copy usually does
    neither, so this discounts a pair's confidence.
    """
    twice = (np.vstack([transform, [0, 0, 1]]) @ np.vstack([transform, [0, 0, 1]]))[:2]
    if np.median(_residuals(twice, src, src)) < _min_offset(detail.shape, params):
        return 1.0
    # the copy keeps clear of its window's cut sides, so the window gives the whole image's values
    corr = _correlation(detail, twice, target.window)
    return float(corr[target.mask].mean())


@dataclass(frozen=True)
class _Window:
    """A box of the verification image, ``[y0:y1, x0:x1]``.

    Correlating only around a candidate's matched points costs a fraction of the whole image;
    within ``_EDGE`` pixels of a side that cuts through the image the box's filters see
    different neighbours, so a region that reaches that band is sought again in a larger one.
    """

    y0: int
    y1: int
    x0: int
    x1: int

    @classmethod
    def around(cls, points: np.ndarray, grow: float, shape: tuple[int, int]) -> _Window:
        """The points' bounding box grown by ``grow`` times its longest side and ``2 * _EDGE``
        pixels on every side, within the image."""
        (x0, y0), (x1, y1) = points.min(0), points.max(0)
        margin = grow * max(x1 - x0, y1 - y0) + 2 * _EDGE
        height, width = shape
        return cls(max(0, int(y0 - margin)), min(height, int(np.ceil(y1 + margin)) + 1),
                   max(0, int(x0 - margin)), min(width, int(np.ceil(x1 + margin)) + 1))

    def union(self, other: _Window) -> _Window:
        return _Window(min(self.y0, other.y0), max(self.y1, other.y1), min(self.x0, other.x0),
                       max(self.x1, other.x1))

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y0:self.y1, self.x0:self.x1]

    def reaches_cut(self, box: tuple[int, int, int, int], shape: tuple[int, int]) -> bool:
        """Whether ``box`` (x, y, w, h in the window) comes within ``_EDGE`` of a side of the
        window that is not a side of the image."""
        x, y, w, h = box
        return ((self.x0 > 0 and x < _EDGE) or (self.y0 > 0 and y < _EDGE)
                or (self.x1 < shape[1] and self.x0 + x + w > self.x1 - _EDGE)
                or (self.y1 < shape[0] and self.y0 + y + h > self.y1 - _EDGE))


@dataclass(frozen=True)
class _Region:
    """A correlated region found inside a window, with the correlation over it."""

    window: _Window
    mask: np.ndarray  # bool, the window's size
    corr: np.ndarray  # float32, the window's size

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def values(self) -> np.ndarray:
        return self.corr[self.mask]

    def whole(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask at the verification image's size."""
        mask = np.zeros(shape, bool)
        self.window.crop(mask)[...] = self.mask
        return mask


def _matched_region(detail: _Detail, transform: np.ndarray, points: np.ndarray,
                    params: CopyMoveDetector) -> _Region | None:
    """The region around ``points`` where the photo equals itself moved by ``transform``.

    Searched in a window around the points first, grown around the region for as long as the
    region reaches a side where the window cuts through the image: the result is the one the
    whole image gives (up to float rounding, as OpenCV's box filters sum from the window's edge).
    """
    window = _Window.around(points, params.search_grow, detail.shape)
    while True:
        corr = _correlation(detail, transform, window)
        found = _region(corr, points - (window.x0, window.y0), params.similarity_threshold)
        if found is None:
            return None
        mask, (x, y, w, h) = found
        if not window.reaches_cut((x, y, w, h), detail.shape):
            return _Region(window, mask, corr)
        x, y = x + window.x0, y + window.y0  # the region's box in the image
        reach = np.array([[x, y], [x + w - 1, y + h - 1]], np.float32)
        window = window.union(_Window.around(reach, params.search_grow, detail.shape))


def _correlation(detail: _Detail, transform: np.ndarray, window: _Window) -> np.ndarray:
    """Local normalised cross-correlation of the photo with the photo moved by ``transform``,
    over ``window``.

    Computed in place on a few window-sized buffers: the arithmetic between OpenCV's filters is
    most of the analysis's time.
    """
    height, width = window.y1 - window.y0, window.x1 - window.x0
    shifted = transform.copy()
    shifted[:, 2] -= (window.x0, window.y0)  # the window's corner becomes the origin
    moved = cv2.warpAffine(detail.pixels, shifted, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    box = (detail.window, detail.window)
    mean = cv2.blur(moved, box)
    scratch = np.multiply(window.crop(detail.pixels), moved)
    corr = cv2.blur(scratch, box)  # E[a b], then the covariance, then the correlation
    np.multiply(moved, moved, out=scratch)
    variance = cv2.blur(scratch, box)
    variance -= np.multiply(mean, mean, out=scratch)
    corr -= np.multiply(window.crop(detail.mean), mean, out=scratch)
    np.multiply(window.crop(detail.variance), variance, out=variance)
    np.maximum(variance, _EPS, out=variance)
    variance += _EPS
    corr /= np.sqrt(variance, out=variance)
    inside = cv2.warpAffine(np.ones(detail.shape, np.uint8), shifted, (width, height),
                            flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    corr[cv2.erode(inside, np.ones(box, np.uint8)) < 1] = 0
    return np.clip(corr, 0, 1, out=corr)


def _region(corr: np.ndarray, points: np.ndarray,
            threshold: float) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Correlated regions that hold matched keypoints, holes filled, and the bounding box
    (x, y, w, h) of those regions before closing; None when no keypoint lies in one."""
    binary = (corr >= threshold).astype(np.uint8)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels = cv2.connectedComponents(binary, connectivity=8)
    height, width = corr.shape
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, height - 1)
    hit = np.unique(labels[rows, cols])
    hit = hit[hit > 0]
    if not len(hit) or count < 2:
        return None
    region = np.isin(labels, hit).astype(np.uint8)
    reach = cv2.boundingRect(region)
    region = cv2.morphologyEx(region, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    return _filled(region, hull=False).astype(bool), reach


def _filled(region: np.ndarray, hull: bool) -> np.ndarray:
    """Each part of ``region`` with its holes filled, or filled out to its convex hull."""
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if hull:
        contours = [cv2.convexHull(contour) for contour in contours]
    filled = np.zeros_like(region)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def _evidence(verified: list[_Verified], size: tuple[int, int], scale: float,
              params: CopyMoveDetector) -> CopyMoveEvidence:
    """The full-size map, the pairs in photo coordinates and the image-level score."""
    height, width = size
    if not verified:
        return _empty(height, width)
    small = np.zeros(verified[0].target.shape, np.float32)
    pairs = []
    regions = [found.target | found.source for found in verified]
    for found, region, shared in zip(verified, regions, _shared(verified, regions), strict=True):
        confidence = _confidence(found, shared, params)
        # flat parts of a copy hold no detail to correlate: the map fills each part's hull
        marked = _filled(region.astype(np.uint8), hull=True) > 0
        small[marked] = np.maximum(small[marked], confidence)
        pairs.append(_pair(found, confidence, 1 / scale, marked.sum() / scale ** 2))
    probability = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return CopyMoveEvidence(probability, max(p.confidence for p in pairs), pairs)


def _shared(verified: list[_Verified], regions: list[np.ndarray]) -> list[float]:
    """Per pair, the largest share of its regions (source and copy, ``regions``) that a pair
    with another move also covers.

    Repeated structure (rows of windows, a balustrade, seen in perspective) matches itself
    under several moves, each a slightly different shift or scale, so its pairs overlap;
    a copy pasted once is one pair. Pairs that move alike (the same copy found twice) do not
    count against each other.
    """
    shared = []
    for one, region in zip(verified, regions, strict=True):
        others = [np.logical_and(region, other).sum()
                  for found, other in zip(verified, regions, strict=True)
                  if not _same_move(found.transform, one.transform)]
        shared.append(float(max(others, default=0) / max(region.sum(), 1)))
    return shared


def _confidence(found: _Verified, shared: float, params: CopyMoveDetector) -> float:
    """How sure a verified pair is: its correlation, discounted when few keypoints agree and
    when the region looks like genuine repeated or symmetric structure."""
    support = 1 - np.exp(-found.inliers / params.support_inliers)
    unique = (1 - params.repeat_discount * found.repeats) * (1 - params.shared_discount * shared)
    return float(np.clip(found.similarity ** 3 * support * unique, 0, 1))


def _pair(found: _Verified, confidence: float, scale: float, area: float) -> RegionPair:
    transform = _rescale(found.transform, scale)
    return RegionPair(
        source_box=_box(found.source, scale), target_box=_box(found.target, scale),
        transform=tuple(tuple(round(float(v), 4) for v in row) for row in transform),
        inliers=found.inliers, area=round(area), similarity=round(found.similarity, 4),
        mirrored=bool(np.linalg.det(transform[:, :2]) < 0), confidence=round(confidence, 4))


def _box(mask: np.ndarray, scale: float) -> tuple[int, int, int, int]:
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return (int(x * scale), int(y * scale), int(np.ceil((x + w) * scale)),
            int(np.ceil((y + h) * scale)))
