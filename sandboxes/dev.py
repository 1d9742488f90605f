"""`make dev`: the whole product locally, on embedded defaults.

DynamoDB Local + the ComputeStacks and WHMCS sandboxes (seeded with demo data) + `cswhmcs serve` on
port 3000, and a ready-to-paste signed curl. Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import signal
import sys
import time

DEV_SIGNING_SECRET = "dev-signing-secret"  # noqa: S105 - documented local-only secret


def main() -> int:
    from sandboxes.dynamodb_local import DynamoDBLocal, DynamoDBLocalUnavailable

    port = int(os.environ.get("PORT", "3000"))
    try:
        ddb = DynamoDBLocal(int(os.environ.get("DYNAMODB_LOCAL_PORT", "0")) or None).start()
    except DynamoDBLocalUnavailable as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    from sandboxes.computestacks import ComputeStacksSandbox
    from sandboxes.computestacks import seed_demo as seed_cs
    from sandboxes.whmcs import WhmcsSandbox
    from sandboxes.whmcs import seed_demo as seed_whmcs

    cs = ComputeStacksSandbox(port=int(os.environ.get("CS_SANDBOX_PORT", "8081"))).start()
    whmcs = WhmcsSandbox(port=int(os.environ.get("WHMCS_SANDBOX_PORT", "8082"))).start()
    seed_cs(cs)
    seed_whmcs(whmcs)
    env = {
        "AWS_ENDPOINT_URL_DYNAMODB": ddb.endpoint,
        "CS_API_URL": cs.url, "CS_API_KEY": cs.api_key, "CS_API_SECRET": cs.api_secret,
        "WHMCS_API_URL": whmcs.url, "WHMCS_API_IDENTIFIER": whmcs.identifier, "WHMCS_API_SECRET": whmcs.secret,
        "SIGNING_SECRET": os.environ.get("SIGNING_SECRET", DEV_SIGNING_SECRET),
    }
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
    linked = _link_demo_accounts(server.url, env["SIGNING_SECRET"])
    env_file = _write_env_file(env)
    print(f"""
ComputeStacks integration for WHMCS, running locally:
  API (cswhmcs serve)      {server.url}   signing secret: {env['SIGNING_SECRET']}
  ComputeStacks sandbox    {cs.url}/api/
  WHMCS sandbox            {whmcs.url}
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
    print("\nCtrl-C stops everything.", flush=True)

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.5)
    server.stop()
    cs.stop()
    whmcs.stop()
    ddb.stop()
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


def _write_env_file(env: dict[str, str]) -> str:
    """The local stack's settings (sandbox credentials only) for `cswhmcs billing` in another shell."""
    from pathlib import Path

    path = Path(".dev/env.sh")
    path.parent.mkdir(exist_ok=True)
    names = ("ACCOUNTS_TABLE", "LEDGER_TABLE", "IDEMPOTENCY_TABLE", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY")
    values = {**env, **{n: os.environ[n] for n in names if n in os.environ}}
    path.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
