"""``policyengine`` commands as real subprocesses, with the policy-test records they keep under the test's control.

Shared by tests/test_cli_test.py and tests/test_check_cache.py. ``check`` and
``test`` record which policy test files passed in the user's cache: a test
either gives them a cache folder of its own (``cache``) or turns the records off
(``POLICYENGINE_NO_CACHE=1``), so no run ever reads what another one left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# The console script the package installs (what a user types), beside this interpreter.
CLI = Path(sys.executable).with_name("policyengine")

# A one-rule policy: readers read the docs datasets before 18:00.
READER_POLICY = """\
package docs
role reader
rule readers_read
    allow role reader to read dataset "docs/*"
    when context.hour < 18
"""


# What makes file permissions bind root: without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH it reads as the owner.
UNPRIVILEGED = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def policyengine(*args: str, cwd: Path, cache: Path | None = None, env: Mapping[str, str] | None = None,
                 stdin: str | None = None, bound_by_permissions: bool = False) -> subprocess.CompletedProcess[str]:
    """``policyengine ARGS`` in ``cwd``, 80 columns wide; policy-test records in ``cache``, or none without one.

    ``env`` is applied last (``POLICYENGINE_NO_CACHE=1`` with a ``cache`` checks that nothing is recorded there).
    ``bound_by_permissions``: file permissions bind the command even when the tests run as root (``setpriv``
    drops the capabilities that let root read any folder), so a folder made unreadable is unreadable to it.
    """
    environment = {**os.environ, "COLUMNS": "80"}
    environment.pop("POLICYENGINE_NO_CACHE", None)
    environment.update({"XDG_CACHE_HOME": str(cache)} if cache is not None else {"POLICYENGINE_NO_CACHE": "1"})
    environment.update(env or {})
    prefix = [*UNPRIVILEGED] if bound_by_permissions and os.geteuid() == 0 else []
    return subprocess.run([*prefix, str(CLI), *args], cwd=cwd, input=stdin, capture_output=True, text=True, env=environment,
                          timeout=120, check=False)
