//! Pull: Google → appointments, for one connection, as one queue job.
//!
//! Guarantees:
//! - **One transaction per page.** A page's appointments, links, conflict
//!   records, `plan_version` bumps and outbox deltas commit together, fenced
//!   by the job's lease; a pull killed between pages leaves every committed
//!   page whole and the next run lists again from the start, finding those
//!   events already known by their etags (no duplicate rows or deltas).
//! - **Sync tokens.** Every page of an incremental pull repeats the sync
//!   token; the new token is stored only in the transaction of the last page.
//!   A 410 (`fullSyncRequired`) drops the token and turns the pull into a full
//!   sync.
//! - **Mark and sweep.** A full sync lists from `now - PLANSYNC_LOOKBACK_DAYS`
//!   and stamps every link it sees with a fresh generation; only the last
//!   page's transaction deletes the connection's appointments its listing did
//!   not show (and that end after `timeMin`). A crash half-way sweeps nothing.
//! - **Disconnects.** Every page's transaction first checks, under a share
//!   lock on the connection row, that the connection is still active; a pull
//!   that outlives a `disconnect` writes nothing more (the host's edits made
//!   since are pushed by the re-connect, not overwritten by a stale page).
//! - **Ownership.** New appointments belong to the connection's user, never to
//!   anyone named inside the event.
//! - **Batched writes.** Each kind of change is one statement per page.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::conflict::Lost;
use super::reconcile::{self, Action, Link, LocalAppointment, LocalState};
use super::{google_failure, SyncDeps};
use crate::deltas::{AppointmentPayload, DeltaBatch, GoogleSync};
use crate::google::{
    skipped_id, CalendarClient, EventPage, GoogleError, ListQuery, NextStep, PageToken, RemoteEvent,
};
use crate::ids::{AppointmentId, Etag, EventId, SyncToken, UserId};
use crate::model::AppointmentFields;
use crate::queue::{Done, Job, JobContext, JobError, JobKind, Queue};
use crate::store::appointments::{self, AppointmentRow, LinkedAppointment, NewLinked};
use crate::store::conflicts::{self, NewConflict};
use crate::store::connections::{self, SyncConnection};
use crate::store::links::{self, LinkRefresh};
use crate::store::skipped::{self, Skip};
use crate::store::StoreError;

/// Where a pull lists from. A full listing's sweep generation is drawn by
/// its first page's transaction (see [`pull`]).
#[derive(Debug, Clone)]
enum Mode {
    Incremental(SyncToken),
    Full { time_min: DateTime<Utc> },
}

impl Mode {
    fn full(deps: &SyncDeps) -> Mode {
        // lookback_days is range-checked at start-up (at most 100 years).
        let time_min = Utc::now()
            .checked_sub_signed(chrono::Duration::days(i64::from(
                deps.settings.lookback_days,
            )))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Mode::Full { time_min }
    }
}

enum PullError {
    Google(GoogleError),
    Job(JobError),
}

impl From<JobError> for PullError {
    fn from(e: JobError) -> Self {
        PullError::Job(e)
    }
}

impl From<StoreError> for PullError {
    fn from(e: StoreError) -> Self {
        PullError::Job(e.into())
    }
}

impl From<sqlx::Error> for PullError {
    fn from(e: sqlx::Error) -> Self {
        PullError::Job(e.into())
    }
}

/// Runs a `pull` or `full_resync` job. The connection is the one its claim
/// read ([`crate::queue::Prelude`]): no statement before the first listing.
pub async fn run(deps: &SyncDeps, ctx: &JobContext, job: &Job) -> Result<Done, JobError> {
    let pool = &ctx.pool;
    let connection = &job.prelude.connection;
    if !connection.active {
        // Disconnected after the job was queued: nothing to pull.
        return job.complete(pool).await;
    }
    let client = deps.client(connection)?;
    let mut mode = match (&connection.sync_token, job.kind) {
        (Some(token), JobKind::Pull) => Mode::Incremental(token.clone()),
        _ => Mode::full(deps),
    };
    loop {
        match pull(deps, ctx, job, connection, &client, &mode).await {
            Ok(done) => return Ok(done),
            Err(PullError::Google(err))
                if err.next_step() == NextStep::FullResync
                    && matches!(mode, Mode::Incremental(_)) =>
            {
                tracing::info!(reason = ?err.reason(), "sync token refused: full sync");
                mode = Mode::full(deps);
            }
            Err(PullError::Google(err)) => {
                return Err(google_failure(pool, job, connection.id, err).await)
            }
            Err(PullError::Job(err)) => return Err(err),
        }
    }
}

async fn pull(
    deps: &SyncDeps,
    ctx: &JobContext,
    job: &Job,
    connection: &SyncConnection,
    client: &CalendarClient,
    mode: &Mode,
) -> Result<Done, PullError> {
    let (mut query, full) = match mode {
        Mode::Incremental(token) => (ListQuery::incremental(token.clone()), false),
        Mode::Full { time_min } => (ListQuery::full(*time_min), true),
    };
    // A full listing's generation, drawn by its first page's transaction.
    let mut generation: Option<i64> = None;
    let mut pages = 0u32;
    // Every job ends: a page token Google already gave us in this listing, or
    // more pages than PLANSYNC_MAX_PAGES, fails the job instead of listing
    // forever.
    let mut page_tokens: HashSet<String> = HashSet::new();
    let mut has_skipped = connection.has_skipped;
    // Set-aside records this listing refreshes get the database's now(),
    // later than this (the slack covers clock skew between us and it).
    let listing_started = Utc::now() - chrono::Duration::seconds(5);
    let mut events_seen = 0usize;
    // Time spent waiting on Google vs. the rest (reconcile and the page's
    // transaction), logged at the end: what an operator (and the benchmark)
    // needs to tell a slow Google from a slow database.
    let started = Instant::now();
    let mut listing = Duration::ZERO;
    loop {
        if ctx.cancel.is_cancelled() {
            return Err(JobError::LeaseLost.into());
        }
        let asked = Instant::now();
        let page = client
            .list_page(&connection.calendar_id, &query)
            .await
            .map_err(PullError::Google)?;
        listing += asked.elapsed();
        pages += 1;
        events_seen += page.events.len();
        let next = page.next_page_token.clone();
        if let Some(PageToken(token)) = &next {
            if pages >= deps.settings.max_pages {
                return Err(PullError::Google(GoogleError::Malformed {
                    detail: format!(
                        "the listing did not end within PLANSYNC_MAX_PAGES = {} pages",
                        deps.settings.max_pages
                    ),
                }));
            }
            if !page_tokens.insert(token.clone()) {
                return Err(PullError::Google(GoogleError::Malformed {
                    detail: format!(
                        "Google repeated a page token after {pages} pages: the listing would never end"
                    ),
                }));
            }
        }

        // A connection only while the page is written: none is held while
        // Google is listing, so a worker's calls in flight never pin the
        // pool (PLANSYNC_DB_POOL is independent of PLANSYNC_CONCURRENCY).
        // The last page's transaction also completes the job, so the sweep,
        // the new token and the success commit together or not at all.
        let last = next.is_none();
        let mut tx = crate::store::begin(&ctx.pool).await?;
        let opened = job
            .open_sync(&mut tx, last, full && generation.is_none())
            .await?;
        if full && generation.is_none() {
            generation = Some(opened.generation.ok_or_else(|| {
                JobError::fatal("the page's transaction drew no sweep generation")
            })?);
        }
        if !opened.connection_active {
            // Disconnected while we listed: edits made since are the
            // re-connect's to push, never ours to overwrite.
            return Ok(match opened.done {
                // Nothing but the completion was written.
                Some(done) => {
                    tx.commit().await?;
                    done
                }
                None => {
                    tx.rollback().await?;
                    job.complete(&ctx.pool).await?
                }
            });
        }
        let mut batch = DeltaBatch::new();
        let events = dedup_by_id(&page.events);
        let zone = page
            .calendar_time_zone
            .as_deref()
            .or(connection.calendar_time_zone.as_deref());
        // An event set aside keeps its appointment: the sweep must not take
        // an unreadable event for a deleted one.
        let set_aside: Vec<&str> = page
            .skipped
            .iter()
            .filter_map(|s| s.match_id.as_deref())
            .collect();
        apply_page(
            &mut tx, connection, &events, &set_aside, generation, zone, &mut batch,
        )
        .await?;
        if !page.skipped.is_empty() || has_skipped {
            record_skipped(&mut tx, connection, &page).await?;
            has_skipped = true;
        }
        let Some(done) = opened.done else {
            batch.write(&mut tx, deps.settings.bulk_threshold).await?;
            tx.commit().await?;
            if let Some(next) = next {
                query = query.next_page(next);
            }
            continue;
        };
        // The last page: sweep, store the token, complete — one transaction.
        if let (Mode::Full { time_min }, Some(generation)) = (mode, generation) {
            for (id, user) in links::sweep(&mut tx, connection.id, generation, *time_min).await? {
                batch.deleted(user, id);
            }
            // Set-aside events this whole listing did not show again (gone,
            // ended before timeMin, or without an id) are no longer set aside.
            if has_skipped {
                skipped::forget_unseen(&mut tx, connection.id, listing_started).await?;
            }
        }
        finish(&mut tx, connection, &page).await?;
        batch.write(&mut tx, deps.settings.bulk_threshold).await?;
        tx.commit().await?;
        let total = started.elapsed();
        tracing::info!(
            pages,
            events = events_seen,
            listing_ms = (listing.as_secs_f64() * 1e4).round() / 10.0,
            writing_ms = (total.saturating_sub(listing).as_secs_f64() * 1e4).round() / 10.0,
            full,
            "pull finished"
        );
        return Ok(done);
    }
}

/// Records the page's set-aside events and forgets those it read fine (in
/// one statement, only when the connection has or gets any).
async fn record_skipped(
    tx: &mut PgConnection,
    connection: &SyncConnection,
    page: &EventPage,
) -> Result<(), StoreError> {
    for s in &page.skipped {
        tracing::warn!(
            event = s.event_id.as_deref().unwrap_or("(no id)"),
            reason = %s.reason,
            "event set aside"
        );
    }
    metrics::counter!(crate::metrics::SKIPPED_EVENTS).increment(page.skipped.len() as u64);
    let skips: Vec<Skip> = page
        .skipped
        .iter()
        .map(|s| Skip {
            event_id: s.event_id.as_deref(),
            reason: &s.reason,
        })
        .collect();
    let resolved: Vec<String> = page
        .events
        .iter()
        .map(|e| skipped_id(e.id.as_str()))
        .collect();
    skipped::record(tx, connection.id, &skips, &resolved).await
}

async fn finish(
    tx: &mut PgConnection,
    connection: &SyncConnection,
    page: &EventPage,
) -> Result<(), StoreError> {
    let change = connections::finish_pull(
        tx,
        connection.id,
        page.next_sync_token.as_ref(),
        page.calendar_time_zone.as_deref(),
    )
    .await?;
    // A successful sync after the calendar was gone: tell the user.
    if let Some(change) = change {
        crate::deltas::announce(tx, change).await?;
    }
    // DESIGN.md: the first sync of a push-target connection pushes the user's
    // appointments that no connection links yet.
    if connection.never_pulled && connection.is_push_target {
        let n = Queue::enqueue_unlinked_pushes(tx, connection.user_id, connection.id).await?;
        if n > 0 {
            tracing::info!(
                pushes = n,
                "first sync of a push target: pushing unlinked appointments"
            );
        }
    }
    Ok(())
}

/// Google may list an event twice in one page: the last listing wins.
fn dedup_by_id(events: &[RemoteEvent]) -> Vec<&RemoteEvent> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        last.insert(e.id.as_str(), i);
    }
    events
        .iter()
        .enumerate()
        .filter(|(i, e)| last.get(e.id.as_str()) == Some(i))
        .map(|(_, e)| e)
        .collect()
}

fn local_state(
    linked: &LinkedAppointment,
    owner: UserId,
    calendar_time_zone: Option<&str>,
) -> LocalState {
    LocalState {
        link: Link {
            id: linked.link_id,
            appointment_id: linked.appointment_id,
            parked: linked.parked,
        },
        etag: linked.etag.clone(),
        // An appointment the host gave to another user is no longer this
        // calendar's to update: its push takes it out of here.
        appointment: linked
            .row
            .as_ref()
            .filter(|row| row.user_id == owner)
            .map(|row| LocalAppointment {
                fields: row.fields.clone(),
                updated_at: row.updated_at,
            }),
        pending_push: linked.pending_push,
        calendar_time_zone: calendar_time_zone.map(str::to_owned),
    }
}

/// Reconciles one page and writes it, one statement per kind of change.
async fn apply_page(
    tx: &mut PgConnection,
    connection: &SyncConnection,
    events: &[&RemoteEvent],
    set_aside: &[&str],
    generation: Option<i64>,
    calendar_time_zone: Option<&str>,
    batch: &mut DeltaBatch,
) -> Result<(), StoreError> {
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.extend_from_slice(set_aside);
    let linked = appointments::load_linked(tx, connection.id, &ids).await?;
    let by_event: HashMap<&str, &LinkedAppointment> =
        linked.iter().map(|l| (l.event_id.as_str(), l)).collect();

    let mut creates: Vec<NewLinked> = Vec::new();
    let mut updates: Vec<(AppointmentId, &AppointmentFields)> = Vec::new();
    // Link etags to store, by link id; the event each appointment now matches.
    let mut refreshes: Vec<LinkRefresh> = Vec::new();
    let mut seen: Vec<i64> = Vec::new();
    let mut deletes: Vec<AppointmentId> = Vec::new();
    let mut dropped_links: Vec<i64> = Vec::new();
    let mut conflicts: Vec<NewConflict> = Vec::new();
    let mut superseded_pushes: Vec<AppointmentId> = Vec::new();
    let mut settled_parked: Vec<AppointmentId> = Vec::new();
    // For delta payloads: what Google knows of each changed appointment.
    let mut sync_info: HashMap<AppointmentId, (&EventId, &Etag, DateTime<Utc>)> = HashMap::new();

    for id in set_aside {
        if let Some(link) = by_event.get(id) {
            seen.push(link.link_id);
        }
    }
    for &event in events {
        let local = by_event
            .get(event.id.as_str())
            .map(|l| local_state(l, connection.user_id, calendar_time_zone));
        match reconcile::decide(event, local.as_ref()) {
            Action::Unchanged { link } | Action::LocalDeletePending { link } => {
                seen.push(link.id);
            }
            Action::Ignore => {}
            Action::Create(a) => {
                creates.push(NewLinked {
                    event_id: &event.id,
                    etag: &a.etag,
                    remote_updated_at: a.updated,
                    fields: &a.fields,
                });
            }
            Action::RefreshLink { link, remote: a } => {
                refreshes.push(LinkRefresh {
                    link_id: link.id,
                    etag: &a.etag,
                    remote_updated_at: a.updated,
                });
            }
            Action::Update {
                link,
                remote: a,
                conflict: lost,
            } => {
                let appointment_id = link.appointment_id;
                if link.parked {
                    settled_parked.push(appointment_id);
                }
                updates.push((appointment_id, &a.fields));
                refreshes.push(LinkRefresh {
                    link_id: link.id,
                    etag: &a.etag,
                    remote_updated_at: a.updated,
                });
                sync_info.insert(appointment_id, (&event.id, &a.etag, a.updated));
                if let Some(lost) = lost {
                    conflicts.push(
                        Lost::from_loser(&lost, Some(a.updated)).record(appointment_id, &event.id),
                    );
                    superseded_pushes.push(appointment_id);
                }
            }
            Action::KeepLocal {
                link,
                remote: a,
                conflict: lost,
            } => {
                // The push that is pending sends our values with this etag.
                refreshes.push(LinkRefresh {
                    link_id: link.id,
                    etag: &a.etag,
                    remote_updated_at: a.updated,
                });
                conflicts.push(
                    Lost::from_loser(&lost, Some(a.updated)).record(link.appointment_id, &event.id),
                );
            }
            Action::Delete {
                link,
                conflict: lost,
            } => {
                if link.parked {
                    settled_parked.push(link.appointment_id);
                }
                deletes.push(link.appointment_id);
                dropped_links.push(link.id);
                if let Some(lost) = lost {
                    conflicts
                        .push(Lost::from_loser(&lost, None).record(link.appointment_id, &event.id));
                }
            }
            Action::DropLink { link } => dropped_links.push(link.id),
        }
    }

    let created =
        appointments::insert_linked(tx, connection.user_id, connection.id, generation, &creates)
            .await?;
    for (row, new) in created.into_iter().zip(&creates) {
        let payload = payload(
            connection,
            row,
            new.event_id,
            new.etag,
            new.remote_updated_at,
        );
        batch.created(payload);
    }
    for row in appointments::update_fields(tx, &updates).await? {
        let (event_id, etag, updated) = sync_info[&row.id];
        batch.updated(payload(connection, row, event_id, etag, updated));
    }
    links::refresh(tx, generation, &refreshes).await?;
    if let Some(generation) = generation {
        links::mark_seen(tx, generation, &seen).await?;
    }
    links::delete(tx, &dropped_links).await?;
    for (id, user) in appointments::delete(tx, &deletes).await? {
        batch.deleted(user, id);
    }
    conflicts::insert(tx, connection.id, &conflicts).await?;
    Queue::cancel_queued_pushes(tx, &superseded_pushes).await?;
    skipped::unpark_pushes(tx, &settled_parked).await?;
    Ok(())
}

pub(super) fn payload(
    connection: &SyncConnection,
    row: AppointmentRow,
    event_id: &EventId,
    etag: &Etag,
    remote_updated_at: DateTime<Utc>,
) -> AppointmentPayload {
    AppointmentPayload {
        id: row.id,
        user_id: row.user_id,
        summary: row.fields.summary,
        description: row.fields.description,
        location: row.fields.location,
        start_at: row.fields.start_at,
        end_at: row.fields.end_at,
        start_time_zone: row.fields.start_time_zone,
        end_time_zone: row.fields.end_time_zone,
        all_day: row.fields.all_day,
        created_at: row.created_at,
        updated_at: row.updated_at,
        google_sync: Some(GoogleSync {
            calendar_id: connection.calendar_id.clone(),
            event_id: event_id.clone(),
            etag: Some(etag.as_str().to_owned()),
            remote_updated_at: Some(remote_updated_at),
        }),
    }
}
