"""Loading policy files and folders: every problem is a finding, never an exception.

Also the parse cache: unchanged files are not parsed again (in memory and on
disk, keyed by path and content), a changed file is, and a corrupt cache entry is
ignored rather than trusted.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine import loader, syntax
from policyengine.loader import cache_dir, load_files
from tests.cli_process import UNPRIVILEGED, policyengine

GOOD = 'package t.p{n}\n\nrole r{n}\n\nrule read{n}\n    allow role r{n} to read dataset "d/*"\n'


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own cache folder and an empty in-memory cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    monkeypatch.delenv("POLICYENGINE_NO_CACHE", raising=False)
    loader._MEMORY.clear()
    return folder


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_folders_are_searched_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "b" / "z.policy", GOOD.format(n=1))
    write(tmp_path / "a.policy", GOOD.format(n=2))
    write(tmp_path / "b" / "a" / "deep.policy", GOOD.format(n=3))
    write(tmp_path / "notes.txt", "not a policy")
    result = load_files([tmp_path])
    assert result.findings == [] and result.ok
    assert [Path(f.path).relative_to(tmp_path).as_posix() for f in result.files] == [
        "a.policy", "b/a/deep.policy", "b/z.policy"]


def test_a_file_named_twice_is_loaded_once(tmp_path: Path) -> None:
    path = write(tmp_path / "x.policy", GOOD.format(n=1))
    result = load_files([path, tmp_path, str(path)])
    assert len(result.files) == 1


def test_an_explicit_file_need_not_end_in_policy(tmp_path: Path) -> None:
    result = load_files([write(tmp_path / "rules.txt", GOOD.format(n=1))])
    assert [f.package.value for f in result.files] == ["t.p1"]


PROBLEMS = [
    # (file content, finding code, message fragment, line, col)
    ("package t\nrole x extends\n", "syntax", "expected a role name after 'extends'", 2, 15),
    (b"package t\nrole caf\xe9\n", "load", "not UTF-8", 2, 9),
    (b"\x00\x01\x02binary", "syntax", "unexpected character", 1, 1),
    ("", "syntax", "expected 'package NAME' at the start of the file", 1, 1),
]


@pytest.mark.parametrize(("content", "code", "fragment", "line", "col"), PROBLEMS)
def test_a_broken_file_is_one_finding_and_the_others_still_load(
    tmp_path: Path, content: str | bytes, code: str, fragment: str, line: int, col: int
) -> None:
    write(tmp_path / "a_good.policy", GOOD.format(n=1))
    bad = write(tmp_path / "b_bad.policy", content)
    write(tmp_path / "c_good.policy", GOOD.format(n=2))
    result = load_files([tmp_path])
    assert [f.package.value for f in result.files] == ["t.p1", "t.p2"]
    assert len(result.findings) == 1 and not result.ok
    finding = result.findings[0]
    assert (finding.code, finding.span.file, finding.span.line, finding.span.col) == (code, str(bad), line, col)
    assert fragment in finding.message


def test_a_missing_path_is_a_finding(tmp_path: Path) -> None:
    result = load_files([tmp_path / "nope"])
    assert result.files == () and [f.message for f in result.findings] == ["no such file or folder"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_an_unreadable_file_is_a_finding(tmp_path: Path) -> None:
    path = write(tmp_path / "locked.policy", GOOD.format(n=1))
    path.chmod(0)
    try:
        result = load_files([tmp_path])
    finally:
        path.chmod(0o644)
    assert result.files == () and "cannot read this file" in result.findings[0].message


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which(UNPRIVILEGED[0]), reason="root reads any folder")
@pytest.mark.parametrize("command", [["eval", "--rules", "rules", "--input", "request.json"], ["check", "rules"]])
def test_a_folder_of_rules_that_cannot_be_listed_stops_the_load(tmp_path: Path, command: list[str]) -> None:
    """``rules/denies`` holds the deny and cannot be listed: it was passed over as if empty, and the reader allowed."""
    write(tmp_path / "rules" / "base.policy",
          'package docs\nrole reader\nrule readers_read\n    allow role reader to read dataset "docs/*"\n')
    write(tmp_path / "rules" / "denies" / "deny.policy",
          'package docs.deny\nrule no_docs\n    deny any to read dataset "docs/*"\n')
    (tmp_path / "request.json").write_text('{"principal": {"id": "ann", "roles": ["reader"]}, "action": "read", '
                                           '"resource": {"kind": "dataset", "id": "docs/a"}}')
    (tmp_path / "rules" / "denies").chmod(0)
    try:
        proc = policyengine(*command, cwd=tmp_path, bound_by_permissions=True)
    finally:
        (tmp_path / "rules" / "denies").chmod(0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "rules/denies:1:1: error[load]: cannot list this folder: Permission denied" in proc.stderr + proc.stdout
    assert '"allow"' not in proc.stdout


# --- the parse cache ------------------------------------------------------------------------


def _forbid_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(text: str, path: str = "<string>") -> None:
        raise AssertionError(f"{path} was parsed again")

    monkeypatch.setattr(syntax, "parse_policy", fail)  # the loader imports the parser when it needs it


def test_unchanged_files_come_from_the_cache_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "rules"
    write(folder / "a.policy", GOOD.format(n=1))
    write(folder / "bad.policy", "package t\nrole\n")
    first = load_files([folder])
    assert list(cache_dir().glob("*.pickle")), "nothing was written to the cache"
    loader._MEMORY.clear()  # a new process: only the disk cache is left
    _forbid_parsing(monkeypatch)
    second = load_files([folder])
    assert second.files == first.files and second.findings == first.findings
    assert [f.path for f in second.files] == [f.path for f in first.files]
    assert second.files[0].decls[0].span == first.files[0].decls[0].span


def test_a_changed_file_is_parsed_again(tmp_path: Path) -> None:
    path = write(tmp_path / "a.policy", GOOD.format(n=1))
    load_files([path])
    write(path, GOOD.format(n=2))
    assert load_files([path]).files[0].package.value == "t.p2"


def test_the_same_content_at_another_path_keeps_its_own_spans(tmp_path: Path) -> None:
    a = write(tmp_path / "a.policy", GOOD.format(n=1))
    b = write(tmp_path / "b.policy", GOOD.format(n=1))
    files = load_files([a, b]).files
    assert [f.decls[0].span.file for f in files] == [str(a), str(b)]


def test_a_corrupt_cache_entry_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "a.policy", GOOD.format(n=1))
    expected = load_files([path]).files
    entries = list(cache_dir().glob("*.pickle"))
    assert entries
    for entry in entries:
        entry.write_bytes(b"\x80\x05 definitely not a pickle")
    loader._MEMORY.clear()
    assert load_files([path]).files == expected


def test_a_cache_entry_of_the_wrong_type_is_ignored(tmp_path: Path) -> None:
    import pickle

    path = write(tmp_path / "a.policy", GOOD.format(n=1))
    expected = load_files([path]).files
    for entry in cache_dir().glob("*.pickle"):
        entry.write_bytes(pickle.dumps({"not": "a policy file"}))
    loader._MEMORY.clear()
    assert load_files([path]).files == expected


def test_no_cache_when_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYENGINE_NO_CACHE", "1")
    load_files([write(tmp_path / "a.policy", GOOD.format(n=1))])
    assert not cache_dir().exists()
    assert not loader._MEMORY


def test_an_unwritable_cache_folder_does_not_stop_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = write(tmp_path / "blocked", "a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    result = load_files([write(tmp_path / "a.policy", GOOD.format(n=1))])
    assert result.ok and len(result.files) == 1


def test_the_example_rules_load_clean() -> None:
    rules = Path(__file__).resolve().parent.parent / "rules"
    result = load_files([rules])
    assert result.ok and len(result.files) >= 7


def test_cache_folders_of_older_parser_versions_are_removed(tmp_path: Path) -> None:
    stale = cache_dir().parent / ("0" * 16)
    write(stale / "x.pickle", b"old")
    load_files([write(tmp_path / "a.policy", GOOD.format(n=1))])
    assert not stale.exists() and cache_dir().is_dir()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_bytes_give_at_most_one_finding(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path / "random.policy", data)
    result = load_files([path], cache=False)
    assert len(result.files) + len(result.findings) == 1
    for finding in result.findings:
        assert finding.code in ("load", "syntax") and finding.span.file == str(path)


def _everything(node: object) -> list[object]:
    """``node`` and every value inside it, spans and comments included (equality skips those)."""
    out = [node]
    if dataclasses.is_dataclass(node):
        for field in dataclasses.fields(node):
            out += _everything(getattr(node, field.name))
    elif isinstance(node, tuple):
        for item in node:
            out += _everything(item)
    return out


def test_cached_trees_keep_every_span_comment_and_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = Path(__file__).resolve().parent.parent / "rules"
    fresh = load_files([rules])
    loader._MEMORY.clear()
    _forbid_parsing(monkeypatch)
    cached = load_files([rules])
    assert [repr(x) for x in _everything(cached.files)] == [repr(x) for x in _everything(fresh.files)]
    spans = [x.span for x in _everything(cached.files) if hasattr(x, "span")]
    assert spans == [x.span for x in _everything(fresh.files) if hasattr(x, "span")] and len(spans) > 500
    assert [f.comments for f in cached.files] == [f.comments for f in fresh.files]


def test_every_tree_class_has_a_fast_reducer() -> None:
    kinds = {type(x) for x in _everything(load_files([Path(__file__).resolve().parent.parent / "rules"]).files)}
    tree_kinds = {k for k in kinds if dataclasses.is_dataclass(k)}
    assert tree_kinds <= set(loader._REDUCERS)


def test_a_single_file_finds_the_packages_it_imports(tmp_path):
    """`check rules/finance/x.policy` works alone: `import common.regions` is found above it."""
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "regions.policy").write_text('package common.regions\nconst EU = ["DE", "FR"]\n')
    (tmp_path / "finance").mkdir()
    main = tmp_path / "finance" / "invoices.policy"
    main.write_text("package finance.invoices\nimport common.regions\nconst HOME = EU\n")
    result = load_files([main])
    assert result.findings == []
    assert sorted(f.package.value for f in result.files) == ["common.regions", "finance.invoices"]


def test_an_import_that_is_nowhere_is_left_for_check(tmp_path):
    main = tmp_path / "a.policy"
    main.write_text("package a\nimport nowhere.to_be_found\n")
    result = load_files([main])
    assert [f.package.value for f in result.files] == ["a"]


def test_common_regions_comes_with_policyengine(tmp_path):
    """A file in the README's form imports `common.regions` even outside this repository."""
    main = tmp_path / "mine.policy"
    main.write_text('package mine\nimport common.regions\nconst HOME = EU\n')
    result = load_files([main])
    assert result.findings == []
    assert "common.regions" in {f.package.value for f in result.files}


# --- the cache stays bounded -------------------------------------------------------------------


def test_the_cache_on_disk_keeps_at_most_its_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "_DISK_LIMIT", 5)
    monkeypatch.setattr(loader, "_PRUNE_EVERY", 1)
    paths = [write(tmp_path / f"copy{i}" / "a.policy", GOOD.format(n=i)) for i in range(12)]
    seen: set[Path] = set()
    for i, path in enumerate(paths):
        load_files([path])
        entries = set(cache_dir().iterdir())
        assert len(entries) <= 5, f"{len(entries)} entries after {i + 1} writes"
        (new,) = entries - seen
        os.utime(new, (1000 + i, 1000 + i))  # the write order, whatever the clock's resolution
        seen = entries
    # the newest entries are the ones kept: the last file loads from disk without parsing
    loader._MEMORY.clear()
    _forbid_parsing(monkeypatch)
    assert load_files([paths[-1]]).files[0].package.value == "t.p11"


def test_the_cache_is_counted_only_every_so_many_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "_DISK_LIMIT", 2)
    monkeypatch.setattr(loader, "_PRUNE_EVERY", 1000)
    monkeypatch.setattr(loader, "_WRITES", 1)  # not this process's first write
    load_files([write(tmp_path / f"copy{i}" / "a.policy", GOOD.format(n=i)) for i in range(4)])
    assert len(list(cache_dir().glob("*.pickle"))) == 4


def test_no_disk_cache_neither_reads_nor_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "a.policy", GOOD.format(n=1))
    with loader.no_disk_cache():
        first = load_files([path])
    assert first.ok and not cache_dir().exists()
    load_files([path])
    loader._MEMORY.clear()
    calls: list[str] = []
    real = syntax.parse_policy
    monkeypatch.setattr(syntax, "parse_policy", lambda text, name="<string>": calls.append(name) or real(text, name))
    with loader.no_disk_cache():
        load_files([path])
    assert calls == [str(path)], "the entry on disk was read inside no_disk_cache()"


MUTANT_POLICY = """\
package shop

role clerk

rule clerk_reads_small_orders
    allow role clerk to read dataset "orders/*"
    when context.rows <= 100
"""

MUTANT_TESTS = """\
policy: shop.policy
cases:
  - name: a small read
    principal: {id: kim, roles: [clerk]}
    action: read
    resource: dataset orders/1
    context: {rows: 100}
    expect: allow
  - name: a big read
    principal: {id: kim, roles: [clerk]}
    action: read
    resource: dataset orders/1
    context: {rows: 101}
    expect: deny
"""


def test_mutation_runs_add_nothing_to_the_parse_cache(tmp_path: Path) -> None:
    from policyengine.testing.mutations import run_mutations

    folder = tmp_path / "rules"
    write(folder / "shop.policy", MUTANT_POLICY)
    write(folder / "shop_test.yaml", MUTANT_TESTS)
    report = run_mutations(folder)
    assert report.baseline_ok and report.total >= 3
    assert not cache_dir().exists() or not any(cache_dir().iterdir())


def test_given_contents_are_parsed_instead_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.policy", GOOD.format(n=1))
    given = GOOD.format(n=2).encode()
    result = load_files([path], contents={str(path): given})
    assert result.files[0].package.value == "t.p2"
    assert result.sources == {str(path): given}
