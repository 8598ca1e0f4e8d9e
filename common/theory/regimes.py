"""The theory of §3 held against trained tied ReLU DAEs: the machinery of `1-Theory/ReLU_DAE_regimes.ipynb`.

    Mixture, make_mixture   the Gaussian mixture with regular-simplex means (Def 3.1 with β < 0)
    block_analysis          Thm 3.1 / Cor 3.3: per cluster, the trained block W_k against the top-p_k eigenvectors
                            of X_kX_kᵀ (principal angles) and the singular values
                            sqrt((λ_j − nλ)/(λ_j + n_kσ²))
    block_experiment        section 1: train on the mixture, trace the angles, analyse blocks and representations
    stored, cor32_run       Cor 3.2: columns that copy a training image, their norms against
                            sqrt((‖x‖² − nλ)/(‖x‖² + σ²)), the denoising loss after a settling run
    hybrid_experiment       Cor 3.4: duplicated points beside well-sampled clusters in one network (Fig 6)
    measure, sweep,         the memorization → generalization transition at fixed p: per n the copy fraction,
    crossing, convergence,  rep std and errors; where they cross; how much they still move late in training
    summarize
    *_summary               the results JSON sections (`results/ReLU_DAE_regimes.json`)

The network is `dae.TiedDAE`, f(x) = W[Wᵀx]₊ (Eq. 5), trained by `dae.train_dae` on Eq. 6; λ is
`dae.effective_lambda` (PyTorch's weight decay w gives λ = d·w/2 with the official alias tie).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.linalg import subspace_angles

from . import dae, stats


@dataclass(frozen=True)
class Setup:
    """What every experiment of the notebook shares: the network, the noise and the two criteria."""

    p: int = 100                 # hidden units
    tie: str = "alias"           # dae.TiedDAE's tie
    sigma: float = 0.2           # training noise level
    live_rel: float = 0.5        # live unit: norm ≥ live_rel · the largest unit norm
    copy_cos: float = 0.95       # a column copies an image when their cosine is ≥ copy_cos


# ----------------------------------------------------------------------------------------------------
# The mixture of Gaussians
# ----------------------------------------------------------------------------------------------------
@dataclass
class Mixture:
    means: np.ndarray    # [K, d] cluster means
    points: np.ndarray   # [J, d] the other simplex vertices (the duplicated images of the hybrid regime)
    bases: np.ndarray    # [K, d, r] orthonormal covariance directions
    eig: np.ndarray      # [r] covariance eigenvalues (the same for every cluster)

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """n samples, sample i from cluster i mod K; returns (x [n, d] float32, labels [n])."""
        rng = np.random.default_rng(seed)
        labels = np.arange(n) % len(self.means)
        z = rng.standard_normal((n, len(self.eig))) * np.sqrt(self.eig)       # [n, r]
        x = self.means[labels].copy()                                          # [n, d]
        for k in range(len(self.means)):
            x[labels == k] += z[labels == k] @ self.bases[k].T
        return x.astype(np.float32), labels

    def subspace(self, k: int) -> np.ndarray:
        """Orthonormal basis [d, r + 1] of cluster k's population subspace (mean and covariance directions)."""
        mean = self.means[k][:, None] / np.linalg.norm(self.means[k])
        return np.concatenate([mean, self.bases[k]], axis=1)


def simplex(n_vertices: int) -> np.ndarray:
    """[n, n] unit rows with pairwise cosine −1/(n − 1): the centred basis vectors, normalized."""
    s = np.eye(n_vertices) - 1.0 / n_vertices
    return s / np.linalg.norm(s, axis=1, keepdims=True)


def make_mixture(n_vertices: int, n_clusters: int, d: int = 128, rank: int = 19, mean_norm: float = 5.0,
                 eig_top: float = 0.4, eig_decay: float = 0.9, seed: int = 0) -> Mixture:
    """Regular-simplex means (the first n_clusters of n_vertices, norm mean_norm); each cluster a covariance of
    eigenvalues eig_top·eig_decay^j (j < rank) in its own directions; means and all covariance subspaces
    mutually orthogonal. The other n_vertices − n_clusters vertices are `points`."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((d, n_vertices + n_clusters * rank)))[0]
    vertices = mean_norm * simplex(n_vertices) @ Q[:, :n_vertices].T            # [n_vertices, d]
    bases = np.stack([Q[:, n_vertices + k * rank: n_vertices + (k + 1) * rank] for k in range(n_clusters)])
    eig = eig_top * eig_decay ** np.arange(rank)
    return Mixture(vertices[:n_clusters], vertices[n_clusters:], bases, eig)


def mixture_alpha(mix: Mixture) -> tuple[float, float]:
    """The spread of a cluster next to its mean: (rms ‖x − μ‖/‖μ‖ of the population, the largest ratio in
    10,000 samples of cluster 0)."""
    norm = float(np.linalg.norm(mix.means[0]))
    x, labels = mix.sample(10_000 * len(mix.means), seed=123)
    spread = np.linalg.norm(x[labels == 0] - mix.means[0], axis=1) / norm
    return float(np.sqrt(mix.eig.sum()) / norm), float(spread.max())


# ----------------------------------------------------------------------------------------------------
# Training and small measurements
# ----------------------------------------------------------------------------------------------------
def adam_config(n: int, steps: int, lr: float, sigma: float, weight_decay: float = 1e-4,
                batch: int = 256, seed: int = 1) -> dae.DAETrainConfig:
    """Adam with weight decay: full batch for n ≤ batch, else batches drawn with replacement."""
    return dae.DAETrainConfig(optimizer="adam", lr=lr, weight_decay=weight_decay, steps=steps,
                              batch_size=None if n <= batch else batch, sigma=sigma, seed=seed)


def train(x, cfg: dae.DAETrainConfig, setup: Setup, callback=None, every: int | None = None):
    """A fresh TiedDAE (seeded as the official notebooks: seed once, then build and train) trained on x."""
    x = torch.as_tensor(x, dtype=torch.float32)                                 # [n, d]
    model = dae.build_dae(cfg.seed, d=x.shape[1], p=setup.p, tie=setup.tie)
    log = dae.train_dae(model, x, cfg, progress=False, log_every=100, callback=callback, callback_every=every)
    return model, log


def weights(model) -> np.ndarray:
    """W [d, p] as float64."""
    return model.W.detach().numpy().astype(np.float64)


def noisy(x, sigma: float, seed: int, repeats: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(x repeated `repeats` times, the same plus σε) from a fixed generator: measurements never touch the
    global RNG."""
    x = torch.as_tensor(x, dtype=torch.float32).repeat(repeats, 1)             # [repeats·n, d]
    return x, x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


def participation(h) -> np.ndarray:
    """Effective number of active units, (Σh²)² / Σh⁴, per row: 1 for a spike, p_k for a flat block."""
    h2 = np.asarray(h, dtype=np.float64) ** 2
    return h2.sum(-1) ** 2 / np.maximum((h2**2).sum(-1), 1e-30)


# ----------------------------------------------------------------------------------------------------
# Thm 3.1 / Cor 3.3: block structure
# ----------------------------------------------------------------------------------------------------
def cluster_owners(W: np.ndarray, x: np.ndarray, labels: np.ndarray, n_clusters: int):
    """A unit belongs to cluster k when its pre-activation is > 0 on more than half of cluster k's samples.
    Returns (owner [p]: the cluster, −1 for none; the number of units that belong to two or more clusters)."""
    active = np.stack([((x[labels == k] @ W) > 0).mean(0) for k in range(n_clusters)])   # [K, p]
    owner = np.where(active.max(0) > 0.5, active.argmax(0), -1)
    return owner, int(((active > 0.5).sum(0) > 1).sum())


def block_analysis(W: np.ndarray, x: np.ndarray, labels: np.ndarray, n_clusters: int, n_lambda: float,
                   sigma: float):
    """Per cluster k (Thm 3.1): its units (`cluster_owners`), p_k = rank of their block W_k (singular values
    > 0.1) capped at the number of Gram eigenvalues above nλ, the principal angles (degrees, sorted) between the
    top-p_k left singular vectors of W_k and the top-p_k eigenvectors of X_kX_kᵀ, and the block's top-p_k
    singular values against sqrt((λ_j − nλ)/(λ_j + n_kσ²)). Returns (owner, shared, blocks)."""
    owner, shared = cluster_owners(W, x, labels, n_clusters)
    blocks = []
    for k in range(n_clusters):
        units = np.flatnonzero(owner == k)
        Xk = x[labels == k].astype(np.float64)                                  # [n_k, d]
        ev, V = np.linalg.eigh(Xk.T @ Xk)
        ev, V = ev[::-1], V[:, ::-1]                                            # descending
        U, S, _ = np.linalg.svd(W[:, units], full_matrices=False)
        p_k = int(min((S > 0.1).sum(), (ev > n_lambda).sum()))
        angles = np.degrees(subspace_angles(U[:, :p_k], V[:, :p_k])) if p_k else np.zeros(0)
        ratio = (ev[:p_k] - n_lambda) / (ev[:p_k] + len(Xk) * sigma**2)
        blocks.append({"units": units, "p_k": p_k, "angles": np.sort(angles), "sv": S[:p_k],
                       "sv_pred": np.sqrt(np.clip(ratio, 0, None)), "leftover_sv": S[p_k:], "U": V[:, :p_k]})
    return owner, shared, blocks


def all_angles(blocks) -> np.ndarray:
    return np.concatenate([b["angles"] for b in blocks])


def block_experiment(x, labels, n_clusters: int, cfg: dae.DAETrainConfig, setup: Setup, n_reps: int = 500,
                     rep_seed: int = 11, checkpoints: int = 4) -> dict:
    """Section 1: train on the mixture sample x, measure the mean principal angle at `checkpoints` points,
    analyse the blocks (`block_analysis`) and the representations of n_reps noisy training samples: their
    energy on their own cluster's units, effective units (`participation`), largest unit's share."""
    n_lambda = len(x) * dae.effective_lambda(cfg, x.shape[1], setup.tie)
    trace = []

    def checkpoint(step, model):
        _, shared, blocks = block_analysis(weights(model), x, labels, n_clusters, n_lambda, setup.sigma)
        angles = all_angles(blocks)
        trace.append({"step": step, "mean_angle": float(angles.mean()) if angles.size else None,
                      "shared_units": shared})

    model, log = train(x, cfg, setup, checkpoint, max(cfg.steps // checkpoints, 1))
    W = weights(model)                                                          # [d, p]
    owner, shared, blocks = block_analysis(W, x, labels, n_clusters, n_lambda, setup.sigma)
    sv_rel = np.concatenate([b["sv"] / np.maximum(b["sv_pred"], 1e-12) - 1 for b in blocks])
    _, inputs = noisy(x[:n_reps], setup.sigma, seed=rep_seed)
    h = model.represent(inputs).detach().numpy()                                # [n_reps, p]
    own = owner[None, :] == labels[:n_reps, None]                               # [n_reps, p] unit of its cluster
    energy = np.maximum((h**2).sum(1), 1e-30)
    return {"model": model, "log": log, "W": W, "owner": owner, "shared": shared, "blocks": blocks,
            "angles": all_angles(blocks), "sv_rel": sv_rel, "h": h, "labels": labels[:n_reps],
            "own_energy": ((h**2) * own).sum(1) / energy, "participation": participation(h),
            "top_share": (h**2).max(1) / energy, "trace": trace}


def block_summary(run: dict) -> dict:
    """The results JSON's `mog` section (less its settings)."""
    angles, sv_rel, blocks = run["angles"], run["sv_rel"], run["blocks"]
    return {
        "mean_principal_angle_deg": float(angles.mean()),
        "max_principal_angle_deg": float(angles.max()),
        "per_cluster": [{"units": len(b["units"]), "p_k": b["p_k"], "mean_angle_deg": float(b["angles"].mean()),
                         "singular_values": b["sv"], "predicted_singular_values": b["sv_pred"]} for b in blocks],
        "singular_value_rel_error_mean": float(np.abs(sv_rel).mean()),
        "singular_value_rel_error_max": float(np.abs(sv_rel).max()),
        "units_without_cluster": int((run["owner"] < 0).sum()), "units_shared_by_clusters": run["shared"],
        "own_block_energy_fraction": float(run["own_energy"].mean()),
        "effective_units": float(run["participation"].mean()),
        "largest_unit_energy_share": float(run["top_share"].mean()),
        "rep_std": float(stats.rep_std(run["h"]).mean()),
        "trace": run["trace"],
    }


def unit_order(W: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Unit indices sorted by group (−1, no group, last), then by column norm, largest first."""
    group = np.where(group < 0, group.max() + 1, group)
    return np.lexsort((-np.linalg.norm(W, axis=0), group))


# ----------------------------------------------------------------------------------------------------
# Cor 3.2: the memorizing closed form
# ----------------------------------------------------------------------------------------------------
def stored(W: np.ndarray, x: np.ndarray, copy_cos: float) -> dict:
    """Per image: the columns copying it (cos ≥ copy_cos), its stored energy Σ‖w‖² over them and its best
    cosine; also the cosine matrix [p, n]."""
    cos = stats.cosine_matrix(W.T, x)                                           # [p, n]
    sq = (W**2).sum(0)                                                          # [p]
    return {"energy": np.array([sq[cos[:, i] >= copy_cos].sum() for i in range(len(x))]),
            "copies": (cos >= copy_cos).sum(0), "best_cos": cos.max(0), "cos": cos}


def expected_loss(model, x, sigma: float, draws: int, seed: int = 5) -> float:
    """E_ε ‖f(x + σε) − x‖², per sample summed over pixels (Monte Carlo, fixed generator)."""
    xx = torch.as_tensor(x, dtype=torch.float32).repeat(draws, 1)               # [draws·n, d]
    with torch.no_grad():
        out = model(xx + sigma * torch.randn(xx.shape, generator=torch.Generator().manual_seed(seed)))
    return float(((out - xx) ** 2).sum(1).mean())


def cor32_run(x_mem: np.ndarray, sigma: float, wd: float, steps: int, setup: Setup, settle_steps: int,
              settle_lr: float, loss_draws: int, cache_name: str | None = None) -> dict:
    """One memorizing run (the paper's Mem optimizer, `dae.MEM_CONFIG`, at this σ and weight decay). With
    cache_name the model comes from the checkpoint cache (`dae.train_or_load`). Measured as trained: the live
    columns (norm > 0.1) against the image each copies, and the stored energy per image; then the model settles
    (settle_steps at settle_lr, its own noise) and the stored energy and the expected loss are measured again,
    against Cor 3.2 at this nλ (`dae.theoretical_mem_loss`) and at λ → 0."""
    cfg = replace(dae.MEM_CONFIG, steps=steps, sigma=sigma, weight_decay=wd)
    if cache_name:
        model, info = dae.train_or_load(x_mem, cfg, p=setup.p, tie=setup.tie, name=cache_name, progress=False)
    else:
        model, info = train(x_mem, cfg, setup)
        info = {**info, "cached": False}
    n_lam = len(x_mem) * dae.effective_lambda(cfg, x_mem.shape[1], setup.tie)
    W = weights(model)                                                          # [d, p]
    before = stored(W, x_mem, setup.copy_cos)
    norms = np.linalg.norm(W, axis=0)
    live = np.flatnonzero(norms > 0.1)
    copied = before["cos"][live].argmax(1)
    predicted_norm = dae.predicted_column_norms(x_mem, n_lam, sigma)
    torch.manual_seed(cfg.seed + 1)                                 # the settling run draws its own noise
    settle = replace(cfg, lr=settle_lr, steps=settle_steps, seed=cfg.seed + 1)
    dae.train_dae(model, torch.from_numpy(x_mem), settle, progress=False)
    after = stored(weights(model), x_mem, setup.copy_cos)
    return {"sigma": sigma, "weight_decay": wd, "n_lambda": n_lam, "steps": steps,
            "cached": bool(info.get("cached")), "live_units": len(live), "live_norms": norms[live],
            "live_max_cos": before["cos"][live].max(1), "live_predicted": predicted_norm[copied],
            "rest_max_norm": float(np.delete(norms, live).max()),
            "stored_norm": np.sqrt(before["energy"]), "stored_norm_settled": np.sqrt(after["energy"]),
            "copies_per_image": before["copies"], "best_cos": before["best_cos"],
            "predicted_norm": predicted_norm, "W": W,
            "loss": expected_loss(model, x_mem, sigma, loss_draws),
            "loss_predicted": dae.theoretical_mem_loss(x_mem, sigma, n_lam),
            "loss_lambda0": dae.theoretical_mem_loss(x_mem, sigma)}


RUN_KEYS = ("sigma", "weight_decay", "n_lambda", "steps", "live_units", "copies_per_image", "stored_norm",
            "stored_norm_settled", "predicted_norm", "loss", "loss_predicted", "loss_lambda0", "cached")


def cor32_summary(runs: list[dict]) -> dict:
    """The results JSON's `cor32` section (less its settings); runs[0] is the paper's Mem run."""
    paper = runs[0]

    def worst(key):
        return float(max(np.abs(r[key] / r["predicted_norm"] - 1).max() for r in runs))

    return {
        "n_lambda": paper["n_lambda"], "steps": paper["steps"],
        "live_units": paper["live_units"], "col_norms_live": paper["live_norms"],
        "predicted_col_norms": paper["live_predicted"], "max_cos_live": paper["live_max_cos"],
        "max_rel_norm_error": float(np.abs(paper["live_norms"] / paper["live_predicted"] - 1).max()),
        "rest_max_norm": paper["rest_max_norm"],
        "loss": paper["loss"], "loss_predicted": paper["loss_predicted"], "loss_lambda0": paper["loss_lambda0"],
        "runs": [{k: r[k] for k in RUN_KEYS} for r in runs],
        "max_rel_stored_norm_error_all_runs": worst("stored_norm"),
        "max_rel_stored_norm_error_all_runs_settled": worst("stored_norm_settled"),
        "max_rel_loss_error_all_runs": float(max(abs(r["loss"] / r["loss_predicted"] - 1) for r in runs)),
    }


# ----------------------------------------------------------------------------------------------------
# Cor 3.4: the hybrid regime
# ----------------------------------------------------------------------------------------------------
def hybrid_experiment(mix: Mixture, n_well: int, copies: int, steps: int, lr: float, setup: Setup,
                      reps: int = 100) -> dict:
    """Section 3: `mix`'s clusters (n_well samples, seed 1) and its `points`, each repeated `copies` times, in
    one training set. Measured: the columns copying each point and their stored energy against Cor 3.4 (a rank-1
    cluster of n_ℓ = copies: Cor 3.2 at nλ/n_ℓ), the clusters' blocks (`block_analysis`), and `reps` noisy
    inputs of each kind (points, cluster samples)."""
    n_clusters, n_dup = len(mix.means), len(mix.points)
    x_well, y_well = mix.sample(n_well, seed=1)
    x_dup = mix.points.astype(np.float32)                                       # [J, d]
    x = np.concatenate([x_well, np.repeat(x_dup, copies, axis=0)])              # [n_well + J·copies, d]
    cfg = adam_config(len(x), steps, lr, setup.sigma)
    model, log = train(x, cfg, setup)
    W = weights(model)                                                          # [d, p]
    norms = np.linalg.norm(W, axis=0)
    n_lam = len(x) * dae.effective_lambda(cfg, x.shape[1], setup.tie)
    dup = stored(W, x_dup, setup.copy_cos)
    copying = dup["cos"] >= setup.copy_cos                                      # [p, J]
    live = norms >= setup.live_rel * norms.max()
    owner, shared, blocks = block_analysis(W, x_well, y_well, n_clusters, n_lam, setup.sigma)
    _, dup_inputs = noisy(x_dup, setup.sigma, seed=21, repeats=reps // n_dup + 1)
    _, well_inputs = noisy(x_well[:reps], setup.sigma, seed=22)
    h_dup = model.represent(dup_inputs).detach().numpy()                        # [~reps, p]
    h_well = model.represent(well_inputs).detach().numpy()                      # [reps, p]
    return {"n": len(x), "x_dup": x_dup, "model": model, "log": log, "W": W, "norms": norms, "dup": dup,
            "copying": copying, "has_copy": (copying & live[:, None]).any(0),
            "dup_pred": dae.predicted_column_norms(x_dup, n_lam / copies, setup.sigma) ** 2,
            "owner": owner, "shared": shared, "blocks": blocks, "angles": all_angles(blocks),
            "h_dup": h_dup, "h_well": h_well, "std_dup": stats.rep_std(h_dup), "std_well": stats.rep_std(h_well)}


def hybrid_summary(run: dict) -> dict:
    """The results JSON's `hybrid` section (less its settings)."""
    h_dup, h_well = run["h_dup"], run["h_well"]
    return {
        "duplicated_with_copy_column_fraction": float(run["has_copy"].mean()),
        "best_cos_per_duplicate": run["dup"]["best_cos"], "copy_columns_per_duplicate": run["copying"].sum(0),
        "stored_energy_per_duplicate": run["dup"]["energy"], "predicted_energy_per_duplicate": run["dup_pred"],
        "rep_std_duplicated": float(run["std_dup"].mean()), "rep_std_other": float(run["std_well"].mean()),
        "effective_units_duplicated": float(participation(h_dup).mean()),
        "effective_units_other": float(participation(h_well).mean()),
        "l4_over_l2_duplicated": stats.rep_summary(h_dup)["l4_over_l2"],
        "l4_over_l2_other": stats.rep_summary(h_well)["l4_over_l2"],
        "block_units_per_cluster": [len(b["units"]) for b in run["blocks"]],
        "block_mean_principal_angle_deg": float(run["angles"].mean()),
    }


def hybrid_unit_shares(run: dict, mix: Mixture) -> tuple[np.ndarray, np.ndarray]:
    """For the hybrid figure: the share of each unit's ‖w‖² along each duplicated point (cos²) and in each
    cluster's subspace, rows [J + K, p]; and the unit order (copies first, then by cluster, then by norm)."""
    W, norms, copying = run["W"], run["norms"], run["copying"]
    in_cluster = [np.linalg.norm(mix.subspace(k).T @ W, axis=0) ** 2 / norms**2 for k in range(len(mix.means))]
    rows = np.concatenate([run["dup"]["cos"].T ** 2, np.stack(in_cluster)])
    owner = np.where(run["owner"] < 0, len(mix.means), run["owner"])
    group = np.where(copying.any(1), copying.argmax(1), copying.shape[1] + owner)
    return rows, np.lexsort((-norms, group))


# ----------------------------------------------------------------------------------------------------
# The transition over n
# ----------------------------------------------------------------------------------------------------
def measure(model, x_train, tests: dict, setup: Setup, seed: int = 31) -> dict:
    """The sweep's numbers for one model: live units (norm ≥ live_rel · max), the fraction of them that copy a
    training image, the share of ‖W‖²_F in copying columns, the rep std of noisy training inputs and the
    per-pixel denoising MSE on training inputs and on each of `tests` (name → inputs)."""
    W = weights(model)
    norms = np.linalg.norm(W, axis=0)                                           # [p]
    live = norms >= setup.live_rel * norms.max()
    copy = stats.max_cosine(W.T, x_train) >= setup.copy_cos                     # [p]
    rows = np.arange(max(500, min(len(x_train), 1000))) % len(x_train)
    clean, inputs = noisy(x_train[rows], setup.sigma, seed)
    with torch.no_grad():
        h = model.represent(inputs)
        train_err = float(((model(inputs) - clean) ** 2).mean())
    out = {"live_units": int(live.sum()), "units_norm_gt_0_1": int((norms > 0.1).sum()),
           "copy_fraction": float(copy[live].mean()),
           "copy_energy_fraction": float((norms[copy] ** 2).sum() / (norms**2).sum()),
           "rep_std": float(stats.rep_std(h.numpy()).mean()), "train_err": train_err}
    for name, x_test in tests.items():
        clean, inputs = noisy(x_test, setup.sigma, seed + 1, repeats=max(1, 500 // len(x_test)))
        with torch.no_grad():
            out[name] = float(((model(inputs) - clean) ** 2).mean())
    return out


def row_line(row: dict) -> str:
    """One printed line per sweep run."""
    return (f"n={row['n']:>6}: live {row['live_units']:>3}, copy fraction {row['copy_fraction']:.2f} "
            f"(energy {row['copy_energy_fraction']:.2f}), rep std {row['rep_std']:.3f}, train "
            f"{row['train_err']:.4f}, test {row['test_err']:.4f}  [{row['train_seconds']:.1f} s]")


def sweep(x_all, tests: dict, cfg_for: Callable[[int], dae.DAETrainConfig], ns, setup: Setup,
          checkpoints: int = 4, report: Callable[[dict], None] | None = None) -> list[dict]:
    """For each n: train on x_all[:n] with cfg_for(n), `measure` at `checkpoints` evenly spaced steps; the
    row is the last measurement with its trace. `report(row)` after each n."""
    rows = []
    for n in ns:
        x, trace, cfg = x_all[:n], [], cfg_for(n)

        def checkpoint(step, model, x=x, trace=trace):
            trace.append({"step": step, **measure(model, x, tests, setup)})

        _, log = train(x, cfg, setup, checkpoint, max(cfg.steps // checkpoints, 1))
        rows.append({"n": n, **trace[-1], "train_seconds": log["train_seconds"], "trace": trace})
        if report:
            report(rows[-1])
    return rows


def crossing(ns, values, level: float) -> float | None:
    """First n where `values` falls through `level` (log-linear interpolation in n), or None."""
    for i in range(len(ns) - 1):
        if values[i] >= level > values[i + 1]:
            t = (values[i] - level) / (values[i] - values[i + 1])
            return float(np.exp(np.log(ns[i]) + t * (np.log(ns[i + 1]) - np.log(ns[i]))))
    return None


def convergence(rows: list[dict]) -> dict:
    """Change over the second half of each run, per n: copy fraction (absolute), rep std and errors
    (relative). Training errors below 1e-3 (a hundredth of the test error) jitter with the optimizer: their
    largest change is also given over the runs where it is ≥ 1e-3."""
    def half(r):
        return r["trace"][len(r["trace"]) // 2 - 1] if len(r["trace"]) > 1 else r["trace"][0]

    def rel(r, key):
        return abs(r[key] / half(r)[key] - 1)

    out = {"compared_steps": [half(rows[0])["step"], rows[0]["trace"][-1]["step"]],
           "copy_fraction_change": [abs(r["copy_fraction"] - half(r)["copy_fraction"]) for r in rows],
           **{f"rel_{key}_change": [rel(r, key) for r in rows] for key in ("rep_std", "train_err", "test_err")}}
    big = [i for i, r in enumerate(rows) if r["train_err"] >= 1e-3]
    out["max_rel_train_err_change_where_train_err_ge_1e-3"] = max(
        (out["rel_train_err_change"][i] for i in big), default=None)
    return out


def summarize(rows: list[dict], p: int) -> dict:
    """The sweep's curves and transitions: where the copy fraction falls through 0.5 and where the training
    error reaches half the error on unseen data. That gap is judged on fresh draws from the training
    distribution where there are some (`fresh_err`), else on the test set; both are given."""
    ns = [r["n"] for r in rows]
    copy = [r["copy_fraction"] for r in rows]
    ratio = [r["train_err"] / r["test_err"] for r in rows]
    gap_key = "fresh_err" if "fresh_err" in rows[0] else "test_err"
    gap_ratio = [r["train_err"] / r[gap_key] for r in rows]
    n_copy, n_gap = crossing(ns, copy, 0.5), crossing(ns, [-v for v in gap_ratio], -0.5)
    n_gap_test = crossing(ns, [-v for v in ratio], -0.5)
    curves = {key: [r[key] for r in rows] for key in ("copy_energy_fraction", "live_units", "rep_std",
                                                       "train_err", "test_err")}
    if "fresh_err" in rows[0]:
        curves["fresh_err"] = [r["fresh_err"] for r in rows]
    return {"n": ns, "n_over_p": [n / p for n in ns], "copy_fraction": copy, **curves,
            "train_over_test": ratio, "transition_n": n_copy, "transition_n_over_p": n_copy and n_copy / p,
            "gap_measured_on": gap_key, "gap_transition_n": n_gap, "gap_transition_n_over_p": n_gap and n_gap / p,
            "gap_transition_n_over_p_test_set": n_gap_test and n_gap_test / p,
            "train_seconds": [r["train_seconds"] for r in rows], "convergence": convergence(rows)}


def prefix_max_cosine(x: np.ndarray, ks) -> dict:
    """{k: the largest pairwise cosine among x[:k]} for each k ≤ len(x) (β of Def 3.1 for that prefix)."""
    return {k: float((stats.cosine_matrix(x[:k], x[:k]) - 2 * np.eye(k)).max()) for k in ks if k <= len(x)}


def fmt(v, spec: str = ".3g") -> str:
    """A number for printing, "none" for None."""
    return "none" if v is None else format(v, spec)


def sweep_lines(name: str, s: dict) -> list[str]:
    """The printed summary of one sweep: its transitions and how much the last half of training moved."""
    on = {"fresh_err": "fresh-draw", "test_err": "test"}[s["gap_measured_on"]]
    c = s["convergence"]
    return [
        (f"{name}: copy fraction {s['copy_fraction'][0]:.2f} at n = {s['n'][0]} -> "
        f"{s['copy_fraction'][-1]:.2f} at n = {s['n'][-1]}; copying stops at n/p = "
        f"{fmt(s['transition_n_over_p'])}; train error reaches half the {on} error at n/p = "
        f"{fmt(s['gap_transition_n_over_p'])} (half the test-set error at n/p = "
        f"{fmt(s['gap_transition_n_over_p_test_set'])})"),
        (f"  over steps {c['compared_steps'][0]} -> {c['compared_steps'][1]}: copy fraction changes "
        f"{np.round(c['copy_fraction_change'], 2).tolist()}; rel. change of rep std <= "
        f"{max(c['rel_rep_std_change']):.3f}, test error <= {max(c['rel_test_err_change']):.3f}, train error <= "
        f"{fmt(c['max_rel_train_err_change_where_train_err_ge_1e-3'])} where it is >= 1e-3 "
        f"(all n: {np.round(c['rel_train_err_change'], 2).tolist()})"),
    ]
