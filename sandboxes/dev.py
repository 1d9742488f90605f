"""`make dev`: the whole product locally, on embedded defaults.

DynamoDB Local + the ComputeStacks and WHMCS sandboxes (seeded with demo data) + `cswhmcs serve` on
port 3000, and a ready-to-paste signed curl. Ctrl-C stops everything.

With MariaDB and php installed it also runs the module's billing receiver (API.md section 8) the way the
tests do: a throwaway MariaDB holds the WHMCS tables, the WHMCS sandbox keeps its clients, currencies and
billable items there, and the real `billing.php` is served by `php -S` on the same database with the dev
signing secret as the server record's Access Hash. WHMCS_RECEIVER_URL points the backend (and `cswhmcs
billing run` from another shell, via .dev/env.sh) at it, so what the receiver creates is what the sandbox
shows. Without MariaDB or php the stack runs as before, on the WHMCS API path.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandboxes.mariadb import MariaDB
    from sandboxes.receiver import ReceiverServer
    from sandboxes.whmcsdb import WhmcsDatabase

DEV_SIGNING_SECRET = "dev-signing-secret"  # noqa: S105 - documented local-only secret


@dataclass
class Receiver:
    """The billing receiver and the database under it (both the sandbox's and the receiver's WHMCS)."""

    mariadb: MariaDB
    db: WhmcsDatabase
    server: ReceiverServer


def start_receiver(signing_secret: str, stack: ExitStack) -> Receiver | None:
    """MariaDB + the WHMCS tables + `billing.php` under `php -S`; None (and one line saying why) if this
    machine cannot run them. Everything started is registered on ``stack`` to be stopped."""
    from sandboxes.mariadb import MariaDB, MariaDBUnavailable
    from sandboxes.receiver import ReceiverServer, ReceiverUnavailable
    from sandboxes.whmcsdb import WhmcsDatabase

    skip = "running without the billing receiver (WHMCS API path)"
    if shutil.which("php") is None:
        print(f"make dev: php is not installed (apt-get install php-cli php-mysql php-illuminate-database); {skip}.",
              file=sys.stderr, flush=True)
        return None
    with ExitStack() as partial:  # a failure half-way stops what did start, at once
        try:
            mariadb = MariaDB().start()
        except (MariaDBUnavailable, OSError) as exc:
            print(f"make dev: MariaDB cannot run here ({_one_line(exc)}); {skip}.", file=sys.stderr, flush=True)
            return None
        partial.callback(mariadb.stop)
        try:
            mariadb.create_database("whmcs")
            db = WhmcsDatabase.mariadb(mariadb.socket, "whmcs")
            partial.callback(db.close)
            db.create_schema()
            # One server record per active signing secret: the backend signs with each, any may verify.
            db.set_servers([s.strip() for s in signing_secret.split(",") if s.strip()])
            server = ReceiverServer(db, workers=4, port=int(os.environ.get("WHMCS_RECEIVER_PORT", "8083")))
            server.start()
        except (ReceiverUnavailable, MariaDBUnavailable, OSError, ImportError) as exc:
            print(f"make dev: the billing receiver did not start ({_one_line(exc)}); {skip}.", file=sys.stderr,
                  flush=True)
            return None
        except Exception as exc:  # a database error: the stack still runs on the API path
            print(f"make dev: the WHMCS database did not come up ({type(exc).__name__}: {_one_line(exc)}); {skip}.",
                  file=sys.stderr, flush=True)
            return None
        partial.callback(server.stop)
        stack.push(partial.pop_all())
    return Receiver(mariadb, db, server)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def main() -> int:
    with ExitStack() as stack:  # stops everything, in reverse order, however main ends
        return _run(stack)


def _run(stack: ExitStack) -> int:
    from sandboxes.dynamodb_local import DynamoDBLocal, DynamoDBLocalUnavailable

    port = int(os.environ.get("PORT", "3000"))
    try:
        ddb = DynamoDBLocal(int(os.environ.get("DYNAMODB_LOCAL_PORT", "0")) or None).start()
    except DynamoDBLocalUnavailable as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    stack.callback(ddb.stop)
    from sandboxes.computestacks import ComputeStacksSandbox
    from sandboxes.computestacks import seed_demo as seed_cs
    from sandboxes.whmcs import WhmcsSandbox
    from sandboxes.whmcs import seed_demo as seed_whmcs

    signing_secret = os.environ.get("SIGNING_SECRET", DEV_SIGNING_SECRET)
    cs = ComputeStacksSandbox(port=int(os.environ.get("CS_SANDBOX_PORT", "8081"))).start()
    stack.callback(cs.stop)
    receiver = start_receiver(signing_secret, stack)
    whmcs = WhmcsSandbox(port=int(os.environ.get("WHMCS_SANDBOX_PORT", "8082")),
                         db=receiver.db if receiver else None).start()
    stack.callback(whmcs.stop)
    seed_cs(cs)
    seed_whmcs(whmcs)
    env = {
        "AWS_ENDPOINT_URL_DYNAMODB": ddb.endpoint,
        "CS_API_URL": cs.url, "CS_API_KEY": cs.api_key, "CS_API_SECRET": cs.api_secret,
        "WHMCS_API_URL": whmcs.url, "WHMCS_API_IDENTIFIER": whmcs.identifier, "WHMCS_API_SECRET": whmcs.secret,
        "SIGNING_SECRET": signing_secret,
    }
    if receiver is not None:
        env["WHMCS_RECEIVER_URL"] = receiver.server.url
    else:
        os.environ.pop("WHMCS_RECEIVER_URL", None)  # an inherited one would point at nothing
    os.environ.update(env)
    from cswhmcs.cli import main as cli_main
    from cswhmcs.local.server import LocalServer, prepare_environment
    from cswhmcs.local.template import Template

    if not os.environ.get("VERBOSE"):
        from cswhmcs.observability import logger

        logger.setLevel("WARNING")  # one access line per request; VERBOSE=1 shows the functions' JSON logs
    template = Template()
    prepare_environment(template)
    server = LocalServer("127.0.0.1", port, template).start()
    stack.callback(server.stop)
    linked = _link_demo_accounts(server.url, env["SIGNING_SECRET"])
    env_file = _write_env_file(env, unset=() if receiver else ("WHMCS_RECEIVER_URL",))
    receiver_lines = (f"""
  Billing receiver         {receiver.server.url}
                           (billing.php under php -S, 4 workers; Access Hash = the signing secret)
  WHMCS database           MariaDB, database whmcs on {receiver.mariadb.socket}""" if receiver else "")
    print(f"""
ComputeStacks integration for WHMCS, running locally:
  API (cswhmcs serve)      {server.url}   signing secret: {env['SIGNING_SECRET']}
  ComputeStacks sandbox    {cs.url}/api/
  WHMCS sandbox            {whmcs.url}{receiver_lines}
  DynamoDB Local           {ddb.endpoint}

Try it (signed requests are valid for 300 s):
  .venv/bin/cswhmcs call /v1/connection/test --secret {env['SIGNING_SECRET']}
  .venv/bin/cswhmcs call /v1/accounts/list --secret {env['SIGNING_SECRET']}
Or with curl:""", flush=True)
    cli_main(["curl", "/v1/connection/test", "{}", "--url", server.url, "--secret", env["SIGNING_SECRET"]])
    print(f"""
The demo ComputeStacks users of WHMCS services {', '.join(map(str, linked))} are linked (they were found by
their external id, as imported accounts are). Month-end billing against this stack, from another shell:
  set -a; . {env_file}; set +a
  .venv/bin/cswhmcs billing preview
  .venv/bin/cswhmcs billing run""", flush=True)
    if receiver is not None:
        print(f"""Billable items go through the billing receiver (WHMCS_RECEIVER_URL={receiver.server.url});
the WHMCS sandbox shows what it created (they share the MariaDB database).""", flush=True)
    else:
        print("No billing receiver (MariaDB or php missing): billing uses the WHMCS API's AddBillableItem.",
              flush=True)
    print("\nCtrl-C stops everything.", flush=True)

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.5)
    return 0


def _link_demo_accounts(url: str, secret: str) -> list[int]:
    """Open the demo services' overview once: the backend finds their users and writes the mappings."""
    import json

    import httpx

    from cswhmcs.signing import sign_headers

    linked = []
    for service_id, username in ((1, "jane.doe1-1@demo.computestacks.test"),
                                 (2, "max.muster2-2@demo.computestacks.test")):
        body = json.dumps({"serviceid": service_id, "userid": service_id, "username": username}).encode()
        headers = {"Content-Type": "application/json", **sign_headers(secret, "/v1/accounts/overview", body)}
        if httpx.post(url + "/v1/accounts/overview", content=body, headers=headers, timeout=10).status_code == 200:
            linked.append(service_id)
    return linked


def _write_env_file(env: dict[str, str], *, unset: tuple[str, ...] = ()) -> str:
    """The local stack's settings (sandbox credentials only) for `cswhmcs billing` in another shell;
    ``unset``: variables a previous stack set that must not linger in that shell."""
    from pathlib import Path

    path = Path(".dev/env.sh")
    path.parent.mkdir(exist_ok=True)
    names = ("ACCOUNTS_TABLE", "LEDGER_TABLE", "IDEMPOTENCY_TABLE", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY")
    values = {**env, **{n: os.environ[n] for n in names if n in os.environ}}
    path.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()) + "".join(f"unset {k}\n" for k in unset))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
