"""Counters, under the names the Rust crate exports (``strata_hits_total{level="l1"}``, …), so
one dashboard and one set of alerts serve every language."""

from __future__ import annotations

from dataclasses import dataclass, replace

# field → (metric, level label)
_METRICS: dict[str, tuple[str, str | None]] = {
    "l1_hits": ("strata_hits_total", "l1"),
    "l2_hits": ("strata_hits_total", "l2"),
    "misses": ("strata_misses_total", None),
    "waited": ("strata_waited_total", None),
    "stale_served": ("strata_stale_served_total", None),
    "loader_calls": ("strata_loader_calls_total", None),
    "loader_errors": ("strata_loader_errors_total", None),
    "loader_timeouts": ("strata_loader_timeouts_total", None),
    "background_refreshes": ("strata_background_refreshes_total", None),
    "l2_errors": ("strata_l2_errors_total", None),
    "decode_errors": ("strata_decode_errors_total", None),
    "oversized": ("strata_oversized_total", None),
    "fills_fenced": ("strata_fills_fenced_total", None),
    "lease_waits": ("strata_lease_waits_total", None),
    "l1_bypassed": ("strata_l1_bypassed_total", None),
    "invalidations_sent": ("strata_invalidations_sent_total", None),
    "invalidations_received": ("strata_invalidations_received_total", None),
    "resyncs": ("strata_resyncs_total", None),
    "log_errors": ("strata_log_errors_total", None),
    "writes_unacknowledged": ("strata_writes_unacknowledged_total", None),
}


@dataclass
class Stats:
    """What a cache counted since it was built (the Rust crate's ``Stats`` fields)."""

    l1_hits: int = 0
    l2_hits: int = 0
    misses: int = 0
    waited: int = 0
    stale_served: int = 0
    loader_calls: int = 0
    loader_errors: int = 0
    loader_timeouts: int = 0
    background_refreshes: int = 0
    l2_errors: int = 0
    decode_errors: int = 0
    oversized: int = 0
    fills_fenced: int = 0
    lease_waits: int = 0
    l1_bypassed: int = 0
    invalidations_sent: int = 0
    invalidations_received: int = 0
    resyncs: int = 0
    log_errors: int = 0
    writes_unacknowledged: int = 0

    def copy(self) -> Stats:
        return replace(self)

    def prometheus(self, namespace: str) -> str:
        """The counters in Prometheus' text format, labelled with ``namespace``."""
        lines: list[str] = []
        typed: set[str] = set()
        for name, (metric, level) in _METRICS.items():
            if metric not in typed:
                typed.add(metric)
                lines.append(f"# TYPE {metric} counter")
            labels = f'namespace="{namespace}"' + (f',level="{level}"' if level else "")
            lines.append(f"{metric}{{{labels}}} {getattr(self, name)}")
        return "\n".join(lines) + "\n"
