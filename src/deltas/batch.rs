//! Collecting one transaction's deltas, coalescing them, and writing them to
//! the outbox inside that transaction.
//!
//! Within one [`DeltaBatch`] the same appointment's changes become its last
//! one (created+updated → created with the latest data; created+deleted →
//! nothing; updated+deleted → deleted). When more than the bulk threshold of
//! one user's appointments survive coalescing, that user gets a single `plan`
//! delta instead. Each emitted delta bumps `users.plan_version` by one; a
//! change that coalesces away bumps nothing.

use std::collections::{BTreeMap, HashMap};

use sqlx::PgConnection;

use super::{AppointmentPayload, DeltaAction, PlanItemDelta};
use crate::ids::{AppointmentId, UserId};
use crate::store::{self, StoreError};

#[derive(Debug, Clone)]
enum Pending {
    Created(AppointmentPayload),
    Updated(AppointmentPayload),
    Deleted,
}

#[derive(Debug, Default)]
struct UserChanges {
    /// First-seen order, so deltas come out in the order changes were made.
    order: Vec<AppointmentId>,
    items: HashMap<AppointmentId, Option<Pending>>,
}

impl UserChanges {
    fn record(&mut self, id: AppointmentId, change: Pending) {
        let slot = self.items.entry(id).or_insert_with(|| {
            self.order.push(id);
            None
        });
        *slot = match (slot.take(), change) {
            (None, change) => Some(change),
            (Some(Pending::Created(_)), Pending::Updated(p) | Pending::Created(p)) => {
                Some(Pending::Created(p))
            }
            // Created and gone within one transaction: nobody ever saw it.
            (Some(Pending::Created(_)), Pending::Deleted) => None,
            (Some(_), change) => Some(change),
        };
    }
}

/// The deltas of one transaction, per user.
#[derive(Debug, Default)]
pub struct DeltaBatch {
    users: BTreeMap<UserId, UserChanges>,
}

impl DeltaBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn created(&mut self, appointment: AppointmentPayload) {
        let (user, id) = (appointment.user_id, appointment.id);
        self.users
            .entry(user)
            .or_default()
            .record(id, Pending::Created(appointment));
    }

    pub fn updated(&mut self, appointment: AppointmentPayload) {
        let (user, id) = (appointment.user_id, appointment.id);
        self.users
            .entry(user)
            .or_default()
            .record(id, Pending::Updated(appointment));
    }

    pub fn deleted(&mut self, user: UserId, id: AppointmentId) {
        self.users
            .entry(user)
            .or_default()
            .record(id, Pending::Deleted);
    }

    /// The coalesced deltas per user, without versions yet. Users whose
    /// changes all coalesced away are absent.
    pub fn into_deltas(self, bulk_threshold: usize) -> Vec<(UserId, Vec<PlanItemDelta>)> {
        let mut out = Vec::new();
        for (user, mut changes) in self.users {
            let deltas: Vec<PlanItemDelta> = changes
                .order
                .iter()
                .filter_map(|id| changes.items.remove(id).flatten().map(|p| (*id, p)))
                .map(|(id, pending)| match pending {
                    Pending::Created(p) => {
                        PlanItemDelta::appointment_upsert(DeltaAction::Created, 0, p)
                    }
                    Pending::Updated(p) => {
                        PlanItemDelta::appointment_upsert(DeltaAction::Updated, 0, p)
                    }
                    Pending::Deleted => PlanItemDelta::appointment_deleted(id, 0),
                })
                .collect();
            if deltas.is_empty() {
                continue;
            }
            let deltas = if deltas.len() > bulk_threshold {
                vec![PlanItemDelta::plan_updated(0)]
            } else {
                deltas
            };
            out.push((user, deltas))
        }
        out
    }

    /// Writes the coalesced deltas to the outbox on `conn` (the caller's
    /// transaction), bumping each user's `plan_version`. Returns each user's
    /// new version.
    pub async fn write(
        self,
        conn: &mut PgConnection,
        bulk_threshold: usize,
    ) -> Result<Vec<(UserId, i64)>, StoreError> {
        let mut versions = Vec::new();
        for (user, mut deltas) in self.into_deltas(bulk_threshold) {
            let version = append(conn, user, &mut deltas).await?;
            versions.push((user, version));
        }
        Ok(versions)
    }
}

/// Appends `deltas` of `user` to the outbox in the caller's transaction,
/// stamping each with the version the outbox reserved for it (one bump each,
/// in order). Returns the user's new `plan_version`.
pub(super) async fn append(
    conn: &mut PgConnection,
    user: UserId,
    deltas: &mut [PlanItemDelta],
) -> Result<i64, StoreError> {
    store::outbox::append(conn, user, deltas.len(), |i, version| {
        deltas[i].version = Some(version);
        serde_json::to_string(&deltas[i]).expect("deltas serialize")
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deltas::ItemType;
    use chrono::{TimeZone, Utc};

    fn payload(id: i64, user: i64, summary: &str) -> AppointmentPayload {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        AppointmentPayload {
            id: AppointmentId(id),
            user_id: UserId(user),
            summary: summary.into(),
            description: None,
            location: None,
            start_at: t,
            end_at: t,
            start_time_zone: None,
            end_time_zone: None,
            all_day: false,
            created_at: t,
            updated_at: t,
            google_sync: None,
        }
    }

    fn summary(delta: &PlanItemDelta) -> &str {
        &delta
            .data
            .as_ref()
            .unwrap()
            .appointment
            .as_ref()
            .unwrap()
            .summary
    }

    #[test]
    fn created_then_updated_is_created_with_the_latest_data() {
        let mut batch = DeltaBatch::new();
        batch.created(payload(1, 7, "first"));
        batch.updated(payload(1, 7, "second"));
        let out = batch.into_deltas(50);
        assert_eq!(out.len(), 1);
        let deltas = &out[0].1;
        assert_eq!(deltas.len(), 1);
        assert_eq!(deltas[0].action, DeltaAction::Created);
        assert_eq!(summary(&deltas[0]), "second");
    }

    #[test]
    fn created_then_deleted_is_nothing_at_all() {
        let mut batch = DeltaBatch::new();
        batch.created(payload(1, 7, "x"));
        batch.deleted(UserId(7), AppointmentId(1));
        assert!(batch.into_deltas(50).is_empty());
    }

    #[test]
    fn updates_then_delete_is_a_delete_and_order_is_first_seen() {
        let mut batch = DeltaBatch::new();
        batch.updated(payload(2, 7, "a"));
        batch.updated(payload(3, 7, "b"));
        batch.updated(payload(2, 7, "a2"));
        batch.deleted(UserId(7), AppointmentId(3));
        let out = batch.into_deltas(50);
        let deltas = &out[0].1;
        assert_eq!(deltas.len(), 2);
        assert_eq!(
            (deltas[0].entity_id, deltas[0].action),
            (2, DeltaAction::Updated)
        );
        assert_eq!(summary(&deltas[0]), "a2");
        assert_eq!(
            (deltas[1].entity_id, deltas[1].action),
            (3, DeltaAction::Deleted)
        );
        assert!(deltas[1].data.is_none());
    }

    #[test]
    fn more_than_the_threshold_becomes_one_plan_delta_per_user() {
        let mut batch = DeltaBatch::new();
        for id in 0..4 {
            batch.created(payload(id, 1, "bulk"));
        }
        batch.created(payload(100, 2, "small"));
        let out = batch.into_deltas(3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].1.len(), 1);
        assert_eq!(out[0].1[0].item_type, ItemType::Plan);
        assert_eq!(out[0].1[0].entity_id, 0);
        assert_eq!(out[1].1.len(), 1);
        assert_eq!(out[1].1[0].item_type, ItemType::Appointment);
    }
}
