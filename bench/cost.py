"""What ONE month of this backend costs on AWS (us-east-1, list prices) for N linked accounts: a small,
documented model, not a measurement. Used by docs/performance.md ("What a month costs on AWS").

    .venv/bin/python -m bench.cost                          # Markdown table for 1,000 / 10,000 / 100,000
    .venv/bin/python -m bench.cost --accounts 5000,50000 --cs-rate-limit 10000 --overview-views 20
    .venv/bin/python -m bench.cost --json                   # every line item as JSON

    from bench.cost import monthly_cost
    monthly_cost(100_000, overview_views=20)["total_usd"]

What it reads from template.yaml AT RUN TIME (so a change of the template changes the figures): every
function's MemorySize and Architectures (its own or the Globals'), which functions are API routes, the SQS
worker, the planner; the worker's BatchSize and MaximumConcurrency and ComputeStacksRateLimit (parameter
defaults); the API type (REST ``AWS::Serverless::Api`` or HTTP ``AWS::Serverless::HttpApi``); the number of
secrets, alarms and tables with point-in-time recovery.

The model, per month (every knob is a field of ``Assumptions``; every price a field of ``Prices``):

* API: N x (overview views + SSO clicks + module actions) + a fixed number of admin requests. Each is one
  API Gateway request and one Lambda invocation of its route's function (``api_duration_s`` wall; a cold
  start, after an idle gap of ``env_idle_s`` or every ``env_lifetime_h``, also pays ``init_s`` of INIT, billed
  since 1 Aug 2025), 1 DynamoDB write (the replay guard, an item under 1 KB) and 1 strongly consistent read
  (the mapping); a module action 1 more write.
* Billing: ``collections`` daily collections (N SQS messages each) and one month-end (the close run at 21:20
  + the bill run at 23:00: 2N messages; docs/billing.md 3b and 6). Every account is read from ComputeStacks
  once per collection and once (x (1 + ``incomplete_fraction``)) at month-end. The workers pace themselves
  through one window of billing's budget r = CS_RATE_LIMIT x 80 % / 300 s (SharedWindow): they read a window's
  budget at once, then wait for the next, so on average one read holds a worker
  for max(C / r, latencies) = 1.2 s at C = 8 and the default limit: a rate-bound run costs
  (run wall time x C x MemorySize), e.g. a 100k collection 250 min x 8 x 0.5 GB. Billing an account adds its
  DynamoDB and WHMCS (receiver) calls. The planner: a few seconds + N / 3,200 messages per second per run.
* DynamoDB on demand: 1 WRU per KB written (rounded up per item), 1 RRU per 4 KB of a strongly consistent
  read, x2 inside a transaction. Per account (docs/billing.md section 6): a collection = 1 state read + 1
  state write; the month-end = 2 state reads + 2 state writes + 1 transaction (state + its lines), whichever
  of the close and bill messages comes first; before each ComputeStacks read, the shared window's write (and
  at most one read) of its item (``pacer_item_kb``); the planner's scan of the mappings (eventually consistent).
  Storage and PITR: state + mapping + ``months_of_history`` months of line items.
* SQS standard: SendMessageBatch of 10; Lambda's poller receives up to 10 per ReceiveMessage and deletes in
  batches of 10, so ~3 requests per 10 messages; plus idle long polls (``idle_pollers`` x 1 per 20 s, all month).
* Secrets Manager: 1 secret-month; GetSecretValue at each cold start and again on use after 5 min
  (``SECRET_MAX_AGE``) in each warm environment: for an API function with ``k`` invocations spread over the
  month's W 5-minute windows, W x (1 - e^(-k/W)) re-reads; a worker during a run, once per 5 min each.
* EventBridge Scheduler: the 3 schedules' invocations (14 M a month free: the one free tier applied here).
* CloudWatch: log bytes (one JSON line per API request, per account per billing message, START/END/REPORT per
  invocation) ingested and stored for the template's ``LogRetentionDays`` (steady state), the alarms and the
  EMF custom metrics.
* Data transfer out to the internet (requests to ComputeStacks and WHMCS, API answers to WHMCS).

* KMS: the alarm topic's customer managed key, per key-month (its requests: a few per alarm, not counted).

Not counted: free tiers (but Scheduler's), KMS requests and AWS-managed keys, SNS e-mail, X-Ray (off), NAT (no
VPC), taxes, support plans, the ComputeStacks and WHMCS servers themselves. Prices change: check
https://aws.amazon.com/<service>/pricing/ or https://calculator.aws before relying on a figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
KB_PER_GB = 1024.0 * 1024.0
BYTES_PER_GB = 1024.0**3
PRICES_CHECKED = "December 2026"  # against the AWS pricing pages (as quoted publicly); prices change
SECRET_MAX_AGE_S = 300.0  # cswhmcs.config.SECRET_MAX_AGE: a warm environment re-reads the secret on use after it


@dataclass(frozen=True)
class Prices:
    """us-east-1 list prices in USD (on-demand, no free tier unless named). Last checked December 2026 against
    the AWS pricing pages as quoted by public sources; they change: https://aws.amazon.com/<service>/pricing/."""

    lambda_gb_s_x86: float = 0.0000166667  # Lambda, first 6 B GB-s / month (x86_64)
    lambda_gb_s_arm: float = 0.0000133334  # Lambda, first 7.5 B GB-s / month (arm64, Graviton)
    lambda_request: float = 0.20 / 1e6  # Lambda, per request (both architectures)
    apigw_rest_request: float = 3.50 / 1e6  # API Gateway REST API, first 333 M requests / month
    apigw_http_request: float = 1.00 / 1e6  # API Gateway HTTP API, first 300 M requests / month
    ddb_wru: float = 0.625 / 1e6  # DynamoDB on-demand write request unit (after the 1 Nov 2024 50 % cut)
    ddb_rru: float = 0.125 / 1e6  # DynamoDB on-demand read request unit (after the 1 Nov 2024 cut)
    ddb_storage_gb_month: float = 0.25  # DynamoDB Standard table class storage
    ddb_pitr_gb_month: float = 0.20  # DynamoDB continuous backups (point-in-time recovery)
    sqs_request: float = 0.40 / 1e6  # SQS standard queue, per request (each 64 KB chunk of a request)
    secret_month: float = 0.40  # Secrets Manager, per secret per month
    kms_key_month: float = 1.00  # KMS customer managed key, per key per month
    secret_api_call: float = 0.05 / 10_000  # Secrets Manager, per API call
    scheduler_invocation: float = 1.00 / 1e6  # EventBridge Scheduler, after the free invocations
    scheduler_free_invocations: float = 14e6  # EventBridge Scheduler: 14 M invocations a month free
    logs_ingest_gb: float = 0.50  # CloudWatch Logs, Standard class ingestion
    logs_storage_gb_month: float = 0.03  # CloudWatch Logs storage (archived)
    alarm_month: float = 0.10  # CloudWatch standard-resolution metric alarm
    custom_metric_month: float = 0.30  # CloudWatch custom metric, first 10,000 metrics
    transfer_out_gb: float = 0.09  # data transfer out to the internet, first 10 TB / month


@dataclass(frozen=True)
class Assumptions:
    """Activity and sizes, per account per month unless said otherwise. The defaults are estimates (stated in
    docs/performance.md); pass any of them to ``monthly_cost`` to see its effect."""

    # --- activity (WHMCS client area and admin)
    overview_views: float = 10.0  # client-area product page or admin tab loads (one overview call each)
    sso_clicks: float = 2.0  # "log in to ComputeStacks" clicks
    module_actions: float = 0.2  # create / suspend / unsuspend / terminate / password / package changes
    admin_requests: float = 200.0  # per month in all: test connection, user groups, Server Sync Tool pages
    api_duration_s: float = 0.15  # billed wall time of a warm API invocation (mostly waiting on ComputeStacks)
    init_s: float = 0.8  # INIT duration of a cold start (imports; billed since 1 Aug 2025)
    env_idle_s: float = 600.0  # an idle environment is reclaimed after about this (not documented by AWS)
    env_lifetime_h: float = 2.0  # a busy environment is replaced after about this (not documented by AWS)
    api_memory_mb: int | None = None  # None: each API function's MemorySize in template.yaml
    worker_memory_mb: int | None = None  # None: BillingWorkerFunction's MemorySize in template.yaml
    # --- billing runs
    collections: int = 30  # daily collections (a 31-day month; the one 1.5 h after the month-end is skipped)
    month_days: int = 31
    lines_per_account: float = 2.0  # billable lines per account per month-end (products used)
    incomplete_fraction: float = 0.02  # close reads made before ComputeStacks committed the rows (read again)
    cs_rate_limit: int | None = None  # None: template.yaml's ComputeStacksRateLimit default (2,500 / 5 min)
    cs_share: float = 0.8  # billing's share of the limit (billing/options.py cs_share)
    cs_window_s: float = 300.0
    worker_concurrency: int | None = None  # None: template.yaml's WorkerMaxConcurrency default
    batch_size: int | None = None  # None: template.yaml's SQS BatchSize
    cs_latency_s: float = 0.05
    ddb_latency_s: float = 0.005
    whmcs_latency_s: float = 0.05
    receiver: bool = True  # lines through the module's billing receiver (False: AddBillableItem, the API path)
    receiver_requests_per_line: float = 0.05  # target of whmcs_requests_per_line (measured 0.0105)
    whmcs_rate: float = 30.0  # requests/s all workers together may send WHMCS (the API path's bound)
    planner_base_s: float = 3.0  # a planner invocation: WHMCS version + rates, run record, scan start
    planner_msgs_per_s: float = 3200.0  # 8 threads x SendMessageBatch(10) / 25 ms (bench/simulation.py)
    # --- DynamoDB item sizes
    state_item_kb: float = 4.0  # billing state per account (2-8 KB: marks, running-total buckets, open lines)
    line_item_kb: float = 1.5  # a finished line with its day buckets
    mapping_item_kb: float = 0.3  # an AccountsTable mapping
    replay_item_kb: float = 0.2  # a ReplayTable record (TTL deletes are free)
    # The workers' ComputeStacks window (SharedWindow, in LedgerTable): one conditional write before each read,
    # and at most one consistent read (the first request of each second a worker asks in); its item holds the
    # requests of the seconds still in the window: ~15 B each, a few hundred bytes in a paced run.
    pacer_item_kb: float = 1.0
    months_of_history: int = 12  # finished line items kept (they are never deleted)
    # --- SQS
    idle_pollers: int = 5  # Lambda's long-polling connections on an idle queue
    long_poll_s: float = 20.0
    message_kb: float = 1.0  # one work message (account, mapping, as-of, rates)
    # --- CloudWatch Logs (bytes per line, JSON from Powertools; platform lines per invocation)
    api_log_bytes: float = 260.0  # the "request" line of every API call
    billing_log_bytes: float = 350.0  # "billing account done" per account per message
    platform_log_bytes: float = 300.0  # START + END + REPORT of every invocation
    planner_log_bytes: float = 2000.0  # per planner run
    # EMF metrics (namespace ComputeStacksWHMCS, dimension service): the 16 names of cswhmcs.observability,
    # billing/overdue.py and accounts/webhook.py, AmountBilled once more per currency beyond the first (2 assumed)
    # and UpstreamErrors per upstream (computestacks, whmcs, receiver)
    custom_metrics: int = 19
    # --- data transfer out to the internet
    cs_request_bytes: float = 800.0  # one ComputeStacks request (headers + query)
    api_response_bytes: float = 1500.0  # one API answer to WHMCS
    whmcs_bytes_per_line: float = 400.0  # billable item data sent to WHMCS


# ---------------------------------------------------------------------- template.yaml


def _load(path: Path) -> dict[str, Any]:
    for p in (str(ROOT / "layers/shared"),):
        if p not in sys.path:
            sys.path.insert(0, p)
    from cswhmcs.local.template import load_template

    return load_template(path)


@dataclass(frozen=True)
class FunctionFacts:
    name: str
    memory_mb: int
    architecture: str  # arm64 or x86_64
    kind: str  # api, worker, planner, other
    path: str = ""  # API route


@dataclass(frozen=True)
class TemplateFacts:
    """What the cost depends on in template.yaml (read each time ``monthly_cost`` runs)."""

    functions: dict[str, FunctionFacts]
    api_type: str  # REST or HTTP
    batch_size: int
    worker_concurrency: int
    cs_rate_limit: int
    secrets: int
    alarms: int
    kms_keys: int
    log_retention_days: int
    pitr_tables: int
    schedules: int
    path: str = ""

    def of_kind(self, kind: str) -> list[FunctionFacts]:
        return [f for f in self.functions.values() if f.kind == kind]

    def api_function(self, path_suffix: str) -> FunctionFacts | None:
        return next((f for f in self.of_kind("api") if f.path.endswith(path_suffix)), None)


def read_template(path: str | Path = TEMPLATE) -> TemplateFacts:
    data = _load(Path(path))
    params = data.get("Parameters", {}) or {}

    def value(v: Any) -> Any:  # a parameter's default for {"Ref": name}
        if isinstance(v, dict) and "Ref" in v and v["Ref"] in params:
            return params[v["Ref"]].get("Default")
        return v

    glob = (data.get("Globals", {}) or {}).get("Function", {}) or {}
    resources: dict[str, Any] = data["Resources"]
    funcs: dict[str, FunctionFacts] = {}
    batch, concurrency, schedules = 10, 1000, 0
    for name, res in resources.items():
        if res.get("Type") not in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            continue
        props = res.get("Properties", {}) or {}
        memory = int(value(props.get("MemorySize", glob.get("MemorySize", 128))))
        arch = (value(props.get("Architectures", glob.get("Architectures", ["x86_64"]))) or ["x86_64"])[0]
        kind, route = "other", ""
        for event in (props.get("Events") or {}).values():
            etype, ep = event.get("Type"), event.get("Properties", {}) or {}
            if etype in ("Api", "HttpApi"):
                kind, route = "api", str(ep.get("Path", ""))
            elif etype == "SQS":
                kind = "worker"
                batch = int(value(ep.get("BatchSize", 10)))
                concurrency = int(value((ep.get("ScalingConfig") or {}).get("MaximumConcurrency", concurrency)))
            elif etype in ("ScheduleV2", "Schedule"):
                kind = "planner"
                schedules += 1
        funcs[name] = FunctionFacts(name, memory, str(arch), kind, route)
    types = [r.get("Type") for r in resources.values()]
    api_type = "HTTP" if any(t in ("AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Api") for t in types) else "REST"
    pitr = sum(1 for r in resources.values() if r.get("Type") == "AWS::DynamoDB::Table" and
               ((r.get("Properties", {}) or {}).get("PointInTimeRecoverySpecification") or {})
               .get("PointInTimeRecoveryEnabled"))
    cs_limit = int(params.get("ComputeStacksRateLimit", {}).get("Default", 2500))
    return TemplateFacts(functions=funcs, api_type=api_type, batch_size=batch, worker_concurrency=concurrency,
                         cs_rate_limit=cs_limit, secrets=types.count("AWS::SecretsManager::Secret"),
                         alarms=types.count("AWS::CloudWatch::Alarm"), kms_keys=types.count("AWS::KMS::Key"),
                         log_retention_days=int(params.get("LogRetentionDays", {}).get("Default", 90)),
                         pitr_tables=pitr, schedules=schedules,
                         path=str(path))


# ---------------------------------------------------------------------- the model


@dataclass
class Line:
    service: str
    item: str
    quantity: float
    unit: str
    unit_price: float

    @property
    def usd(self) -> float:
        return self.quantity * self.unit_price


@dataclass
class _Usage:
    lines: list[Line] = field(default_factory=list)

    def add(self, service: str, item: str, quantity: float, unit: str, unit_price: float) -> None:
        self.lines.append(Line(service, item, quantity, unit, unit_price))


def _gb(mb: int) -> float:
    return mb / 1024.0


def _wru(kb: float) -> int:
    return max(1, math.ceil(kb - 1e-9))


def _rru(kb: float) -> int:  # strongly consistent
    return max(1, math.ceil(kb / 4.0 - 1e-9))


def _gb_s_price(arch: str, prices: Prices) -> float:
    return prices.lambda_gb_s_arm if arch == "arm64" else prices.lambda_gb_s_x86


def monthly_cost(n: int, *, prices: Prices | None = None, template: str | Path | TemplateFacts | None = None,
                 **assumptions: Any) -> dict[str, Any]:
    """One month for ``n`` accounts. ``assumptions``: fields of ``Assumptions``. Returns ``accounts``,
    ``total_usd``, ``per_account_usd``, ``by_service`` {service: usd}, ``lines`` [{service, item, quantity,
    unit, unit_price, usd}], ``usage`` (intermediate quantities), ``assumptions`` and ``template`` (facts)."""
    unknown = set(assumptions) - {f.name for f in fields(Assumptions)}
    if unknown:
        raise TypeError(f"unknown assumptions: {', '.join(sorted(unknown))}")
    a = replace(Assumptions(), **assumptions)
    p = prices or Prices()
    t = template if isinstance(template, TemplateFacts) else read_template(template or TEMPLATE)
    u = _Usage()
    q: dict[str, float] = {}  # intermediate quantities, for the tests and the doc

    c = a.worker_concurrency or t.worker_concurrency
    batch = a.batch_size or t.batch_size
    cs_limit = a.cs_rate_limit or t.cs_rate_limit
    rate = cs_limit * a.cs_share / a.cs_window_s  # billing's ComputeStacks budget, requests/s
    windows = a.month_days * 86400.0 / SECRET_MAX_AGE_S  # 5-minute windows in the month
    fallback = next(iter(t.functions.values()))

    # ---- API: requests per function
    api_fns = t.of_kind("api")
    overview = t.api_function("/overview") or fallback
    sso = t.api_function("/sso") or fallback
    actions = [f for f in api_fns if f not in (overview, sso)] or [fallback]
    per_fn: dict[str, float] = {}
    per_fn[overview.name] = per_fn.get(overview.name, 0.0) + n * a.overview_views
    per_fn[sso.name] = per_fn.get(sso.name, 0.0) + n * a.sso_clicks
    for f in actions:
        per_fn[f.name] = per_fn.get(f.name, 0.0) + (n * a.module_actions + a.admin_requests) / len(actions)
    api_requests = sum(per_fn.values())
    month_s = a.month_days * 86400.0
    api_gb_s = api_cost_gb_s = api_secret_calls = api_cold = 0.0
    for name, k in per_fn.items():
        f = t.functions[name]
        # Cold starts: the invocations that follow an idle gap longer than env_idle_s (arrivals spread evenly
        # over the month: probability e^(-k idle / month)), plus one per env_lifetime_h while in use.
        cold = min(k, k * math.exp(-k * a.env_idle_s / month_s) + month_s / (a.env_lifetime_h * 3600.0)) if k else 0.0
        gb_s = (k * a.api_duration_s + cold * a.init_s) * _gb(a.api_memory_mb or f.memory_mb)
        api_gb_s += gb_s
        api_cost_gb_s += gb_s * _gb_s_price(f.architecture, p)
        api_cold += cold
        api_secret_calls += cold + windows * (1.0 - math.exp(-k / windows))
    q.update(api_requests=api_requests, api_gb_s=api_gb_s, api_cold_starts=api_cold)

    # ---- billing worker: seconds held per account
    per_read_s = max(c / rate, a.cs_latency_s + 2 * a.ddb_latency_s)  # paced: C / r, else the latencies
    if a.receiver:
        whmcs_s = a.lines_per_account * a.receiver_requests_per_line * a.whmcs_latency_s
    else:  # GetClientsDetails + one AddBillableItem per line, at most whmcs_rate for all workers together
        whmcs_s = (1 + a.lines_per_account) * max(a.whmcs_latency_s, c / a.whmcs_rate)
    bill_s = 3 * a.ddb_latency_s + whmcs_s  # claim + mark, finish, the other message's look
    collection_s = n * per_read_s
    month_end_s = n * (1 + a.incomplete_fraction) * per_read_s + n * bill_s
    worker_s = a.collections * collection_s + month_end_s
    worker_invocations = (a.collections + 2) * math.ceil(n / batch)  # the month-end: close + bill messages
    worker_fns = t.of_kind("worker") or [fallback]
    wf = worker_fns[0]
    worker_mb = a.worker_memory_mb or wf.memory_mb
    worker_gb_s = (worker_s + (a.collections + 1) * c * a.init_s) * _gb(worker_mb)  # + each run's C cold starts
    # Each worker re-reads the secret every 5 min it runs (C of them, each run), + once at its start
    worker_secret_calls = (a.collections + 1) * c + worker_s / SECRET_MAX_AGE_S
    q.update(per_read_s=per_read_s, collection_wall_min=collection_s / c / 60,
             month_end_wall_min=month_end_s / c / 60, worker_s=worker_s, worker_gb_s=worker_gb_s,
             worker_invocations=worker_invocations, cs_budget_per_s=rate)

    # ---- planner: one run per collection, the close and the bill run, the skipped collection
    planner = (t.of_kind("planner") or [fallback])[0]
    runs = a.collections + 2
    planner_s = runs * (a.planner_base_s + n / a.planner_msgs_per_s) + a.planner_base_s  # + the skipped one
    planner_invocations = runs + 1
    planner_gb_s = planner_s * _gb(planner.memory_mb)
    q.update(planner_gb_s=planner_gb_s)

    lam_price = p.lambda_request
    u.add("Lambda", "API functions: requests", api_requests, "requests", lam_price)
    u.add("Lambda", f"API functions: duration ({a.api_memory_mb or overview.memory_mb} MB overview, "
          f"{a.api_duration_s:g} s)",
          api_gb_s, "GB-s", api_cost_gb_s / api_gb_s if api_gb_s else 0.0)
    u.add("Lambda", "billing worker + planner: requests", worker_invocations + planner_invocations, "requests",
          lam_price)
    u.add("Lambda", f"billing worker: duration ({worker_mb} MB, {per_read_s:.2f} s per read, paced)",
          worker_gb_s, "GB-s", _gb_s_price(wf.architecture, p))
    u.add("Lambda", f"billing planner: duration ({planner.memory_mb} MB)", planner_gb_s, "GB-s",
          _gb_s_price(planner.architecture, p))

    # ---- API Gateway
    apigw = p.apigw_http_request if t.api_type == "HTTP" else p.apigw_rest_request
    u.add("API Gateway", f"{t.api_type} API requests", api_requests, "requests", apigw)

    # ---- DynamoDB
    s_r, s_w = _rru(a.state_item_kb), _wru(a.state_item_kb)
    if a.receiver:  # one transaction: the state + the account's lines (save_with_records)
        txn_w = 2 * (s_w + a.lines_per_account * _wru(a.line_item_kb))
    else:  # the API path finishes each line in a transaction of its own: the state + that line
        txn_w = a.lines_per_account * 2 * (s_w + _wru(a.line_item_kb))
    cs_reads = n * (a.collections + 1 + a.incomplete_fraction)  # each one paced by the shared window
    billing_rru = n * (a.collections * s_r + (2 + a.incomplete_fraction) * s_r) + cs_reads * _rru(a.pacer_item_kb)
    billing_wru = (n * (a.collections * s_w + (2 + a.incomplete_fraction) * s_w + txn_w)
                   + cs_reads * _wru(a.pacer_item_kb))
    scan_rru = runs * n * a.mapping_item_kb / 4.0 * 0.5  # eventually consistent scan: 0.5 RRU per 4 KB
    api_wru = api_requests * _wru(a.replay_item_kb) + n * a.module_actions * _wru(a.mapping_item_kb)
    api_rru = api_requests * _rru(a.mapping_item_kb)
    wru, rru = billing_wru + api_wru, billing_rru + api_rru + scan_rru
    per_account_kb = (a.state_item_kb + a.mapping_item_kb
                      + a.months_of_history * a.lines_per_account * a.line_item_kb + 0.3)  # + 100 B per item
    storage_gb = n * per_account_kb / KB_PER_GB
    q.update(billing_wru_per_account=billing_wru / n if n else 0.0, wru=wru, rru=rru, storage_gb=storage_gb)
    u.add("DynamoDB", f"write request units (state {a.state_item_kb:g} KB = {s_w} WRU per write)", wru, "WRU",
          p.ddb_wru)
    u.add("DynamoDB", "read request units", rru, "RRU", p.ddb_rru)
    u.add("DynamoDB", f"storage ({a.months_of_history} months of lines)", storage_gb, "GB-month",
          p.ddb_storage_gb_month)
    u.add("DynamoDB", "point-in-time recovery", storage_gb if t.pitr_tables else 0.0, "GB-month",
          p.ddb_pitr_gb_month)

    # ---- SQS
    messages = (a.collections + 2) * n
    chunks = max(1, math.ceil(10 * a.message_kb / 64.0))  # a request is billed per 64 KB
    busy = 3 * math.ceil(messages / 10) * chunks  # send, receive, delete: 10 messages each
    idle = a.idle_pollers * (60.0 / a.long_poll_s) * a.month_days * 1440.0
    q.update(sqs_messages=messages, sqs_requests=busy + idle)
    u.add("SQS", "requests (send/receive/delete batches of 10 + idle long polls)", busy + idle, "requests",
          p.sqs_request)

    # ---- Secrets Manager
    secret_calls = api_secret_calls + worker_secret_calls + planner_invocations
    q.update(secret_calls=secret_calls)
    u.add("Secrets Manager", "secrets", t.secrets, "secret-months", p.secret_month)
    u.add("Secrets Manager", "GetSecretValue (cold starts + every 5 min warm)", secret_calls, "calls",
          p.secret_api_call)
    u.add("KMS", "customer managed keys (the alarm topic's)", t.kms_keys, "key-months", p.kms_key_month)

    # ---- EventBridge Scheduler (the free 14 M applied)
    invocations = planner_invocations
    u.add("EventBridge Scheduler", f"invocations ({invocations} a month, {p.scheduler_free_invocations / 1e6:g} M "
          "free)", max(0.0, invocations - p.scheduler_free_invocations), "invocations", p.scheduler_invocation)

    # ---- CloudWatch
    all_invocations = api_requests + worker_invocations + planner_invocations
    log_bytes = (api_requests * a.api_log_bytes + messages * a.billing_log_bytes
                 + all_invocations * a.platform_log_bytes + runs * a.planner_log_bytes)
    log_gb = log_bytes / BYTES_PER_GB
    q.update(log_gb=log_gb)
    u.add("CloudWatch", "Logs ingestion", log_gb, "GB", p.logs_ingest_gb)
    kept_months = t.log_retention_days / 30.0  # steady state: every log group keeps LogRetentionDays
    u.add("CloudWatch", f"Logs storage ({t.log_retention_days} days kept: LogRetentionDays)", log_gb * kept_months,
          "GB-month", p.logs_storage_gb_month)
    u.add("CloudWatch", f"alarms ({t.alarms}) + custom metrics ({a.custom_metrics})", 1.0, "month",
          t.alarms * p.alarm_month + a.custom_metrics * p.custom_metric_month)

    # ---- data transfer out
    cs_requests = n * (a.collections + 1 + a.incomplete_fraction) + api_requests
    out_bytes = (cs_requests * a.cs_request_bytes + api_requests * a.api_response_bytes
                 + n * a.lines_per_account * a.whmcs_bytes_per_line)
    u.add("Data transfer", "out to the internet", out_bytes / BYTES_PER_GB, "GB", p.transfer_out_gb)

    by_service: dict[str, float] = {}
    for line in u.lines:
        by_service[line.service] = by_service.get(line.service, 0.0) + line.usd
    total = sum(by_service.values())
    return {
        "accounts": n,
        "total_usd": total,
        "per_account_usd": total / n if n else 0.0,
        "by_service": by_service,
        "lines": [{**asdict(line), "usd": line.usd} for line in u.lines],
        "usage": q,
        "assumptions": asdict(a),
        "template": {"path": t.path, "api_type": t.api_type, "batch_size": batch, "worker_concurrency": c,
                     "cs_rate_limit": cs_limit, "memory_mb": {f.name: f.memory_mb for f in t.functions.values()},
                     "architectures": sorted({f.architecture for f in t.functions.values()}),
                     "secrets": t.secrets, "alarms": t.alarms, "kms_keys": t.kms_keys, "pitr_tables": t.pitr_tables,
                     "schedules": t.schedules},
    }


# ---------------------------------------------------------------------- Markdown


def _money(v: float) -> str:
    return f"${v:,.2f}" if v >= 0.005 or v == 0 else "<$0.01"


def markdown(results: Iterable[dict[str, Any]]) -> str:
    """One row per line item, one column per account count; the totals and cost per account last."""
    rs = list(results)
    head = "| service | item | " + " | ".join(f"{r['accounts']:,} accounts" for r in rs) + " |"
    rows = [head, "|---|---|" + "---:|" * len(rs)]
    for i, line in enumerate(rs[0]["lines"]):
        rows.append(f"| {line['service']} | {line['item']} | "
                    + " | ".join(f"{_money(r['lines'][i]['usd'])} ({_qty(r['lines'][i])})" for r in rs) + " |")
    rows.append("| **total** | per month | " + " | ".join(f"**{_money(r['total_usd'])}**" for r in rs) + " |")
    rows.append("| | per account per month | " + " | ".join(f"${r['per_account_usd']:.5f}" for r in rs) + " |")
    return "\n".join(rows)


def _qty(line: dict[str, Any]) -> str:
    v, unit = line["quantity"], line["unit"]
    if unit in ("month", "secret-months"):
        return f"{v:g} {unit}"
    if v >= 1e6:
        return f"{v / 1e6:,.2f} M {unit}"
    if v >= 1e3:
        return f"{v / 1e3:,.1f} k {unit}"
    return f"{v:,.3g} {unit}"


def by_service_markdown(results: Iterable[dict[str, Any]]) -> str:
    rs = list(results)
    rows = ["| service | " + " | ".join(f"{r['accounts']:,}" for r in rs) + " |", "|---|" + "---:|" * len(rs)]
    for service in rs[0]["by_service"]:
        rows.append(f"| {service} | " + " | ".join(_money(r["by_service"][service]) for r in rs) + " |")
    rows.append("| **total** | " + " | ".join(f"**{_money(r['total_usd'])}**" for r in rs) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.split("\n\n")[0] if __doc__ else "")
    ap.add_argument("--accounts", default="1000,10000,100000", help="comma-separated account counts")
    ap.add_argument("--template", default=str(TEMPLATE))
    ap.add_argument("--json", action="store_true", help="print the full results as JSON instead")
    def flag(text: str) -> bool:
        return text.lower() in ("1", "true", "yes")

    kinds: dict[str, Callable[[str], Any]] = {"bool": flag, "int": int, "int | None": int, "float": float}
    for f in fields(Assumptions):  # every assumption is an option: --overview-views 20, --receiver false
        ap.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kinds.get(str(f.type), float),
                        default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in fields(Assumptions) if getattr(args, f.name) is not None}
    facts = read_template(args.template)
    results = [monthly_cost(int(n), template=facts, **overrides) for n in args.accounts.split(",") if n.strip()]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    t = results[0]["template"]
    print(f"One month on AWS (us-east-1 list prices checked {PRICES_CHECKED}; no free tier but Scheduler's).\n")
    sizes: dict[int, list[str]] = {}
    for name, mb in t["memory_mb"].items():
        sizes.setdefault(mb, []).append(name.removesuffix("Function"))
    memory = "; ".join(f"{mb} MB: {', '.join(names)}" for mb, names in sorted(sizes.items()))
    print(f"template.yaml: {t['api_type']} API; MemorySize {memory}; architectures "
          f"{', '.join(t['architectures'])}; SQS BatchSize {t['batch_size']}, MaximumConcurrency "
          f"{t['worker_concurrency']}; CS_RATE_LIMIT {t['cs_rate_limit']:,}\n")
    print(by_service_markdown(results))
    print()
    print(markdown(results))
    if overrides:
        print(f"\nassumptions changed: {overrides}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
