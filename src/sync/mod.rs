//! Sync in both directions: `pull` (Google → appointments), `push`
//! (appointments → Google) and `reconcile`, the pure decisions both share.

pub mod reconcile;
