"""``replay``: decide recorded requests again under a candidate policy (shadow mode on the log).

Thin over ``policyengine.replay``: opens the audit database read-only, replays,
prints the summary and writes the CSV / HTML diff when asked.
"""

from __future__ import annotations

from pathlib import Path

import click
import duckdb

from ..reporting import ReportError
from ..reporting.db import first_line
from .reporting import DEFAULT_DB, _emit, _fail, _policy, _when


@click.command("replay")
@click.option("--rules", "rules", multiple=True, required=True, metavar="PATH",
              help="The candidate policy: rule files or folders (repeatable).")
@click.option("--db", default=DEFAULT_DB, show_default=True, help="Audit database (opened read-only).")
@click.option("--since", metavar="TIME", help="Only decisions recorded at or after this time (ISO 8601).")
@click.option("--until", metavar="TIME", help="Only decisions recorded before this time (ISO 8601).")
@click.option("--csv", "csv_path", metavar="FILE", help="Write every changed decision to FILE as CSV.")
@click.option("--html", "html_path", metavar="FILE", help="Write the diff as an HTML page to FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print the result (with every change) as JSON.")
@click.option("--pubkey", "pubkeys", multiple=True, metavar="PEM",
              help="--html: trusted public key to verify the log with (default: ./policyengine.key.pub.pem).")
@click.option("--fail-on-change", is_flag=True, help="Exit 1 when any decision would change, or none was replayed (for CI).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes for logs of 100,000 decisions or more (helps on idle cores only).")
def replay_command(rules: tuple[str, ...], db: str, since: str | None, until: str | None, csv_path: str | None,
                   html_path: str | None, as_json: bool, pubkeys: tuple[str, ...], fail_on_change: bool,
                   jobs: int) -> None:
    """Re-decide the recorded decision requests of --db under the candidate --rules.

    Reports every decision whose effect or route would change, counted by
    transition and by the rules that made the difference, with examples. The
    log is opened read-only: nothing is written to it.

    \b
    policyengine replay --rules candidate/ --db policyengine.duckdb --since 2026-11-01 --csv diff.csv --html diff.html
    """
    import json

    from ..replay import replay
    from ..reporting.provenance import log_provenance
    from ..reporting.replay_report import replay_csv, replay_html, replay_text

    start, end = _when(since, "--since"), _when(until, "--until")
    policy = _policy(rules)
    try:
        result = replay(db, policy, since=start, until=end, jobs=jobs)
    except ReportError as e:
        _fail(str(e))
    except duckdb.Error as e:
        _fail(f"replay: {first_line(e)}")
    if csv_path:
        _emit(replay_csv(result), csv_path)
    if html_path:
        try:
            provenance = log_provenance(Path(db), pubkeys)
        except ReportError as e:
            _fail(str(e))
        _emit(replay_html(result, provenance), html_path)
    click.echo(json.dumps(result.to_dict()) + "\n" if as_json else replay_text(result), nl=False)
    if fail_on_change and result.changed:
        raise SystemExit(1)
    if fail_on_change and not result.replayed:  # a gate that tried nothing must not pass
        _fail(f"--fail-on-change: {db} holds no decision record in the period; nothing was replayed")


COMMANDS: list = [replay_command]
