"""Time the static checker alone (files already parsed) on 10,000 generated rules.

Run by hand: ``python benchmarks/bench_check.py [--rules N]``. Three corpora:

- ``realistic``: the parse benchmark's corpus (100 files, conditions with consts);
- ``shadowing``: half the rules are unconditional denies, half allows, so the
  shadowed-allow search has the most pairs to consider;
- ``broken``: every rule has an unknown role and a contradiction, so the checker
  builds findings (and suggestions) for all of them before capping.

"first" is the check right after loading (it includes Python's cyclic GC passing
over the freshly built syntax trees); "median" is of five runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_parse  # noqa: E402  (the shared corpus generator)

from policyengine.check import check_policy  # noqa: E402
from policyengine.loader import load_files  # noqa: E402


def shadowing_corpus(folder: Path, rules: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["package bench.shadow", "role analyst", "role senior extends analyst"]
    for i in range(rules // 2):
        lines.append(f'rule d{i} deny role analyst to read dataset "erp/{i}/*"')
        lines.append(f'rule a{i} allow role senior to read dataset "hr/{i}/x"')
    (folder / "shadow.policy").write_text("\n".join(lines) + "\n", encoding="utf-8")


def broken_corpus(folder: Path, rules: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["package bench.broken", "role analyst"]
    for i in range(rules):
        lines.append(f'rule r{i} allow role analyts to read dataset "x/{i}" '
                     f"when context.n < {i} and context.n > {i + 10}")
    (folder / "broken.policy").write_text("\n".join(lines) + "\n", encoding="utf-8")


def measure(name: str, folder: Path, repeat: int = 5) -> None:
    loaded = load_files([str(folder)])
    assert not loaded.findings, loaded.findings[:3]
    rules = sum(1 for f in loaded.files for d in f.decls if d.__class__.__name__ == "RuleDecl")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = check_policy(loaded.files)
        times.append(time.perf_counter() - start)
    print(f"{name:<10} {rules:>6} rules  first {times[0] * 1000:7.1f} ms  "
          f"median {statistics.median(times) * 1000:7.1f} ms  min {min(times) * 1000:7.1f} ms  findings {len(result.findings)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_parse.write_corpus(root / "realistic", args.rules, 100)
        shadowing_corpus(root / "shadowing", args.rules)
        broken_corpus(root / "broken", args.rules)
        for name in ("realistic", "shadowing", "broken"):
            measure(name, root / name)


if __name__ == "__main__":
    main()
