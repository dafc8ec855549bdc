//! The job queue's guarantees (src/queue/mod.rs) and the appointment
//! triggers that feed it, on real PostgreSQL.

mod claims;
mod retries;
mod triggers;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plansync::ids::{AppointmentId, ConnectionId, JobId};
use plansync::queue::{Job, JobError, JobKind, Queue, Transition};
use plansync::worker::{JobContext, Worker};

use crate::harness::jobs::{
    add_connection, eventually, job_state, queue_settings, worker_config, FnHandler,
};
use crate::harness::{count, status_json, stderr, stdout, TestApp};
