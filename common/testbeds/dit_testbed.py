"""The DiT testbed: a class-conditional latent DiT (`models/dit.py`) trained here on labelled scenes, where common classes
have hundreds of images and rare classes one image each, duplicated — as a DiT on a small ImageNet subset copies
its rare classes — so Table 1's ImageNet (DiT) column is measurable without the paper's model.

Data (`data_source` = "scenes"; the CPU testbed's scene drawer, `scenes.py`, 16x16 RGB):
    common  9 classes = (left shape) x (background), 200 scenes each, every other attribute random (colours,
            right shape, sizes, positions, shading): one label, many images -> the model must generalize
    rare    20 classes, one scene each, drawn from the same distribution, repeated 3, 10, 30 or 100 times (5
            classes at each count; 28 % of the training rows): one label, one image -> the dose-response of copying
A first run with 250 scenes per common class and 1, 3, 10, 30 copies (9 % of the rows) copied almost nothing in
the 10-minute budget: the scenes of the x30 classes came back with median correlation 0.84, under the criterion's
0.95 (16 % copies), those of x1-x3 at ~0.1.
Model: the CPU testbed's VAE layout (16x16x3 -> 8x8x4, trained here first on the distinct scenes) and a diffusers
`DiTTransformer2DModel` on its latents: patch 2 (16 tokens), 6 blocks of width 3 x 64 = 192 (DiT-S: 12 blocks
of 6 x 64 = 384; here a CPU size), adaLN-Zero, 29 classes + the null label; ε-prediction on DiT's linear β, class dropout 0.1,
AdamW. Training: `training.fit` (the testbeds' loop). Ground truth: the CPU testbed's copy criterion (Pearson
correlation of pixels ≥ 0.95 with the nearest distinct training scene, `copies.py`).

    ensure_dit_testbed()  ->  .cache/testbed/dit-testbed-<config key>/   (trained once, then reused)
    dit.DiTModel.from_pretrained(that folder)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models import dit
from ..plumbing.faults import read_npz
from .copies import PEARSON_THRESHOLD, pearson_false_copy_rate, pearson_nearest
from ..plumbing.paths import REPO_CACHE
from ..plumbing.results import config_key
from .scenes import BACKGROUNDS, COLORS, SHAPES, _random_scene, draw_scene, to_model_space
from .training import INFO_NAME, DuplicatedImages, ensure_trained, fit, recorded_data_config, thin, write_folder_atomically
from .training import read_info  # noqa: F401  (part of this module's API: dit_testbed.read_info)

LABEL = "dit-testbed"
CACHE = REPO_CACHE / "testbed"
TRAINER_VERSION = 1
DATA_SOURCES = {"scenes": "16x16 drawn scenes of the CPU testbed, 9 common + 20 rare classes (not ImageNet)"}
COMMON_CLASSES = tuple((shape, background) for shape in SHAPES for background in BACKGROUNDS)
TRANSFORMER_CONFIG = dict(num_attention_heads=3, attention_head_dim=64, in_channels=4, out_channels=4, num_layers=6,
                          sample_size=8, patch_size=2, activation_fn="gelu-approximate", norm_type="ada_norm_zero",
                          norm_elementwise_affine=False)


@dataclass(frozen=True)
class DiTDataConfig:
    __test__ = False
    source: str = "scenes"
    per_common_class: int = 200
    rare_duplications: tuple = (3, 10, 30, 100)
    rare_per_duplication: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.source not in DATA_SOURCES:
            raise ValueError(f"unknown data source {self.source!r}; known: {sorted(DATA_SOURCES)}")
        for d in self.rare_duplications:
            if int(d) < 1:
                raise ValueError(f"a duplication count must be >= 1, got {d}")

    @property
    def num_classes(self) -> int:
        return len(COMMON_CLASSES) + len(self.rare_duplications) * self.rare_per_duplication


@dataclass(frozen=True)
class DiTTestbedConfig:
    __test__ = False
    data: DiTDataConfig = DiTDataConfig()
    vae_steps: int = 1000               # the CPU testbed's VAE recipe (`cpu_testbed.train_vae`)
    vae_batch: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    steps: int = 1800
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    seed: int = 0
    transformer: dict = field(default_factory=lambda: dict(TRANSFORMER_CONFIG))

    def to_dict(self) -> dict:
        return {**asdict(self), "trainer_version": TRAINER_VERSION, "schedule": dit.DIT_SCHEDULE}


SMOKE_CONFIG = DiTTestbedConfig(data=DiTDataConfig(per_common_class=6, rare_duplications=(1, 3), rare_per_duplication=2),
                                vae_steps=2, vae_batch=8, steps=3, batch_size=8, warmup=1,
                                transformer=dict(TRANSFORMER_CONFIG, num_attention_heads=2, attention_head_dim=16,
                                                 num_layers=2))


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------
@dataclass
class DiTTestbedData(DuplicatedImages):
    __test__ = False
    images: np.ndarray          # [M, 16, 16, 3] uint8, every distinct image once
    label: np.ndarray           # [M] class id: 0 … 8 common, 9 … rare
    kind: np.ndarray            # [M] "common" | "rare"
    duplication: np.ndarray     # [M] copies in the training set
    config: DiTDataConfig

    def model_space(self) -> torch.Tensor:
        """[M, 3, 16, 16] float32 in [-1, 1]."""
        return torch.from_numpy(to_model_space(self.images))

    def class_names(self) -> list[str]:
        rare = [f"rare x{d} #{i}" for d in self.config.rare_duplications for i in range(self.config.rare_per_duplication)]
        return [f"{shape} on {background}" for shape, background in COMMON_CLASSES] + rare


def build_data(config: DiTDataConfig = DiTDataConfig()) -> DiTTestbedData:
    """The whole training set, deterministic in `config`."""
    rng = np.random.default_rng(config.seed)
    images, labels, kinds, dups = [], [], [], []
    for label, (shape, background) in enumerate(COMMON_CLASSES):
        for _ in range(config.per_common_class):
            c1, s2, c2 = rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(list(COLORS))
            images.append(draw_scene(_random_scene(rng, (shape, c1, s2, c2, background))))
            labels.append(label), kinds.append("common"), dups.append(1)
    label = len(COMMON_CLASSES)
    for d in config.rare_duplications:
        for _ in range(config.rare_per_duplication):
            images.append(draw_scene(_random_scene(rng)))
            labels.append(label), kinds.append("rare"), dups.append(int(d))
            label += 1
    return DiTTestbedData(np.stack(images), np.array(labels), np.array(kinds), np.array(dups), config)


# ----------------------------------------------------------------------------------------------------
# Train once, cache, load
# ----------------------------------------------------------------------------------------------------
def build_transformer(config: DiTTestbedConfig):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(config.seed)
    return DiTTransformer2DModel(**config.transformer, num_embeds_ada_norm=config.data.num_classes)


def train_dit_testbed(config: DiTTestbedConfig, folder, progress: bool = True) -> dict:
    """Build the data, train the VAE then the DiT, save the folder. Returns the info."""
    from diffusers import AutoencoderKL, DDPMScheduler

    from .cpu_testbed import VAE_CONFIG, encode_latents, train_vae

    t_start = time.perf_counter()
    data = build_data(config.data)
    images = data.model_space()                                                       # [M, 3, 16, 16]
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    vae_log = train_vae(vae, images, config, generator, progress)                     # the CPU testbed's recipe
    mean, std = encode_latents(vae, images)                                           # [M, 4, 8, 8] each
    scaling = 1.0 / float(mean.std())
    vae.register_to_config(scaling_factor=scaling)
    vae_seconds = time.perf_counter() - t_start

    transformer = build_transformer(config)                                           # seeds torch: class dropout
    scheduler = DDPMScheduler(**dit.DIT_SCHEDULE)
    rows, labels = torch.from_numpy(data.train_rows), torch.from_numpy(data.label)
    mean, std = mean * scaling, std * scaling

    def batch_loss(step):
        idx = rows[torch.randint(len(rows), (config.batch_size,), generator=generator)]          # [B]
        z_0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=generator)        # [B, 4, 8, 8]
        noise = torch.randn(z_0.shape, generator=generator)
        t = torch.randint(dit.NUM_TRAIN_TIMESTEPS, (len(idx),), generator=generator)
        out = transformer(scheduler.add_noise(z_0, noise, t), timestep=t, class_labels=labels[idx]).sample
        return F.mse_loss(out, noise)

    transformer.train()
    t0 = time.perf_counter()
    losses = fit(transformer.parameters(), batch_loss, config.steps, config.lr, warmup=config.warmup,
                 desc="DiT", progress=progress)
    transformer.eval()
    info = {"label": LABEL, "data_source": DATA_SOURCES[config.data.source], "config": config.to_dict(),
            "train_seconds": time.perf_counter() - t_start, "vae_seconds": vae_seconds,
            "dit_seconds": time.perf_counter() - t0, "torch_threads": torch.get_num_threads(),
            "scaling_factor": scaling, "n_train_rows": int(len(rows)), "n_distinct_images": int(len(images)),
            "parameters": {"transformer": sum(p.numel() for p in transformer.parameters()),
                           "vae": sum(p.numel() for p in vae.parameters())},
            "loss_curves": {"vae_loss": thin(vae_log["vae_loss"]), "dit_loss": thin(losses)}}
    write_folder_atomically(folder, dit.DiTModel(transformer, vae).save_pretrained, info)
    return info


def dit_testbed_folder(config: DiTTestbedConfig = DiTTestbedConfig(), root=None) -> Path:
    return Path(root or CACHE) / f"{LABEL}-{config_key(config.to_dict())}"


def is_dit_testbed(model) -> bool:
    return model is not None and (Path(str(model)) / INFO_NAME).is_file() and dit.is_dit_folder(model)


def ensure_dit_testbed(config: DiTTestbedConfig = DiTTestbedConfig(), progress: bool = True, root=None) -> Path:
    """The trained model's folder for `config`: trained on first use, then loaded from the cache; a folder recorded
    with another config, or damaged, is trained again (`training.ensure_trained`)."""
    folder = dit_testbed_folder(config, root)
    return ensure_trained(folder, config.to_dict(), lambda: train_dit_testbed(config, folder, progress), "the DiT testbed")


def load_data(folder) -> DiTTestbedData:
    """The data a testbed folder was trained on (rebuilt from its recorded config: deterministic)."""
    return build_data(recorded_data_config(DiTDataConfig, folder))


# ----------------------------------------------------------------------------------------------------
# Samples and ground truth
# ----------------------------------------------------------------------------------------------------
def sample_plan(data: DiTTestbedData, n_rare: int, n_common: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, seeds) of n_rare samples spread over the rare classes and n_common over the common ones (round
    robin, so every class gets its share); sample i has seed `seed + i`."""
    rare = np.unique(data.label[data.kind == "rare"])
    common = np.unique(data.label[data.kind == "common"])
    labels = np.concatenate([np.resize(rare, n_rare), np.resize(common, n_common)])
    return labels, seed + np.arange(len(labels))


def cached_samples(folder, labels, seeds, num_steps: int = dit.NUM_INFERENCE_STEPS,
                   guidance_scale: float = dit.GUIDANCE_SCALE, batch_size: int = 125,
                   progress: bool = True) -> tuple[torch.Tensor, float]:
    """The samples of (labels, seeds) ([N, 3, 16, 16] in [-1, 1]) and the seconds per sample of the run that made
    them; cached in `.cache/generations/<folder>-ddim<steps>-cfg<w>-<plan key>/`."""
    from ..plumbing.paths import GENERATION_CACHE
    from ..plumbing.results import save_npz_atomic

    labels, seeds = np.asarray(labels), np.asarray(seeds)
    key = config_key({"labels": labels.tolist(), "seeds": seeds.tolist()})
    cache = GENERATION_CACHE / f"{Path(folder).name}-ddim{num_steps}-cfg{guidance_scale:g}-{key}" / "samples.npz"
    stored = read_npz(cache, ["samples", "seconds_per_sample"])       # None if missing or damaged (moved aside)
    if stored is not None:
        return torch.from_numpy(stored["samples"]), float(stored["seconds_per_sample"])
    model = dit.DiTModel.from_pretrained(folder)
    t0 = time.perf_counter()
    samples = dit.sample(model, labels, seeds, num_steps, guidance_scale, batch_size, progress)
    seconds = (time.perf_counter() - t0) / len(labels)
    save_npz_atomic(cache, samples=samples.numpy(), seconds_per_sample=np.float64(seconds))
    return samples, seconds


def ground_truth(samples: torch.Tensor, labels: np.ndarray, data: DiTTestbedData,
                 threshold: float = PEARSON_THRESHOLD) -> dict:
    """Per sample: the Pearson correlation with its nearest distinct training scene and that scene's index, copies
    (correlation ≥ threshold), and memorized = a rare-class sample copying its own class's scene."""
    corr, nearest = pearson_nearest(samples, data.model_space())
    labels = np.asarray(labels)
    copies = corr >= threshold
    rare = np.isin(labels, data.label[data.kind == "rare"])
    return {"correlation": corr, "nearest": nearest, "copies": copies, "rare": rare,
            "memorized": rare & copies & (data.label[nearest] == labels), "threshold": threshold}


def dose_response(truth: dict, labels: np.ndarray, data: DiTTestbedData) -> dict:
    """Per duplication count of the rare classes: the fraction of their samples that copy their class's scene."""
    out = {}
    for d in data.config.rare_duplications:
        classes = data.label[(data.kind == "rare") & (data.duplication == d)]
        mask = np.isin(labels, classes)
        out[int(d)] = {"classes": int(len(classes)), "samples": int(mask.sum()),
                       "copy_fraction": float(truth["memorized"][mask].mean()) if mask.any() else None}
    return out


def criterion_false_copy_rate(data: DiTTestbedData, threshold: float = PEARSON_THRESHOLD) -> dict:
    return pearson_false_copy_rate(data.model_space(), threshold)
