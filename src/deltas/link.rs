//! The user's Google link as the realtime layer hears of it: when a
//! connection becomes needs-reauth or calendar-gone, or recovers, its user
//! gets one `plan` delta (section `google-calendar`, with the connection's
//! state), through the outbox, in the transaction that changed the state.
//!
//! The store decides whether there is news ([`store::connections::take_link_change`]
//! compares the state with what was last told); this module says it.

use sqlx::PgConnection;

use super::{ConnectionPayload, PlanItemDelta};
use crate::ids::ConnectionId;
use crate::store::connections::LinkChange;
use crate::store::{self, StoreError};

/// When the connection's needs-reauth / calendar-gone state differs from what
/// its user was last told, records it as told and appends the `plan` delta
/// that tells it, in the caller's transaction. Returns the delta's version,
/// `None` when there was nothing new to tell (e.g. another failure of an
/// already broken connection).
pub async fn announce_link_change(
    conn: &mut PgConnection,
    id: ConnectionId,
) -> Result<Option<i64>, StoreError> {
    let Some(state) = store::connections::take_link_change(conn, id).await? else {
        return Ok(None);
    };
    announce(conn, state).await.map(Some)
}

/// Tells the user of a state change the store has already recorded as told
/// (e.g. by `store::connections::finish_pull`), in the caller's transaction.
/// Returns the delta's version.
pub async fn announce(conn: &mut PgConnection, state: LinkChange) -> Result<i64, StoreError> {
    let id = state.id;
    let mut deltas = [PlanItemDelta::google_link(ConnectionPayload {
        id: state.id,
        calendar_id: state.calendar_id,
        needs_reauth: state.needs_reauth,
        calendar_gone: state.calendar_gone,
        last_error: state.last_error,
    })];
    let version = super::batch::append(conn, state.user_id, &mut deltas).await?;
    tracing::info!(
        connection = %id,
        user = %state.user_id,
        needs_reauth = state.needs_reauth,
        calendar_gone = state.calendar_gone,
        version,
        "google link state changed; user told"
    );
    Ok(version)
}
