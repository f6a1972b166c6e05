"""The optional toxicity detector: a small offline model from PyPI (``alt-profanity-check``).

A linear classifier over character and word n-grams, shipped inside the
package (no download at run time), scoring text in [0, 1]. Installed with the
``guards`` extra (``pip install 'policyengine[guards]'``). Without it the
gateway refuses ``guards: {toxicity: true}`` at start, and with the guard off
``context.guard.toxicity`` is absent: a rule that reads it meets a missing
attribute, which a deny rule treats as a match (fail closed), never as 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Scorer = Callable[[Sequence[str]], list[float]]
_SCORER: Scorer | None = None


class ToxicityUnavailable(Exception):
    """The model's package is not installed (or does not load)."""


def scorer() -> Scorer:
    """The loaded model's scoring function (imported once per process: ~1-3 s)."""
    global _SCORER
    if _SCORER is None:
        try:
            from profanity_check import predict_prob
        except Exception as error:  # noqa: BLE001 - ImportError, or a broken install of its dependencies
            raise ToxicityUnavailable("the toxicity guard needs alt-profanity-check: "
                                      f"pip install 'policyengine[guards]' ({type(error).__name__}: {error})") from None

        def score(texts: Sequence[str]) -> list[float]:
            return [round(float(p), 4) for p in predict_prob(list(texts))]

        _SCORER = score
    return _SCORER
