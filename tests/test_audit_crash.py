"""A writer killed with SIGKILL mid-stream loses nothing that flush() acknowledged, and leaves nothing unsigned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from policyengine.audit import AuditLog, generate_key, verify_database

WRITER = textwrap.dedent(
    """
    import sys
    from policyengine.audit import AuditLog, load_private_key

    key = load_private_key(sys.argv[2])
    with AuditLog(sys.argv[1], key, batch_size=64, checkpoint_every=200, flush_interval=0.01) as log:
        i = 0
        while True:
            i += 1
            log.append("model_call", actor="agent", payload={"model": "m", "tokens": i, "cost_usd": i / 1000})
            if i % 97 == 0:
                print(log.flush(), flush=True)  # acknowledged: durable from here on
    """
)


def test_sigkill_mid_stream_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    db, key_path = tmp_path / "crash.duckdb", tmp_path / "k.key"
    key = generate_key(key_path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(key_path)], stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 3000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # every committed batch carries its checkpoint, so a crash leaves nothing unsigned
    report = verify_database(db, [key.public])
    assert report.ok, report.summary()
    assert report.records >= acknowledged >= 3000
    assert report.checkpoints >= 1 and report.unsigned == 0

    # the log reopens and carries on without gaps
    with AuditLog(db, key, flush_interval=0) as log:
        assert log.append("alert", payload={"kind": "budget"}) == report.records + 1
    after = verify_database(db, [key.public])
    assert after.ok and after.unsigned == 0 and after.records == report.records + 1
