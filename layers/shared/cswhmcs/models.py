"""The WHMCS module ``$params`` (as JSON) and the order-paid hook body, as pydantic models.

Validation errors become ``InvalidInput`` naming the field (API.md section 2, status 422).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cswhmcs.errors import InvalidInput


class ClientDetails(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    client_id: int | None = None
    userid: int | None = None
    id: int | None = None
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
    currency: int | None = None
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

    serviceid: int = Field(gt=0)
    userid: int | None = None
    pid: int | None = None
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
    serviceid: int = Field(gt=0)
    apply_credit: bool = True


class OrderPaidParams(BaseModel):
    model_config = ConfigDict(extra="ignore")
    orderId: int = Field(gt=0)  # noqa: N815 - the WHMCS hook's own names
    invoiceId: int = Field(gt=0)  # noqa: N815
    userId: int = Field(gt=0)  # noqa: N815
    lines: list[OrderLine] | None = None


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
