"""Face data for the theory notebooks: CelebA exactly as the paper, or an offline stand-in.

Every source yields the same thing, images as flat vectors in the paper's space:

    Resize((32, 32)) -> Grayscale -> [0, 1] -> x*2 - 1 in [-1, 1] -> flatten, d = 1024

done with PIL and NumPy (no torchvision: its PyPI builds fail to import beside this repo's torch).

Sources (`load_faces(source=...)`):
    "celeba"  HF `eurecom-ds/celeba`, train split, streamed; train = first n rows, test = the next n_test
              (the official notebooks' split). Read once, then cached as a compressed array.
    "folder"  a local image folder (e.g. CelebA's `img_align_celeba/`), files in sorted name order.
    "lfw"     the offline stand-in: scikit-image's bundled LFW subset (rows 0-99 are real faces, 25x25),
              resized to 32x32. Faces 0-79 train, 80-99 are held out and never enter training. For n > 80,
              the training set is the 80 faces followed by a fixed sample of augmented copies of them
              (small shifts, flips, mild contrast/brightness jitter).
    "auto"    CelebA when cached or reachable, else the stand-in, and says which.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..plumbing.network import hub_reachable
from ..plumbing.paths import DATA_CACHE
from ..plumbing.faults import read_npz
from ..plumbing.results import array_fingerprint, save_npz_atomic

RESOLUTION = 32
DIM = RESOLUTION * RESOLUTION  # d = 1024
CELEBA_HF_ID = "eurecom-ds/celeba"
# The official notebooks' memorization set: CelebA training positions chosen for separability (§2.1).
CELEBA_MEM_POSITIONS = (0, 36, 148, 195, 232)

LFW_N_FACES = 100   # rows 0-99 of skimage.data.lfw_subset() are faces, 100-199 are not
LFW_N_TRAIN_FACES = 80  # faces 80-99 are held out
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataUnavailableError(RuntimeError):
    """A requested data source cannot be read here (offline, missing folder, too few images)."""


OFFLINE_HINT = (
    "Use the offline stand-in with source='lfw' (scikit-image's bundled LFW faces), or point at a local "
    "copy of CelebA with source='folder', folder='path/to/img_align_celeba'."
)


@dataclass
class FaceData:
    """Training and held-out test faces, each row a flat image in [-1, 1] (shape [n, 1024], float32)."""

    train: np.ndarray
    test: np.ndarray
    source: str                      # short label for titles and results JSON, e.g. "lfw-standin"
    train_origin: np.ndarray         # per training row: index of the base image it came from
    test_origin: np.ndarray          # per test row: index of the base image
    details: dict = field(default_factory=dict)

    @property
    def d(self) -> int:
        return self.train.shape[1]


# ----------------------------------------------------------------------------------------------------
# The paper's transform, with PIL in place of torchvision
# ----------------------------------------------------------------------------------------------------
def to_model_space(image: Image.Image, resolution: int = RESOLUTION) -> np.ndarray:
    """Resize -> grayscale -> [-1, 1] -> flat float32 vector, as `transforms.Compose([Resize((32, 32)),
    Grayscale(), ToTensor()])` then `x*2 - 1` (torchvision resizes PIL images bilinearly with antialias)."""
    gray = image.convert("RGB").resize((resolution, resolution), Image.BILINEAR).convert("L")
    return (np.asarray(gray, dtype=np.float32) / 255.0 * 2.0 - 1.0).reshape(-1)


def to_image(x: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
    """Flat vector(s) in [-1, 1] -> [.., H, W] in [0, 1] for display."""
    x = np.asarray(x)
    return np.clip((x.reshape(*x.shape[:-1], resolution, resolution) + 1.0) / 2.0, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------
# CelebA from the Hugging Face hub (streamed once, then cached)
# ----------------------------------------------------------------------------------------------------
def _cached_prefix(prefix: str, n: int, cache_dir: Path) -> np.ndarray | None:
    """The first n rows of the largest cache `<prefix>_first<N>.npz` with N >= n, if any."""
    best = None
    for path in cache_dir.glob(f"{prefix}_first*.npz"):
        try:
            size = int(path.stem.rsplit("_first", 1)[1])
        except ValueError:
            continue
        if size >= n and (best is None or size < best[0]):
            best = (size, path)
    if best is None:
        return None
    stored = read_npz(best[1], ["images"])                    # None if damaged (moved aside: downloaded again)
    return None if stored is None else stored["images"][:n]


def load_celeba_hf(n_total: int, cache_dir: Path = DATA_CACHE, timeout: float = 3.0) -> np.ndarray:
    """The first `n_total` images of the `eurecom-ds/celeba` train stream, shape [n_total, 1024].

    Cached at `<cache_dir>/celeba-hf_first<n>.npz`; a larger cache serves smaller requests. Offline, fails
    within `timeout` seconds with a message naming the alternatives.
    """
    cache_dir = Path(cache_dir)
    cached = _cached_prefix("celeba-hf", n_total, cache_dir)
    if cached is not None:
        return cached
    if not hub_reachable(timeout):
        raise DataUnavailableError(
            f"CelebA ({CELEBA_HF_ID}) is not cached in {cache_dir} and the Hugging Face hub is not "
            f"reachable (offline, or HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set). {OFFLINE_HINT}"
        )
    from datasets import load_dataset
    from tqdm.auto import tqdm

    stream = load_dataset(CELEBA_HF_ID, split="train", streaming=True)
    rows = []
    for row in tqdm(islice(stream, n_total), total=n_total, desc=f"streaming {CELEBA_HF_ID}"):
        image = row.get("image") or next(v for v in row.values() if isinstance(v, Image.Image))
        rows.append(to_model_space(image))
    if len(rows) < n_total:
        raise DataUnavailableError(f"{CELEBA_HF_ID} gave {len(rows)} images, {n_total} were requested")
    images = np.stack(rows)
    save_npz_atomic(cache_dir / f"celeba-hf_first{n_total}.npz", images=images)
    return images


# ----------------------------------------------------------------------------------------------------
# A local image folder
# ----------------------------------------------------------------------------------------------------
def load_image_folder(folder: str | os.PathLike, n_total: int, cache_dir: Path = DATA_CACHE) -> np.ndarray:
    """The first `n_total` images of `folder` in sorted file-name order, shape [n_total, 1024].

    Cached by the folder's path and the names and sizes of the files read, so an edited folder is re-read.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataUnavailableError(f"image folder {folder} does not exist. {OFFLINE_HINT}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < n_total:
        raise DataUnavailableError(
            f"image folder {folder} holds {len(files)} images, {n_total} were requested"
        )
    files = files[:n_total]
    listing = np.array([f"{p.resolve()}:{p.stat().st_size}" for p in files])
    cache = Path(cache_dir) / f"folder-{array_fingerprint(listing)}_first{n_total}.npz"
    stored = read_npz(cache, ["images"])                      # None if missing or damaged (moved aside)
    if stored is not None:
        return stored["images"]
    from tqdm.auto import tqdm

    rows = []
    for path in tqdm(files, desc=f"reading {folder.name}", disable=n_total < 1000):
        try:
            with Image.open(path) as image:
                rows.append(to_model_space(image))
        except (UnidentifiedImageError, OSError) as err:
            raise DataUnavailableError(f"cannot read image {path}: {err}") from err
    images = np.stack(rows)
    save_npz_atomic(cache, images=images)
    return images


# ----------------------------------------------------------------------------------------------------
# The offline stand-in: LFW faces shipped with scikit-image
# ----------------------------------------------------------------------------------------------------
def lfw_faces(resolution: int = RESOLUTION) -> np.ndarray:
    """The 100 real faces of `skimage.data.lfw_subset()`, resized to [100, resolution, resolution] in [0, 1]."""
    from skimage.data import lfw_subset

    faces = lfw_subset()[:LFW_N_FACES].astype(np.float32)  # [100, 25, 25] in [0, 1]
    return np.stack([_resize01(f, resolution) for f in faces])


def _resize01(image01: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float image in [0, 1] with PIL (mode 'F' keeps full precision)."""
    return np.asarray(Image.fromarray(image01, mode="F").resize((size, size), Image.BILINEAR))


AUGMENT_BLOCK = 1000  # augmentation parameters are drawn per block of rows, so row i never depends on n


def augment_faces(faces01: np.ndarray, n: int, seed: int, max_shift: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """`n` draws from an augmentation distribution of `faces01` ([m, H, W] in [0, 1]).

    Each draw: a random face, resized to (H + 2*max_shift) and randomly cropped back to H (shifts of up to
    ±max_shift px), flipped left-right with probability 1/2, contrast x U(0.8, 1.2) about its mean and
    brightness + U(-0.1, 0.1), clipped to [0, 1]. Block b of `AUGMENT_BLOCK` rows uses the generator
    seeded with (seed, b), so the first k rows are the same for every n >= k — like the first k images of
    the CelebA stream. Returns (images [n, H, W], origin index [n]).
    """
    m, size, _ = faces01.shape
    big = np.stack([_resize01(f, size + 2 * max_shift) for f in faces01])
    out = np.empty((n, size, size), dtype=np.float32)
    origin = np.empty(n, dtype=int)
    for start in range(0, n, AUGMENT_BLOCK):
        rng = np.random.default_rng([seed, start // AUGMENT_BLOCK])
        k = min(AUGMENT_BLOCK, n - start)
        idx = rng.integers(0, m, size=AUGMENT_BLOCK)[:k]           # draw full blocks: independent of n
        dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, AUGMENT_BLOCK))[:, :k]
        flip = (rng.random(AUGMENT_BLOCK) < 0.5)[:k]
        contrast = rng.uniform(0.8, 1.2, size=AUGMENT_BLOCK).astype(np.float32)[:k]
        brightness = rng.uniform(-0.1, 0.1, size=AUGMENT_BLOCK).astype(np.float32)[:k]
        origin[start : start + k] = idx
        for j in range(k):
            img = big[idx[j], dy[j] : dy[j] + size, dx[j] : dx[j] + size]
            if flip[j]:
                img = img[:, ::-1]
            mean = img.mean()
            out[start + j] = np.clip((img - mean) * contrast[j] + mean + brightness[j], 0.0, 1.0)
    return out, origin


def load_lfw_standin(n_train: int, n_test: int = 20, seed: int = 0) -> FaceData:
    """The offline stand-in: faces 0-79 (then augmented copies of them) train, faces 80-99 test."""
    n_held_out = LFW_N_FACES - LFW_N_TRAIN_FACES
    if n_test > n_held_out:
        raise DataUnavailableError(f"the LFW stand-in holds {n_held_out} test faces, {n_test} were requested")
    faces = lfw_faces()                                           # [100, 32, 32] in [0, 1]
    base, held_out = faces[:LFW_N_TRAIN_FACES], faces[LFW_N_TRAIN_FACES:]
    n_base = min(n_train, LFW_N_TRAIN_FACES)
    n_aug = n_train - n_base
    augmented, aug_origin = augment_faces(base, n_aug, seed) if n_aug else (base[:0], np.zeros(0, int))
    train01 = np.concatenate([base[:n_base], augmented])
    flat = lambda a: (a.reshape(len(a), -1) * 2.0 - 1.0).astype(np.float32)  # [0, 1] -> [-1, 1]
    return FaceData(
        train=flat(train01),
        test=flat(held_out[:n_test]),
        source="lfw-standin",
        train_origin=np.concatenate([np.arange(n_base), aug_origin]),
        test_origin=np.arange(LFW_N_TRAIN_FACES, LFW_N_TRAIN_FACES + n_test),
        details={"base_train_faces": n_base, "augmented_samples": int(n_aug), "augmentation_seed": seed,
                 "held_out_faces": list(range(LFW_N_TRAIN_FACES, LFW_N_FACES))},
    )


# ----------------------------------------------------------------------------------------------------
# One entry point
# ----------------------------------------------------------------------------------------------------
SOURCES = ("auto", "celeba", "folder", "lfw")


def load_faces(
    n_train: int,
    n_test: int = 20,
    source: str = "auto",
    folder: str | os.PathLike | None = None,
    cache_dir: Path = DATA_CACHE,
    seed: int = 0,
    timeout: float = 3.0,
) -> FaceData:
    """Training and test faces from `source` (see the module docstring). For CelebA (hub or folder) the
    split is the official one: train = the first `n_train` images, test = the next `n_test`."""
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of {SOURCES}")
    if source == "auto":
        if folder is not None:
            source = "folder"
        elif _cached_prefix("celeba-hf", n_train + n_test, Path(cache_dir)) is not None or hub_reachable(timeout):
            source = "celeba"
        else:
            source = "lfw"
        print(f"data source: {source} (auto)")
    if source == "lfw":
        return load_lfw_standin(n_train, n_test, seed)
    if source == "folder":
        if folder is None:
            raise ValueError("source='folder' needs folder='path/to/images'")
        images, label = load_image_folder(folder, n_train + n_test, cache_dir), f"celeba-folder:{Path(folder).name}"
    else:
        images, label = load_celeba_hf(n_train + n_test, cache_dir, timeout), "celeba-hf"
    positions = np.arange(n_train + n_test)
    return FaceData(train=images[:n_train], test=images[n_train:], source=label,
                    train_origin=positions[:n_train], test_origin=positions[n_train:])


MEM_POOL = 500  # the stand-in's Mem images are chosen among the first MEM_POOL training images


def memorization_set(faces: FaceData, k: int = 5, pool: int = MEM_POOL) -> np.ndarray:
    """Training-row indices of the memorization set, shared by the theory notebooks.

    CelebA: the official notebooks' positions 0, 36, 148, 195, 232 (pairwise cosines all negative, the
    β < 0 of Thm 3.1). Elsewhere: the `k` most separable (`select_separable`, one per base image) of the
    first `pool` training rows whose energy ‖x‖² is at least the pool's median. Cor 3.2 needs nλ < ‖xᵢ‖², and
    the near-uniform grey images of low energy have cosines that say little about the face.
    """
    if faces.source.startswith("celeba") and k == len(CELEBA_MEM_POSITIONS):
        return np.array(CELEBA_MEM_POSITIONS)
    x = faces.train[: min(pool, len(faces.train))]
    energy = (x.astype(np.float64) ** 2).sum(axis=1)
    candidates = np.flatnonzero(energy >= np.median(energy))
    return candidates[select_separable(x[candidates], k, groups=faces.train_origin[candidates])]


def select_separable(x: np.ndarray, k: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Pick `k` rows of `x` whose largest pairwise cosine is as small as we can find (Def 3.1's β).

    Greedy from every starting row (add the row whose largest cosine to the chosen set is smallest), keep the
    best set. With `groups` (e.g. the base face each augmented row came from), no two chosen rows share a
    group. The official notebook picked its five CelebA faces by hand for the same property.

    The rows come back in the order the greedy search added them, so every prefix of the answer is itself a
    greedy choice: the first j rows are a separable set of size j (nested training sets of growing size).
    """
    if not 1 <= k <= len(x):
        raise ValueError(f"cannot select {k} images from {len(x)}")
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u @ u.T
    best, best_beta = None, np.inf
    for start in range(len(x)):
        chosen = [start]
        worst = cos[:, start].copy()                       # each row's largest cosine to the chosen set
        worst[groups == groups[start]] = np.inf
        while len(chosen) < k and np.isfinite(worst).any():
            nxt = int(np.argmin(worst))
            chosen.append(nxt)
            worst = np.maximum(worst, cos[:, nxt])
            worst[groups == groups[nxt]] = np.inf
        beta = max(cos[i, j] for i in chosen for j in chosen if i != j) if k > 1 else -np.inf
        if len(chosen) == k and beta < best_beta:
            best, best_beta = chosen, beta
    if best is None:
        raise ValueError(f"cannot select {k} images from {len(np.unique(groups))} distinct groups")
    return np.array(best, dtype=int)
