"""The one canonical form of a person's or agent's identity, so two spellings never count as two people.

Four-eyes checks compare who started a run with who approves it; if ``Alice``,
``alice `` and ``al<U+200B>ice`` were different strings to that comparison, one
person could approve their own run. Every place that takes an identity (runs,
approvals, the user directory, approvals inside requests) passes it through
``canonical_identity`` and compares only the results:

* Unicode NFKC (full-width and compatibility forms become their plain letters),
* surrounding white space trimmed, then ``casefold`` (``ALICE`` is ``alice``),
* invisible characters (zero-width spaces and joiners, bidi controls: category
  Cf) and control characters are refused, not silently removed, because a
  stored id should be exactly what was typed,
* letters of more than one script (a Cyrillic ``а`` inside a Latin name) are
  refused, and so is a name written wholly in look-alike letters of another
  script (Cyrillic ``аlісе``), which would read as a Latin name, or holding a
  Latin letter that only phonetics uses and that reads as a plain one (the
  small capitals ``ᴀʟɪᴄᴇ``, the alpha ``ɑ``, the script ``ɡ``).

Refusals raise ``IdentityError`` (a ``ValueError``) whose message names the
offending character by code point, never by trying to print it.

The same two tests guard other names that must not pass for one another:
``mixed_script`` (a resource id or role whose word mixes Latin with Cyrillic or
Greek letters, or holds a phonetic look-alike) and ``disguise`` (a value a
schema normalises, holding what no normalisation folds).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import unquote

__all__ = ["AS_LATIN", "IdentityError", "canonical_identity", "describe_char", "disguise", "id_fault", "id_problem",
           "mixed_script", "name_fold", "plain_id", "same_identity"]


class IdentityError(ValueError):
    """An identity that cannot be put in canonical form (refused, exit 1)."""


# Letters of other scripts that look like Latin ones (the Unicode confusables
# that matter for names), and the Latin letter each reads as. The guards read
# text through ``AS_LATIN`` to find what is written to slip past a pattern; a
# user id made only of the lower-case ones (ids are casefolded) and common
# characters is refused: it would pass for a Latin name.
_LOOKALIKE_LETTERS = ("аеорсухіјѕԁһӏԛԝвкмнтѡ" "αεικνορτυχѵ"  # Cyrillic, then Greek (and Cyrillic ѵ)
                      "АВЕКМНОРСТХ" "ΑΒΕΗΙΚΜΝΟΡΤΧΥΖ")
_LATIN_LOOKALIKES = frozenset(ch for ch in _LOOKALIKE_LETTERS if ch.islower())
# Latin letters of phonetic notation that read as a plain letter: the small capitals (``ᴘʀᴏᴅ`` reads as
# ``PROD``; NFKC keeps them), the alpha ``ɑ`` and the script ``ɡ``. No orthography writes names with them,
# so a name or id holding one is refused, and ``name_fold`` reads it as the plain letter.
_PHONETIC_LOOKALIKES = {
    "ɢ": "g", "ɪ": "i", "ɴ": "n", "ʀ": "r", "ʏ": "y", "ʙ": "b", "ʜ": "h", "ʟ": "l", "ᴀ": "a", "ᴄ": "c", "ᴅ": "d",
    "ᴇ": "e", "ᴊ": "j", "ᴋ": "k", "ᴍ": "m", "ᴏ": "o", "ᴘ": "p", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ᴢ": "z",
    "ꜰ": "f", "ꜱ": "s", "ꞯ": "q", "ɑ": "a", "ɡ": "g",
}
_AS_PLAIN = str.maketrans(_PHONETIC_LOOKALIKES)
AS_LATIN = {**str.maketrans(_LOOKALIKE_LETTERS, "aeopcyxijsdhlqwbkmhtw" "aeiknoptuxv" "ABEKMHOPCTX" "ABEHIKMNOPTXYZ"),
            **_AS_PLAIN}
# Categories of invisible and control characters (format, control, surrogate, private use, unassigned,
# line and paragraph separators): what neither an identity nor a normalised value may hold.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Scripts whose letters are written with Latin look-alikes in practice.
_CONFUSABLE_SCRIPTS = frozenset({"CYRILLIC", "GREEK"})


def _script(ch: str) -> str | None:
    """The script of a letter, from its Unicode name (``LATIN``, ``CYRILLIC``...); None for non-letters."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


@lru_cache(maxsize=4096)
def name_fold(name: str) -> str:
    """The spelling ``name`` shares with every way of writing it that only looks alike: NFKC (full width
    becomes plain), no control, invisible or space characters, every dash a ``-``, case-folded.

    Declared names (roles, agents, models, actions) are exact; a request name
    that is not one but folds to one is a disguise of it (``Analyst``,
    `` analyst``, ``analyst<U+200B>``, a full-width ``ａnalyst``, ``data<U+2010>steward``
    with a Unicode hyphen or ``data<U+2212>steward`` with a minus sign, ``ᴀnalyst`` with a small
    capital), refused rather than taken for an unknown name that no rule about the real one reaches.
    """
    text = unicodedata.normalize("NFKC", name).translate(_AS_PLAIN)
    return "".join("-" if ch in _DASHES or unicodedata.category(ch) == "Pd" else ch for ch in text
                   if unicodedata.category(ch)[0] not in "CZ").casefold()


_DASHES = frozenset("\u2212\u2043\u02d7")  # minus sign, hyphen bullet, modifier minus: dashes outside category Pd


def describe_char(ch: str) -> str:
    """A character by code point and name (``U+200B ZERO WIDTH SPACE``): never by printing it."""
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')}"


def _phonetic(ch: str) -> str:
    return f"{describe_char(ch)}, a phonetic letter that reads as {_PHONETIC_LOOKALIKES[ch]!r}"


@lru_cache(maxsize=4096)
def canonical_identity(raw: str, what: str = "identity") -> str:
    """``raw`` in canonical form (NFKC, trimmed, casefolded), or ``IdentityError`` saying why not."""
    if not isinstance(raw, str):
        raise IdentityError(f"{what} must be a string, not {type(raw).__name__}")
    text = unicodedata.normalize("NFKC", raw).strip().casefold()
    text = unicodedata.normalize("NFKC", text)  # casefold can leave a non-normalised string
    if not text:
        raise IdentityError(f"{what} is empty")
    scripts: set[str] = set()
    for ch in text:
        category = unicodedata.category(ch)
        if category in _HIDDEN:
            raise IdentityError(f"{what} contains an invisible or control character ({describe_char(ch)}); "
                                f"type the identity without it")
        if ch in _PHONETIC_LOOKALIKES:
            raise IdentityError(f"{what} contains {_phonetic(ch)}; it would pass for someone else")
        script = _script(ch)
        if script is not None:
            scripts.add(script)
    if len(scripts) > 1:
        raise IdentityError(f"{what} mixes letters of the scripts {', '.join(sorted(scripts))}; "
                            f"a look-alike letter could make it pass for someone else")
    if scripts & _CONFUSABLE_SCRIPTS and all(not ch.isalpha() or ch in _LATIN_LOOKALIKES for ch in text):
        raise IdentityError(f"{what} is written only in {next(iter(scripts)).lower()} letters that look like "
                            f"Latin ones; it would pass for a Latin name")
    return text


_KEPT_CONTROLS = frozenset("\t\n\r")


def disguise(text: str) -> str | None:
    """Why ``text`` cannot be normalised into the text it looks like, or None.

    For attribute values a schema normalises (``normalise nfkc, trim,
    casefold``): the author asked that variants read as one, and these are the
    variants no normalisation folds. An invisible or control character
    (``D<U+200B>E`` for ``DE``) and a word mixing Latin letters with Cyrillic or
    Greek ones (``DЕ`` with a Cyrillic ``Е``) would otherwise pass for a value
    they only look like, and slip past a rule about it.
    """
    if text.isascii() and text.isprintable():
        return None  # the usual value: printable ASCII, a single script
    for ch in text:
        if ch in _KEPT_CONTROLS:
            continue
        category = unicodedata.category(ch)
        if category in _HIDDEN:
            return f"contains an invisible or control character ({describe_char(ch)})"
    return mixed_script(text)


_WORD = re.compile(r"[^\W\d_]+")  # a run of letters


@lru_cache(maxsize=1)
def _confusable_letter() -> re.Pattern[str]:
    """Any letter of a script in ``_CONFUSABLE_SCRIPTS`` (all 726 lie in the BMP; found in ~25 ms, once),
    or a phonetic look-alike."""
    letters = "".join(ch for ch in map(chr, range(0x10000)) if _script(ch) in _CONFUSABLE_SCRIPTS)
    return re.compile(f"[{re.escape(letters + ''.join(_PHONETIC_LOOKALIKES))}]")


def mixed_script(text: str) -> str | None:
    """Why a word of ``text`` (a run of letters) mixes Latin letters with Cyrillic or Greek ones, or holds
    a phonetic look-alike (``ᴘrod``, ``ᴘʀᴏᴅ``), or None.

    ``prоd`` with a Cyrillic ``о`` reads as ``prod`` and is another string:
    a rule about ``prod`` would not reach it. Words of one script each
    (``docs/отчёт``, ``München``) are ordinary text.
    """
    if text.isascii() or (found := _confusable_letter().search(text)) is None:
        return None  # no Cyrillic, Greek or phonetic look-alike letter: the usual non-ASCII text (données, 日本)
    phonetic = next((ch for ch in text[found.start():] if ch in _PHONETIC_LOOKALIKES), None)
    if phonetic is not None:
        return f"holds {_phonetic(phonetic)}; a look-alike letter could make it pass for another name"
    for word in _WORD.findall(text):
        if word.isascii():
            continue
        scripts = {script for ch in word if (script := _script(ch)) is not None}
        if "LATIN" in scripts and scripts & _CONFUSABLE_SCRIPTS:
            return (f"mixes letters of the scripts {', '.join(sorted(scripts))} in one word; "
                    "a look-alike letter could make it pass for another name")
    return None


# A resource id is canonical: '/'-separated segments, none empty, '.' or '..', no surrounding whitespace,
# printable characters only, in NFKC form, and no separator in disguise (a backslash, a percent-encoded '/'
# or backslash, a segment that percent-decodes to '.' or '..'). So `erp/invoices/../payroll` never matches
# `erp/invoices/*`, and no spelling that another system reads as a protected id (`prod\\x`, `prod%2Fx`, a
# full-width `ｐrod/x`, `prod<U+200B>/x`) passes by a deny written for that id.
_DOT_SEGMENT = re.compile(r"(?:^|/)\.{1,2}(?:/|$)").search
_ENCODED = re.compile(r"%(?:2[fF]|5[cC])|(?:^|/)(?:\.|%2[eE]){1,2}(?:/|$)").search
_LINE_BREAKS = "\u2028\u2029"


def plain_id(rid: str) -> bool:
    """True when the non-empty ``rid`` surely is canonical (False: ask ``id_problem``).

    The checks run at C speed and each excludes one of ``id_problem``'s reasons: no control or invisible
    character is printable (nor is the newline before which ``$`` also matches), a '.' or '..' segment
    starts at 0 or after '/', surrounding whitespace is ``str.isspace``, a disguised separator needs a
    backslash or '%', and an ASCII id is in NFKC form and of one script.
    """
    return (rid.isprintable() and "//" not in rid and "/." not in rid and rid[0] not in "/."
            and rid[-1] != "/" and not rid[0].isspace() and not rid[-1].isspace()
            and "\\" not in rid and "%" not in rid
            and (rid.isascii() or (unicodedata.is_normalized("NFKC", rid) and mixed_script(rid) is None)))


def _decodes_to_a_separator(rid: str) -> bool:
    """Whether percent-decoding ``rid`` again and again (``%252F`` -> ``%2F`` -> ``/``) makes a ``/``, a
    backslash, a ``.``/``..`` segment or a control character: what a server that decodes twice would read."""
    text = rid
    for _ in range(4):
        decoded = unquote(text)
        if decoded == text:
            return False
        if (decoded.count("/") != rid.count("/") or "\\" in decoded or not decoded.isprintable()
                or _DOT_SEGMENT(decoded)):
            return True
        text = decoded
    return True  # still encoded after four rounds: no plain reading of it is safe to assume


def id_problem(rid: str) -> str | None:
    """Why a resource id is not canonical, in words (the request is malformed); None when it is."""
    fault = id_fault(rid)
    return None if fault is None else f"{json.dumps(rid, ensure_ascii=True)[:80]} {fault}"


def id_fault(rid: str) -> str | None:
    """``id_problem`` without the id it is about: ``has an empty segment (...)``."""
    odd = next((ch for ch in rid if not ch.isprintable()), None)
    if odd is not None:
        if unicodedata.category(odd) == "Cc" or odd in _LINE_BREAKS:
            return "contains a control character"
        return f"contains an invisible character ({describe_char(odd)})"
    if rid != rid.strip():
        return "has leading or trailing whitespace"
    if _DOT_SEGMENT(rid):
        return "has a '.' or '..' segment; send the canonical id"
    if "//" in rid or rid[0] == "/" or rid[-1] == "/":
        return "has an empty segment (leading, trailing or double '/')"
    if "\\" in rid:
        return "contains a backslash; segments are separated by '/': send the canonical id"
    if _ENCODED(rid) or ("%" in rid and _decodes_to_a_separator(rid)):
        return ("holds a percent-encoded '/', backslash, dot segment or control character (or one encoded twice, "
                "%252F); send the decoded, canonical id")
    if not rid.isascii() and not unicodedata.is_normalized("NFKC", rid):
        odd = next((ch for ch in rid if unicodedata.normalize("NFKC", ch) != ch), None)
        which = "its characters compose" if odd is None else (
            f"{describe_char(odd)} stands for {unicodedata.normalize('NFKC', odd)!r}")
        return f"is not in NFKC form ({which}); send the canonical id"
    return mixed_script(rid)


def same_identity(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are the same identity; an identity that cannot be canonicalised matches nothing."""
    try:
        return canonical_identity(a) == canonical_identity(b)
    except IdentityError:
        return False


def canonical_set(ids: Iterable[str], what: str = "identity") -> frozenset[str]:
    return frozenset(canonical_identity(i, what) for i in ids)
