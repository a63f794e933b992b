"""The sensor: events (parse), rules (match triggers, completion), debounce (durable pending
versions) and the sensor proper (dedupe through claims, concurrency policies, dead letters)."""
