"""Record the outputs of named submodules during a forward pass (a context manager over forward hooks).

    with RepresentationRecorder(pipe.unet, ["up_blocks.0.resnets.2.nonlinearity"]) as recorder:
        pipe.unet(noisy_latents, t, encoder_hidden_states=empty_prompt)
    h = recorder.outputs["up_blocks.0.resnets.2.nonlinearity"]      # [B, 1280, 8, 8] for SD v1.4

**A module called several times keeps its last call** (`keep="last"`, the official `extract_one`'s
behaviour: its hook overwrites a dict entry). This matters for the paper's layer: diffusers'
`ResnetBlock2D` owns one SiLU module, `nonlinearity`, and calls it three times per forward — after
`norm1`, on the time embedding, and after `norm2` (`diffusers/models/resnet.py`). The representation of
the paper is the last call, SiLU(GroupNorm₂(conv₁(·) + temb)), [B, C, H, W].
`calls[name]` counts the calls, so a caller can check it. `keep="all"` keeps every call in order instead
(e.g. the UNet's output at every sampling step, for the Wen et al. baseline).

A module returning a tuple (the UNet with `return_dict=False`, attention blocks) is recorded by its first
element. The empty name "" is the model itself. Outputs are detached (no autograd graph is kept). The
hooks are removed when the block exits, also on an exception, so the model runs afterwards exactly as if
it had never been hooked.
"""
from __future__ import annotations

import difflib
from collections import defaultdict

import torch
import torch.nn as nn

KEEP_MODES = ("last", "all")


class UnknownModuleError(KeyError):
    """A requested module name is not a submodule of the model; the message lists the closest valid names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def resolve_modules(model: nn.Module, names) -> dict[str, nn.Module]:
    """{name: submodule} for each name ("" is the model itself); unknown names raise `UnknownModuleError`
    listing the closest valid names."""
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        lines = []
        for name in missing:
            close = difflib.get_close_matches(name, modules, n=5, cutoff=0.6)
            lines.append(f"{name!r} is not a module of {type(model).__name__}; closest valid names: "
                         + (", ".join(close) if close else "(none; see model.named_modules())"))
        raise UnknownModuleError("\n".join(lines))
    return {name: modules[name] for name in names}


def _first_tensor(output):
    """The module's output, or the first element of a tuple/list output, or `.sample` of a diffusers output."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor) and hasattr(output, "sample"):
        output = output.sample
    return output


class RepresentationRecorder:
    """Context manager: register forward hooks on `names` of `model`, record their outputs, remove the hooks.

    outputs[name]  the last call's output (keep="last") or the list of every call's output (keep="all")
    calls[name]    how many times the module ran while recording
    """

    def __init__(self, model: nn.Module, names, keep: str = "last"):
        if keep not in KEEP_MODES:
            raise ValueError(f"keep must be one of {KEEP_MODES}, not {keep!r}")
        if isinstance(names, str):
            names = [names]
        self.modules = resolve_modules(model, list(names))
        self.keep = keep
        self.outputs: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        self.calls: dict[str, int] = defaultdict(int)
        self._handles: list = []

    def _hook(self, name: str):
        def record(_module, _inputs, output):
            value = _first_tensor(output).detach()
            self.calls[name] += 1
            if self.keep == "last":
                self.outputs[name] = value
            else:
                self.outputs.setdefault(name, []).append(value)
        return record

    def __enter__(self) -> "RepresentationRecorder":
        self.outputs.clear()
        self.calls.clear()
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
