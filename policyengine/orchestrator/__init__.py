"""The lightweight orchestrator: governed workflows, durable runs and human approval.

Define a ``Workflow`` from typed steps, hand it to an ``Orchestrator`` with a
policy, a ``StateStore`` and an audit log, and every step is put to the policy
before it runs and recorded after (see ``docs/orchestrator.md``). ``Session``
opens all of it on one DuckDB file, as the CLI does.
"""

from .approvals import ApprovalRefused, Directory, User
from .ledger import BufferedLedger
from .providers import (
    LocalProvider,
    ModelProfile,
    OpenAICompatibleProvider,
    Provider,
    ProviderError,
    Providers,
    ProviderTimeout,
)
from .runner import Orchestrator, RunError, RunResult
from .session import Session, SessionConfig, SessionError
from .state import StateStore
from .summary import BatchSummary
from .workflow import (
    Ask,
    Completion,
    Context,
    DataRead,
    HumanWait,
    ModelCall,
    Parallel,
    Prompt,
    RulesDecision,
    ToolCall,
    Workflow,
)
from .workflows import WORKFLOWS

__all__ = [
    "WORKFLOWS",
    "ApprovalRefused",
    "Ask",
    "BatchSummary",
    "BufferedLedger",
    "Completion",
    "Context",
    "DataRead",
    "Directory",
    "HumanWait",
    "LocalProvider",
    "ModelCall",
    "ModelProfile",
    "OpenAICompatibleProvider",
    "Orchestrator",
    "Parallel",
    "Prompt",
    "Provider",
    "ProviderError",
    "ProviderTimeout",
    "Providers",
    "RulesDecision",
    "RunError",
    "RunResult",
    "Session",
    "SessionConfig",
    "SessionError",
    "StateStore",
    "ToolCall",
    "User",
    "Workflow",
]
