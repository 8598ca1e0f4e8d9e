"""The representation behind the std detector, against the paper's recipe written out step by step (the detectors
themselves: test_detectors.py)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from common.models import representations as reps
from common.theory import stats

LAYER = reps.DETECTION_LAYER


def random_images(n, side=32, seed=0):
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1   # [n, 3, H, W]


def sd_alphas_cumprod():
    """SD v1.x's scaled-linear schedule: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def empty_prompt_embedding(pipe):
    ids = pipe.tokenizer("", padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]                                           # [1, 77, width]


def test_pool_against_numpy():
    x = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(reps.pool(x, "spatial_max").numpy(), x.numpy().max(axis=(2, 3)))
    np.testing.assert_allclose(reps.pool(x, "spatial_mean").numpy(), x.numpy().mean(axis=(2, 3)), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown pooling"):
        reps.pool(x, "channel_max")


@torch.no_grad()
def test_detector_equals_the_paper_recipe_written_out(tiny_pipe):
    """VAE sample x 0.18215 -> sqrt(abar_10) z + sqrt(1 - abar_10) eps -> UNet(empty prompt) -> SiLU(norm2) of
    up_blocks.0.resnets.2 -> max over space -> population std."""
    pipe, images, seeds = tiny_pipe, random_images(2), [5, 6]
    abar = sd_alphas_cumprod()[10]
    expected = []
    for image, seed in zip(images, seeds):
        g = torch.Generator().manual_seed(seed)
        dist = pipe.vae.encode(image[None]).latent_dist
        z = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g)) * 0.18215      # [1, 4, 16, 16]
        eps = torch.randn(z.shape, generator=g)
        x_t = (abar.sqrt() * z + (1 - abar).sqrt() * eps).float()
        norm2 = []
        handle = pipe.unet.up_blocks[0].resnets[2].norm2.register_forward_hook(lambda m, i, o: norm2.append(o))
        pipe.unet(x_t, torch.tensor([10]), encoder_hidden_states=empty_prompt_embedding(pipe))
        handle.remove()
        h = F.silu(norm2[0]).amax(dim=(2, 3))[0].numpy().astype(np.float64)   # [C]
        expected.append(np.sqrt(np.mean((h - h.mean()) ** 2)))                 # population std
    out = reps.extract_representations(pipe, images, seeds=seeds, progress=False)[LAYER]["spatial_max"]
    assert out.shape == (2, pipe.unet.up_blocks[0].resnets[2].norm2.num_channels)
    np.testing.assert_allclose(stats.rep_std(out), expected, rtol=1e-4)
    np.testing.assert_allclose(stats.rep_std(out), out.std(axis=1, ddof=0), rtol=1e-6)


@torch.no_grad()
def test_scores_do_not_depend_on_the_batch_size(tiny_pipe):
    images = random_images(5, seed=1)
    kwargs = dict(layers=reps.HOOKED_LAYERS, poolings=reps.POOLINGS, progress=False)
    batched = reps.extract_representations(tiny_pipe, images, batch_size=3, **kwargs)
    single = reps.extract_representations(tiny_pipe, images, batch_size=1, **kwargs)
    for layer in reps.HOOKED_LAYERS:
        for pooling in reps.POOLINGS:
            np.testing.assert_allclose(batched[layer][pooling], single[layer][pooling], rtol=1e-4, atol=1e-5)
    other_seeds = reps.extract_representations(tiny_pipe, images, seeds=range(100, 105), progress=False)
    assert not np.allclose(other_seeds[LAYER]["spatial_max"], single[LAYER]["spatial_max"])
    with pytest.raises(ValueError, match="no images"):
        reps.extract_representations(tiny_pipe, images[:0], progress=False)


def test_wrong_size_images_are_resized_and_it_is_said_once(tmp_path, capsys):
    paths = []
    for i, side in enumerate([32, 40, 64]):
        Image.new("RGB", (side, side), (255, 0, 128)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    images = reps.load_images(paths, 32)
    assert images.shape == (3, 3, 32, 32)
    torch.testing.assert_close(images[:, :, 5, 5], torch.tensor([[1.0, -1.0, 128 / 127.5 - 1]] * 3))
    assert capsys.readouterr().out.strip().splitlines() == ["resized 2 of 3 images to 32x32 (the pipeline's resolution)"]
