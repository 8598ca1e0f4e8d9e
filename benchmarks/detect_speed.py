"""Detection speed: seconds per image of the memorization score, side by side in one run.

On the same pipeline and the same images, each timed `--repeats` times in turn (ABCD ABCD ...) so machine
drift hits all of them; the median per image is reported, with ratios:

    official loop   the official `extract_one` per image: register the hooks, tokenize and encode the empty
                    prompt, VAE encode (batch 1), `randn_like` noise, UNet pass, remove the hooks
    ours, batch 1   `representations.extract_representations(batch_size=1)`
    ours, batched   `representations.extract_representations(batch_size=--batch)`
    bare pass       VAE encode + add_noise + UNet at the same batch size, no hooks, no pooling: the floor

`official / ours batched` is the speed-up; `ours batched / bare` is the cost of the recorder and pooling.
Without a GPU it runs the tiny random-weight pipeline (`--model tiny`, fp32); with a GPU it runs the SD v1.4
architecture at full size in fp16 (`--model sd14`, random weights: the time of a pass does not depend on
them), and prints the paper's 0.067 s per image (Table 1, hardware not stated) beside ours. Absolute times
drift on shared machines; the ratios are the numbers to quote.

    python benchmarks/detect_speed.py [--model tiny|sd14] [--n 32] [--batch 16] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from common.models import pipelines, representations
from common.theory import stats

PAPER_SECONDS_PER_IMAGE = 0.067
LAYER = representations.DETECTION_LAYER
T = representations.DETECTION_TIMESTEP


def synchronize(pipe) -> None:
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def official_loop(pipe, images: torch.Tensor) -> np.ndarray:
    """The official `extract_one`, once per image: hooks and prompt encoding every call."""
    scores = []
    for image in images:
        feats = {}
        handle = dict(pipe.unet.named_modules())[LAYER].register_forward_hook(
            lambda m, i, o: feats.__setitem__(LAYER, o))
        ids = pipe.tokenizer("", padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(pipe.device)
        text = pipe.text_encoder(ids)[0].to(pipe.unet.dtype)                          # [1, 77, width]
        x = image[None].to(pipe.device, pipe.vae.dtype)                               # [1, 3, H, W]
        latents = pipe.vae.encode(x).latent_dist.sample() * pipe.vae.config.scaling_factor
        timestep = torch.tensor([T], device=pipe.device)
        noisy = pipe.scheduler.add_noise(latents, torch.randn_like(latents), timestep)
        pipe.unet(noisy.to(pipe.unet.dtype), timestep, encoder_hidden_states=text)
        handle.remove()
        scores.append(feats[LAYER].flatten(2).amax(dim=2)[0].float().std(unbiased=False).item())
    return np.array(scores)


@torch.no_grad()
def bare_pass(pipe, images: torch.Tensor, batch: int) -> None:
    """VAE encode + noise + UNet, batched, nothing recorded: the floor any extractor pays."""
    text = representations.encode_prompt(pipe, "", batch).to(pipe.unet.dtype)
    for start in range(0, len(images), batch):
        x = images[start:start + batch].to(pipe.device, pipe.vae.dtype)
        latents = pipe.vae.encode(x).latent_dist.sample() * pipe.vae.config.scaling_factor
        t = torch.full((len(x),), T, device=pipe.device)
        noisy = pipe.scheduler.add_noise(latents, torch.randn_like(latents), t)
        pipe.unet(noisy.to(pipe.unet.dtype), t, encoder_hidden_states=text[:len(x)])


def ours(pipe, images, batch) -> np.ndarray:
    reps = representations.extract_representations(pipe, images, batch_size=batch, progress=False)
    return stats.rep_std(reps[LAYER][representations.DETECTION_POOLING])


def timed(pipe, fn) -> tuple[float, object]:
    synchronize(pipe)
    t0 = time.perf_counter()
    out = fn()
    synchronize(pipe)
    return time.perf_counter() - t0, out


def main() -> None:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sd14" if gpu else "tiny", choices=pipelines.RANDOM_MODELS)
    parser.add_argument("--n", type=int, default=64 if gpu else 32, help="images per timing")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    pipe = pipelines.load_pipeline(args.model)
    side = representations.pipeline_resolution(pipe)
    images = torch.rand(args.n, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    print(f"torch {torch.__version__}, {pipe.device} ({torch.cuda.get_device_name() if gpu else f'{torch.get_num_threads()} threads'}), "
          f"model {args.model} in {pipe.unet.dtype}, {args.n} images of {side}x{side}, batch {args.batch}, "
          f"{args.repeats} repeats\n")

    methods = {
        "official loop (batch 1)": lambda: official_loop(pipe, images),
        "ours, batch 1": lambda: ours(pipe, images, 1),
        f"ours, batch {args.batch}": lambda: ours(pipe, images, args.batch),
        f"bare pass, batch {args.batch}": lambda: bare_pass(pipe, images, args.batch),
    }
    for fn in methods.values():                                                     # warm-up (kernels, caches)
        timed(pipe, fn)
    times, outputs = {name: [] for name in methods}, {}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            seconds, outputs[name] = timed(pipe, fn)
            times[name].append(seconds / args.n)
    per_image = {name: statistics.median(v) for name, v in times.items()}

    names = list(methods)
    print(f"{'method':<26} {'s / image':>10} {'ratio to ours batched':>22}")
    for name in names:
        print(f"{name:<26} {per_image[name]:>10.4f} {per_image[name] / per_image[names[2]]:>21.2f}x")
    print(f"\nspeed-up of ours (batched) over the official loop: {per_image[names[0]] / per_image[names[2]]:.2f}x")
    print(f"batching alone (ours batch 1 / ours batched):      {per_image[names[1]] / per_image[names[2]]:.2f}x")
    print(f"recorder + pooling overhead (ours / bare pass):    {per_image[names[2]] / per_image[names[3]]:.3f}x")
    print(f"max |score difference| ours batch 1 vs batched:    {np.abs(outputs[names[1]] - outputs[names[2]]).max():.1e}")
    if gpu and args.model == "sd14":
        print(f"\nseconds per image, ours batched: {per_image[names[2]]:.4f} (paper, Table 1: {PAPER_SECONDS_PER_IMAGE})")


if __name__ == "__main__":
    main()
