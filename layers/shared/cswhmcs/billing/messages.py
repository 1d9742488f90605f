"""The per-account work message (planner -> SQS -> worker, or planner -> worker in-process).

It carries everything read once per run (as-of, WHMCS unit mode and currency rates) and the
account's mapping, so a worker needs no extra reads to start. Version ``v`` 1; unknown keys ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cswhmcs.billing.usage import iso, parse_time, period_of

BILL, COLLECT, CLOSE = "bill", "collect", "close"
# close: the reads before the month-end cut-off (as-of = the cut-off), which bill nothing
KINDS = (BILL, COLLECT, CLOSE)


@dataclass(frozen=True)
class RunContext:
    run_id: str
    kind: str  # bill | collect | close
    as_of: datetime
    unit_mode: str = "hours"
    currencies: list[dict[str, Any]] = field(default_factory=list)
    timezone: str = ""  # the schedule's IANA zone: the period is the month that ends at as_of there

    @property
    def period(self) -> str:
        return period_of(self.as_of, self.timezone)

    def to_dict(self) -> dict[str, Any]:
        d = {"run": self.run_id, "kind": self.kind, "as_of": iso(self.as_of), "unit": self.unit_mode,
             "cur": self.currencies}
        if self.timezone:
            d["tz"] = self.timezone
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunContext:
        kind = str(d.get("kind", BILL))
        if kind not in KINDS:
            raise ValueError(f"Unknown run kind {kind!r}.")
        return cls(run_id=str(d["run"]), kind=kind, as_of=parse_time(d["as_of"]),
                   unit_mode=str(d.get("unit", "hours")), currencies=list(d.get("cur") or []),
                   timezone=str(d.get("tz") or ""))


@dataclass(frozen=True)
class Account:
    service_id: int
    cs_user_id: int
    client_id: int | None
    email: str
    currency: str | None = None  # as recorded in the mapping (a fallback; the CS user's own wins)

    @classmethod
    def from_mapping(cls, m: Any) -> Account:
        data: Mapping[str, Any] = m if isinstance(m, Mapping) else vars(m)
        get = data.get
        client = get("client_id")
        return cls(service_id=int(data["service_id"]), cs_user_id=int(data["cs_user_id"]),
                   client_id=int(client) if client is not None else None, email=str(get("email") or ""),
                   currency=(str(get("currency")).upper() if get("currency") else None))

    def to_dict(self) -> dict[str, Any]:
        return {"service_id": self.service_id, "cs_user_id": self.cs_user_id, "client_id": self.client_id,
                "email": self.email, "currency": self.currency}


@dataclass(frozen=True)
class WorkMessage:
    run: RunContext
    account: Account

    def to_json(self) -> str:
        return json.dumps({"v": 1, **self.run.to_dict(), "account": self.account.to_dict()}, separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str) -> WorkMessage:
        data = json.loads(body)
        if not isinstance(data, dict) or int(data.get("v", 0)) != 1:
            raise ValueError("Not a billing work message (v1).")
        return cls(RunContext.from_dict(data), Account.from_mapping(data["account"]))
