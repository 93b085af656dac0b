/** Counters, under the names the Rust crate exports, so one dashboard serves every language. */

/** What a cache counted since it was built (the Rust crate's `Stats` fields, camelCase). */
export interface Stats {
  l1Hits: number;
  l2Hits: number;
  misses: number;
  waited: number;
  staleServed: number;
  loaderCalls: number;
  loaderErrors: number;
  loaderTimeouts: number;
  backgroundRefreshes: number;
  l2Errors: number;
  decodeErrors: number;
  oversized: number;
  fillsFenced: number;
  leaseWaits: number;
  l1Bypassed: number;
  invalidationsSent: number;
  invalidationsReceived: number;
  resyncs: number;
  logErrors: number;
  writesUnacknowledged: number;
}

export function newStats(): Stats {
  return {
    l1Hits: 0,
    l2Hits: 0,
    misses: 0,
    waited: 0,
    staleServed: 0,
    loaderCalls: 0,
    loaderErrors: 0,
    loaderTimeouts: 0,
    backgroundRefreshes: 0,
    l2Errors: 0,
    decodeErrors: 0,
    oversized: 0,
    fillsFenced: 0,
    leaseWaits: 0,
    l1Bypassed: 0,
    invalidationsSent: 0,
    invalidationsReceived: 0,
    resyncs: 0,
    logErrors: 0,
    writesUnacknowledged: 0,
  };
}

const METRICS: Record<keyof Stats, [string, string | null]> = {
  l1Hits: ["strata_hits_total", "l1"],
  l2Hits: ["strata_hits_total", "l2"],
  misses: ["strata_misses_total", null],
  waited: ["strata_waited_total", null],
  staleServed: ["strata_stale_served_total", null],
  loaderCalls: ["strata_loader_calls_total", null],
  loaderErrors: ["strata_loader_errors_total", null],
  loaderTimeouts: ["strata_loader_timeouts_total", null],
  backgroundRefreshes: ["strata_background_refreshes_total", null],
  l2Errors: ["strata_l2_errors_total", null],
  decodeErrors: ["strata_decode_errors_total", null],
  oversized: ["strata_oversized_total", null],
  fillsFenced: ["strata_fills_fenced_total", null],
  leaseWaits: ["strata_lease_waits_total", null],
  l1Bypassed: ["strata_l1_bypassed_total", null],
  invalidationsSent: ["strata_invalidations_sent_total", null],
  invalidationsReceived: ["strata_invalidations_received_total", null],
  resyncs: ["strata_resyncs_total", null],
  logErrors: ["strata_log_errors_total", null],
  writesUnacknowledged: ["strata_writes_unacknowledged_total", null],
};

/** The counters in Prometheus' text format, labelled with `namespace`. */
export function prometheus(stats: Stats, namespace: string): string {
  const lines: string[] = [];
  const typed = new Set<string>();
  for (const [field, [metric, level]] of Object.entries(METRICS) as [keyof Stats, [string, string | null]][]) {
    if (!typed.has(metric)) {
      typed.add(metric);
      lines.push(`# TYPE ${metric} counter`);
    }
    const labels = `namespace="${namespace}"` + (level ? `,level="${level}"` : "");
    lines.push(`${metric}{${labels}} ${stats[field]}`);
  }
  return lines.join("\n") + "\n";
}
