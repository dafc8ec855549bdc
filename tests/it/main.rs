//! Integration tests: one binary, so the crate and its dependencies are linked
//! once. Each test gets its own database and Redis prefix from [`harness`].

mod harness;

mod foundation;
mod queue;
mod worker;
