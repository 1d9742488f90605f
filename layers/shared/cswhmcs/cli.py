"""`cswhmcs`: the operator's and developer's command line (API.md section 5)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence


def _cmd_serve(args: argparse.Namespace) -> int:
    from cswhmcs.local.server import LocalServer, prepare_environment
    from cswhmcs.local.template import Template

    if not args.verbose:
        # The access line below is the one line per request; the functions' own JSON logs (what
        # CloudWatch gets in AWS) only show warnings and errors unless --verbose.
        from cswhmcs.observability import logger

        logger.setLevel("WARNING")
    template = Template(args.template) if args.template else Template()
    created = prepare_environment(template, create_tables=not args.no_create_tables)
    for name in created:
        print(f"created table {name}", file=sys.stderr)
    server = LocalServer(args.host, args.port, template)
    routes = sorted(r.path for r in server.api.routes.values())
    print(f"cswhmcs serve: {len(routes)} routes from {template.path} on {server.url}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _signing_secret(args: argparse.Namespace, command: str) -> str | None:
    """--secret, else the first of $SIGNING_SECRET (the newest during a rotation)."""
    secret: str = args.secret or os.environ.get("SIGNING_SECRET", "").split(",")[0].strip()
    if not secret:
        print(f"cswhmcs {command}: give --secret or set SIGNING_SECRET", file=sys.stderr)
        return None
    return secret


def _cmd_call(args: argparse.Namespace) -> int:
    """Sign and send one request, as the PHP module would (handy with `make dev`)."""
    import httpx

    from cswhmcs.signing import sign_headers

    secret = _signing_secret(args, "call")
    if secret is None:
        return 2
    try:
        payload = json.loads(args.body)
    except ValueError as exc:
        print(f"cswhmcs call: the body is not JSON: {exc}", file=sys.stderr)
        return 2
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", **sign_headers(secret, args.route, body)}
    resp = httpx.post(args.url.rstrip("/") + args.route, content=body, headers=headers, timeout=30)
    print(resp.status_code, file=sys.stderr)
    print(resp.text)
    return 0 if resp.status_code == 200 else 1


def _cmd_curl(args: argparse.Namespace) -> int:
    """Print a ready-to-run signed curl command (valid for 300 s)."""
    import shlex

    from cswhmcs.signing import sign_headers

    secret = _signing_secret(args, "curl")
    if secret is None:
        return 2
    body = args.body.encode()
    h = sign_headers(secret, args.route, body)
    parts = ["curl", "-sS", "-X", "POST", args.url.rstrip("/") + args.route, "-H", "Content-Type: application/json"]
    for k, v in h.items():
        parts += ["-H", f"{k}: {v}"]
    parts += ["--data-binary", args.body]
    print(" ".join(shlex.quote(p) for p in parts))
    return 0


def _write(text: str, path: str | None) -> int:
    """``text`` into the file ``path`` (UTF-8), or to stdout when there is none; the command's exit code."""
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_sign_event(args: argparse.Namespace) -> int:
    """Re-sign an API Gateway event file (events/*.json) with a fresh timestamp, for `sam local invoke -e`."""
    from cswhmcs.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_headers

    secret = _signing_secret(args, "sign-event")
    if secret is None:
        return 2
    with open(args.event, encoding="utf-8") as fh:
        event = json.load(fh)
    body = (event.get("body") or "").encode()
    fresh = sign_headers(secret, event["resource"], body)
    for key in ("headers",):
        event.setdefault(key, {}).update(fresh)
    multi = event.setdefault("multiValueHeaders", {})
    multi[TIMESTAMP_HEADER] = [fresh[TIMESTAMP_HEADER]]
    multi[SIGNATURE_HEADER] = [fresh[SIGNATURE_HEADER]]
    return _write(json.dumps(event, indent=2, ensure_ascii=False) + "\n", args.event if args.in_place else None)


def _cmd_credits(args: argparse.Namespace) -> int:
    """Deposit credits whose OrderPaid delivery failed: list them, or deliver them again now."""
    import time

    from cswhmcs.api import Deps
    from cswhmcs.config import get_settings
    from cswhmcs.credit import STALE_AFTER_S, is_stale, retry_open_credits

    deps = Deps(get_settings())
    days = STALE_AFTER_S // 86400
    if args.action == "open":
        rows = list(deps.order_credits.open_orders())
        now = time.time()
        stale = 0
        for o in rows:
            age = max(0, int((now - o.opened_at) // 86400))
            line = (f"order #{o.order_id}  invoice #{o.body.get('invoiceId')}  client #{o.body.get('userId')}  "
                    f"{o.status}  open {age} day(s)")
            if is_stale(o, now):
                stale += 1
                line += f"  STALE: open more than {days} days, no longer retried"
            if o.last_error:
                line += f"  (last error: {o.last_error})"
            print(line)
        print(f"{len(rows)} order credit(s) not settled", file=sys.stderr)
        if stale:
            print(f"{stale} of them open more than {days} days: the daily sweep no longer retries them; check "
                  "them in WHMCS, then run `cswhmcs credits retry --include-stale`", file=sys.stderr)
        return 0 if not rows else 3
    outcomes = retry_open_credits(deps, include_stale=args.include_stale, emit_metric=False)
    for o in outcomes:
        if "credited" in o:
            result = f"credited {o['credited']} {o['currency']}"
        elif o.get("stale"):
            result = f"not retried: {o['error']} (--include-stale retries it)"
        else:
            result = f"failed: {o['error']}"
        print(f"order #{o['orderId']} ({o['was']}): {result}")
    print(f"{len(outcomes)} order credit(s) retried", file=sys.stderr)
    return 3 if any("error" in o for o in outcomes) else 0


def _cmd_openapi(args: argparse.Namespace) -> int:
    """The API as an OpenAPI 3.1 document (docs/openapi.json is this output, checked by the tests)."""
    from cswhmcs.contract import openapi

    return _write(json.dumps(openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n", args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cswhmcs", description="ComputeStacks integration for WHMCS: local tools.")
    from cswhmcs import __version__

    parser.add_argument("--version", action="version", version=f"cswhmcs {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the whole traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve every API route of template.yaml locally (no Docker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--template", help="path to template.yaml (default: nearest one upwards)")
    serve.add_argument("--no-create-tables", action="store_true", help="do not create missing DynamoDB tables")
    serve.add_argument("--verbose", action="store_true", help="also print the functions' own JSON log lines")
    serve.set_defaults(func=_cmd_serve)

    call = sub.add_parser("call", help="sign and POST one request to a running API")
    call.add_argument("route", help="e.g. /v1/connection/test")
    call.add_argument("body", nargs="?", default="{}", help="JSON object (the module's params)")
    call.add_argument("--url", default="http://127.0.0.1:3000")
    call.add_argument("--secret", help="signing secret (default: first of $SIGNING_SECRET)")
    call.set_defaults(func=_cmd_call)

    curl = sub.add_parser("curl", help="print a signed curl command for a route")
    curl.add_argument("route")
    curl.add_argument("body", nargs="?", default="{}")
    curl.add_argument("--url", default="http://127.0.0.1:3000")
    curl.add_argument("--secret")
    curl.set_defaults(func=_cmd_curl)

    se = sub.add_parser("sign-event", help="re-sign an events/*.json API Gateway event with a fresh timestamp")
    se.add_argument("event")
    se.add_argument("--secret")
    se.add_argument("--in-place", action="store_true")
    se.set_defaults(func=_cmd_sign_event)

    oa = sub.add_parser("openapi", help="print the API's OpenAPI 3.1 document (docs/openapi.json)")
    oa.add_argument("--out", help="write it to this file")
    oa.set_defaults(func=_cmd_openapi)

    credits = sub.add_parser("credits", help="deposit credits whose OrderPaid delivery failed (the daily "
                             "collection retries them too)")
    credits.add_argument("action", choices=["open", "retry"], help="open: list them; retry: deliver them again now")
    credits.add_argument("--include-stale", action="store_true",
                         help="retry: also orders open for more than 7 days (which the daily sweep no longer retries)")
    credits.set_defaults(func=_cmd_credits)

    from cswhmcs.billing.cli import add_billing_commands

    add_billing_commands(sub)
    return parser


LOCAL_HINT = "for the local stack, `. .dev/env.sh` (written by `make dev`)"


def explain_setup_error(exc: BaseException) -> str | None:
    """One sentence saying what a command lacks and how to provide it, for the errors that mean the
    environment is not set up (no region, no credentials, DynamoDB unreachable, a table missing, a setting
    missing); None for anything else (a real failure, shown as it is)."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    from cswhmcs.errors import ConfigurationError

    if isinstance(exc, NoRegionError):
        return f"no AWS region is set: export AWS_DEFAULT_REGION (e.g. us-east-1); {LOCAL_HINT}."
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials were found: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE; "
                f"{LOCAL_HINT}.")
    if isinstance(exc, EndpointConnectionError):
        where = str(exc.kwargs.get("endpoint_url") or "its endpoint")
        return (f"DynamoDB could not be reached at {where}: start it (`make dev` runs DynamoDB Local) or set "
                f"AWS_ENDPOINT_URL_DYNAMODB to where it runs; {LOCAL_HINT}.")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        if error.get("Code") == "ResourceNotFoundException":
            return ("a DynamoDB table this command needs does not exist: check ACCOUNTS_TABLE, LEDGER_TABLE and "
                    "REPLAY_TABLE (the stack's table names), or let `cswhmcs serve` create the local ones; "
                    f"{LOCAL_HINT}.")
        if error.get("Code") in ("UnrecognizedClientException", "InvalidSignatureException",
                                 "ExpiredTokenException"):
            return f"AWS refused the credentials ({error.get('Code')}): check AWS_PROFILE or AWS_ACCESS_KEY_ID."
    if isinstance(exc, ConfigurationError):
        return f"{exc.message.rstrip('.')} (environment variables, or the configuration secret in AWS); {LOCAL_HINT}."
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except Exception as exc:
        why = None if getattr(args, "debug", False) else explain_setup_error(exc)
        if why is None:
            raise
        print(f"cswhmcs: {why}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
