"""The CPU testbed's data: captioned scenes drawn by the project, with memorization we induce by duplication.

Why this data. Memorization in text-to-image models comes from image–caption pairs that occur many times
in the training set (the paper's LAION prompts; its Cor 3.4 hybrid regime). We build a set where we *know*
which pairs are duplicated, offline, in milliseconds:

    scene    a 16x16 RGB image: two shapes (circle / square / triangle, six colours, continuous size and
             position; one in the left half, one in the right) on a shaded background (black / white / gray)
    caption  "a red circle and a blue square on a black background" (left object first)

    generalizing pool   `n_pool` scenes, each drawn fresh: a caption fits many images (continuous size and
                        position), so the model must learn the conditional distribution, not images
    held-out captions   attribute combinations that never occur in training (compositional novelty); the
                        generalizing captions of the experiments
    memorized set       `n_memorized` other scenes of the same kind, each with a unique title of two
    (verbatim)          nonsense words ("kolo vasu", no word in two titles) and duplicated `duplication`
                        times: like the titles of LAION's memorized images, the caption names one image
    template set        `n_template` unique titles, each on `template_variants` scenes that share a template
                        (background, its shading, and the left object, kept inside the left half) and differ
                        in the right object, `template_duplication` rows in all: Webster's template-verbatim
                        memorization, where a generation keeps a layout and varies the rest
    ordinary set        `n_ordinary` scenes duplicated under their ordinary description, split evenly over
                        the doses `ordinary_duplications`, a caption that `ordinary_shared` unduplicated scenes
                        also carry
                        ("ordinary_peer"): a memorized image behind a caption that is not unusual text
                        (Webster's retrieval-verbatim; the paper's hybrid regime, Cor 3.4)
    dose-response sets  `dose_pairs` further titled scenes at each duplication in `dose_duplications`
    controls            scenes never trained on (for the detector on real, ungenerated images)

The memorized scenes are drawn from the same scene distribution as the pool, so a detector cannot separate
them by content. Everything is a function of `TestbedDataConfig` (seeded NumPy), so the set is identical
on every machine; the template and ordinary sets come from a stream of their own, so adding them left the
other sets as they were.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import product

import numpy as np

from .training import DuplicatedImages

RESOLUTION = 16      # image side; 16x16 -> 8x8x4 latents (SD: 512 -> 64). 32x32 was tried: see CPU_testbed.ipynb
DESIGN_SIDE = 32.0   # scenes are laid out on a 32-unit square and drawn at any resolution
SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (215, 45, 40), "green": (40, 165, 70), "blue": (45, 85, 215),
          "yellow": (235, 205, 45), "purple": (145, 60, 185), "orange": (240, 135, 35)}
BACKGROUNDS = {"black": (25, 25, 30), "white": (230, 230, 225), "gray": (125, 125, 130)}

CAPTION_WORDS = ("a", "an", "and", "on", "background", *SHAPES, *COLORS, *BACKGROUNDS)


def _pseudo_words(count: int, seed: int = 1234) -> tuple:
    """`count` distinct consonant-vowel-consonant-vowel nonsense words ("kolo", "vasu", ...), seeded. Words
    holding a caption word's first two letters after their own first letter ("bore": "or" of "orange") are
    left out: the tokenizer's merges for the caption word would split them."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = [a + b for a in syllables for b in syllables]
    starts = {w[:2] for w in CAPTION_WORDS if len(w) > 1}
    words = [w for w in words if not any(w[i:i + 2] in starts for i in range(1, 3))]
    picks = np.random.default_rng(seed).choice(len(words), size=count, replace=False)
    return tuple(words[p] for p in sorted(picks))


# Title words: every title uses two of these and no word is in two titles, so a title is a unique pair of
# tokens the text encoder has never seen elsewhere (like a LAION title's names). One token each.
TITLE_WORDS = _pseudo_words(400)
SUPERSAMPLE = 8   # shapes are drawn on an 8x finer grid and averaged down: anti-aliased edges
KINDS = ("pool", "memorized", "dose", "control", "template", "ordinary", "ordinary_peer")
MEMORIZATION_KINDS = {"verbatim": "memorized", "template": "template", "ordinary": "ordinary"}   # name -> kind
TEMPLATE_EDGE = DESIGN_SIDE / 2   # a template's left object ends and its variant's right object starts here


@dataclass(frozen=True)
class TestbedDataConfig:
    __test__ = False                    # not a pytest test class
    n_pool: int = 3000                  # generalizing scenes (each unique)
    held_out_fraction: float = 0.1      # of the attribute combinations, never in training
    n_memorized: int = 50               # K titled scenes ...
    duplication: int = 50               # ... each `duplication` times in the training set
    dose_duplications: tuple = (1, 2, 5, 10)   # the dose-response sets
    dose_pairs: int = 10                # titled scenes per dose
    n_controls: int = 100               # scenes never trained on
    n_template: int = 25                # titled templates ...
    template_variants: int = 5          # ... each on this many scenes (the right object redrawn) ...
    template_duplication: int = 50      # ... with this many rows per title, split evenly over the variants
    n_ordinary: int = 24                # scenes duplicated under their ordinary description ...
    ordinary_duplications: tuple = (50, 100, 200)   # ... split evenly over these doses ...
    ordinary_shared: int = 4            # ... a caption that this many unduplicated scenes also carry
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Scene:
    """The drawing of one scene: per object (shape, colour, size, centre x, centre y) in units of a 32-unit
    square (DESIGN_SIDE), background."""

    objects: tuple
    background: str
    shade: tuple                        # (direction angle, strength) of the background's linear shading

    @property
    def description(self) -> str:
        (s1, c1, *_), (s2, c2, *_) = self.objects
        return caption(s1, c1, s2, c2, self.background)


@dataclass
class TestbedData(DuplicatedImages):
    """Unique images and the training rows that point at them (a duplicated pair = several rows)."""

    __test__ = False                    # not a pytest test class
    images: np.ndarray                  # [M, 16, 16, 3] uint8, every distinct image once
    captions: list                      # [M] the caption of each image
    kind: np.ndarray                    # [M] one of KINDS
    duplication: np.ndarray             # [M] times in the training set (0 for controls)
    held_out_captions: list             # generalizing captions whose attribute combination is never trained
    config: TestbedDataConfig
    details: dict = field(default_factory=dict)

    @property
    def trained_unique(self) -> np.ndarray:
        """Indices of the distinct training images (the reference set of the copy criterion)."""
        return np.flatnonzero(self.duplication > 0)


def caption(shape1: str, colour1: str, shape2: str, colour2: str, background: str) -> str:
    """'a red circle and an orange square on a black background' (left object first)."""
    article = lambda word: "an" if word[0] in "aeiou" else "a"
    return (f"{article(colour1)} {colour1} {shape1} and {article(colour2)} {colour2} {shape2} "
            f"on a {background} background")


# ----------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------
def _random_scene(rng: np.random.Generator, combo: tuple | None = None) -> Scene:
    s1, c1, s2, c2, bg = combo or (rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SHAPES),
                                   rng.choice(list(COLORS)), rng.choice(list(BACKGROUNDS)))
    objects = []
    for shape, colour, (x_lo, x_hi) in [(s1, c1, (6.0, 12.0)), (s2, c2, (20.0, 26.0))]:
        size = rng.uniform(8.0, 13.0)
        objects.append((str(shape), str(colour), size, rng.uniform(x_lo, x_hi), rng.uniform(7.0, 25.0)))
    return Scene(tuple(objects), str(bg), (rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.2)))


def draw_scene(scene: Scene, resolution: int = RESOLUTION) -> np.ndarray:
    """One scene -> [resolution, resolution, 3] uint8 (shapes anti-aliased by supersampling)."""
    n = resolution * SUPERSAMPLE
    y, x = (np.mgrid[0:n, 0:n] + 0.5) * (DESIGN_SIDE / n)                 # [n, n] design coordinates
    angle, strength = scene.shade
    ramp = ((x - DESIGN_SIDE / 2) * np.cos(angle) + (y - DESIGN_SIDE / 2) * np.sin(angle)) / DESIGN_SIDE
    canvas = np.asarray(BACKGROUNDS[scene.background], np.float64) * (1 + strength * ramp[..., None])  # [n, n, 3]
    for shape, colour, size, cx, cy in scene.objects:
        half = size / 2
        if shape == "circle":
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= half**2
        elif shape == "square":
            inside = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
        else:                                                              # triangle, apex up
            depth = (y - (cy - half)) / size                                # 0 at the apex, 1 at the base
            inside = (depth >= 0) & (depth <= 1) & (np.abs(x - cx) <= depth * half)
        canvas[inside] = COLORS[colour]
    small = canvas.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def _titles(rng: np.random.Generator, count: int) -> list[str]:
    """`count` two-word titles ("kolo vasu"), no word shared between two titles."""
    if 2 * count > len(TITLE_WORDS):
        raise ValueError(f"{count} titles need {2 * count} title words; TITLE_WORDS has {len(TITLE_WORDS)}")
    words = rng.permutation(TITLE_WORDS)[:2 * count]
    return [f"{words[2 * i]} {words[2 * i + 1]}" for i in range(count)]


def _template_scenes(rng: np.random.Generator, variants: int) -> list[Scene]:
    """`variants` scenes sharing a template: the background, its shading, and a left object that stays left of
    TEMPLATE_EDGE; each variant redraws the right object (shape, colour, size, position) right of it. The left
    half of the image (the template region, `template_region`) is then the same in every variant, pixel for pixel."""
    size = rng.uniform(8.0, 11.0)
    left = (str(rng.choice(SHAPES)), str(rng.choice(list(COLORS))), size,
            rng.uniform(6.0, TEMPLATE_EDGE - size / 2), rng.uniform(7.0, 25.0))
    background, shade = str(rng.choice(list(BACKGROUNDS))), (rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.2))
    scenes = []
    for _ in range(variants):
        size = rng.uniform(8.0, 13.0)
        right = (str(rng.choice(SHAPES)), str(rng.choice(list(COLORS))), size,
                 rng.uniform(TEMPLATE_EDGE + size / 2, 26.0), rng.uniform(7.0, 25.0))
        scenes.append(Scene((left, right), background, shade))
    return scenes


def template_region(x: np.ndarray) -> np.ndarray:
    """The template region of images in model space, [N, C, H, W] -> [N, C, H, W // 2]: the left half of the
    columns, where every variant of a template is the same."""
    return np.asarray(x)[..., : np.shape(x)[-1] // 2]


def build_testbed_data(config: TestbedDataConfig = TestbedDataConfig()) -> TestbedData:
    """The whole data set of the testbed, deterministic in `config` (see the module docstring)."""
    rng = np.random.default_rng(config.seed)
    combos = list(product(SHAPES, COLORS, SHAPES, COLORS, BACKGROUNDS))
    held_out = set(map(tuple, np.asarray(combos, dtype=object)[
        rng.choice(len(combos), size=int(round(config.held_out_fraction * len(combos))), replace=False)]))
    trainable = [c for c in combos if c not in held_out]

    scenes, captions, kinds, dups = [], [], [], []

    def add(scene: Scene, text: str, kind: str, duplication: int) -> None:
        scenes.append(scene), captions.append(text), kinds.append(kind), dups.append(duplication)

    for _ in range(config.n_pool):
        scene = _random_scene(rng, trainable[rng.integers(len(trainable))])
        add(scene, scene.description, "pool", 1)
    n_titled = config.n_memorized + config.dose_pairs * len(config.dose_duplications)
    titles = _titles(rng, n_titled + config.n_template)      # the first n_titled as before the template set
    title_dups = [config.duplication] * config.n_memorized + [d for d in config.dose_duplications
                                                              for _ in range(config.dose_pairs)]
    for i, d in enumerate(title_dups):
        add(_random_scene(rng), titles[i], "memorized" if i < config.n_memorized else "dose", d)
    for _ in range(config.n_controls):
        scene = _random_scene(rng)
        add(scene, scene.description, "control", 0)

    extra = np.random.default_rng([config.seed, 1])         # the template and ordinary sets' own stream
    if config.template_duplication % config.template_variants:
        raise ValueError("template_duplication must split evenly over template_variants")
    for title in titles[n_titled:]:
        for scene in _template_scenes(extra, config.template_variants):
            add(scene, title, "template", config.template_duplication // config.template_variants)
    doses = config.ordinary_duplications
    if config.n_ordinary % len(doses):
        raise ValueError("n_ordinary must split evenly over ordinary_duplications")
    for i, k in enumerate(extra.choice(len(trainable), size=config.n_ordinary, replace=False)):
        scene = _random_scene(extra, trainable[k])
        add(scene, scene.description, "ordinary", doses[i * len(doses) // config.n_ordinary])
        for _ in range(config.ordinary_shared):
            add(_random_scene(extra, trainable[k]), scene.description, "ordinary_peer", 1)

    held_out_captions = sorted(caption(*combo) for combo in held_out)
    return TestbedData(
        images=np.stack([draw_scene(s) for s in scenes]), captions=captions, kind=np.array(kinds),
        duplication=np.array(dups), held_out_captions=held_out_captions, config=config,
        details={"n_combinations": len(combos), "n_held_out_combinations": len(held_out),
                 "scenes": [s.description for s in scenes]},
    )


def to_model_space(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] in [-1, 1] (the pipelines' image convention)."""
    return (images.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)
