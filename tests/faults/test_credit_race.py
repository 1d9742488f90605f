"""The interleaving behind the double credit the fault schedules found (soak seeds 100601 and 100715, and
seed 1390 of the small size, before the fix; a race, so a seed replays it only now and then), made exact
with two threads.

Delivery B of an OrderPaid hook reads the order's record (none yet) and pauses; delivery A claims the
order, WHMCS credits it but the connection drops before the answer, so A marks the order "ambiguous"
and pauses before asking GetCredits; B goes on. Before the fix B took the ambiguous claim over and, having
found no record when it started, credited again without asking WHMCS.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cswhmcs.signing import sign_headers
from tests.faults.injection import CrashCounter
from tests.faults.world import SIGNING_SECRET, FaultDeps, World

pytestmark = pytest.mark.integration


class Interleave:
    """order_credits for both deliveries, pausing each thread at its point of the interleaving."""

    def __init__(self, records: Any) -> None:
        self.records = records
        self.b_has_read = threading.Event()
        self.a_is_ambiguous = threading.Event()
        self.b_is_done = threading.Event()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.records, name)
        thread = threading.current_thread().name

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if thread == "B" and name == "get" and not self.b_has_read.is_set():
                self.b_has_read.set()
                self.a_is_ambiguous.wait(10)
            if thread == "A" and name == "mark" and args[1:2] == ("ambiguous",):
                self.a_is_ambiguous.set()
                self.b_is_done.wait(10)
            return result

        return call


@pytest.fixture
def deps(fault_world: World) -> Iterator[FaultDeps]:
    tables = fault_world.new_tables()
    deps = FaultDeps(fault_world.settings(*tables), CrashCounter(random.Random(0)),
                     resource=fault_world.resource, clients=fault_world.clients(3)[2])
    fault_world.deps = deps
    yield deps
    fault_world.deps = None
    fault_world.drop_tables(tables)


def deliver(world: World, body: dict[str, Any], answers: dict[str, Any]) -> None:
    route = "/v1/hooks/order-paid"
    raw = json.dumps({**body, "delivery": threading.current_thread().name}).encode()
    headers = {"Content-Type": "application/json", **sign_headers(SIGNING_SECRET, route, raw, now=int(time.time()))}
    status, _, data, _ = world.api.invoke("POST", route, headers, raw, "127.0.0.1")
    answers[threading.current_thread().name] = (status, json.loads(data))


def test_a_first_delivery_never_takes_over_a_claim_made_meanwhile(fault_world: World, deps: FaultDeps) -> None:
    # Given a paid order of 25.00, and WHMCS crediting it on the first AddCredit but dropping the answer
    wh = fault_world.whmcs
    client = wh.add_client("Ann", "Lee", f"race{time.monotonic_ns()}@example.org", currency_code="USD")
    service = wh.add_service(client["id"], fault_world.product_id)
    order_id, invoice_id = wh.add_order(client["id"], [service["id"]], amounts=["25.00"])
    body = {"orderId": order_id, "invoiceId": invoice_id, "userId": client["id"],
            "lines": [{"serviceid": service["id"], "apply_credit": True}]}
    gate = Interleave(deps.plain_order_credits)
    deps.plain_order_credits = gate  # both deliveries go through the gate
    wh.drop_next(1, actions=["AddCredit"], applied=True)
    answers: dict[str, Any] = {}

    # When B reads first, then A claims and becomes ambiguous, then B goes on
    b = threading.Thread(target=lambda: (deliver(fault_world, body, answers), gate.b_is_done.set()), name="B")
    b.start()
    assert gate.b_has_read.wait(10)
    a = threading.Thread(target=deliver, args=(fault_world, body, answers), name="A")
    a.start()
    b.join(20)
    gate.b_is_done.set()
    a.join(20)
    wh.clear_faults()

    # Then WHMCS holds one credit for the order; A confirmed it through GetCredits
    credits = [c for c in wh.credits if int(c["clientid"]) == client["id"]]
    assert len(credits) == 1, (credits, answers)
    assert answers["A"] == (200, {"result": "success", "credited": "25.00", "currency": "USD"})
    assert answers["B"][0] in (200, 409), answers
