"""One meaning of $O1CODE_CACHE (the root of every cache), the old models location adopted once, the
dequantized-GGUF cache keyed by content where the sha256 is known, and every cache documented in --help."""

import logging

import pytest

from o1code import caches
from o1code.cli import build_parser
from o1code.models import default, dequant_cache
from o1code.rewards.tcg import default_cache_dir


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv(caches.CACHE_ENV, str(tmp_path / "root"))
    monkeypatch.delenv(dequant_cache.LIMIT_ENV, raising=False)
    monkeypatch.setattr(default, "_verified", {})
    return tmp_path / "root"


def test_every_cache_is_a_subdirectory_of_one_root(root, monkeypatch, tmp_path):
    assert default.cache_dir() == root / "models"
    assert dequant_cache.cache_root() == root / "dequantized"
    assert default_cache_dir() == root / "tcg"
    monkeypatch.delenv(caches.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default.cache_dir() == tmp_path / "home" / ".cache" / "o1code" / "models"
    with pytest.raises(ValueError, match="unknown cache"):
        caches.cache_dir("nope")


def test_a_model_at_the_old_place_is_moved_once_with_a_warning(root, caplog):
    root.mkdir()
    (root / "m.gguf").write_bytes(b"GGUF old")  # where $O1CODE_CACHE/FILE used to be the model
    dest = default.cache_dir() / "m.gguf"
    with caplog.at_level(logging.WARNING, logger="o1code.models.default"):
        default._adopt_old_copy(dest)
    assert dest.read_bytes() == b"GGUF old" and not (root / "m.gguf").exists()
    assert "now the root of every o1code cache" in caplog.text
    caplog.clear()
    default._adopt_old_copy(dest)  # nothing left at the old place: silent
    assert not caplog.text


def test_a_verified_gguf_is_cached_by_content_so_copies_share_an_entry(root, tmp_path):
    a, b = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf"
    for f in (a, b):
        f.parent.mkdir()
        f.write_bytes(b"GGUF" + bytes(996))
    by_path = dequant_cache.entry_dir(a)
    assert by_path != dequant_cache.entry_dir(b)  # unverified: keyed by the file
    by_path.mkdir(parents=True)
    (by_path / "model").mkdir()
    digest = default.sha256_file(a)
    default._verified.update({a: digest, b: digest})  # as ensure_model records a checked file
    shared = dequant_cache.entry_dir(a)
    assert shared == dequant_cache.entry_dir(b) != by_path
    assert (shared / "model").is_dir() and not by_path.exists()  # the path-keyed entry was taken over


def test_help_names_the_root_and_every_cache_with_its_bound():
    epilog = build_parser().epilog
    assert caches.CACHE_ENV in epilog and all(f"{c.name}/" in epilog and c.bound in epilog for c in caches.CACHES)
