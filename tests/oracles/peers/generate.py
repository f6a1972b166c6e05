"""Write the peers' decisions for tests/test_engine_peers.py: ``pip install cedarpy casbin`` (into any
environment), then ``python tests/oracles/peers/generate.py`` from the repository root.

Each ``NAME.allowed`` holds one bit per request of ``test_engine_peers.NAME_cases`` (1: the peer allows),
in order, as hex after a leading 1 bit.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))

import casbin  # noqa: E402
import cedarpy  # noqa: E402

from test_engine_peers import casbin_cases, cedar_cases  # noqa: E402


def write(name: str, allowed: list[bool]) -> None:
    (HERE / f"{name}.allowed").write_text(hex(int("1" + "".join("1" if a else "0" for a in allowed), 2)) + "\n")
    print(f"{name}: {sum(allowed)} of {len(allowed)} allowed")


if __name__ == "__main__":
    policies = (HERE / "cedar_documents.cedar").read_text()
    write("cedar_documents", [cedarpy.is_authorized(request, policies, entities).decision == cedarpy.Decision.Allow
                              for _, (request, entities) in cedar_cases()])
    enforcer = casbin.Enforcer(str(HERE / "casbin_rbac_deny.conf"), str(HERE / "casbin_rbac_deny.csv"))
    write("casbin_rbac_deny", [enforcer.enforce(*request) for _, request in casbin_cases()])
