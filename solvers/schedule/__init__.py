"""The multi-period solver: replica schedules over a day of per-period demand (docs/schedule.md)."""
