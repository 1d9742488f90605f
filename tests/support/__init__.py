"""Helpers and fakes the tests share (test modules import from here, never from each other).

* ``billing``: the worker's moto world (``world`` fixture), in-memory ComputeStacks/WHMCS fakes and the
  billing receiver fake; they implement ``cswhmcs.ports`` (checked by mypy at the end of the module).
* ``billing_stack``: ``BillingStack``, month-end billing against the sandboxes, and a seeded month.
* ``cs_http``: the ComputeStacks client on a scripted transport, a rotating ``CredentialSource``.
* ``endpoints``: ``Silent``, an endpoint that never answers (AWS timeouts).
* ``live``: the module's request parameters and seeds for the live stack (``tests.conftest.LiveStack``).
* ``php_module``: running the PHP module's driver, and the recording backend it talks to.

A fixture imported from here is listed in the test module's ``__all__`` (pytest finds it by name).
"""
