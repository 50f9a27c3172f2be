"""One attempt of one job: the step runner, attempt records, resources, circuit breaker."""
