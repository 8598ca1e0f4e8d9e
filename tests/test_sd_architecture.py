"""Slow tier: the real SD v1.4 architecture (built from its config, random weights, CPU) at the paper's layer.

The SD v1.4 weights are not available here; what can be checked without them is that the architecture the
detector hooks gives the shapes the paper reports: a 1280-dimensional representation, 8x8 before pooling,
for a 64x64 latent (a 512x512 image), and the five steered blocks take 1280-channel steering vectors. Run with
`make test-slow` (about a minute, ~5 GB of memory).
"""
import pytest
import torch

from common.models import pipelines, representations
from common.models.hooks import RepresentationRecorder

pytestmark = pytest.mark.slow


@torch.no_grad()
def test_sd14_unet_gives_a_1280x8x8_representation_at_the_paper_layer():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**pipelines.SD14_UNET_CONFIG).eval()
    assert sum(p.numel() for p in unet.parameters()) == pytest.approx(859.5e6, rel=0.01)   # SD v1.4's UNet
    latents = torch.randn(2, 4, 64, 64)                                   # [B, 4, 64, 64]: 512x512 images
    text = torch.randn(2, 77, 768)                                        # [B, 77, 768]: CLIP ViT-L/14 width
    with RepresentationRecorder(unet, [representations.DETECTION_LAYER]) as rec:
        unet(latents, torch.full((2,), representations.DETECTION_TIMESTEP), encoder_hidden_states=text)
    assert rec.calls[representations.DETECTION_LAYER] == 3
    assert rec.outputs[representations.DETECTION_LAYER].shape == (2, 1280, 8, 8)


@torch.no_grad()
def test_sd14_sized_pipeline_runs_the_detector_on_512px_images():
    pipe = pipelines.load_pipeline("sd14", device="cpu")
    assert representations.pipeline_resolution(pipe) == 512
    images = torch.rand(1, 3, 512, 512) * 2 - 1
    reps = representations.extract_representations(pipe, images, representations.HOOKED_LAYERS,
                                                   poolings=representations.POOLINGS, progress=False)
    widths = {layer: reps[layer]["spatial_max"].shape for layer in representations.HOOKED_LAYERS}
    assert widths == {representations.HOOKED_LAYERS[0]: (1, 1280), representations.HOOKED_LAYERS[1]: (1, 1280),
                      representations.HOOKED_LAYERS[2]: (1, 1280), representations.HOOKED_LAYERS[3]: (1, 1280)}


@torch.no_grad()
def test_sd14_unet_takes_the_official_steering_vectors_on_the_conditional_half():
    from diffusers import UNet2DConditionModel

    from common.steering import steerability, steerer as steering

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**pipelines.SD14_UNET_CONFIG).eval()
    vectors = {layer: torch.full((1280,), 0.5) for layer in steering.STEERING_LAYERS}          # [1280] each
    latents = torch.randn(1, 4, 64, 64).expand(2, -1, -1, -1)                                  # [uncond; cond]
    text = torch.randn(2, 77, 768)
    names = [*steering.STEERING_LAYERS, steerability.TRAJECTORY_LAYER]
    with RepresentationRecorder(unet, names) as plain:
        unet(latents, torch.full((2,), 500), encoder_hidden_states=text)
    with steering.RepresentationSteerer(unet, vectors, 0.4, steering.StepWindow((0,), 1), cfg=True):
        with RepresentationRecorder(unet, names) as steered:
            unet(latents, torch.full((2,), 500), encoder_hidden_states=text)
    shapes = {name: tuple(plain.outputs[name].shape[1:]) for name in names}
    assert shapes == {"up_blocks.0.resnets.0": (1280, 8, 8), "up_blocks.0.resnets.1": (1280, 8, 8),
                      "up_blocks.0.resnets.2": (1280, 8, 8), "up_blocks.1.resnets.0": (1280, 16, 16),
                      "up_blocks.1.resnets.1": (1280, 16, 16), steerability.TRAJECTORY_LAYER: (2560, 8, 8)}
    first = steering.STEERING_LAYERS[0]
    assert torch.equal(steered.outputs[first][0], plain.outputs[first][0])                    # unconditional
    torch.testing.assert_close(steered.outputs[first][1] - plain.outputs[first][1],
                               torch.full((1280, 8, 8), 0.2), rtol=1e-4, atol=1e-4)
