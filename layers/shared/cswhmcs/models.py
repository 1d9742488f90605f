"""The WHMCS module ``$params`` (as JSON) and the order-paid hook body, as pydantic models.

Validation errors become ``InvalidInput`` naming the field (API.md section 2, status 422).

Every number a model accepts is bounded: WHMCS ids are MySQL ``INT(10)`` (at most 2,147,483,647), so a
hostile ``1e400``, a 40-digit id, ``NaN`` or ``Infinity`` is a 422 here and never reaches DynamoDB's
serializer or an upstream (cswhmcs.jsonbody keeps such literals exact so these bounds can see them).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cswhmcs.errors import InvalidInput

MAX_ID = 2**31 - 1  # WHMCS ids (tblhosting.id, tblclients.id, tblorders.id, ...) are signed INT(10)
Id = Annotated[int, Field(gt=0, le=MAX_ID)]
# Optional ids: WHMCS sends 0 (or "") for "none".
OptionalId = Annotated[int, Field(ge=0, le=MAX_ID)]


class ClientDetails(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    client_id: OptionalId | None = None
    userid: OptionalId | None = None
    id: OptionalId | None = None
    firstname: str = ""
    lastname: str = ""
    companyname: str = ""
    email: str = ""
    address1: str = ""
    address2: str = ""
    city: str = ""
    state: str = ""
    fullstate: str = ""
    postcode: str = ""
    country: str = ""
    countrycode: str = ""
    phonenumber: str = ""
    phonenumberformatted: str = ""
    telephoneNumber: str = ""  # noqa: N815 - WHMCS's own key
    tax_id: str = ""
    currency: OptionalId | None = None
    currency_code: str = ""

    @field_validator("client_id", "userid", "id", "currency", mode="before")
    @classmethod
    def _blank_int(cls, v: Any) -> Any:
        return None if v in ("", None) else v

    def the_client_id(self) -> int | None:
        return self.client_id or self.userid or self.id


class ServiceParams(BaseModel):
    """What every account route needs: the service id. Everything else is optional here."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    serviceid: Id
    userid: OptionalId | None = None
    pid: OptionalId | None = None
    username: str = ""
    domain: str = ""
    status: str = ""
    configoption1: str = ""
    configoption2: str = ""
    serverhostname: str = ""
    clientsdetails: ClientDetails | None = None

    @field_validator("userid", "pid", mode="before")
    @classmethod
    def _blank_int(cls, v: Any) -> Any:
        return None if v in ("", None) else v

    def client_id(self) -> int | None:
        if self.clientsdetails is not None and self.clientsdetails.the_client_id():
            return self.clientsdetails.the_client_id()
        return self.userid


class CreateParams(ServiceParams):
    clientsdetails: ClientDetails
    password: str = ""


class PasswordParams(ServiceParams):
    password: str = Field(min_length=1)


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="ignore")
    serviceid: Id
    apply_credit: bool = True


class OrderPaidParams(BaseModel):
    model_config = ConfigDict(extra="ignore")
    orderId: Id  # noqa: N815 - the WHMCS hook's own names
    invoiceId: Id  # noqa: N815
    userId: Id  # noqa: N815
    lines: list[OrderLine] | None = Field(default=None, max_length=1000)


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], payload: dict[str, Any]) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "missing":
            msg = f"The field '{field}' is required."
        else:
            # pydantic's message names the problem; never echo the value (it may be a password).
            msg = f"The field '{field}' is invalid: {err['msg'].lower()}."
        raise InvalidInput(msg, field=field) from None
