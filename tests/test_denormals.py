"""`flushed_denormals` flushes subnormal floats on every thread torch computes on, not only the calling one, and
restores torch's default afterwards (`common/plumbing/denormals.py`)."""
import sys

import pytest
import torch

from common.plumbing import denormals

TINY = 1e-39                    # subnormal in float32 (smallest normal: 1.2e-38)
N = 1 << 20                     # elements enough for torch to split an elementwise op across its threads


@pytest.fixture
def two_threads():
    """Torch on two threads, its OpenMP pool already started (so the workers' state predates the flush, as it does
    in a notebook that computed anything before training), and scikit-learn's own copy of libgomp loaded beside
    torch's, as it is once anything imports scikit-learn: the flush must reach torch's pool, not that one's."""
    import sklearn.cluster  # noqa: F401  (loads scikit_learn.libs/libgomp-<hash>.so)
    denormals._openmp_runtime.cache_clear()                  # choose again, with both runtimes loaded
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.ones(N).mul_(2.0)                                   # a parallel op: starts the pool's workers
    yield
    torch.set_num_threads(before)


def _nonzero_after_product(x: torch.Tensor) -> int:
    return int((x * 1.0).count_nonzero())


def test_calling_thread_reads_subnormals_as_zero_and_the_default_returns():
    assert torch.tensor([TINY]).item() != 0.0
    with denormals.flushed_denormals():
        assert torch.tensor([TINY]).item() == 0.0
        assert (torch.full((4,), 1e-20) * 1e-19).abs().max().item() == 0.0   # a product landing below 1.2e-38
    assert torch.tensor([TINY]).item() != 0.0
    with pytest.raises(RuntimeError), denormals.flushed_denormals():
        raise RuntimeError("a failed run")
    assert torch.tensor([TINY]).item() != 0.0


@pytest.mark.skipif(sys.platform != "linux", reason="the OpenMP pool is reached through /proc/self/maps")
def test_the_flush_reaches_every_openmp_worker_and_leaves_them_as_it_found_them(two_threads):
    """A product split across both threads gives no subnormal anywhere inside the context, all of them outside.
    With the calling thread alone flushed, half of the elementwise result (the worker's chunk) stays subnormal."""
    assert denormals.reaches_worker_threads()
    x = torch.full((N,), TINY)                                # [N]
    a = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0))           # [B, d]
    w = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(1)) * 1e-40  # [d, d], all subnormal
    assert _nonzero_after_product(x) == N
    with denormals.flushed_denormals():
        assert _nonzero_after_product(x) == 0
        assert int((a @ w).count_nonzero()) == 0              # the GEMM's threads read w as zero too
    assert _nonzero_after_product(x) == N
    assert int((a @ w).count_nonzero()) > 0


def test_training_runs_with_the_flush_on_every_thread(two_threads, monkeypatch):
    """The toy-diffusion trainer's loop runs inside the all-thread flush (and the default is back afterwards)."""
    from common.theory import toy_diffusion as td
    seen = []

    def loop(*args, **kwargs):
        seen.append((torch.tensor([TINY]).item(), _nonzero_after_product(torch.full((N,), TINY))))
        return {}
    monkeypatch.setattr(td, "_train_loop", loop)
    td._train([], None, td.MEM_CONFIG, [], False, 500, None)
    assert seen == [(0.0, 0 if denormals.reaches_worker_threads() else seen[0][1])]
    assert _nonzero_after_product(torch.full((N,), TINY)) == N
