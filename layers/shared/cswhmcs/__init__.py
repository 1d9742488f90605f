"""ComputeStacks <-> WHMCS integration: the shared package every Lambda function imports."""
