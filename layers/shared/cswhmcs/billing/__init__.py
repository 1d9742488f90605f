"""Month-end usage billing: ComputeStacks usage rows -> WHMCS billable items, exactly once.

Design and arithmetic: docs/billing.md. Entry points: ``planner.plan_run`` and ``worker.process_account``
(Lambda: ``handlers``; in-process: ``run.run_billing``; operators: ``cli``).
"""
