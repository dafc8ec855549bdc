//! Catch-up: the deltas this worker committed for a user after a version, for
//! a client that noticed a gap (versions are per user, so a gap is visible).
//!
//! Guarantees:
//! - The deltas are the outbox rows' JSON text, byte for byte as they are (or
//!   will be) published, in version order, published or not yet.
//! - Complete or refused: when `after` is below the highest version pruned for
//!   the user, some of the asked-for deltas are gone and the answer is
//!   [`CatchUpError::Gone`] with the current `plan_version` (the client
//!   reloads the plan). Rows, watermark and `plan_version` come from one
//!   snapshot, so a concurrent prune never yields a silently shortened list.
//! - Only the worker's deltas: the host bumps `plan_version` too, so gaps
//!   between the returned versions are normal.
//!
//! Served by `run`'s HTTP listener ([`crate::worker::api`]) and by
//! `plansync deltas`.

use sqlx::PgPool;

use crate::ids::UserId;
use crate::store::{self, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Some asked-for deltas were pruned: reload the plan (HTTP 410).
    #[error(
        "deltas after version {after} of user {user} are no longer kept (pruned up to version \
         {pruned_version}); reload the plan (planVersion {plan_version})"
    )]
    Gone {
        user: UserId,
        after: i64,
        pruned_version: i64,
        plan_version: i64,
    },
    /// No such user (HTTP 404).
    #[error("user {0} does not exist")]
    UnknownUser(UserId),
    /// `after` is not a version (HTTP 400).
    #[error("after must be a version (0 or more), not {0}")]
    InvalidAfter(i64),
    /// The database failed: try again.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The deltas of one user after a version.
#[derive(Debug, Clone)]
pub struct CatchUp {
    pub user_id: UserId,
    /// `users.plan_version` when read.
    pub plan_version: i64,
    /// JSON text of each delta, in version order.
    pub deltas: Vec<String>,
}

impl CatchUp {
    /// `{"userId":…,"planVersion":…,"deltas":[…]}`, the deltas spliced in as
    /// stored (they are valid JSON: the outbox column is of type JSON).
    pub fn to_json(&self) -> String {
        let len: usize = self.deltas.iter().map(|d| d.len() + 1).sum();
        let mut out = String::with_capacity(len + 64);
        out.push_str(&format!(
            "{{\"userId\":{},\"planVersion\":{},\"deltas\":[",
            self.user_id, self.plan_version
        ));
        for (i, delta) in self.deltas.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(delta);
        }
        out.push_str("]}");
        out
    }
}

/// The deltas of `user` with a version greater than `after`.
pub async fn catch_up(pool: &PgPool, user: UserId, after: i64) -> Result<CatchUp, CatchUpError> {
    if after < 0 {
        return Err(CatchUpError::InvalidAfter(after));
    }
    let rows = store::outbox::catch_up(pool, user, after)
        .await?
        .ok_or(CatchUpError::UnknownUser(user))?;
    if after < rows.pruned_version {
        return Err(CatchUpError::Gone {
            user,
            after,
            pruned_version: rows.pruned_version,
            plan_version: rows.plan_version,
        });
    }
    Ok(CatchUp {
        user_id: user,
        plan_version: rows.plan_version,
        deltas: rows.deltas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_splices_the_stored_deltas() {
        let answer = CatchUp {
            user_id: UserId(4),
            plan_version: 12,
            deltas: vec![
                r#"{"itemType":"plan","entityId":0,"action":"updated","version":9}"#.into(),
                r#"{"itemType":"appointment","entityId":3,"action":"deleted","version":11}"#.into(),
            ],
        };
        let value: serde_json::Value = serde_json::from_str(&answer.to_json()).unwrap();
        assert_eq!(value["userId"], 4);
        assert_eq!(value["planVersion"], 12);
        assert_eq!(value["deltas"][1]["version"], 11);
        let empty = CatchUp {
            deltas: vec![],
            ..answer
        };
        assert_eq!(
            empty.to_json(),
            r#"{"userId":4,"planVersion":12,"deltas":[]}"#
        );
    }
}
