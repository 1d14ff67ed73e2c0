// Writing data points: never more than 250 writeDataPoint calls in one invocation, and the
// Worker's own health, accumulated in the isolate and written when there is room.
import { encodeEvent, type Point } from "./encode";
import { dataset, type Env, type Invocation } from "./env";
import { LAYOUT, validateEvent } from "./validate";

export const MAX_POINTS = LAYOUT.limits.points_per_invocation;

export function writePoints(env: Env, inv: Invocation, points: Point[]): void {
  if (inv.written + points.length > MAX_POINTS) {
    throw new Error(`refusing to write ${points.length} points: ${inv.written} already written in this invocation`);
  }
  for (const p of points) {
    dataset(env, p.dataset).writeDataPoint({ indexes: [p.index1], blobs: p.blobs, doubles: p.doubles });
    inv.written++;
  }
}

const health = { eventsIn: 0, accepted: 0, rejected: 0, requests: 0, executionMs: 0, lastFlush: -1 };

export function countHealth(eventsIn: number, accepted: number, rejected: number): void {
  health.eventsIn += eventsIn;
  health.accepted += accepted;
  health.rejected += rejected;
}

/** Close an invocation: time it, and write a pipeline_health point when due and room is left. */
export async function finishInvocation(env: Env, inv: Invocation): Promise<void> {
  const now = Date.now();
  health.requests++;
  health.executionMs += now - inv.started;
  // The window starts at the isolate's first invocation (Date.now() is frozen in global scope).
  if (health.lastFlush < 0) health.lastFlush = inv.started;
  const interval = Number(env.HEALTH_INTERVAL_S ?? "60") * 1000;
  if (now - health.lastFlush < interval || inv.written >= MAX_POINTS) return;
  const result = validateEvent(
    {
      type: "pipeline_health",
      source: "worker",
      timestamp: now, // ms: a number over 2e10 reads as milliseconds
      events_in: health.eventsIn,
      events_exported: health.accepted,
      rejected: health.rejected,
      batches: health.requests,
      batch_size_avg: health.eventsIn / health.requests,
      execution_ms: health.executionMs / health.requests,
    },
    now,
  );
  if (!result.ok) throw new Error(`pipeline_health invalid: ${JSON.stringify(result.errors)}`);
  writePoints(env, inv, [await encodeEvent(result.event)]);
  Object.assign(health, { eventsIn: 0, accepted: 0, rejected: 0, requests: 0, executionMs: 0, lastFlush: now });
}
