"""Atomic writes, cache keys and the results-JSON writer."""
import json

import numpy as np
import pytest
import torch

from common import results


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with results.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_until_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyError):
        with results.atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyError
    assert target.read_text() == "old"
    with results.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o044) == 0o044


def test_config_key_ignores_order_and_sees_values():
    a = results.config_key({"lr": 1e-3, "steps": 10, "nested": {"x": 1, "y": 2}})
    b = results.config_key({"nested": {"y": 2, "x": 1}, "steps": 10, "lr": 1e-3})
    c = results.config_key({"lr": 1e-3, "steps": 11, "nested": {"x": 1, "y": 2}})
    assert a == b and a != c


def test_array_fingerprint_sees_bytes_shape_and_dtype():
    x = np.arange(6, dtype=np.float32)
    assert results.array_fingerprint(x) == results.array_fingerprint(torch.arange(6, dtype=torch.float32))
    assert results.array_fingerprint(x) != results.array_fingerprint(x.reshape(2, 3))
    assert results.array_fingerprint(x) != results.array_fingerprint(x.astype(np.float64))
    y = x.copy(); y[3] += 1e-6
    assert results.array_fingerprint(x) != results.array_fingerprint(y)


def test_write_results_is_plain_json_with_nested_keys(tmp_path):
    payload = {"mem": {"live_units": np.int64(5), "norms": np.array([0.9, 0.95])},
               "t": torch.tensor(1.5), "bad": float("nan"), "path": tmp_path}
    path = results.write_results("demo", payload, tmp_path)
    loaded = json.loads(path.read_text())
    assert loaded["mem"] == {"live_units": 5, "norms": [0.9, 0.95]}
    assert loaded["t"] == 1.5 and loaded["bad"] is None and loaded["path"] == str(tmp_path)
    assert results.get_dotted(loaded, "mem.live_units") == 5
    with pytest.raises(KeyError, match="mem.missing"):
        results.get_dotted(loaded, "mem.missing")


def test_seed_everything_repeats_draws():
    results.seed_everything(3)
    a = (np.random.rand(), torch.rand(1).item())
    results.seed_everything(3)
    assert a == (np.random.rand(), torch.rand(1).item())
