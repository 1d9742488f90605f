"""`make dev`: the whole product locally, on embedded defaults, as a guided demo.

DynamoDB Local + the ComputeStacks and WHMCS sandboxes + `cswhmcs serve` on port 3000, seeded with linked
accounts in USD and EUR and their usage (two full months for two of them, the month before last already
billed so the ledger has a history), and then the next steps, ready to paste into another shell: a signed
curl, `cswhmcs billing preview --report` (the HTML billing report), `billing run`, and where the client area's
screenshot comes from. Ctrl-C (or SIGTERM) stops everything.

The ComputeStacks sandbox's ``webhook_users`` setting points at the backend's ``/v1/hooks/cs-user`` with the
dev token (``CS_WEBHOOK_TOKEN``, default ``dev-webhook-token``): an email changed in ComputeStacks becomes the
WHMCS service username within seconds (a printed step shows it).

With MariaDB and php installed it also runs the module's billing receiver (API.md section 8) the way the
tests do: a throwaway MariaDB holds the WHMCS tables, the WHMCS sandbox keeps its clients, currencies and
billable items there, and the real `billing.php` is served by `php -S` on the same database with the dev
signing secret as the server record's Access Hash. WHMCS_RECEIVER_URL points the backend (and `cswhmcs
billing run` from another shell, via .dev/env.sh) at it, so what the receiver creates is what the sandbox
shows. Without MariaDB or php the stack runs as before, on the WHMCS API path.

Ports: ``--port`` (default $PORT or 3000), ``--cs-port``/``--whmcs-port``/``--receiver-port`` (defaults 8081,
8082, 8083 or $CS_SANDBOX_PORT, $WHMCS_SANDBOX_PORT, $WHMCS_RECEIVER_PORT), ``--free-ports`` (every sandbox on
a free port; with ``--port 0`` the API too); ``--dynamodb-endpoint URL`` uses a running DynamoDB instead of
starting DynamoDB Local. tests/integration/test_dev_demo.py runs the printed steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandboxes.mariadb import MariaDB
    from sandboxes.receiver import ReceiverServer
    from sandboxes.whmcsdb import WhmcsDatabase

DEV_SIGNING_SECRET = "dev-signing-secret"  # noqa: S105 - documented local-only secret
DEV_WEBHOOK_TOKEN = "dev-webhook-token"  # noqa: S105 - documented local-only token (events/cs_user_hook.json)
ROOT = Path(__file__).resolve().parent.parent
STEP = "  $ "  # a line to paste (the demo test runs every one of them)


@dataclass
class Receiver:
    """The billing receiver and the database under it (both the sandbox's and the receiver's WHMCS)."""

    mariadb: MariaDB
    db: WhmcsDatabase
    server: ReceiverServer


def start_receiver(signing_secret: str, stack: ExitStack, port: int | None = None) -> Receiver | None:
    """MariaDB + the WHMCS tables + `billing.php` under `php -S`; None (and one line saying why) if this
    machine cannot run them. Everything started is registered on ``stack`` to be stopped. ``port``: the
    receiver's (0: a free one; None: $WHMCS_RECEIVER_PORT or 8083)."""
    from sandboxes.mariadb import MariaDB, MariaDBUnavailable
    from sandboxes.receiver import ReceiverServer, ReceiverUnavailable
    from sandboxes.whmcsdb import WhmcsDatabase

    skip = "running without the billing receiver (WHMCS API path)"
    if shutil.which("php") is None:
        print(f"make dev: php is not installed (apt-get install php-cli php-mysql php-illuminate-database); {skip}.",
              file=sys.stderr, flush=True)
        return None
    if port is None:
        port = int(os.environ.get("WHMCS_RECEIVER_PORT", "8083"))
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
            server = ReceiverServer(db, workers=4, port=port)
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


# ---------------------------------------------------------------------- the demo's data


@dataclass(frozen=True)
class DemoAccount:
    service_id: int
    client_id: int
    username: str  # the ComputeStacks login email (the WHMCS service username)
    currency: str


def cutoff_before(month_start: datetime) -> datetime:
    """The month-end cut-off that closes the month before ``month_start``: 23:00 UTC on its last day (the
    template's MonthEnd schedule in UTC)."""
    return month_start - timedelta(hours=1)


def month_start(now: datetime, back: int = 0) -> datetime:
    first = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(back):
        first = (first - timedelta(days=1)).replace(day=1)
    return first


def seed_history(cs: Any, whmcs: Any, *, product_id: int, now: datetime) -> list[DemoAccount]:
    """Two more linked accounts (USD and EUR) with a row every 3 hours, as ComputeStacks writes them, for
    the month before last and last month: what a month-end bills. (The sandboxes' own ``seed_demo`` adds
    the sparse demo users Jane and Max.)"""
    start, end = month_start(now, 2), month_start(now)
    out = []
    people = (("Omar", "Diaz", "omar.diaz@demo.computestacks.test", "USD",
               (("containerl", "Container L", "0.0411"), ("volume", "Volume Storage", "0.0027")), 301),
              ("Lena", "Kraus", "lena.kraus@demo.computestacks.test", "EUR",
               (("containerm", "Container M", "0.0205"), ("backup", "Backups", "0.00009")), 401))
    for fname, lname, email, currency, products, first_sp in people:
        client = whmcs.add_client(fname, lname, email.replace("@demo.computestacks.test", "@example.net"),
                                  currency_code=currency)
        service = whmcs.add_service(client["id"], product_id, username=email, status="Active")
        user = cs.add_user(email, fname, lname, currency=currency, external_id=str(service["id"]),
                           labels={"whmcs": {"client_id": client["id"], "service_id": service["id"]}},
                           run_rate=str(Decimal(products[0][2]) * 8 * 365), deployments=1, container_services=2)
        for offset, (name, label, total) in enumerate(products):
            t = start
            while t + timedelta(hours=3) <= end:
                cs.add_usage(user["id"], product_name=name, product_label=label,
                             subscription_product_id=first_sp + offset, total=total, qty="3", rate=str(
                                 (Decimal(total) / 3).normalize()), period_start=t, period_end=t + timedelta(hours=3))
                t += timedelta(hours=3)
        out.append(DemoAccount(int(service["id"]), int(client["id"]), email, currency))
    return out


def link_accounts(url: str, secret: str, accounts: Sequence[DemoAccount]) -> list[int]:
    """Open each service's overview once: the backend finds its ComputeStacks user (by external id or
    username, as for imported accounts) and writes the mapping. Returns the services linked."""
    import httpx

    from cswhmcs.signing import sign_headers

    linked = []
    for acct in accounts:
        body = json.dumps({"serviceid": acct.service_id, "userid": acct.client_id,
                           "username": acct.username}).encode()
        headers = {"Content-Type": "application/json", **sign_headers(secret, "/v1/accounts/overview", body)}
        if httpx.post(url + "/v1/accounts/overview", content=body, headers=headers, timeout=10).status_code == 200:
            linked.append(acct.service_id)
    return linked


def bill_history(as_of: datetime) -> str:
    """Bill the month before last (the ledger then has a period to chart); one line saying what happened."""
    from cswhmcs.billing.options import BillingOptions
    from cswhmcs.billing.run import build_runtime, run_billing
    from cswhmcs.config import get_settings

    settings = get_settings()
    runtime = build_runtime(settings, options=BillingOptions.from_settings(settings))
    try:
        summary = run_billing(as_of=as_of, ledger=runtime.ledger, accounts=runtime.accounts, deps=runtime.deps,
                              keep_lines=False)
    except Exception as exc:  # the demo still runs; the chart simply has no history
        return f"billing {as_of:%Y-%m} for the history did not work ({type(exc).__name__}: {_one_line(exc)})"
    finally:
        runtime.close()
    totals = ", ".join(f"{v:.2f} {k}" for k, v in summary.totals().items()) or "nothing"
    return f"{summary.period} is already billed ({summary.items} billable items: {totals}), so the ledger has a history"


# ---------------------------------------------------------------------- the stack


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m sandboxes.dev", description="make dev: the local stack, seeded, "
                                     "with the next steps printed.")
    parser.add_argument("--port", type=int, default=int(env("PORT", "3000")),
                        help="cswhmcs serve's port (default $PORT or 3000; 0: a free one)")
    parser.add_argument("--cs-port", type=int, default=int(env("CS_SANDBOX_PORT", "8081")))
    parser.add_argument("--whmcs-port", type=int, default=int(env("WHMCS_SANDBOX_PORT", "8082")))
    parser.add_argument("--receiver-port", type=int, default=int(env("WHMCS_RECEIVER_PORT", "8083")))
    parser.add_argument("--dynamodb-port", type=int, default=int(env("DYNAMODB_LOCAL_PORT", "0")),
                        help="DynamoDB Local's port (default: a free one)")
    parser.add_argument("--free-ports", action="store_true", help="every sandbox on a free port (not --port)")
    parser.add_argument("--dynamodb-endpoint", help="use this running DynamoDB instead of starting DynamoDB Local")
    parser.add_argument("--env-file", default=".dev/env.sh",
                        help="where to write the stack's settings for other shells (default .dev/env.sh); the "
                             "printed reports go next to it")
    parser.add_argument("--no-receiver", action="store_true", help="do not start MariaDB and the billing receiver")
    args = parser.parse_args(argv)
    if args.free_ports:
        args.cs_port = args.whmcs_port = args.receiver_port = args.dynamodb_port = 0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:  # stops everything, in reverse order, however main ends
        return _run(args, stack)


def _run(args: argparse.Namespace, stack: ExitStack) -> int:
    from concurrent.futures import Future, ThreadPoolExecutor

    from sandboxes.dynamodb_local import DynamoDBLocal, DynamoDBLocalUnavailable

    ddb: DynamoDBLocal | None = None
    starting: Future[DynamoDBLocal] | None = None
    if not args.dynamodb_endpoint:
        # DynamoDB Local (a JVM) takes seconds to come up: it starts while the rest is set up and seeded.
        ddb = DynamoDBLocal(args.dynamodb_port or None)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynamodb-local")
        starting = pool.submit(ddb.start)
        pool.shutdown(wait=False)
        stack.callback(_stop_when_started, starting)
    from sandboxes.computestacks import ComputeStacksSandbox
    from sandboxes.computestacks import seed_demo as seed_cs
    from sandboxes.whmcs import WhmcsSandbox
    from sandboxes.whmcs import seed_demo as seed_whmcs

    signing_secret = os.environ.get("SIGNING_SECRET", DEV_SIGNING_SECRET)
    cs = ComputeStacksSandbox(port=args.cs_port).start()
    stack.callback(cs.stop)
    receiver = None if args.no_receiver else start_receiver(signing_secret, stack, args.receiver_port)
    whmcs = WhmcsSandbox(port=args.whmcs_port, db=receiver.db if receiver else None).start()
    stack.callback(whmcs.stop)
    cs_seed = seed_cs(cs)
    whmcs_seed = seed_whmcs(whmcs)
    now = datetime.now(UTC)
    demo = [DemoAccount(1, 1, "jane.doe1-1@demo.computestacks.test", "USD"),
            DemoAccount(2, 2, "max.muster2-2@demo.computestacks.test", "EUR")]
    demo += seed_history(cs, whmcs, product_id=int(whmcs_seed["products"][0]["pid"]), now=now)
    if starting is not None and ddb is not None:
        try:
            starting.result()
        except (DynamoDBLocalUnavailable, OSError) as exc:
            print(f"make dev: {exc}", file=sys.stderr)
            return 1
        endpoint = ddb.endpoint
    else:
        endpoint = args.dynamodb_endpoint
    env = {
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "CS_API_URL": cs.url, "CS_API_KEY": cs.api_key, "CS_API_SECRET": cs.api_secret,
        "WHMCS_API_URL": whmcs.url, "WHMCS_API_IDENTIFIER": whmcs.identifier, "WHMCS_API_SECRET": whmcs.secret,
        "SIGNING_SECRET": signing_secret,
        "CS_WEBHOOK_TOKEN": os.environ.get("CS_WEBHOOK_TOKEN") or DEV_WEBHOOK_TOKEN,
    }
    if receiver is not None:
        env["WHMCS_RECEIVER_URL"] = receiver.server.url
    else:
        os.environ.pop("WHMCS_RECEIVER_URL", None)  # an inherited one would point at nothing
    os.environ.update(env)
    from cswhmcs.local.server import LocalServer, prepare_environment
    from cswhmcs.local.template import Template

    if not os.environ.get("VERBOSE"):
        from cswhmcs.observability import logger

        logger.setLevel("WARNING")  # one access line per request; VERBOSE=1 shows the functions' JSON logs
    template = Template()
    prepare_environment(template)
    server = LocalServer("127.0.0.1", args.port, template).start()
    stack.callback(server.stop)
    # ComputeStacks' webhook_users setting: a user's change is posted to the backend (API.md section 3).
    cs.webhook_users_url = webhook_users_url(server.port, env["CS_WEBHOOK_TOKEN"])
    linked = link_accounts(server.url, signing_secret.split(",")[0].strip(), demo)
    history = bill_history(cutoff_before(month_start(now, 1)))
    env_file = write_env_file(env, Path(args.env_file), unset=() if receiver else ("WHMCS_RECEIVER_URL",))
    print(banner(server_url=server.url, secret=signing_secret.split(",")[0].strip(), cs_url=cs.url,
                 whmcs_url=whmcs.url, ddb=endpoint, receiver=receiver), flush=True)
    print(seeded(demo, linked, history), flush=True)
    print(next_steps(server_url=server.url, secret=signing_secret.split(",")[0].strip(), env_file=env_file,
                     as_of=cutoff_before(month_start(now)), demo=demo, receiver=receiver,
                     cs_user_id=int(cs_seed["users"][0]["id"])), flush=True)
    print("\nCtrl-C stops everything.", flush=True)

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.2)
    return 0


def webhook_users_url(port: int, token: str) -> str:
    """The ComputeStacks sandbox's ``webhook_users`` setting: the backend's users webhook with its token."""
    from urllib.parse import quote

    return f"http://127.0.0.1:{port}/v1/hooks/cs-user?token={quote(token, safe='')}"


def _stop_when_started(starting: Any) -> None:
    """Stop DynamoDB Local however far its start got (it may still be starting when something else failed)."""
    try:
        ddb = starting.result()
    except Exception:  # noqa: S110 - it did not start: nothing to stop (its own start cleans up)
        return
    ddb.stop()


# ---------------------------------------------------------------------- what is printed


def banner(*, server_url: str, secret: str, cs_url: str, whmcs_url: str, ddb: str, receiver: Receiver | None) -> str:
    receiver_lines = (f"""
  Billing receiver         {receiver.server.url}
                           (billing.php under php -S, 4 workers; Access Hash = the signing secret)
  WHMCS database           MariaDB, database whmcs on {receiver.mariadb.socket}""" if receiver else "")
    return f"""
ComputeStacks integration for WHMCS, running locally:
  API (cswhmcs serve)      {server_url}   signing secret: {secret}
  ComputeStacks sandbox    {cs_url}/api/
  WHMCS sandbox            {whmcs_url}{receiver_lines}
  DynamoDB Local           {ddb}
  Users webhook            ComputeStacks' webhook_users -> {server_url}/v1/hooks/cs-user?token=$CS_WEBHOOK_TOKEN"""


def seeded(demo: Sequence[DemoAccount], linked: Sequence[int], history: str) -> str:
    def names(accounts: Sequence[DemoAccount]) -> str:
        return ", ".join(f"#{a.service_id} {a.username} ({a.currency})" for a in accounts)

    missing = [a.service_id for a in demo if a.service_id not in linked]
    warn = f"\n  NOT linked (their overview failed; see the log above): {missing}" if missing else ""
    return f"""
Seeded: WHMCS services linked to ComputeStacks users (found by their external id, as imported accounts are):
  {names(demo[:2])}: a few usage rows last month and this month
  {names(demo[2:])}: a row every 3 hours for the last two months{warn}
  {history}."""


def _shell_path(path: Path) -> str:
    """``path`` as typed from the project's root (relative when inside it), quoted for the shell."""
    resolved = path.resolve()
    try:
        text = str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(resolved)
    return shlex.quote(text)


def next_steps(*, server_url: str, secret: str, env_file: Path, as_of: datetime, demo: Sequence[DemoAccount],
               receiver: Receiver | None, cs_user_id: int | None = None) -> str:
    """The steps to paste, each on a line starting with ``STEP``. They work whenever they are pasted:
    every signature is made when the line runs (a signature is valid for 300 s)."""
    from cswhmcs.billing.usage import iso, period_of

    beside = Path(sys.executable).parent / "cswhmcs"  # the venv's (make dev runs .venv/bin/python)
    cli = _shell_path(beside) if beside.is_file() else shlex.quote(shutil.which("cswhmcs") or "cswhmcs")
    env = _shell_path(env_file)
    preview = _shell_path(env_file.parent / "report-preview.html")
    run = _shell_path(env_file.parent / "report-run.html")
    route = "/v1/connection/test"
    sign_curl = (f"ts=$(date +%s); body='{{}}'; sig=$(printf '%s' \"$ts.{route}.$body\" | openssl dgst -sha256 "
                 f"-hmac {shlex.quote(secret)} | sed 's/^.* //'); curl -sS -X POST {server_url}{route} "
                 "-H 'Content-Type: application/json' -H \"X-CSW-Timestamp: $ts\" "
                 "-H \"X-CSW-Signature: v1=$sig\" --data-binary \"$body\"; echo")
    first = demo[0]
    body = json.dumps({"serviceid": first.service_id, "userid": first.client_id, "username": first.username},
                      separators=(",", ":"))
    overview = (f"eval \"$({cli} curl /v1/accounts/overview {shlex.quote(body)} --url {server_url} "
                f"--secret {shlex.quote(secret)})\"; echo")
    period = period_of(as_of)
    where = ("the billing receiver creates them in the WHMCS database; the WHMCS sandbox shows them"
             if receiver else "through the WHMCS API's AddBillableItem (no billing receiver: MariaDB or php missing)")
    return f"""
Next steps: paste them into another shell, in {Path.cwd()}.

1. A signed request, with curl and openssl only (API.md section 1: X-CSW-Timestamp = now, X-CSW-Signature =
   v1= + hex HMAC-SHA256 of "<timestamp>.<route>.<body>" with the signing secret; valid for 300 s):
{STEP}{sign_curl}
   The same, signed by cswhmcs (it prints the curl; eval runs it): service #{first.service_id}'s client area data
{STEP}{overview}

2. What the month-end would bill for {period}, as a self-contained HTML report (nothing is sent or written):
{STEP}. {env} && {cli} billing preview --as-of {iso(as_of)} --report {preview}
   Open {preview.strip("'")} in a browser: totals per currency, per account and product, carried-over
   amounts and the billed totals per period.

3. Bill it ({where}), with the run's report, then see what needs an operator:
{STEP}. {env} && {cli} billing run --as-of {iso(as_of)} --report {run}
{STEP}. {env} && {cli} billing attention

4. The client area panel (clientarea.tpl with sample values, in a Bootstrap page, headless Chromium):
{STEP}make screenshot
   It writes artifacts/clientarea.png. (The billing report's own picture, artifacts/billing-report.png, comes
   from tests/integration/test_billing_report.py.){email_change(env, first, cs_user_id)}"""


def email_change(env: str, account: DemoAccount, cs_user_id: int | None) -> str:
    """Step 5: change the user's email in ComputeStacks (its admin API, as the UI would); ComputeStacks' users
    webhook reaches the backend, which sets the WHMCS service username; WHMCS's GetClientsProducts shows it."""
    if cs_user_id is None:
        return ""
    local, _, domain = account.username.partition("@")
    new_email = f"{local.split('+')[0]}+renamed@{domain}"
    patch = json.dumps({"user": {"email": new_email}}, separators=(",", ":"))
    change = (f". {env} && curl -fsS -o /dev/null -u \"$CS_API_KEY:$CS_API_SECRET\" -X PATCH "
              f"\"$CS_API_URL/api/admin/users/{cs_user_id}\" -H 'Content-Type: application/json' "
              f"--data {shlex.quote(patch)} && sleep 2 && curl -sS \"$WHMCS_API_URL\" -d action=GetClientsProducts "
              f"-d responsetype=json -d serviceid={account.service_id} --data-urlencode "
              "\"identifier=$WHMCS_API_IDENTIFIER\" --data-urlencode \"secret=$WHMCS_API_SECRET\"; echo")
    return f"""

5. An email changed in ComputeStacks reaches WHMCS (ComputeStacks' users webhook -> /v1/hooks/cs-user): change
   ComputeStacks user #{cs_user_id}'s email to {new_email}, then ask WHMCS for service #{account.service_id}:
{STEP}{change}
   Its "username" is now {new_email} (and the backend's mapping holds it too)."""


def write_env_file(env: dict[str, str], path: Path, *, unset: tuple[str, ...] = ()) -> Path:
    """The local stack's settings (sandbox credentials only) for `cswhmcs billing` in another shell
    (``. .dev/env.sh``); ``unset``: variables a previous stack set that must not linger in that shell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ("ACCOUNTS_TABLE", "LEDGER_TABLE", "IDEMPOTENCY_TABLE", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY")
    values = {**env, **{n: os.environ[n] for n in names if n in os.environ}}
    path.write_text("# written by `make dev`: . this file, then run cswhmcs billing ...\n"
                    + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
                    + "".join(f"unset {k}\n" for k in unset))
    return path


if __name__ == "__main__":
    sys.exit(main())
