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

    template = Template()
    prepare_environment(template)
    server = LocalServer("127.0.0.1", port, template).start()
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


if __name__ == "__main__":
    sys.exit(main())
