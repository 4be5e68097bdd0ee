"""Migration metrics from query-migrate (guestperf-style names)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class MigrationMetrics:
    status: str = ""
    setup_time_ms: int | None = None
    total_time_ms: int | None = None
    downtime_ms: int | None = None
    transferred_bytes: int | None = None
    throughput_mbps: float | None = None   # megabits/s, as QEMU reports
    dirty_sync_count: int | None = None
    ram_total_bytes: int | None = None
    precopy_bytes: int | None = None
    postcopy_bytes: int | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_query_migrate(cls, info: dict) -> "MigrationMetrics":
        ram = info.get("ram", {})
        return cls(status=info.get("status", ""), setup_time_ms=info.get("setup-time"),
                   total_time_ms=info.get("total-time"), downtime_ms=info.get("downtime"),
                   transferred_bytes=ram.get("transferred"), throughput_mbps=ram.get("mbps"),
                   dirty_sync_count=ram.get("dirty-sync-count"), ram_total_bytes=ram.get("total"),
                   precopy_bytes=ram.get("precopy-bytes"), postcopy_bytes=ram.get("postcopy-bytes"))

    def to_dict(self) -> dict:
        return asdict(self)


def write_metrics(path: Path, data: dict) -> None:
    existing = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            existing = {}
    existing.update(data)
    path.write_text(json.dumps(existing, indent=2, default=str) + "\n")
