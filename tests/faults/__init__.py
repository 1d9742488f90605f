"""Seeded fault schedules: provisioning, deposit credit and month-end billing driven through the real
handlers and worker against the sandboxes and DynamoDB Local, with faults injected per schedule
(README: `make test` runs a few hundred, `make soak` thousands)."""
