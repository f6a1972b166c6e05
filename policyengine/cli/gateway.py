"""``policyengine gateway``: the governed OpenAI-compatible LLM gateway (thin over ``policyengine.gateway``)."""

from __future__ import annotations

import sys
from dataclasses import fields

import click


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.command("gateway")
@click.option("--config", "config_file", metavar="YAML", 
              help="gateway.yaml: rules, keys, providers, db, key, port, guards.")
@click.option("--rules", "rules", multiple=True, metavar="PATH", help="Rule file or folder (repeatable).")
@click.option("--keys", metavar="YAML", help="Virtual keys (stored as sha256) -> principal, team, data defaults.")
@click.option("--providers", metavar="YAML", help="Model -> OpenAI-compatible upstream; unlisted models: simulator.")
@click.option("--db", metavar="FILE", help="Audit database (default policyengine.duckdb).")
@click.option("--key", metavar="KEYFILE", help="Ed25519 key that signs the audit log (created if missing).")
@click.option("--ledger", metavar="DB", help="Budget ledger: DuckDB file or postgresql://... (default: in memory).")
@click.option("--rate-limits", metavar="URL",
              help="redis://HOST:PORT/DB to share per-minute limits (default: in process).")
@click.option("--host", metavar="ADDR", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default 4000; 0: any free port).")
@click.option("--hold-for-approval", type=click.FloatRange(0, 3600), metavar="SECONDS",
              help="A call that needs an approval waits up to SECONDS for one (GET/POST /v1/approvals) "
                   "instead of 403 (default 0: no wait).")
@click.option("--registry", metavar="DB",
              help="Audit database whose model_version events say which version each alias names "
                   "(`policyengine models promote --db DB`): each call is decided with the version it uses and "
                   "its model_call record names it; re-read when it changes and on SIGHUP (default: none).")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="One JSON line per request.")
def gateway_command(config_file: str | None, rules: tuple[str, ...], keys: str | None, providers: str | None,
                    db: str | None, key: str | None, ledger: str | None, rate_limits: str | None, host: str | None,
                    port: int | None, hold_for_approval: float | None, registry: str | None,
                    access_log: bool) -> None:
    """Serve an OpenAI-compatible LLM gateway; every call is decided by policy, budgeted, screened and audited.

    Example: policyengine gateway --config examples/gateway/gateway.yaml
    """
    from ..gateway.config import GatewayConfig, GatewayConfigError, load_config
    from ..gateway.run import GatewayStartError, run_gateway

    settings: dict = {}
    if config_file:
        try:
            settings = load_config(config_file)
        except GatewayConfigError as error:
            _fail(str(error))
    given = {"rules": rules or None, "keys": keys, "providers": providers, "db": db, "key": key, "ledger": ledger,
             "rate_limits": rate_limits, "host": host, "port": port, "hold_for_approval": hold_for_approval,
             "registry": registry}
    settings.update({k: v for k, v in given.items() if v is not None})
    missing = [name for name in ("rules", "keys") if not settings.get(name)]
    if missing:
        raise click.UsageError(f"give --{' and --'.join(missing)} (or --config gateway.yaml)")
    settings["rules"] = tuple(settings["rules"])
    known = {f.name for f in fields(GatewayConfig)}
    try:
        sys.exit(run_gateway(GatewayConfig(**{k: v for k, v in settings.items() if k in known}),
                             access_log=access_log))
    except GatewayStartError as error:
        _fail(str(error))
