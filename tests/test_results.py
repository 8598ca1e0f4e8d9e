"""Atomic writes, cache keys and the results-JSON writer."""
import json

import numpy as np
import pytest
import torch

from common.plumbing import results


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
    assert loaded["t"] == 1.5 and loaded["bad"] is None and loaded["path"] == tmp_path.name      # a path: its portable name
    assert results.get_dotted(loaded, "mem.live_units") == 5
    with pytest.raises(KeyError, match="mem.missing"):
        results.get_dotted(loaded, "mem.missing")


def test_seed_everything_repeats_draws():
    results.seed_everything(3)
    a = (np.random.rand(), torch.rand(1).item())
    results.seed_everything(3)
    assert a == (np.random.rand(), torch.rand(1).item())


def test_machine_paths_finds_absolute_paths_in_any_string():
    payload = {"model": "cpu-testbed", "url": "https://example.org/a/b", "ratio": "1/2", "formula": "|a − μ| / σ",
               "cache": "<cache>/testbed/cpu-testbed-d20203e724b0", "relative": "results/x.json",
               "nested": {"files": ["ok.pt", "/home/me/weights.pt"]}, "note": "read from /tmp/x.pt",
               "windows": "D:\\models\\sd", "home": "~/sd-v1-4"}
    assert results.machine_paths(payload) == ["nested.files.1", "note", "windows", "home"]


def test_write_results_names_paths_portably_and_refuses_a_path_inside_text(tmp_path, monkeypatch):
    from common.plumbing import paths

    cache = tmp_path / "cache"
    monkeypatch.setattr(paths, "REPO_CACHE", cache)
    testbed = cache / "testbed" / "cpu-testbed-d20203e724b0"
    testbed.mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "sd-v1-4"
    outside.mkdir(parents=True)
    written = results.write_results("x", {"model_id": str(testbed), "files": [str(outside), str(paths.REPO_ROOT / "Figs" / "a.png")],
                                          "hub": "CompVis/stable-diffusion-v1-4"}, tmp_path)
    payload = json.loads(written.read_text())
    assert payload == {"model_id": "<cache>/testbed/cpu-testbed-d20203e724b0", "files": ["sd-v1-4", "Figs/a.png"],
                       "hub": "CompVis/stable-diffusion-v1-4"}
    with pytest.raises(ValueError, match=r"absolute paths at \['note'\]"):
        results.write_results("y", {"note": f"statistics from {outside}/stats.pt"}, tmp_path)
    assert not (tmp_path / "y.json").exists()


def test_committed_results_name_no_machine_path():
    """Every committed results JSON reads the same on any machine: no absolute path in any value."""
    from common.plumbing.paths import RESULTS_DIR

    files = sorted(RESULTS_DIR.glob("*.json"))
    assert files
    found = {f.name: results.machine_paths(json.loads(f.read_text())) for f in files}
    assert {name: keys for name, keys in found.items() if keys} == {}
