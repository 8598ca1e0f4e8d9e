"""The official notebooks' models and training cells, as written: the ground truth our trainers are tested
and benchmarked against, and the writer of checkpoint files in the official format.

Transcribed from github.com/la0ka1/diffusion-gen-from-rep (commit b706f52): `1-Theory/ReLU_DAE.ipynb` cells 5,
7 and 9 (`DAE`, the Mem and Gen training loops) and `1-Theory/ReLU_Diffusion.ipynb` cells 4, 6 and 8 (`DAECond`,
its Mem and Gen loops). What must match the original exactly is kept exactly: the module nesting and the order
in which layers are built and initialised (so `torch.manual_seed(1)` gives the same weights), the key names and
shapes of `state_dict()`, the single seed set *before* the model is built (training draws continue after the
init's draws), the loaders, the σ sampler in float32, and the order of every random draw. Data, step counts
and hyperparameters are arguments; the original's progress prints, device moves and figure code are left out.
Nothing here is fast: `common.theory.dae.train_dae` and `common.theory.toy_diffusion.train_diffusion` are.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------------
# ReLU_DAE.ipynb
# ----------------------------------------------------------------------------------------------------
class DAE(nn.Module):
    """The official `DAE(d=100)`: each layer wrapped in `nn.Sequential`, so the keys are `encoder.0.weight`
    [d, 1024] and `decoder.0.weight` [1024, d]; the decoder is re-pointed at the encoder's transposed storage."""

    def __init__(self, d: int = 100, in_dim: int = 32 * 32):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_dim, d, bias=False))
        self.decoder = nn.Sequential(nn.Linear(d, in_dim, bias=False))
        self.decoder[0].weight = nn.Parameter(self.encoder[0].weight.t())   # the alias tie

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(F.relu(self.encoder(x)))


def train_dae_mem(flat_mem: torch.Tensor, epochs: int = 50_000, sigma: float = 0.2, lr: float = 1e-3,
                  weight_decay: float = 1e-2, seed: int = 1, p: int = 100) -> DAE:
    """Cell 7: full batch, RMSprop, fresh noise every epoch."""
    torch.manual_seed(seed)
    model = DAE(p, flat_mem.shape[1])
    optimizer = torch.optim.RMSprop(model.parameters(), lr=lr, weight_decay=weight_decay)
    criterion = nn.MSELoss()
    for _ in range(epochs):
        optimizer.zero_grad()
        noisy_img = flat_mem + sigma * torch.randn_like(flat_mem)
        loss = criterion(model(noisy_img), flat_mem)
        loss.backward()
        optimizer.step()
    return model


def train_dae_gen(flat_gen: torch.Tensor, epochs: int = 50_000, sigma: float = 0.2, lr: float = 1e-4,
                  weight_decay: float = 1e-4, seed: int = 1, p: int = 100, batch_size: int = 256) -> DAE:
    """Cell 9: batches of 256 drawn with replacement (`torch.randint`), Adam."""
    torch.manual_seed(seed)
    model = DAE(p, flat_gen.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    criterion = nn.MSELoss()
    for _ in range(epochs):
        optimizer.zero_grad()
        idx = torch.randint(0, len(flat_gen), (batch_size,))
        clean = flat_gen[idx]
        noisy = clean + sigma * torch.randn_like(clean)
        loss = criterion(model(noisy), clean)
        loss.backward()
        optimizer.step()
    return model


# ----------------------------------------------------------------------------------------------------
# ReLU_Diffusion.ipynb
# ----------------------------------------------------------------------------------------------------
class DAECond(nn.Module):
    """The official `DAECond(in_dim=1024, hid=256)`: built in this order (encoder, skip, time MLP), then the
    encoder re-initialised (kaiming uniform) and the MLP's last layer zeroed. `skip` is a 0-dim Parameter.
    Its forward takes log σ."""

    def __init__(self, in_dim: int = 32 * 32, hid: int = 256):
        super().__init__()
        self.encoder = nn.Linear(in_dim, hid, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.skip = nn.Parameter(torch.tensor(0.0))
        self.time_mlp = nn.Sequential(nn.Linear(1, hid), nn.ReLU(inplace=True), nn.Linear(hid, hid))
        nn.init.kaiming_uniform_(self.encoder.weight, a=0.0, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.time_mlp[-1].weight)
        nn.init.zeros_(self.time_mlp[-1].bias)

    def forward(self, x_t: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        if log_sigma.dim() == 1:
            log_sigma = log_sigma[:, None]
        h = self.act(self.encoder(x_t))
        h = h * torch.exp(self.time_mlp(log_sigma))
        return F.linear(h, self.encoder.weight.t()) + self.skip * x_t


def sample_sigmas(bsz: int, sigma_min: float = 0.02, sigma_max: float = 2.0) -> torch.Tensor:
    """Log-uniform σ on [σ_min, σ_max], [B], computed in float32 as the official `sample_sigmas`."""
    u = torch.rand(bsz)
    log_s_min, log_s_max = torch.log(torch.tensor(sigma_min)), torch.log(torch.tensor(sigma_max))
    return torch.exp(log_s_min + u * (log_s_max - log_s_min))


def train_diffusion(flat: torch.Tensor, steps: int, optimizer: str, lr: float, weight_decay: float,
                    batch_size: int | None = None, seed: int = 1, hid: int = 256) -> DAECond:
    """Cells 6 (Mem: RMSprop, `batch_size=len(ds)`) and 8 (Gen: Adam, batch 256): a shuffled DataLoader with
    drop_last, σ then ε drawn per batch, MSE on x0."""
    torch.manual_seed(seed)
    model = DAECond(in_dim=flat.shape[1], hid=hid).train()
    opt_class = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}[optimizer]
    opt = opt_class(model.parameters(), lr=lr, weight_decay=weight_decay)
    criterion = nn.MSELoss()
    ds = torch.utils.data.TensorDataset(flat)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size or len(ds), shuffle=True, drop_last=True)
    step = 0
    while step < steps:
        for (x0,) in loader:
            sigma = sample_sigmas(x0.size(0))
            x_t = x0 + sigma[:, None] * torch.randn_like(x0)
            loss = criterion(model(x_t, torch.log(sigma)), x0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    return model
