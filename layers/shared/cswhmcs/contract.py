"""The API contract (API.md sections 1-3) as data: each route's request and success models.

`cswhmcs openapi` renders it as an OpenAPI 3.1 document (committed as docs/openapi.json and compared
in the tests, so an accidental change of the API fails loudly), and the tests validate every route's
real answers against these models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from cswhmcs.accounts.sync import SyncPage
from cswhmcs.billing.overdue import InvoicePaidParams
from cswhmcs.models import CreateParams, OrderPaidParams, PasswordParams, ServiceParams


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    result: Literal["success"]


class Done(_Answer):
    """Success with no further fields."""


class Created(_Answer):
    username: str = Field(description="the ComputeStacks login email; the module stores it as the service username")
    cs_user_id: int


class SingleSignOn(_Answer):
    redirect_url: str


_AMOUNT = r"^-?\d+\.\d{2}$"
_PERIOD = r"^\d{4}-\d{2}$"


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UsageByProduct(_Row):
    product: str
    quantity: str = Field(pattern=r"^-?\d+(\.\d+)?$", description="the sum of the rows' quantities")
    amount: str = Field(pattern=_AMOUNT, description="exact sum of the rows' totals, rounded half-up once")
    amount_display: str = Field(description='with the account\'s currency symbol, e.g. "€4.05"')


class BilledLine(_Row):
    period: str = Field(pattern=_PERIOD)
    product: str
    amount: str = Field(pattern=_AMOUNT, description="the WHMCS billable item's amount as created")
    currency: str
    billableid: int


class BilledPeriod(_Row):
    period: str = Field(pattern=_PERIOD)
    amount: str = Field(pattern=_AMOUNT, description="the sum of the period's billed lines in this currency")
    currency: str


class AttentionLine(_Row):
    ref: str = Field(description="the ledger reference <cs user id>:<YYYY-MM>:<product id>")
    period: str = Field(pattern=_PERIOD)
    product: str
    amount: str = Field(pattern=_AMOUNT)
    currency: str
    what_to_do: str = Field(description="one sentence for the operator")


_LEDGER = " (absent only when the billing ledger could not be read)"


class Overview(_Answer):
    username: str
    cs_user_id: int
    active: bool
    projects: int
    services: int
    run_rate: str = Field(pattern=r"^-?\d+\.\d{2}$", description="estimated monthly, 2 decimals")
    current_usage: str = Field(pattern=r"^-?\d+\.\d{2}$", description="usage not yet invoiced, 2 decimals")
    currency: str
    currency_symbol: str
    run_rate_display: str
    current_usage_display: str
    usage_by_product: list[UsageByProduct] | None = Field(
        default=None, description="this period's usage not yet billed, per product, largest amount first" + _LEDGER)
    usage_as_of: str | None = Field(
        default=None, description="ISO-8601 UTC time up to which usage_by_product counts; null before the "
                                  "account's first billing read")
    billed: list[BilledLine] | None = Field(
        default=None, max_length=12, description="billed lines, newest period first, at most 12" + _LEDGER)
    billed_periods: list[BilledPeriod] | None = Field(
        default=None, description="billed sums per period and currency, newest first, the last 12 periods" + _LEDGER)
    attention: list[AttentionLine] | None = Field(
        default=None, description="this account's lines that need an operator, newest period first" + _LEDGER)


class SyncAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str
    username: str
    domain: str
    uniqueIdentifier: str  # noqa: N815 - WHMCS's own key
    product: str
    primaryip: str
    created: str = Field(pattern=r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)?$")
    status: Literal["Active", "Suspended"]


class AccountList(_Answer):
    accounts: list[SyncAccount]
    page: int | None = Field(default=None, description="only when the request named a page")
    next_page: int | None = Field(default=None, description="null on the last page (paged requests only)")


class UserGroups(_Answer):
    groups: dict[str, str] = Field(description="ComputeStacks user group id -> display name")


class ConnectionOk(_Answer):
    message: str | None = None


class Credit(_Answer):
    credited: str = Field(pattern=r"^\d+\.\d{2}$")
    currency: str


class UsernameSync(_Answer):
    updated: bool = Field(description="true when a WHMCS service username was changed to the ComputeStacks email")


class Unsuspended(_Answer):
    unsuspended: list[int] = Field(description="the services whose overdue-usage suspension (made by this backend) "
                                               "was lifted with ModuleUnsuspend; [] when nothing was due")


class ApiError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    result: Literal["error"]
    message: str = Field(description="one human sentence, no secrets, no stack trace")
    code: str


class NoParams(BaseModel):
    """Server-level params only; the body may carry the module's $params (ignored)."""

    model_config = ConfigDict(extra="allow")


class WebhookUser(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int = Field(gt=0, description="the one field the backend trusts; every other field is ignored")


class CsUserWebhook(BaseModel):
    """ComputeStacks' own rendering of the user (``GET /api/admin/users/:id``'s body). The backend reads the
    user back from ComputeStacks; a body without ``user.id`` (ComputeStacks 9.3.1 posts none) is 400."""

    model_config = ConfigDict(extra="allow")
    user: WebhookUser


@dataclass(frozen=True)
class RouteContract:
    path: str
    whmcs_function: str
    request: type[BaseModel]
    response: type[BaseModel]
    statuses: tuple[int, ...]
    # "signature": API.md section 1's headers; "token": the ``token`` query parameter (/v1/hooks/cs-user only)
    auth: Literal["signature", "token"] = "signature"


_ACCOUNT = (400, 401, 404, 422, 502, 504)
ROUTES: dict[str, RouteContract] = {r.path: r for r in (
    RouteContract("/v1/accounts/create", "CreateAccount", CreateParams, Created, (400, 401, 409, 422, 502, 504)),
    RouteContract("/v1/accounts/suspend", "SuspendAccount", ServiceParams, Done, _ACCOUNT),
    RouteContract("/v1/accounts/unsuspend", "UnsuspendAccount", ServiceParams, Done, _ACCOUNT),
    RouteContract("/v1/accounts/terminate", "TerminateAccount", ServiceParams, Done, _ACCOUNT),
    RouteContract("/v1/accounts/change-password", "ChangePassword", PasswordParams, Done, _ACCOUNT),
    RouteContract("/v1/accounts/change-package", "ChangePackage", ServiceParams, Done, _ACCOUNT),
    RouteContract("/v1/accounts/sso", "ServiceSingleSignOn", ServiceParams, SingleSignOn, _ACCOUNT),
    RouteContract("/v1/accounts/overview", "ClientArea, AdminServicesTabFields", ServiceParams, Overview, _ACCOUNT),
    RouteContract("/v1/accounts/list", "ListAccounts", SyncPage, AccountList, (400, 401, 422, 502, 504)),
    RouteContract("/v1/user-groups", "the configoption1 Loader", NoParams, UserGroups, (400, 401, 502, 504)),
    RouteContract("/v1/connection/test", "TestConnection", NoParams, ConnectionOk, (400, 401, 502, 504)),
    RouteContract("/v1/hooks/order-paid", "the OrderPaid hook", OrderPaidParams, Credit,
                  (400, 401, 409, 422, 502, 504)),
    RouteContract("/v1/hooks/invoice-paid", "the InvoicePaid hook", InvoicePaidParams, Unsuspended,
                  (400, 401, 422, 502, 504)),
    RouteContract("/v1/hooks/cs-user", "ComputeStacks' webhook_users", CsUserWebhook, UsernameSync,
                  (400, 401, 422, 502, 504), auth="token"),
)}

_STATUS_TEXT = {400: "the body is not a JSON object, or too large",
                401: "signature missing, wrong, stale or replayed",
                404: "the service has no ComputeStacks account",
                409: "a conflicting state",
                422: "a field is missing or invalid, or ComputeStacks rejected the data",
                502: "ComputeStacks or WHMCS answered with an error",
                504: "ComputeStacks or WHMCS did not answer in time"}
# What differs on the token-authenticated route.
_TOKEN_STATUS_TEXT = {400: "the body is not a JSON object, or too large, or has no user.id (code no_user_id)",
                      401: "the token query parameter is missing or wrong, or CS_WEBHOOK_TOKEN is not set"}


def openapi() -> dict[str, Any]:
    models: list[type[BaseModel]] = [ApiError]
    for r in ROUTES.values():
        models += [r.request, r.response]
    unique = list(dict.fromkeys(models))
    _, schemas = models_json_schema([(m, "validation") for m in unique],
                                    ref_template="#/components/schemas/{model}")
    ref = "#/components/schemas/{}".format
    signed = [
        {"name": "X-CSW-Timestamp", "in": "header", "required": True, "schema": {"type": "string"},
         "description": "Unix time in whole seconds (within 300 s of the server's clock)"},
        {"name": "X-CSW-Signature", "in": "header", "required": True, "schema": {"type": "string"},
         "description": 'v1= + hex HMAC-SHA256(secret, "<timestamp>.<route>.<raw body>")'},
    ]
    # The one unsigned route: ComputeStacks cannot sign its webhooks, so the X-CSW-* headers are not read there.
    token_scheme = {"type": "apiKey", "in": "query", "name": "token",
                    "description": "CS_WEBHOOK_TOKEN, compared in constant time (401 when missing or wrong, and "
                                   "for every request while CS_WEBHOOK_TOKEN is unset)"}
    paths: dict[str, Any] = {}
    for r in ROUTES.values():
        texts = {**_STATUS_TEXT, **_TOKEN_STATUS_TEXT} if r.auth == "token" else _STATUS_TEXT
        responses: dict[str, Any] = {"200": {"description": "success", "content": {
            "application/json": {"schema": {"$ref": ref(r.response.__name__)}}}}}
        for status in r.statuses:
            responses[str(status)] = {"description": texts[status], "content": {
                "application/json": {"schema": {"$ref": ref("ApiError")}}}}
        paths[r.path] = {"post": {
            "summary": f"WHMCS {r.whmcs_function}" if r.auth == "signature" else r.whmcs_function,
            "operationId": r.path.strip("/").replace("/", "_").replace("-", "_"),
            **({"parameters": signed} if r.auth == "signature" else {"security": [{"webhookToken": []}]}),
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": ref(r.request.__name__)}}}},
            "responses": responses,
        }}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ComputeStacks integration for WHMCS", "version": "1",
                 "description": "The signed API the WHMCS module calls, and ComputeStacks' users webhook "
                                "(token-authenticated) (../shared/API.md is binding)."},
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {}), "securitySchemes": {"webhookToken": token_scheme}},
    }
