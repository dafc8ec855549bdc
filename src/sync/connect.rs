//! Registering a calendar connection (the `connect` command's work): the
//! connection's rows and first full sync ([`store::connections::connect`]),
//! and, when a re-authorisation repairs a broken link, the delta that tells
//! its user — one transaction, so the repair and its announcement commit
//! together.

use sqlx::PgPool;

use crate::deltas;
use crate::store::connections::{self, ConnectOutcome, NewConnection};
use crate::store::StoreError;

/// Registers a connection, or re-authorises an existing (user, calendar); see
/// [`store::connections::connect`].
///
/// [`store::connections::connect`]: crate::store::connections::connect
pub async fn connect(pool: &PgPool, new: NewConnection<'_>) -> Result<ConnectOutcome, StoreError> {
    let mut tx = crate::store::begin(pool).await?;
    let outcome = connections::connect(&mut tx, new).await?;
    deltas::announce_link_change(&mut tx, outcome.id).await?;
    tx.commit().await?;
    Ok(outcome)
}
