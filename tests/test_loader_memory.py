"""The in-memory parse cache is bounded by the bytes it holds, not by a count of entries.

Editing one large file again and again must not keep every version's tree alive.
Real rule files in tmp_path, parsed by the real loader.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policyengine import loader


@pytest.fixture(autouse=True)
def small_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("POLICYENGINE_NO_CACHE", "0")
    monkeypatch.setattr(loader, "_MEMORY_BYTES", 40_000)
    loader._MEMORY.clear()
    yield 40_000
    loader._MEMORY.clear()


def rules(version: int, size: int) -> str:
    """A valid rule file of about ``size`` bytes; ``version`` changes its content."""
    head = f"package t.edit\n\nrole r\n\n# version {version}\n"
    body = "".join(f'rule read{i}\n    allow role r to read dataset "d{i}/*"\n\n' for i in range(size // 50))
    return head + body


@pytest.mark.parametrize(("edits", "size"), [(20, 10_000), (5, 30_000), (30, 2_000)])
def test_repeated_edits_of_a_file_keep_the_cache_within_its_byte_budget(tmp_path, small_budget, edits, size):
    path = tmp_path / "edit.policy"
    for version in range(edits):
        path.write_text(rules(version, size))
        result = loader.load_files([path], cache=True)
        assert result.ok and len(result.files) == 1
        assert loader.memory_cache_bytes() <= small_budget
    assert len(loader._MEMORY) <= small_budget // len(rules(0, size)) + 1


def test_the_most_recently_used_version_stays_cached(tmp_path):
    path = tmp_path / "edit.policy"
    path.write_text(rules(0, 10_000))
    first = loader.load_files([path], cache=True).files[0]
    for version in range(1, 6):
        (tmp_path / "other.policy").write_text(rules(version, 10_000).replace("t.edit", "t.other"))
        loader.load_files([tmp_path / "other.policy"], cache=True)
        assert loader.load_files([path], cache=True).files[0] is first  # hit: the same tree object
