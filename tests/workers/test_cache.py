from __future__ import annotations

import pytest

from ovbatch.workers.cache import CacheKey, ModelCache, content_digest


class Model:
    def __init__(self, name: str):
        self.name, self.released = name, False

    def release(self) -> None:
        self.released = True


def manifest(*digests: str) -> dict:
    return {"files": [{"role": f"f{i}", "sha256": d} for i, d in enumerate(digests)]}


def test_key_is_content_device_and_options() -> None:
    a, b = manifest("aa", "bb"), manifest("aa", "cc")
    assert CacheKey.of(a, "CPU") == CacheKey.of(dict(a, name="other-name"), "CPU")
    assert CacheKey.of(a, "CPU") != CacheKey.of(b, "CPU")
    assert CacheKey.of(a, "CPU") != CacheKey.of(a, "GPU")
    assert CacheKey.of(a, "CPU", {"INFERENCE_NUM_THREADS": 2}) != CacheKey.of(a, "CPU")
    assert content_digest(a) == content_digest(manifest("aa", "bb"))


def test_hits_misses_and_lru_eviction_by_count() -> None:
    cache = ModelCache(max_models=2, max_bytes=1 << 40)
    loads = []

    def loader(name: str):  # type: ignore[no-untyped-def]
        def load() -> tuple[Model, int]:
            loads.append(name)
            return Model(name), 10

        return load

    keys = {n: CacheKey.of(manifest(n), "CPU") for n in "abc"}
    a, hit = cache.get_or_load(keys["a"], "a", loader("a"))
    assert not hit
    assert cache.get_or_load(keys["a"], "a", loader("a")) == (a, True)
    cache.get_or_load(keys["b"], "b", loader("b"))
    cache.get_or_load(keys["a"], "a", loader("a"))  # a is now the most recent
    cache.get_or_load(keys["c"], "c", loader("c"))  # evicts b, the least recent
    assert cache.labels() == ["a", "c"] and loads == ["a", "b", "c"]
    assert (cache.stats.hits, cache.stats.misses, cache.stats.evictions) == (2, 3, 1)


def test_eviction_by_bytes_releases_the_model() -> None:
    cache = ModelCache(max_models=10, max_bytes=100)
    first, _ = cache.get_or_load(CacheKey.of(manifest("x"), "CPU"), "x", lambda: (Model("x"), 60))
    cache.get_or_load(CacheKey.of(manifest("y"), "CPU"), "y", lambda: (Model("y"), 60))
    assert cache.labels() == ["y"] and first.released
    # one model over the whole budget still loads (and stays until the next one comes)
    cache.get_or_load(CacheKey.of(manifest("z"), "CPU"), "z", lambda: (Model("z"), 500))
    assert cache.labels() == ["z"]


def test_failed_load_caches_nothing() -> None:
    cache = ModelCache(max_models=2, max_bytes=100)

    def boom() -> tuple[Model, int]:
        raise RuntimeError("decrypt failed")

    with pytest.raises(RuntimeError):
        cache.get_or_load(CacheKey.of(manifest("x"), "CPU"), "x", boom)
    assert cache.labels() == [] and cache.stats.misses == 1


def test_a_model_that_grows_after_loading_is_counted_and_pushes_older_ones_out() -> None:
    cache = ModelCache(max_models=10, max_bytes=100)
    older, _ = cache.get_or_load(CacheKey.of(manifest("x"), "CPU"), "x", lambda: (Model("x"), 40))
    key = CacheKey.of(manifest("y"), "CPU")
    cache.get_or_load(key, "y", lambda: (Model("y"), 40))
    cache.get_or_load(CacheKey.of(manifest("x"), "CPU"), "x", lambda: (Model("x"), 40))  # x most recent
    cache.grow(key, 30)  # y grows while in use: 110 > 100, so x goes although it was used last
    assert cache.labels() == ["y"] and older.released and cache.total_bytes() == 70
    cache.grow(CacheKey.of(manifest("gone"), "CPU"), 1000)  # an evicted model growing changes nothing
    assert cache.total_bytes() == 70
