"""The dead-letter queue: database, entries, statistics, ingesting logs, change detection."""
