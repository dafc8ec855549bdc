// TypeScript types of what plansync publishes, mirroring
// plan-item-delta.schema.json (same names as its $defs). They narrow the
// seed contract's PlanItemDelta to what this worker emits: every delta has
// `version` and `source: 'google'`, and `itemType`/`action` select its shape.
// Checked against the schema by the integration tests (tests/it/contract.rs).

/** RFC 3339 UTC with milliseconds, as `Date.prototype.toISOString()` prints. */
export type Timestamp = string;

export interface GoogleSync {
  calendarId: string;
  eventId: string;
  etag: string | null;
  remoteUpdatedAt: Timestamp | null;
}

/** An appointments row: every key present, `null` where the column is NULL. */
export interface AppointmentPayload {
  id: number;
  userId: number;
  summary: string;
  description: string | null;
  location: string | null;
  startAt: Timestamp;
  endAt: Timestamp;
  startTimeZone: string | null;
  endTimeZone: string | null;
  allDay: boolean;
  createdAt: Timestamp;
  updatedAt: Timestamp;
  googleSync: GoogleSync | null;
}

/** The state of one of the user's calendar connections. */
export interface Connection {
  id: number;
  calendarId: string;
  needsReauth: boolean;
  calendarGone: boolean;
  lastError: string | null;
}

interface DeltaBase {
  /** users.plan_version after this change (gaps are the host's own bumps). */
  version: number;
  source: 'google';
}

/** An appointment created or updated; `entityId === data.appointment.id`. */
export interface AppointmentUpsertDelta extends DeltaBase {
  itemType: 'appointment';
  entityId: number;
  action: 'created' | 'updated';
  data: { appointment: AppointmentPayload };
}

/** An appointment deleted: no `data`. */
export interface AppointmentDeletedDelta extends DeltaBase {
  itemType: 'appointment';
  entityId: number;
  action: 'deleted';
}

/** The bulk fallback: reload the whole plan. */
export interface PlanReloadDelta extends DeltaBase {
  itemType: 'plan';
  entityId: 0;
  action: 'updated';
}

/** The user's Google link broke or recovered: refresh that section. */
export interface GoogleLinkDelta extends DeltaBase {
  itemType: 'plan';
  entityId: 0;
  action: 'updated';
  data: { section: 'google-calendar'; connection: Connection };
}

export type PlanItemDelta =
  | AppointmentUpsertDelta
  | AppointmentDeletedDelta
  | PlanReloadDelta
  | GoogleLinkDelta;

/** The Socket.IO `plan:item-delta` payload. */
export interface PlanItemDeltaPayload {
  deltas: PlanItemDelta[];
}

/** The message on `{PLANSYNC_REDIS_PREFIX}plan-deltas:user:<userId>`. */
export interface UserDeltaMessage {
  userId: number;
  deltas: PlanItemDelta[];
}

/** 200 of `GET /users/{id}/deltas?after=N` and stdout of `plansync deltas`. */
export interface CatchUpAnswer {
  userId: number;
  planVersion: number;
  deltas: PlanItemDelta[];
}

/** 410 of `GET /users/{id}/deltas?after=N`: reload the plan. */
export interface CatchUpGone {
  planVersion: number;
}
