//! plansync keeps users' Google Calendars and the host application's
//! `appointments` table in step both ways, and tells the realtime layer about
//! every change it makes through Redis.
//!
//! The modules follow the data flow of `DESIGN.md`: `config` feeds everything;
//! `store` owns every SQL statement; `deltas` owns the payload the realtime
//! layer consumes. Later layers (the Google boundary, the queue, sync, the
//! worker) build on these and only ever talk to their neighbours.

pub mod channel;
pub mod config;
pub mod crypto;
pub mod deltas;
pub mod google;
pub mod ids;
pub mod job;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod quota;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod text;
pub mod worker;
