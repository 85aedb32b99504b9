"""Failover functions written the way teams write them for real AWS Lambda (not for gameday),
rehearsed unchanged by pointing failover.handler / failover.code_dir at them (docs/failover.md)."""
