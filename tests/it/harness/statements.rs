//! Counts what the worker sends to PostgreSQL for one job, from the worker's
//! own tracing events: sqlx logs every statement it executes (target
//! `sqlx::query`, with `rows_returned`), COMMIT and ROLLBACK included, but
//! not BEGIN (sqlx queues it without its logger), which the store's
//! `store::begin` reports on its own target. So the count is of statements
//! as sent, BEGIN/COMMIT and `SET LOCAL`-like statements included.
//!
//! A job's statements are those logged inside its `job` span, plus the claim
//! that handed it out and any batched completion that wrote it (both run
//! outside the span: a claim or a group commit serves several jobs). With
//! one job in the pass, that is exactly the job's cost. Heartbeats would
//! count too; a test job ends long before its first one (a third of the
//! lease).
//!
//! Recording goes through one global subscriber, installed by the first
//! recorder, interested only in what it counts (the statement events and the
//! `job` spans), which appends to the recording of the thread the event
//! happens on: a `#[tokio::test]` runtime runs every task on its test's
//! thread, so a recorder sees the worker's tasks and no other test's. (Not a
//! per-test `set_default`: tracing rebuilds callsite interest whenever a
//! subscriber is created, and a rebuild racing a callsite's first use on
//! another thread can leave that callsite muted for a while.)

use std::cell::RefCell;
use std::sync::{Arc, Mutex, Once};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

/// The target `plansync::store::begin` logs BEGIN on.
const BEGIN_TARGET: &str = "plansync::store::tx";

/// One statement as the worker sent it.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The whole SQL text (sqlx's summary when the text is one line).
    pub sql: String,
    pub rows_returned: u64,
    /// Logged inside a `job` span.
    pub in_job: bool,
}

impl Statement {
    fn is(&self, keyword: &str) -> bool {
        self.sql
            .trim_start()
            .to_ascii_uppercase()
            .starts_with(keyword)
    }

    pub fn is_begin(&self) -> bool {
        self.is("BEGIN")
    }

    fn ends_transaction(&self) -> bool {
        self.is("COMMIT") || self.is("ROLLBACK")
    }

    /// The queue's claim (it hands out fresh claim tokens).
    fn is_claim(&self) -> bool {
        self.sql.contains("claim_token = gen_random_uuid()")
    }

    /// A group commit of completions (`store::jobs::complete_many`).
    fn is_batched_completion(&self) -> bool {
        self.sql.contains("UNNEST") && self.sql.contains("state = 'succeeded'")
    }
}

/// What one job cost.
#[derive(Debug, Clone)]
pub struct JobCost {
    pub statements: Vec<Statement>,
}

impl JobCost {
    pub fn statements(&self) -> usize {
        self.statements.len()
    }

    /// BEGIN…COMMIT blocks, plus every statement sent outside one (each its
    /// own implicit transaction).
    pub fn transactions(&self) -> usize {
        let mut open = false;
        let mut count = 0;
        for s in &self.statements {
            if s.is_begin() {
                open = true;
                count += 1;
            } else if s.ends_transaction() {
                open = false;
            } else if !open {
                count += 1;
            }
        }
        count
    }

    /// The statements, one per line, for an assertion's message.
    pub fn listing(&self) -> String {
        self.statements
            .iter()
            .map(|s| {
                let one_line: String = s.sql.split_whitespace().collect::<Vec<_>>().join(" ");
                let mut shown: String = one_line.chars().take(140).collect();
                if shown.len() < one_line.len() {
                    shown.push('…');
                }
                format!("  {shown}\n")
            })
            .collect()
    }
}

/// Records statements until dropped (see the module doc).
pub struct StatementRecorder {
    log: Arc<Mutex<Vec<Statement>>>,
}

thread_local! {
    /// The recording of the test running on this thread, if any.
    static RECORDING: RefCell<Option<Arc<Mutex<Vec<Statement>>>>> = const { RefCell::new(None) };
}

impl StatementRecorder {
    /// Starts recording on this thread.
    pub async fn start() -> StatementRecorder {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            tracing::subscriber::set_global_default(Registry::default().with(Recorder))
                .expect("no other global subscriber in the test binary");
        });
        // Callsites first used while the subscriber was being installed may
        // have cached the interest of the moment before: ask again.
        tracing::callsite::rebuild_interest_cache();
        let log = Arc::new(Mutex::new(Vec::new()));
        RECORDING.with(|r| *r.borrow_mut() = Some(log.clone()));
        StatementRecorder { log }
    }

    /// Everything recorded so far.
    pub fn all(&self) -> Vec<Statement> {
        self.log.lock().unwrap().clone()
    }

    /// The one job's cost: its span's statements, the claim that returned
    /// it and any group commit, in the order sent. Panics when no claim (or
    /// more than one that returned jobs) was recorded: the pass must have run
    /// exactly one job for the count to mean anything.
    pub fn job_cost(&self) -> JobCost {
        let all = self.all();
        let claims = all
            .iter()
            .filter(|s| s.is_claim() && s.rows_returned > 0)
            .count();
        assert_eq!(
            claims,
            1,
            "expected exactly one claim that returned a job; recorded:\n{}",
            JobCost { statements: all }.listing()
        );
        JobCost {
            statements: all
                .into_iter()
                .filter(|s| {
                    s.in_job || (s.is_claim() && s.rows_returned > 0) || s.is_batched_completion()
                })
                .collect(),
        }
    }
}

impl Drop for StatementRecorder {
    fn drop(&mut self) {
        RECORDING.with(|r| *r.borrow_mut() = None);
    }
}

struct Recorder;

fn counted(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    if metadata.is_span() {
        metadata.name() == "job"
    } else {
        target == "sqlx::query" || target == BEGIN_TARGET
    }
}

/// Marks spans named `job` so events inside them are attributed.
struct JobSpan;

impl<S> Layer<S> for Recorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if counted(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        counted(metadata)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() == "job" {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(JobSpan);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(log) = RECORDING.with(|r| r.borrow().clone()) else {
            return;
        };
        let target = event.metadata().target();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let sql = if target == BEGIN_TARGET {
            "BEGIN".to_owned()
        } else if fields.statement.trim().is_empty() {
            fields.summary
        } else {
            fields.statement
        };
        let in_job = ctx.event_scope(event).is_some_and(|scope| {
            scope
                .from_root()
                .any(|s| s.extensions().get::<JobSpan>().is_some())
        });
        log.lock().unwrap().push(Statement {
            sql,
            rows_returned: fields.rows_returned,
            in_job,
        });
    }
}

#[derive(Default)]
struct Fields {
    summary: String,
    statement: String,
    rows_returned: u64,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rows_returned" {
            self.rows_returned = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "summary" => self.summary = format!("{value:?}").trim_matches('"').to_owned(),
            "db.statement" => self.statement = format!("{value:?}"),
            _ => {}
        }
    }
}
