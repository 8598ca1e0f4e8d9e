"""Data loading: the paper's transform, the LFW stand-in, local folders, the CelebA cache and offline errors."""
import time

import numpy as np
import pytest
from PIL import Image

from common.theory import data
from common.theory.data import DataUnavailableError, load_faces, to_model_space


def test_transform_matches_pil_grayscale_and_paper_range():
    rgb = (200, 40, 90)
    x = to_model_space(Image.new("RGB", (178, 218), rgb))
    luma = (299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2]) / 1000  # PIL's ITU-R 601-2 'L' conversion
    assert x.shape == (1024,) and x.dtype == np.float32
    np.testing.assert_allclose(x, round(luma) / 255 * 2 - 1, atol=1e-6)
    assert to_model_space(Image.new("RGB", (40, 40), (255, 255, 255))).min() == 1.0
    assert to_model_space(Image.new("L", (40, 40), 0)).max() == -1.0


def test_lfw_standin_shapes_range_and_split(lfw_small):
    assert lfw_small.train.shape == (200, 1024) and lfw_small.test.shape == (20, 1024)
    assert lfw_small.train.dtype == np.float32
    assert lfw_small.train.min() >= -1 and lfw_small.train.max() <= 1
    assert lfw_small.source == "lfw-standin"
    # the first 80 rows are the base faces themselves, the rest augmented copies of them
    np.testing.assert_array_equal(lfw_small.train_origin[:80], np.arange(80))
    assert lfw_small.train_origin[80:].max() < 80


def test_held_out_faces_never_in_training(lfw_small):
    big = load_faces(2000, 20, source="lfw")
    assert set(big.test_origin) == set(range(80, 100))
    assert not set(big.train_origin) & set(big.test_origin)
    # no training row is (a near copy of) a held-out face
    from common.theory.stats import max_cosine

    assert max_cosine(big.test, big.train).max() < 0.95
    faces = data.lfw_faces() * 2 - 1
    np.testing.assert_allclose(big.test, faces[80:].reshape(20, -1), atol=1e-6)


def test_lfw_standin_is_deterministic_and_seeded():
    a, b = load_faces(150, source="lfw"), load_faces(150, source="lfw")
    np.testing.assert_array_equal(a.train, b.train)
    c = load_faces(150, source="lfw", seed=1)
    np.testing.assert_array_equal(a.train[:80], c.train[:80])
    assert not np.array_equal(a.train[80:], c.train[80:])


def test_lfw_standin_small_n_has_no_augmentation():
    f = load_faces(5, 3, source="lfw")
    assert f.train.shape == (5, 1024) and f.test.shape == (3, 1024)
    assert f.details["augmented_samples"] == 0


def test_lfw_standin_refuses_more_test_faces_than_held_out():
    with pytest.raises(DataUnavailableError, match="20 test faces, 21"):
        load_faces(10, 21, source="lfw")


def test_unknown_source_is_named():
    with pytest.raises(ValueError, match="'imagenet'"):
        load_faces(10, source="imagenet")


def _write_folder(folder, n, size=(40, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")


def test_folder_source_order_split_and_cache_round_trip(tmp_path, monkeypatch):
    folder, cache = tmp_path / "img_align_celeba", tmp_path / "cache"
    _write_folder(folder, 7)
    f = load_faces(4, 3, source="folder", folder=folder, cache_dir=cache)
    expected = np.stack([to_model_space(Image.open(folder / f"{i:06d}.png")) for i in range(7)])
    np.testing.assert_array_equal(f.train, expected[:4])
    np.testing.assert_array_equal(f.test, expected[4:])
    assert f.source == "celeba-folder:img_align_celeba"
    assert len(list(cache.glob("folder-*.npz"))) == 1

    # a second load reads the cache, not the images
    def no_reading(*a, **k):
        raise AssertionError("images were decoded again")

    monkeypatch.setattr(data.Image, "open", no_reading)
    np.testing.assert_array_equal(load_faces(4, 3, source="folder", folder=folder, cache_dir=cache).train, f.train)


def test_folder_cache_is_invalidated_when_files_change(tmp_path):
    folder, cache = tmp_path / "imgs", tmp_path / "cache"
    _write_folder(folder, 3)
    first = data.load_image_folder(folder, 3, cache)
    Image.new("RGB", (30, 30), (0, 0, 0)).save(folder / "000001.png")
    second = data.load_image_folder(folder, 3, cache)
    assert not np.array_equal(first[1], second[1])
    np.testing.assert_array_equal(second[1], -np.ones(1024, np.float32))


def test_folder_with_corrupt_image_names_the_file(tmp_path):
    folder = tmp_path / "imgs"
    _write_folder(folder, 3)
    (folder / "000001.png").write_bytes(b"not a png")
    with pytest.raises(DataUnavailableError, match="000001.png"):
        data.load_image_folder(folder, 3, tmp_path / "cache")


def test_folder_with_too_few_images_gives_both_numbers(tmp_path):
    folder = tmp_path / "imgs"
    _write_folder(folder, 3)
    with pytest.raises(DataUnavailableError, match=r"holds 3 images, 12 were requested"):
        load_faces(10, 2, source="folder", folder=folder, cache_dir=tmp_path / "cache")


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(DataUnavailableError, match="does-not-exist"):
        data.load_image_folder(tmp_path / "does-not-exist", 3, tmp_path)


def test_celeba_offline_fails_fast_with_alternatives(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DataUnavailableError) as err:
        load_faces(100, source="celeba", cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 5
    assert "source='lfw'" in str(err.value) and "source='folder'" in str(err.value)


def test_celeba_unreachable_endpoint_fails_fast_without_offline_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1")  # loopback, nothing listens on 443
    t0 = time.perf_counter()
    with pytest.raises(DataUnavailableError, match="not reachable"):
        data.load_celeba_hf(10, tmp_path, timeout=2.0)
    assert time.perf_counter() - t0 < 5


def test_celeba_cache_serves_offline_and_auto_prefers_it(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (50, 1024)).astype(np.float32)
    from common.plumbing.results import save_npz_atomic

    save_npz_atomic(tmp_path / "celeba-hf_first50.npz", images=images)
    f = load_faces(30, 10, source="celeba", cache_dir=tmp_path)
    np.testing.assert_array_equal(f.train, images[:30])
    np.testing.assert_array_equal(f.test, images[30:40])
    assert f.source == "celeba-hf"
    assert load_faces(30, 10, source="auto", cache_dir=tmp_path).source == "celeba-hf"
    assert load_faces(45, 10, source="auto", cache_dir=tmp_path).source == "lfw-standin"  # cache too small


def test_select_separable_avoids_near_duplicates():
    rng = np.random.default_rng(0)
    base = np.linalg.qr(rng.normal(size=(64, 4)))[0].T           # 4 orthonormal directions
    near_dups = base[:2] + 0.05 * rng.normal(size=(2, 64))        # close copies of the first two
    x = np.concatenate([base[:1], near_dups[:1], base[1:], near_dups[1:]])
    chosen = data.select_separable(x, 4)
    u = x[chosen] / np.linalg.norm(x[chosen], axis=1, keepdims=True)
    cos = u @ u.T - np.eye(4)
    assert cos.max() < 0.2  # one of each pair of near-duplicates only
    with pytest.raises(ValueError):
        data.select_separable(x, 7)


def test_select_separable_takes_one_row_per_group():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 32))
    groups = np.repeat(np.arange(4), 3)
    chosen = data.select_separable(x, 4, groups)
    assert sorted(groups[chosen]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="4 distinct groups"):
        data.select_separable(x, 5, groups)


def test_select_separable_returns_the_greedy_order_so_prefixes_are_nested_choices():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 16)) + 0.5                         # positively correlated rows
    chosen = data.select_separable(x, 10)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u @ u.T
    for j in range(1, len(chosen)):                             # each row: the least correlated with those before
        rest = np.setdiff1d(np.arange(len(x)), chosen[:j])
        worst = cos[np.ix_(rest, chosen[:j])].max(axis=1)
        assert cos[chosen[j], chosen[:j]].max() == pytest.approx(worst.min())


def test_standin_training_set_is_a_prefix_of_larger_ones():
    """Like the CelebA stream: the first k training rows do not depend on n (the DAE notebook's 10k set
    is the start of the diffusion notebook's 100k set, so both pick the same Mem five)."""
    small, large = load_faces(1500, source="lfw"), load_faces(3100, source="lfw")
    np.testing.assert_array_equal(small.train, large.train[:1500])
    np.testing.assert_array_equal(small.train_origin, large.train_origin[:1500])


def test_memorization_set_official_positions_on_celeba_and_separable_elsewhere(lfw_small):
    celeba = data.FaceData(train=np.zeros((300, 4)), test=np.zeros((0, 4)), source="celeba-hf",
                           train_origin=np.arange(300), test_origin=np.arange(0))
    assert data.memorization_set(celeba).tolist() == [0, 36, 148, 195, 232]
    idx = data.memorization_set(lfw_small, 5, pool=200)
    energy = (lfw_small.train[:200].astype(np.float64) ** 2).sum(1)
    assert len(set(lfw_small.train_origin[idx])) == 5 and (energy[idx] >= np.median(energy)).all()
