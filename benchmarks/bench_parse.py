"""Parse (and, when the checker is present, check) 10,000 generated rules.

Run by hand: ``python benchmarks/bench_parse.py [--rules N] [--files F]``.
Prints cold parse (no cache), warm reload (parse cache hit), and parse + check.
The target: load + check of 10,000 rules <= 2 s cold and <= 0.2 s
when unchanged files are reloaded (2-core x86_64).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROLES = ["analyst", "senior_analyst", "ap_agent", "model_risk", "it_agent", "buyer"]
ACTIONS = ["read", "write", "invoke", "approve_payment", "call"]
KINDS = ["dataset", "model", "tool", "workflow"]

HEADER = """package bench.p{index}
owner "bench@example.com"
cite "SOX 404"

import common.regions

"""


def rule_text(i: int) -> str:
    """One realistic rule of about 170 bytes (10,000 of them are ~1.7 MB)."""
    role = ROLES[i % len(ROLES)]
    action = ACTIONS[i % len(ACTIONS)]
    kind = KINDS[i % len(KINDS)]
    effect = "deny" if i % 7 == 0 else "allow"
    return (
        f"rule r{i}\n"
        f'    {effect} role {role} to {action} {kind} "erp/{i}/*"\n'
        f"    when context.amount > {i * 10} and data.origin in EU\n"
        f"      or context.tier in [1, 2]\n"
        f'    because "rule {i}"\n\n'
    )


def roles_text() -> str:
    return "package bench.roles\n\n" + "".join(f"role {r}\n" for r in ROLES)


def write_corpus(folder: Path, rules: int, files: int) -> int:
    """Write ``rules`` rules spread over ``files`` files; return the total bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    per_file = max(1, rules // files)
    for f in range(files):
        body = HEADER.format(index=f) + "".join(rule_text(f * per_file + i) for i in range(per_file))
        (folder / f"p{f:04d}.policy").write_text(body, encoding="utf-8")
        total += len(body.encode())
    (folder / "roles.policy").write_text(roles_text(), encoding="utf-8")
    regions = Path(__file__).resolve().parent.parent / "rules" / "common" / "regions.policy"
    (folder / "regions.policy").write_text(regions.read_text(encoding="utf-8"), encoding="utf-8")
    return total


def timed(fn, repeat: int = 5) -> tuple[str, object]:
    """Median and best wall-clock time of ``repeat`` runs (the best is the least disturbed)."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return f"{statistics.median(times):.3f} s (best {min(times):.3f} s)", result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        corpus = Path(tmp) / "corpus"
        size = write_corpus(corpus, args.rules, args.files)
        from policyengine import loader

        print(f"{args.rules} rules in {args.files} files, {size / 1e6:.2f} MB")
        cold, result = timed(lambda: loader.load_files([corpus], cache=False))
        assert not result.findings, result.findings[:3]
        print(f"parse, cold (no cache):            {cold}")

        loader.load_files([corpus], cache=True)  # fill the on-disk cache
        loader._MEMORY.clear()
        disk, _ = timed(lambda: (loader._MEMORY.clear(), loader.load_files([corpus], cache=True))[1])
        print(f"reload, warm (on-disk cache):      {disk}")
        loader.load_files([corpus], cache=True)
        memory, _ = timed(lambda: loader.load_files([corpus], cache=True))
        print(f"reload, warm (in-process cache):   {memory}")

        try:
            from policyengine.check import check_policy
        except ImportError:
            print("parse + check: policyengine.check is not available yet")
            return

        def parse_and_check():
            loaded = loader.load_files([corpus], cache=False)
            return check_policy(loaded.files)

        both, checked = timed(parse_and_check)
        errors = [f for f in checked.findings if f.is_error]
        print(f"parse + check, cold:               {both} ({len(errors)} errors)")
        if errors:
            print(errors[:3], file=sys.stderr)


if __name__ == "__main__":
    main()
