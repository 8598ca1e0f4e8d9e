"""Training speed of the testbeds' models: the stock loop against every CPU speed-up we tried, side by side.

Models (each at its default size, the batch its testbed trains with):
    edm      the EDM testbed's denoiser (`testbeds/edm_testbed.py`: UNet2DModel 16/32/64, 32x32 RGB, batch 32), EDM loss
    testbed  the CPU testbed's UNet + text encoder (`testbeds/cpu_testbed.py`: UNet2DConditionModel 64/128 on 8x8x4 latents,
             batch 64), ε-prediction MSE, grad clipping
    testbed32  the same at 32x32 images (16x16 latents, `up_blocks.0` at 8x8 as in SD v1.4): its step time
             projects the 32x32 testbed's training time (not a variant of the loop)

Loops, one step = draw a batch, forward, backward, optimizer step, `loss.item()`:
    stock           diffusers' example loop: fp32, eager, `torch.optim.AdamW` (its default implementation)
    fused-adamw     AdamW(fused=True): one kernel for the optimizer step
    channels-last   model and batch in channels-last memory format (oneDNN's preferred layout)
    compile         `torch.compile(model)` (inductor, C++ backend); its compile time is printed apart
    bf16-autocast   `torch.autocast("cpu", torch.bfloat16)` around the forward
Every loop runs `--steps` timed steps after 3 warm-up steps, the loops alternate `--repeats` times (ABC...ABC), and
the median is reported with its ratio to stock (> 1: faster). Absolute times drift on shared machines; quote
the ratio. A profile of the stock EDM step (`--profile`) says where the time goes.

    python benchmarks/testbed_train_speed.py [--models edm testbed testbed32] [--steps 15] [--repeats 2] [--profile]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from common.models import edm
from common.testbeds import edm_testbed
from common.testbeds import cpu_testbed as testbed

LOOPS = ("stock", "fused-adamw", "channels-last", "compile", "bf16-autocast")


def edm_parts():
    """(modules, loss(model_fns, generator)) of the EDM testbed's step."""
    config = edm_testbed.EDMTestbedConfig()
    denoiser = edm_testbed.build_denoiser(config)
    images = torch.rand(256, 3, 32, 32) * 2 - 1

    def loss(fns, generator):
        y = images[torch.randint(len(images), (config.batch_size,), generator=generator)]
        return edm.edm_loss(fns["denoiser"], y, generator).mean()

    return {"denoiser": denoiser}, loss, (3, 32, 32)


def testbed_parts(sample_size: int = 8):
    """The CPU testbed's UNet + text encoder step; `sample_size` is the latent side (8: 16x16 images)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from common.models.pipelines import SD_SCHEDULER_CONFIG

    config = testbed.TestbedConfig()
    tokenizer = testbed.build_word_tokenizer()
    _, text_encoder, unet = testbed.build_models(tokenizer, config.seed)
    if sample_size != unet.config.sample_size:
        torch.manual_seed(config.seed)
        unet = UNet2DConditionModel(**{**testbed.UNET_CONFIG, "sample_size": sample_size})
    scheduler = DDPMScheduler(**{k: v for k, v in SD_SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})
    latents = torch.randn(256, 4, sample_size, sample_size)
    ids = torch.randint(0, len(tokenizer), (256, testbed.MAX_TOKENS))

    def loss(fns, generator):
        idx = torch.randint(len(latents), (config.batch_size,), generator=generator)
        z0, noise = latents[idx], torch.randn(latents[idx].shape, generator=generator)
        t = torch.randint(scheduler.config.num_train_timesteps, (len(idx),), generator=generator)
        context = fns["text_encoder"](ids[idx])[0]
        return F.mse_loss(fns["unet"](scheduler.add_noise(z0, noise, t), t, encoder_hidden_states=context).sample, noise)

    return {"unet": unet, "text_encoder": text_encoder}, loss, (4, sample_size, sample_size)


MODELS = {"edm": edm_parts, "testbed": testbed_parts, "testbed32": lambda: testbed_parts(16)}


def make_step(parts, loop: str):
    """A closure running one training step of `loop`; returns (step, seconds spent compiling in the first call)."""
    modules, loss_fn, _ = parts
    params = [p for m in modules.values() for p in m.parameters()]
    for m in modules.values():
        m.train()
    if loop == "channels-last":
        for m in modules.values():
            m.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=loop == "fused-adamw" or None)
    fns = {k: torch.compile(m) if loop == "compile" else m for k, m in modules.items()}
    generator = torch.Generator().manual_seed(0)

    def step():
        with torch.autocast("cpu", torch.bfloat16, enabled=loop == "bf16-autocast"):
            loss = loss_fn(fns, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss.item()

    return step


def profile_line(parts) -> str:
    from torch.profiler import ProfilerActivity, profile

    step = make_step(parts, "stock")
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:5]
    return (f"profile of the stock step: convolutions (forward + backward) {conv / total:.0%} of CPU time; top: "
            + ", ".join(f"{e.key} {e.self_cpu_time_total / total:.0%}" for e in top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS))
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}, "
          f"oneDNN bf16 kernels: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}; {args.steps} steps x {args.repeats} "
          "repeats per loop, alternating\n")
    for name in args.models:
        loops = ["stock"] if name == "testbed32" else args.loops
        steps = {loop: make_step(MODELS[name](), loop) for loop in loops}
        compile_seconds, times = {}, {loop: [] for loop in loops}
        for loop, step in steps.items():                       # warm-up (compiles the compiled loop)
            t0 = time.perf_counter()
            for _ in range(3):
                step()
            compile_seconds[loop] = time.perf_counter() - t0
        for _ in range(args.repeats):
            for loop, step in steps.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times[loop].append((time.perf_counter() - t0) / args.steps)
        stock = statistics.median(times["stock"])
        print(f"{name}:")
        for loop in loops:
            t = statistics.median(times[loop])
            extra = f"  (first 3 steps {compile_seconds[loop]:.0f} s)" if loop == "compile" else ""
            print(f"  {loop:<15}{t:8.3f} s/step  {stock / t:5.2f}x stock{extra}")
        if name == "testbed32":
            config = testbed.TestbedConfig()
            print(f"  projected UNet + text encoder training at 32x32: {config.steps} steps x {stock:.3f} s = "
                  f"{config.steps * stock / 60:.0f} min (16x16: see `testbed` above)")
        if args.profile and name == "edm":
            print("  " + profile_line(MODELS[name]()))
        print()


if __name__ == "__main__":
    main()
