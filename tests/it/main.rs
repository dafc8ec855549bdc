//! Integration tests: one binary, so the crate and its dependencies are linked
//! once. Each test gets its own database and Redis prefix from [`harness`].

mod harness;

mod budgets;
mod catch_up;
mod contract;
mod delegation;
mod deltas;
mod fake_google;
mod faults;
mod features;
mod foundation;
mod google_client;
mod hostile;
mod keep_db;
mod notifications;
mod ops;
mod pool;
mod pull;
mod push;
mod queue;
mod queue_scale;
mod quota;
mod realtime;
mod realtime_streams;
mod redis_tls;
mod replay;
mod sim;
mod worker;
