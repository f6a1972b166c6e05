"""Response quality: a heuristic score in [0, 1] of a model's answer, for ``context.guard.response.quality``.

Not a judge of correctness: it catches answers a workflow should not take as
they are. 0 for an empty answer; the score is multiplied down for an answer cut
at its token limit (``finish_reason: length``, x0.6), a refusal ("I can't help
with that", "as an AI language model", x0.3), heavy repetition (fewer than 30%
distinct words among 20 or more, x0.5) and an answer of under 3 characters (x0.5).
"""

from __future__ import annotations

import re

_REFUSAL = re.compile(r"\b(?:I(?:'m| am) (?:sorry|unable)|I can(?:not|'t) (?:help|assist|comply|provide)"
                      r"|as an AI(?: language model)?)\b", re.I)
_WORD = re.compile(r"\w+")


def response_quality(text: str, finish_reason: str | None = None) -> float:
    stripped = text.strip()
    if not stripped:
        return 0.0
    score = 1.0
    if finish_reason == "length":
        score *= 0.6
    if _REFUSAL.search(stripped):
        score *= 0.3
    words = [w.lower() for w in _WORD.findall(stripped)]
    if len(words) >= 20 and len(set(words)) / len(words) < 0.3:
        score *= 0.5
    if len(stripped) < 3:
        score *= 0.5
    return round(score, 4)
