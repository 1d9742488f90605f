"""The one Logger (imported everywhere) and its redaction filter; the metrics, the tracer, the Lambda entry.

Rule: no log line carries a password, token or secret. Code never passes request bodies or headers to
the logger; the filter below is the second line of defence: it masks values of known-secret keys in
structured extras, any configured secret value, the credentials of a URL (``https://user:pw@host``) and
the value of a secret-named ``key=value`` / ``"key": "value"`` inside any text, the message included.

Exceptions too (``logger.exception``, ``exc_info=``): the filter formats the traceback itself, redacts
it and hands Powertools the result (its ``exception``, ``exception_name`` and ``stack_trace`` keys, in
the shape Powertools gives them) instead of the exception, whose message may carry a secret (an httpx
error naming a URL with credentials, a ValueError quoting a body).

Metrics (CloudWatch EMF, namespace ``ComputeStacksWHMCS``, dimension ``service``): code calls ``count`` /
``measure`` where things happen (the worker, the deposit credit, the retry engine, the planner); the
values are summed in memory and written once per invocation by ``lambda_entry`` (one EMF line per
dimension set), so a run of 100,000 lines prints a handful of lines and the command line, which never
flushes, prints none. The template's alarms name these metrics (tests/infrastructure).

Tracing (X-Ray through Powertools' ``Tracer``): only in Lambda (``LAMBDA_TASK_ROOT``, not SAM local, not
``POWERTOOLS_TRACE_DISABLED``). The tracer and ``aws_xray_sdk`` are imported on the first traced call,
never elsewhere: everything else (tests, `cswhmcs serve`, the command line) pays nothing for it.
``upstream_subsegment`` wraps each upstream request (``cswhmcs.adapters.retry``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
import traceback
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "cswhmcs")
# The stack trace is built by the redaction filter below (Powertools' own would print the exception raw).
logger = Logger(service=SERVICE, serialize_stacktrace=False)

_SECRET_WORDS = r"(?:password|passwd|secret|token|signature|accesshash|access_key|authorization|api_key)"  # noqa: S105
_SECRET_KEY = re.compile(_SECRET_WORDS, re.I)
# In free text: ``password=...``, ``"api_secret": "..."``, ``Authorization: Basic ...``, ``?token=...``.
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<key>[\w-]*" + _SECRET_WORDS + r"[\w-]*)(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<value>(?:(?:basic|bearer|token)\s+)?[^\s\"'&,;)}\]]+)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/?#@]*@", re.I)
_known_secret_values: set[str] = set()


def register_secret_values(*values: str) -> None:
    """Remember secret values (credentials, signing secrets) so they are masked if they ever reach a log.
    Every function registers them when it loads its settings (``cswhmcs.config``)."""
    for v in values:
        if v and len(v) >= 4:
            _known_secret_values.add(v)


def redact(value: Any, _depth: int = 0) -> Any:
    """``value`` with secret-named keys masked and known secret values replaced, in strings, dicts,
    lists and tuples at any depth (bounded)."""
    if _depth > 20:
        return "***"  # deeper than anything we log: do not look, do not print
    if isinstance(value, dict):
        return {k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v, _depth + 1))
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"), _depth + 1)
    return value


def _redact_text(value: str) -> str:
    for s in _known_secret_values:
        if s in value:
            value = value.replace(s, "***")
    if "://" in value:
        value = _URL_USERINFO.sub(r"\g<scheme>***@", value)
    return _SECRET_ASSIGNMENT.sub(r"\g<key>\g<sep>***", value)


def _redact_exception(record: logging.LogRecord) -> None:
    """Replace the record's exception by its redacted text, in the keys Powertools prints (``exception``,
    ``exception_name``, ``stack_trace``) and in ``exc_text`` (any other formatter)."""
    exc_info = record.exc_info
    if not isinstance(exc_info, tuple) or not hasattr(exc_info[0], "__name__"):
        return
    exc_type, exc, tb = exc_info
    text = redact(logging.Formatter().formatException(exc_info))
    record.exc_info = None
    record.exc_text = text
    name = getattr(exc_type, "__name__", "Exception")
    given = vars(record)  # an ``exception`` etc. passed in ``extra`` wins, as in Powertools
    given.setdefault("exception", text)
    given.setdefault("exception_name", name)
    given.setdefault("stack_trace", {
        "type": name,
        "value": redact(str(exc)),
        "module": type(exc).__module__,
        "frames": [{"file": fs.filename, "line": fs.lineno, "function": fs.name, "statement": redact(fs.line)}
                   for fs in traceback.extract_tb(tb)],
    })


# The attributes every LogRecord has; everything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            _redact_exception(record)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        if record.args and isinstance(record.msg, str):
            with contextlib.suppress(Exception):  # malformed: its parts are redacted one by one below
                # formatted once, so that a "token=%s" and its argument are seen together
                record.msg, record.args = record.getMessage(), None
        if isinstance(record.msg, str | dict | list | tuple):
            record.msg = redact(record.msg)
        elif not isinstance(record.msg, int | float | None):  # e.g. logger.error(exc): printed as its str()
            record.msg = redact(str(record.msg))
        if record.args:
            if isinstance(record.args, tuple):
                record.args = tuple(redact(a) for a in record.args)
            elif isinstance(record.args, dict):
                record.args = redact(record.args)
        for key in list(vars(record)):
            if key in _RECORD_ATTRS:
                continue
            if _SECRET_KEY.search(key):
                setattr(record, key, "***")
            else:
                setattr(record, key, redact(getattr(record, key)))
        return True


logger.addFilter(_RedactingFilter())


# ---------------------------------------------------------------------------------------------- metrics

NAMESPACE = "ComputeStacksWHMCS"
# The names the template's alarms use (tests/infrastructure/test_observability.py).
LINES_BILLED = "LinesBilled"  # billable items created in WHMCS
AMOUNT_BILLED = "AmountBilled"  # their amounts, dimension currency
LINES_NEEDING_ATTENTION = "LinesNeedingAttention"  # lines that became "needs attention" (cswhmcs billing attention)
CREDITS_APPLIED = "CreditsApplied"  # deposit credits added to a WHMCS client
UPSTREAM_ERRORS = "UpstreamErrors"  # failed upstream attempts, dimension upstream (computestacks|whmcs)
THROTTLED = "Throttled"  # 429 answers of an upstream
ACCOUNTS_FAILED = "AccountsFailed"  # billing accounts not finished (their work returns to the queue)
RUN_DURATION_SECONDS = "RunDurationSeconds"  # a billing run's planning (Lambda) or whole run (in-process)
MONTH_END_UNFINISHED = "MonthEndUnfinished"  # 1 when the month-end run is not finished by its deadline
ORDER_CREDITS_STALE = "OrderCreditsStale"  # deposit credits open for more than 7 days (cswhmcs.credit)

# The one Metrics object; values reach it only in ``flush_metrics``.
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

_Key = tuple[str, str, tuple[tuple[str, str], ...]]  # (name, unit, dimensions)
_sums: dict[_Key, float] = {}
_samples: dict[_Key, list[float]] = {}
_metrics_lock = threading.Lock()
MAX_SAMPLES = 100  # per metric and invocation (EMF's limit of values per metric)


def _key(name: str, unit: str, dimensions: dict[str, str]) -> _Key:
    return name, unit, tuple(sorted((k, str(v)) for k, v in dimensions.items()))


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """Add ``value`` to the count ``name`` (with these dimensions besides ``service``) of this invocation.
    A count recorded as 0 is written as 0 (an alarm sees the check happened)."""
    key = _key(name, "Count", dimensions)
    with _metrics_lock:
        _sums[key] = _sums.get(key, 0.0) + float(value)


def add_amount(name: str, value: float, **dimensions: str) -> None:
    """Add ``value`` (no unit: an amount of money) to the sum ``name`` of this invocation."""
    key = _key(name, "None", dimensions)
    with _metrics_lock:
        _sums[key] = _sums.get(key, 0.0) + float(value)


def measure(name: str, value: float, *, unit: str = "Seconds", **dimensions: str) -> None:
    """Record one sample (e.g. a duration in seconds); every sample of the invocation is written."""
    key = _key(name, unit, dimensions)
    with _metrics_lock:
        samples = _samples.setdefault(key, [])
        if len(samples) < MAX_SAMPLES:
            samples.append(float(value))


def flush_metrics() -> None:
    """Write what this invocation recorded (one EMF line per dimension set, on stdout, where Lambda's log
    goes) and forget it. Nothing recorded: nothing written. Never raises: a metric is not worth a failed
    invocation."""
    with _metrics_lock:
        sums, samples = dict(_sums), {k: list(v) for k, v in _samples.items()}
        _sums.clear()
        _samples.clear()
    if not (sums or samples) or is_metrics_disabled():
        return  # (Powertools keeps what it is given while disabled: it is given nothing)
    groups: dict[tuple[tuple[str, str], ...], list[tuple[str, str, list[float]]]] = {}
    for (name, unit, dims), total in sums.items():
        groups.setdefault(dims, []).append((name, unit, [total]))
    for (name, unit, dims), values in samples.items():
        groups.setdefault(dims, []).append((name, unit, values))
    for dims, entries in sorted(groups.items()):
        try:
            for dim, dim_value in dims:
                metrics.add_dimension(name=dim, value=dim_value)
            for name, unit, values in entries:
                for number in values:
                    metrics.add_metric(name=name, unit=unit, value=number)
            metrics.flush_metrics()
        except Exception as exc:  # e.g. an invalid value: logged, the invocation goes on
            logger.warning("metrics could not be written", extra={"error_type": type(exc).__name__})
        finally:
            metrics.clear_metrics()


# ---------------------------------------------------------------------------------------------- tracing

_tracer: Any = None
_tracer_lock = threading.Lock()


def tracing_enabled() -> bool:
    """X-Ray is on in a Lambda function (the template's ``Tracing: Active``), off elsewhere (Powertools'
    own rule: SAM local and ``POWERTOOLS_TRACE_DISABLED`` turn it off)."""
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    return bool(os.environ.get("LAMBDA_TASK_ROOT")) and not os.environ.get("AWS_SAM_LOCAL")


def get_tracer() -> Any:
    """The one Powertools ``Tracer`` (botocore patched: DynamoDB, SQS and Secrets Manager calls are
    subsegments), created on first use; None when tracing is off."""
    global _tracer
    if _tracer is not None:
        return _tracer
    if not tracing_enabled():
        return None
    with _tracer_lock:
        if _tracer is None:
            from aws_lambda_powertools import Tracer

            _tracer = Tracer(service=SERVICE, patch_modules=["botocore"])
    return _tracer


def upstream_name(upstream: str) -> str:
    """The ``upstream`` dimension: ``computestacks`` or ``whmcs`` (the billing receiver runs in WHMCS)."""
    return "computestacks" if "computestacks" in upstream.lower() else "whmcs"


class _Subsegment:
    """One X-Ray subsegment around an upstream request; a tracing failure never fails the request."""

    __slots__ = ("_recorder", "_segment", "_name")

    def __init__(self, recorder: Any, name: str) -> None:
        self._recorder, self._name, self._segment = recorder, name, None

    def __enter__(self) -> Any:
        try:
            self._segment = self._recorder.begin_subsegment(self._name, namespace="remote")
            if self._segment is not None:
                self._segment.put_annotation("upstream", upstream_name(self._name))
        except Exception:  # no segment in this context, SDK trouble: untraced
            self._segment = None
        return self._segment

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._segment is None:
            return
        try:
            if exc is not None:
                # The type and our own message only (domain errors never carry secrets); no stack.
                self._segment.add_fault_flag()
                self._segment.put_metadata("error", {"type": type(exc).__name__}, "cswhmcs")
            self._recorder.end_subsegment()
        except Exception:  # noqa: S110 - tracing must never fail the request
            pass


def upstream_subsegment(upstream: str) -> contextlib.AbstractContextManager[Any]:
    """An X-Ray subsegment named after the upstream around one request (all its attempts); a no-op
    (``nullcontext``) when tracing is off."""
    tracer = get_tracer()
    if tracer is None:
        return contextlib.nullcontext()
    return _Subsegment(tracer.provider, upstream)


# ---------------------------------------------------------------------------------------------- entry

API_GATEWAY_REST = "requestContext.requestId"  # = Powertools' correlation_paths.API_GATEWAY_REST
_CONTEXT_FIELDS = ("function_name", "memory_limit_in_mb", "invoked_function_arn", "aws_request_id")
# The keys inject_lambda_context adds to every line.
_INVOCATION_KEYS = ["cold_start", "function_name", "function_memory_size", "function_arn", "function_request_id",
                    "correlation_id"]

Handler = Callable[[Any, Any], Any]


def _is_lambda_context(context: Any) -> bool:
    return context is not None and all(hasattr(context, f) for f in _CONTEXT_FIELDS)


def request_id(event: Any) -> str | None:
    """API Gateway's request id of this event (``requestContext.requestId``), if it has one."""
    ctx = event.get("requestContext") if isinstance(event, dict) else None
    value = ctx.get("requestId") if isinstance(ctx, dict) else None
    return str(value)[:128] if value else None


def lambda_entry(handler: Handler, *, correlation_id_path: str | None = None) -> Handler:
    """A function's ``lambda_handler``: ``handler`` with every log line carrying the invocation (Powertools'
    ``inject_lambda_context``: function_request_id, cold_start, and the correlation id found at
    ``correlation_id_path`` of the event, e.g. ``API_GATEWAY_REST``), an X-Ray handler subsegment when
    tracing is on, and this invocation's metrics written once at its end (also when it raised).

    A context without Lambda's attributes (tests, `cswhmcs serve`, None) is passed through as it is."""
    injected = logger.inject_lambda_context(correlation_id_path=correlation_id_path, clear_state=True)(handler)
    traced: list[Handler] = []

    @functools.wraps(handler)
    def entry(event: Any, context: Any = None) -> Any:
        if _is_lambda_context(context):
            call = injected
        else:  # not Lambda (a test, `cswhmcs serve`): no earlier invocation's ids on these lines
            call = handler
            logger.remove_keys(_INVOCATION_KEYS)
        tracer = get_tracer()
        if tracer is not None:
            if not traced:
                traced.append(tracer.capture_lambda_handler(capture_response=False, capture_error=False)(injected))
            if _is_lambda_context(context):
                call = traced[0]
        try:
            return call(event, context)
        finally:
            flush_metrics()

    return entry


def api_entry(handler: Handler) -> Handler:
    """``lambda_entry`` for an API Gateway (REST) route: its correlation id is API Gateway's request id."""
    return lambda_entry(handler, correlation_id_path=API_GATEWAY_REST)
