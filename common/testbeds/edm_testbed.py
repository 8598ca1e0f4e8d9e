"""The EDM testbed: an unconditional EDM model (`models/edm.py`) trained here on 32x32 natural-image crops, with
memorization planted by duplication, so Table 1's CIFAR10 (EDM) column is measurable without the paper's model.

Data (`data_source` = "natural-crops"): random square crops of six colour photographs bundled with
scikit-image (astronaut, chelsea, coffee, rocket, immunohistochemistry, the left view of stereo_motorcycle), of
side 40–200 px, box-downsampled to 32x32 (CIFAR10's size), left-right flipped at random.
    unique     500 crops, each once in the training set                   (generalization: too many to store)
    memorized  10 crops, each 150 times                                    (the hybrid regime of Cor 3.4)
    dose       5 crops at each of 1, 2, 5, 10 copies                      (the dose-response)
The duplicated crops fill 72 % of the training rows: on 2 cores the 10-minute budget (2,000 steps of 32) memorizes
them only at that share (a probe with the 10 crops alone: median RMS distance to the nearest of them 0.12 after
1,000 steps; at 1/3 of the rows, 2,000 steps left the samples nearest a duplicated crop 0.28–0.47 from it).
Model: a diffusers `UNet2DModel` at 32x32, three levels (32 -> 16 -> 8; widths 16, 32, 64; 0.9 M parameters),
`up_blocks.0` at 8x8 with three `ResnetBlock2D`s (SD v1.4's detector layer, `up_blocks.0.resnets.2`, runs at 8x8
too); EDM preconditioning, loss and Heun sampler. Training: `training.fit` (the CPU testbed's loop), batches
drawn uniformly from the training rows.

    ensure_edm_testbed()  ->  .cache/testbed/edm-testbed-<config key>/   (trained once, then reused)
    edm.EDMDenoiser.from_pretrained(that folder)
    open_model(model, train_images)   ->  what the EDM notebook runs on: this testbed, or a public model (e.g.
                                          google/ddpm-cifar10-32) with the images it was trained on
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..models import edm
from ..plumbing.faults import read_npz
from .copies import CALIBRATED_L2_THRESHOLD, calibrated_l2, calibrated_l2_false_copy_rate, training_spacing
from ..plumbing.paths import REPO_CACHE
from ..plumbing.results import config_key
from .training import (INFO_NAME, DuplicatedImages, ensure_trained, fit, read_info, recorded_data_config, thin,
                       write_folder_atomically)

LABEL = "edm-testbed"
CACHE = REPO_CACHE / "testbed"
TRAINER_VERSION = 2                     # 2: six photographs (no near-flat crops)
# hubble_deep_field and retina are left out: their black sky and borders give near-flat crops, which a sampler
# reproduces generically and the copy criterion then counts as copies (measured: most "memorized" samples of a
# first run with them were dark patches)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "stereo_motorcycle")
DATA_SOURCES = {"natural-crops": "32x32 crops of 6 scikit-image colour photographs (not CIFAR10)"}
UNET_CONFIG = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(16, 32, 64),
                   down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=8)


@dataclass(frozen=True)
class EDMDataConfig:
    __test__ = False
    source: str = "natural-crops"
    n_unique: int = 500
    n_memorized: int = 10
    duplication: int = 150              # 1,500 of the 2,090 training rows: memorized within the 10-minute budget
    dose_duplications: tuple = (1, 2, 5, 10)
    dose_images: int = 5
    resolution: int = 32
    crop_sides: tuple = (40, 200)
    min_pixel_std: float = 10.0         # crops flatter than this (uint8 std) are redrawn: blank sky or black
    seed: int = 0                       # borders give identical images, which no copy criterion can tell apart

    def __post_init__(self):
        if self.source not in DATA_SOURCES:
            raise ValueError(f"unknown data source {self.source!r}; known: {sorted(DATA_SOURCES)}")
        for d in (self.duplication, *self.dose_duplications):
            if int(d) < 1:
                raise ValueError(f"a duplication count must be >= 1, got {d}")


@dataclass(frozen=True)
class EDMTestbedConfig:
    __test__ = False
    data: EDMDataConfig = EDMDataConfig()
    steps: int = 2000                   # ≈ 0.29 s a step on 2 cores: ≈ 10 min
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0
    unet: dict = field(default_factory=lambda: dict(UNET_CONFIG))

    def __post_init__(self):
        if self.unet.get("sample_size") != self.data.resolution:
            raise ValueError(f"the UNet's sample_size {self.unet.get('sample_size')} differs from the data's "
                             f"resolution {self.data.resolution}")

    def to_dict(self) -> dict:
        return {**asdict(self), "trainer_version": TRAINER_VERSION, "sigma_data": edm.SIGMA_DATA}


# 16x16 images: the notebook's full denoiser Jacobian is then 768 x 768 (at 32x32, 3,072 x 3,072: half a minute of CI)
SMOKE_CONFIG = EDMTestbedConfig(data=EDMDataConfig(n_unique=40, n_memorized=2, duplication=5, dose_duplications=(1, 2),
                                                   dose_images=2, resolution=16), steps=3, batch_size=8, warmup=1,
                                unet=dict(UNET_CONFIG, sample_size=16, block_out_channels=(8, 8, 16), norm_num_groups=4))


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------
@dataclass
class EDMTestbedData(DuplicatedImages):
    __test__ = False
    images: np.ndarray          # [M, 32, 32, 3] uint8, every distinct image once
    kind: np.ndarray            # [M] "unique" | "memorized" | "dose"
    duplication: np.ndarray     # [M] copies in the training set
    config: EDMDataConfig

    def model_space(self) -> torch.Tensor:
        """[M, 3, r, r] float32 in [-1, 1] (r = config.resolution: 32)."""
        return torch.from_numpy(self.images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def load_photos() -> list[np.ndarray]:
    """The bundled colour photographs of `PHOTOS`, uint8 [H, W, 3] each (no download)."""
    import skimage.data

    photos = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        photos.append(np.asarray(image[0] if isinstance(image, tuple) else image)[..., :3])
    return photos


def random_crop(rng: np.random.Generator, photos: list[np.ndarray], config: EDMDataConfig) -> np.ndarray:
    """One crop: a random photo, side, position and flip, box-downsampled to resolution²: uint8 [r, r, 3].
    A flat crop (pixel std < min_pixel_std) is drawn again."""
    from PIL import Image

    while True:
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        side = int(rng.integers(config.crop_sides[0], min(config.crop_sides[1], h, w) + 1))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side])
        out = np.asarray(crop.resize((config.resolution, config.resolution), Image.Resampling.BOX))
        if out.std() >= config.min_pixel_std:
            break
    return out[:, ::-1] if rng.random() < 0.5 else out


def build_data(config: EDMDataConfig = EDMDataConfig()) -> EDMTestbedData:
    """The whole training set, deterministic in `config`."""
    rng = np.random.default_rng(config.seed)
    photos = load_photos()
    dups = ([1] * config.n_unique + [config.duplication] * config.n_memorized
            + [d for d in config.dose_duplications for _ in range(config.dose_images)])
    kinds = (["unique"] * config.n_unique + ["memorized"] * config.n_memorized
             + ["dose"] * (config.dose_images * len(config.dose_duplications)))
    images = np.stack([random_crop(rng, photos, config) for _ in dups])
    return EDMTestbedData(images, np.array(kinds), np.array(dups), config)


# ----------------------------------------------------------------------------------------------------
# Train once, cache, load
# ----------------------------------------------------------------------------------------------------
def build_denoiser(config: EDMTestbedConfig) -> edm.EDMDenoiser:
    from diffusers import UNet2DModel

    torch.manual_seed(config.seed)
    return edm.EDMDenoiser(UNet2DModel(**config.unet))


def train_edm_testbed(config: EDMTestbedConfig, folder, progress: bool = True) -> dict:
    """Build the data, train the EDM denoiser, save the folder. Returns the info."""
    t_start = time.perf_counter()
    data = build_data(config.data)
    images = data.model_space()                                                     # [M, 3, 32, 32]
    rows = torch.from_numpy(data.train_rows)
    denoiser = build_denoiser(config)
    generator = torch.Generator().manual_seed(config.seed)

    def batch_loss(step):
        y = images[rows[torch.randint(len(rows), (config.batch_size,), generator=generator)]]   # [B, 3, 32, 32]
        return edm.edm_loss(denoiser, y, generator).mean()

    denoiser.train()
    losses = fit(denoiser.parameters(), batch_loss, config.steps, config.lr, warmup=config.warmup,
                 desc="EDM UNet", progress=progress)
    denoiser.eval()
    info = {"label": LABEL, "data_source": DATA_SOURCES[config.data.source], "config": config.to_dict(),
            "train_seconds": time.perf_counter() - t_start, "torch_threads": torch.get_num_threads(),
            "n_train_rows": int(len(rows)), "n_distinct_images": int(len(images)),
            "parameters": sum(p.numel() for p in denoiser.parameters()), "loss_curve": thin(losses)}

    write_folder_atomically(folder, denoiser.save_pretrained, info)
    return info


def edm_testbed_folder(config: EDMTestbedConfig = EDMTestbedConfig(), root=None) -> Path:
    return Path(root or CACHE) / f"{LABEL}-{config_key(config.to_dict())}"


def is_edm_testbed(model) -> bool:
    return model is not None and (Path(str(model)) / INFO_NAME).is_file() and edm.is_edm_folder(model)


def ensure_edm_testbed(config: EDMTestbedConfig = EDMTestbedConfig(), progress: bool = True, root=None) -> Path:
    """The trained model's folder for `config`: trained on first use, then loaded from the cache; a folder recorded
    with another config, or damaged, is trained again (`training.ensure_trained`)."""
    folder = edm_testbed_folder(config, root)
    return ensure_trained(folder, config.to_dict(), lambda: train_edm_testbed(config, folder, progress), "the EDM testbed")


def load_data(folder) -> EDMTestbedData:
    """The data a testbed folder was trained on (rebuilt from its recorded config: deterministic)."""
    return build_data(recorded_data_config(EDMDataConfig, folder))


def open_model(model=None, train_images=None, config: EDMTestbedConfig = EDMTestbedConfig()):
    """(denoiser, data, info) for the EDM notebook. `model` None: the testbed of `config` (trained once, cached);
    an EDM testbed folder; or any model `edm.load_denoiser` reads — a public unconditional DDPM such as
    google/ddpm-cifar10-32 — with `train_images`, the images it was trained on (an .npy of uint8 [N, H, W, 3], or
    a folder of image files), for the ground truth. info: the testbed record, plus "model" (what to load) and "tag"
    (model and data, for titles)."""
    if model is None or is_edm_testbed(model):
        folder = Path(model) if model is not None else ensure_edm_testbed(config)
        info = read_info(folder)
        info.update(model=str(folder), tag=f"{LABEL}, {info['config']['data']['source']}")
        return edm.load_denoiser(folder), load_data(folder), info
    if train_images is None:
        raise ValueError(f"{model} was not trained here: pass its training images (TRAIN_IMAGES: an .npy of uint8 "
                         "[N, H, W, 3] or a folder of images) so that samples can be checked for copies")
    denoiser = edm.load_denoiser(model)
    images = read_training_images(train_images, denoiser.image_shape[-1])
    data = EDMTestbedData(images, np.full(len(images), "unique"), np.ones(len(images), dtype=int), config=None)
    label = Path(str(model)).name
    info = {"label": label, "model": str(model), "tag": f"{label}, {Path(str(train_images)).name}",
            "data_source": f"its training images, from {train_images}", "train_seconds": None, "loss_curve": [],
            "parameters": sum(p.numel() for p in denoiser.parameters()), "n_train_rows": len(images),
            "n_distinct_images": len(images), "config": None}
    return denoiser, data, info


def read_training_images(source, resolution: int) -> np.ndarray:
    """uint8 [N, r, r, 3] from an .npy file of that shape or a folder of image files (sorted by name)."""
    from PIL import Image

    source = Path(source).expanduser()
    if source.is_dir():
        files = sorted(f for f in source.iterdir() if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".bmp"})
        images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]) if files else np.zeros((0,))
    elif source.suffix == ".npy":
        images = np.load(source, allow_pickle=False)
    else:
        raise FileNotFoundError(f"{source}: neither a folder of images nor an .npy file")
    if images.ndim != 4 or images.shape[1:] != (resolution, resolution, 3) or images.dtype != np.uint8:
        raise ValueError(f"{source}: training images must be uint8 [N, {resolution}, {resolution}, 3], got "
                         f"{images.dtype} {list(images.shape)}")
    return images


def cached_samples(model, n: int, num_steps: int = edm.NUM_STEPS, seed: int = 0, batch_size: int = 128,
                   progress: bool = True) -> tuple[torch.Tensor, float]:
    """Samples seed, seed + 1, ... of `model` (a folder or hub id `edm.load_denoiser` reads; Heun, `num_steps`):
    [n, 3, H, W] in [-1, 1], and the seconds per sample of the run that made them. Cached beside the generations of
    the SD notebooks (`.cache/generations/<model name>-heun<steps>-seed<seed>/`); a larger n generates only the
    new seeds."""
    from ..plumbing.paths import GENERATION_CACHE
    from ..plumbing.results import save_npz_atomic

    cache = GENERATION_CACHE / f"{Path(str(model)).name}-heun{num_steps}-seed{seed}" / "samples.npz"
    denoiser = edm.load_denoiser(model)
    have, seconds = np.zeros((0, *denoiser.image_shape), np.float32), None
    stored = read_npz(cache, ["samples", "seconds_per_sample"])       # None if missing or damaged (moved aside)
    if stored is not None:
        have, seconds = stored["samples"], float(stored["seconds_per_sample"])
    if len(have) < n:
        t0 = time.perf_counter()
        new = edm.generate(denoiser, range(seed + len(have), seed + n), num_steps, batch_size, progress).numpy()
        seconds = (time.perf_counter() - t0) / len(new)
        have = np.concatenate([have, new])
        save_npz_atomic(cache, samples=have, seconds_per_sample=np.float64(seconds))
    return torch.from_numpy(have[:n]), seconds


# ----------------------------------------------------------------------------------------------------
# Ground truth: which samples copy a training image
# ----------------------------------------------------------------------------------------------------
def ground_truth(samples: torch.Tensor, data: EDMTestbedData, threshold: float = CALIBRATED_L2_THRESHOLD) -> dict:
    """Per sample ([n, 3, 32, 32] in [-1, 1]): the calibrated L2 ratio to its nearest distinct training image,
    that image's index into `data.images` and its duplication, and memorized = ratio < threshold."""
    train = data.model_space()
    ratio, nearest = calibrated_l2(samples, train, training_spacing(train))
    return {"ratio": ratio, "nearest": nearest, "nearest_duplication": data.duplication[nearest],
            "memorized": ratio < threshold, "threshold": threshold}


def dose_response(truth: dict, data: EDMTestbedData) -> dict:
    """Per duplication count d: the share of samples that copy an image trained d times, and the fraction of those
    images copied by at least one sample."""
    out = {}
    for d in sorted(set(data.duplication.tolist())):
        ids = np.flatnonzero(data.duplication == d)
        copying = truth["memorized"] & np.isin(truth["nearest"], ids)
        out[int(d)] = {"images": int(len(ids)), "samples_copying": int(copying.sum()),
                       "images_copied": float(np.isin(ids, truth["nearest"][copying]).mean())}
    return out


def criterion_false_copy_rate(data: EDMTestbedData, threshold: float = CALIBRATED_L2_THRESHOLD) -> dict:
    return calibrated_l2_false_copy_rate(data.model_space(), threshold)
