"""ComputeStacks <-> WHMCS integration: the shared package every Lambda function imports."""

__version__ = "0.2.0"  # the same as pyproject.toml and CHANGELOG.md
