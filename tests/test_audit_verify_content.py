"""Verify checks every record's content, always, with the writer's one canonicaliser.

The bytes a leaf hash covers come from ``leaf_bytes`` / ``canonical_text`` for
every record; there is no second (SQL) encoder whose escaping of control
characters differs, and no limit after which records go unchecked.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine.audit import AuditLog, export_jsonl, export_parquet, generate_key, verify_database, verify_export
from policyengine.audit.canonical import canonical_text
from policyengine.audit.log import leaf_bytes
from policyengine.audit.verify import verify_connection

# Every C0 control, DEL, the C1 controls, and the two characters JavaScript source (not JSON) escapes.
CONTROLS = [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)] + ["\u2028", "\u2029"]


def ecmascript_quote(text: str) -> str:
    """QuoteJSONString of ECMA-262 (what RFC 8785 section 3.2.2.2 prescribes), written from the spec."""
    short = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}
    out = ['"']
    for ch in text:
        code = ord(ch)
        if code in short:
            out.append(short[code])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# RFC 8785: section 3.2.2 (serialisation of primitives, whitespace removed), 3.2.3 (sorting by UTF-16
# code units), and the control-character and "weird" key cases of its published test data.
RFC8785_VECTORS = [
    ('{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
     ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}',
     '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
     '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'),
    ('{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet With Dagesh",'
     ' "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control", "\\u00f6": "Latin Small Letter O With Diaeresis"}',
     '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",'
     '"\u20ac":"Euro Sign","\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'),
    ('{"\\u20ac": "Euro Sign", "1": "One", "\\u0080": "Control\\u007f", "\\ud83d\\ude02": "Smiley",'
     ' "\\u00f6": "Latin Small Letter O With Diaeresis", "\\ufb33": "Hebrew Letter Dalet With Dagesh",'
     ' "</script>": "Browser Challenge"}',
     '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f","\u00f6":"Latin Small Letter O With Diaeresis",'
     '"\u20ac":"Euro Sign","\U0001f602":"Smiley","\ufb33":"Hebrew Letter Dalet With Dagesh"}'),
    ('[56, {"d": true, "10": null, "1": [ ]}]', '[56,{"1":[],"10":null,"d":true}]'),
    ('{"Unnormalized Unicode": "A\\u030a"}', '{"Unnormalized Unicode":"A\u030a"}'),
    ('{"c0": "\\u0000\\u0001\\u0007\\u000b\\u000e\\u000f\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f"}',
     '{"c0":"\\u0000\\u0001\\u0007\\u000b\\u000e\\u000f\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f"}'),
]


@pytest.mark.parametrize(("source", "expected"), RFC8785_VECTORS)
def test_rfc8785_vectors(source: str, expected: str) -> None:
    assert canonical_text(json.loads(source)) == expected


@pytest.mark.parametrize("ch", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_every_control_character_is_escaped_as_ecmascript_does(ch: str) -> None:
    assert canonical_text(ch) == ecmascript_quote(ch)
    data = leaf_bytes(seq=1, ts="2026-01-01T00:00:00.000000Z", origin="o", event="decision", actor=ch,
                      workflow=None, run_id=None, payload=canonical_text({ch: ch}), policy_hash=None, key_id="k")
    assert f'"actor":{ecmascript_quote(ch)}'.encode() in data


texts = st.text(st.sampled_from([*CONTROLS, "a", "\"", "\\", "/", "\u00e9", "\U0001f600"]), max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=6), st.data())
def test_any_control_text_verifies_and_any_later_change_is_caught(tmp_path: Path, records: list, data: st.DataObject) -> None:
    key = _key(tmp_path)
    con = duckdb.connect()
    try:
        with AuditLog(con, key, flush_interval=0, batch_size=3, checkpoint_every=3) as log:
            for actor, text in records:
                log.append("decision", actor=actor, workflow=text, payload={text: actor, "effect": "deny"})
        assert verify_connection(con, "mem", [key.public]).ok
        seq = data.draw(st.integers(1, len(records)))
        con.execute("UPDATE audit_log SET payload = replace(payload::VARCHAR, '\"deny\"', '\"allow\"') WHERE seq = ?",
                    [seq])
        failure = verify_connection(con, "mem", [key.public]).failure
        assert failure is not None and (failure.kind, failure.seq) == ("modified", seq), failure
    finally:
        con.close()


_keys: dict[Path, object] = {}


def _key(folder: Path):  # one key per test directory: generating one per example is needless work
    if folder not in _keys:
        _keys[folder] = generate_key(folder / "k.key")
    return _keys[folder]


BLINDING = 1001  # one more than the old limit of records re-checked in Python


def test_a_thousand_awkward_records_do_not_blind_verify(tmp_path: Path) -> None:
    """The reproduced attack: 1,001 principals with U+000B, then a later deny turned into allow by SQL."""
    db = tmp_path / "audit.duckdb"
    key = generate_key(tmp_path / "k.key")
    with AuditLog(db, key, flush_interval=0) as log:
        for i in range(BLINDING):
            log.append("decision", actor=f"user\x0b{i}",
                       payload={"request": {"principal": {"id": f"user\x0b{i}"}}, "decision": {"effect": "allow"}})
        target = log.append("decision", actor="mallory",
                            payload={"request": {"principal": {"id": "mallory"}}, "decision": {"effect": "deny"}})
    assert verify_database(db, [key.public]).ok
    con = duckdb.connect(str(db))
    con.execute("UPDATE audit_log SET payload = replace(payload::VARCHAR, '\"deny\"', '\"allow\"') WHERE seq = ?",
                [target])
    con.close()
    for report in (
        verify_database(db, [key.public]),
        _exported(export_jsonl, db, tmp_path / "a.jsonl", key),
        _exported(export_parquet, db, tmp_path / "a.parquet", key),
    ):
        assert report.failure is not None, report.summary()
        assert (report.failure.kind, report.failure.seq) == ("modified", target), report.summary()


def _exported(export, db: Path, out: Path, key):
    export(db, out)
    return verify_export(out, [key.public])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.integers(-(2**70), 2**70).filter(lambda i: int(float(i)) == i)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(st.sampled_from([*CONTROLS, "a", "1", "e", ".", "\"",
                                                                                 "\\", "\ue000", "\U0001f600"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(st.sampled_from(["a", "b", "\u00e9", "\ue000", "\U0001f600", "\x0b"]), max_size=3), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=3), json_values, max_size=5))
def test_the_fast_canonical_paths_agree_with_the_exact_writer(value: dict) -> None:
    """orjson is used only where its bytes are RFC 8785's: writer and verifier agree with the spec writer."""
    from policyengine.audit.canonical import _write, is_canonical

    exact: list[str] = []
    _write(value, exact, "")
    text = "".join(exact)
    assert canonical_text(value) == text
    assert is_canonical(text)
    for other in (json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                  json.dumps(value, sort_keys=True, separators=(",", ":"))):
        assert is_canonical(other) == (other == text)


@pytest.mark.parametrize("value", [{"n": float("nan")}, {"n": float("inf")}, {"u": __import__("uuid").uuid4()},
                                   {"big": 2**53 + 1}, {"t": (1, 2)}, {1: "a"}])
def test_what_orjson_would_write_but_rfc8785_has_no_form_for_is_still_refused_or_exact(value: dict) -> None:
    from policyengine.audit.canonical import CanonicalJSONError, _write

    exact: list[str] = []
    try:
        _write(value, exact, "")
    except CanonicalJSONError:
        with pytest.raises(CanonicalJSONError):
            canonical_text(value)
    else:
        assert canonical_text(value) == "".join(exact)
