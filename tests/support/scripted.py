"""Scripted answers for ``httpx.MockTransport`` handlers in the clients' unit tests."""

from __future__ import annotations

from typing import Any

import httpx


def next_answer(answers: list[Any], request: httpx.Request) -> httpx.Response:
    """The script's answer to ``request``: its entries in turn, the last one for every request after; an
    exception entry is raised, a callable one is called with the request."""
    answer = answers.pop(0) if len(answers) > 1 else answers[0]
    if isinstance(answer, Exception):
        raise answer
    if callable(answer) and not isinstance(answer, httpx.Response):
        response: httpx.Response = answer(request)
        return response
    response = answer
    return response
