//! The host's `appointments` as the worker reads and writes them, together
//! with their links.
//!
//! Every write here runs inside a caller's transaction that has set
//! `plansync.origin = 'google'` (see [`mark_origin_google`]), so the host's
//! triggers do not mistake the worker's own writes for local changes to push
//! back. Writes are batched: one statement per kind of change per page,
//! whatever the page's size.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreError;
use crate::ids::{AppointmentId, ConnectionId, Etag, EventId, UserId};
use crate::model::AppointmentFields;

/// Marks the transaction's writes as the worker's own.
pub async fn mark_origin_google(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query_scalar!("SELECT set_config('plansync.origin', 'google', true)")
        .fetch_one(conn)
        .await?;
    Ok(())
}

/// An appointment row with its link, as read for reconciling a page.
#[derive(Debug, Clone)]
pub struct LinkedAppointment {
    pub link_id: i64,
    pub event_id: EventId,
    pub appointment_id: AppointmentId,
    pub etag: Option<Etag>,
    /// `None` when the host deleted the appointment and its push is pending.
    pub row: Option<AppointmentRow>,
    /// A push of a local change waits (queued), died (dead) or was parked
    /// as invalid: the local values are a change Google has not seen, so
    /// newer-wins decides.
    pub pending_push: bool,
    /// The appointment's push is parked (invalid host values): a pull that
    /// overwrites or deletes the row settles it.
    pub parked: bool,
}

/// The columns of one appointment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentRow {
    pub id: AppointmentId,
    pub user_id: UserId,
    pub fields: AppointmentFields,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The appointment columns of an outer join: all NULL when the host deleted
/// the row (its link outlives it until the push has deleted the event).
pub(super) struct MaybeAppointment {
    pub(super) user_id: Option<UserId>,
    pub(super) summary: Option<String>,
    pub(super) description: Option<String>,
    pub(super) location: Option<String>,
    pub(super) start_at: Option<DateTime<Utc>>,
    pub(super) end_at: Option<DateTime<Utc>>,
    pub(super) start_time_zone: Option<String>,
    pub(super) end_time_zone: Option<String>,
    pub(super) all_day: Option<bool>,
    pub(super) created_at: Option<DateTime<Utc>>,
    pub(super) updated_at: Option<DateTime<Utc>>,
}

/// A [`MaybeAppointment`] from a query record that selected the appointment
/// columns of `a` under their own names, each nullable (`AS "x?"`). Times are
/// selected through `plansync.storable_time`, which turns a host's `infinity`
/// or out-of-range value into NULL: decoding those would panic, and the row
/// must still be read (and refused for push, or overwritten by a newer Google
/// version) rather than stop its calendar. The select list is spelled out in
/// each statement, as the compile-time checked macros need literal SQL.
macro_rules! maybe_appointment {
    ($record:expr) => {
        $crate::store::appointments::MaybeAppointment {
            user_id: $record.user_id,
            summary: $record.summary,
            description: $record.description,
            location: $record.location,
            start_at: $record.start_at,
            end_at: $record.end_at,
            start_time_zone: $record.start_time_zone,
            end_time_zone: $record.end_time_zone,
            all_day: $record.all_day,
            created_at: $record.created_at,
            updated_at: $record.updated_at,
        }
    };
}
pub(super) use maybe_appointment;

impl MaybeAppointment {
    pub(super) fn into_row(self, id: AppointmentId) -> Option<AppointmentRow> {
        // The row exists (user_id is NOT NULL): a NULL time is one
        // storable_time refused.
        let time = |t: Option<DateTime<Utc>>| t.unwrap_or(crate::model::UNSTORABLE_TIME);
        Some(AppointmentRow {
            id,
            user_id: self.user_id?,
            fields: AppointmentFields {
                summary: self.summary?,
                description: self.description,
                location: self.location,
                start_at: time(self.start_at),
                end_at: time(self.end_at),
                start_time_zone: self.start_time_zone,
                end_time_zone: self.end_time_zone,
                all_day: self.all_day?,
            },
            created_at: time(self.created_at),
            updated_at: time(self.updated_at),
        })
    }
}

/// The connection's links for `event_ids`, with their appointments.
///
/// The appointments are row-locked first (in id order, so two pages never
/// deadlock each other), and only then read, in a statement of its own: a host
/// edit that committed while we waited for a lock is seen, with the push job
/// its trigger queued, and one that comes later waits for this page's commit.
/// Deciding on values that a concurrent edit has already replaced would
/// overwrite that edit without a conflict record.
pub async fn load_linked(
    conn: &mut PgConnection,
    connection: ConnectionId,
    event_ids: &[&str],
) -> Result<Vec<LinkedAppointment>, StoreError> {
    sqlx::query!(
        "SELECT a.id FROM plansync.links l \
         JOIN public.appointments a ON a.id = l.appointment_id \
         WHERE l.connection_id = $1 AND l.event_id = ANY($2) \
         ORDER BY a.id FOR UPDATE OF a",
        connection.0,
        event_ids as &[&str],
    )
    .fetch_all(&mut *conn)
    .await?;
    let rows = sqlx::query!(
        r#"SELECT l.id AS link_id, l.event_id AS "event_id: EventId",
             l.appointment_id AS "appointment_id: AppointmentId", l.etag AS "etag: Etag",
             (EXISTS (SELECT 1 FROM plansync.jobs j WHERE j.kind = 'push'
                 AND j.appointment_id = l.appointment_id
                 AND j.state IN ('queued', 'dead')) OR EXISTS (
                 SELECT 1 FROM plansync.parked_pushes p
                 WHERE p.appointment_id = l.appointment_id)) AS "pending_push!",
             EXISTS (SELECT 1 FROM plansync.parked_pushes p
                 WHERE p.appointment_id = l.appointment_id) AS "parked!",
             a.user_id AS "user_id?: UserId", a.summary AS "summary?",
             a.description AS "description?", a.location AS "location?",
             plansync.storable_time(a.start_at) AS "start_at?",
             plansync.storable_time(a.end_at) AS "end_at?",
             a.start_time_zone AS "start_time_zone?", a.end_time_zone AS "end_time_zone?",
             a.all_day AS "all_day?",
             plansync.storable_time(a.created_at) AS "created_at?",
             plansync.storable_time(a.updated_at) AS "updated_at?"
         FROM plansync.links l
         LEFT JOIN public.appointments a ON a.id = l.appointment_id
         WHERE l.connection_id = $1 AND l.event_id = ANY($2)
         FOR UPDATE OF l"#,
        connection.0,
        event_ids as &[&str],
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| LinkedAppointment {
            link_id: r.link_id,
            row: maybe_appointment!(r).into_row(r.appointment_id),
            event_id: r.event_id,
            appointment_id: r.appointment_id,
            etag: r.etag,
            pending_push: r.pending_push,
            parked: r.parked,
        })
        .collect())
}

/// A new appointment from Google, with what its link must remember.
#[derive(Debug, Clone)]
pub struct NewLinked<'a> {
    pub event_id: &'a EventId,
    pub etag: &'a Etag,
    pub remote_updated_at: DateTime<Utc>,
    pub fields: &'a AppointmentFields,
}

/// Columns of a batch, transposed for `UNNEST`, borrowing the batch's
/// strings (a page is thousands of rows: no copies just to encode them).
struct FieldColumns<'a> {
    summary: Vec<&'a str>,
    description: Vec<Option<&'a str>>,
    location: Vec<Option<&'a str>>,
    start_at: Vec<DateTime<Utc>>,
    end_at: Vec<DateTime<Utc>>,
    start_tz: Vec<Option<&'a str>>,
    end_tz: Vec<Option<&'a str>>,
    all_day: Vec<bool>,
}

impl<'a> FieldColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        FieldColumns {
            summary: Vec::with_capacity(n),
            description: Vec::with_capacity(n),
            location: Vec::with_capacity(n),
            start_at: Vec::with_capacity(n),
            end_at: Vec::with_capacity(n),
            start_tz: Vec::with_capacity(n),
            end_tz: Vec::with_capacity(n),
            all_day: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, f: &'a AppointmentFields) {
        self.summary.push(&f.summary);
        self.description.push(f.description.as_deref());
        self.location.push(f.location.as_deref());
        self.start_at.push(f.start_at);
        self.end_at.push(f.end_at);
        self.start_tz.push(f.start_time_zone.as_deref());
        self.end_tz.push(f.end_time_zone.as_deref());
        self.all_day.push(f.all_day);
    }
}

/// Inserts appointments of `user` and their links on `connection` in one
/// statement. Returns the new rows in input order.
pub async fn insert_linked(
    conn: &mut PgConnection,
    user: UserId,
    connection: ConnectionId,
    generation: Option<i64>,
    items: &[NewLinked<'_>],
) -> Result<Vec<AppointmentRow>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut cols = FieldColumns::with_capacity(items.len());
    let mut event_ids = Vec::with_capacity(items.len());
    let mut etags = Vec::with_capacity(items.len());
    let mut remote_updated = Vec::with_capacity(items.len());
    for item in items {
        cols.push(item.fields);
        event_ids.push(item.event_id.as_str());
        etags.push(item.etag.as_str());
        remote_updated.push(item.remote_updated_at);
    }
    // Ids are drawn up front (in input order) so each link can name its
    // appointment in the same statement; the CTE is evaluated exactly once.
    // The sequence is looked up once per statement (an InitPlan), not per
    // row: per row, the catalog lookup cost more than the insert itself.
    let rows = sqlx::query!(
        r#"WITH input AS MATERIALIZED (
             SELECT nextval((SELECT pg_get_serial_sequence('public.appointments', 'id')::regclass))
                 AS id, t.*
             FROM UNNEST($3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TIMESTAMPTZ[],
                         $8::TIMESTAMPTZ[], $9::TEXT[], $10::TEXT[], $11::BOOLEAN[],
                         $12::TEXT[], $13::TIMESTAMPTZ[]) WITH ORDINALITY
                 AS t(event_id, summary, description, location, start_at, end_at,
                      start_tz, end_tz, all_day, etag, remote_updated, ord)),
         inserted AS (
             INSERT INTO public.appointments (id, user_id, summary, description, location,
                 start_at, end_at, start_time_zone, end_time_zone, all_day, created_at, updated_at)
             SELECT id, $1, summary, description, location, start_at, end_at, start_tz, end_tz,
                 all_day, now(), now() FROM input
             RETURNING id, created_at, updated_at),
         linked AS (
             INSERT INTO plansync.links (connection_id, appointment_id, event_id, etag,
                 remote_updated_at, seen_generation)
             SELECT $2, id, event_id, etag, remote_updated, $14 FROM input)
         SELECT inserted.id AS "id!: AppointmentId", inserted.created_at AS "created_at!",
             inserted.updated_at AS "updated_at!"
         FROM input JOIN inserted USING (id) ORDER BY input.ord"#,
        user.0,
        connection.0,
        &event_ids as &[&str],
        &cols.summary as &[&str],
        &cols.description as &[Option<&str>],
        &cols.location as &[Option<&str>],
        &cols.start_at,
        &cols.end_at,
        &cols.start_tz as &[Option<&str>],
        &cols.end_tz as &[Option<&str>],
        &cols.all_day,
        &etags as &[&str],
        &remote_updated,
        generation,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .zip(items)
        .map(|(row, item)| AppointmentRow {
            id: row.id,
            user_id: user,
            fields: item.fields.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
        .collect())
}

/// Overwrites appointments with Google's values. Returns the rows as written,
/// in input order.
pub async fn update_fields(
    conn: &mut PgConnection,
    items: &[(AppointmentId, &AppointmentFields)],
) -> Result<Vec<AppointmentRow>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut cols = FieldColumns::with_capacity(items.len());
    let ids: Vec<AppointmentId> = items.iter().map(|(id, _)| *id).collect();
    for (_, fields) in items {
        cols.push(fields);
    }
    // created_at is the host's and may be `infinity`: read it as every
    // appointment time is read (updated_at was just set to now()).
    let rows = sqlx::query!(
        r#"UPDATE public.appointments a SET summary = t.summary, description = t.description,
             location = t.location, start_at = t.start_at, end_at = t.end_at,
             start_time_zone = t.start_tz, end_time_zone = t.end_tz, all_day = t.all_day,
             updated_at = now()
         FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TIMESTAMPTZ[],
                     $6::TIMESTAMPTZ[], $7::TEXT[], $8::TEXT[], $9::BOOLEAN[])
             AS t(id, summary, description, location, start_at, end_at, start_tz, end_tz, all_day)
         WHERE a.id = t.id
         RETURNING a.id AS "id: AppointmentId", a.user_id AS "user_id: UserId",
             plansync.storable_time(a.created_at) AS "created_at?", a.updated_at"#,
        &ids as &[AppointmentId],
        &cols.summary as &[&str],
        &cols.description as &[Option<&str>],
        &cols.location as &[Option<&str>],
        &cols.start_at,
        &cols.end_at,
        &cols.start_tz as &[Option<&str>],
        &cols.end_tz as &[Option<&str>],
        &cols.all_day,
    )
    .fetch_all(conn)
    .await?;
    let rows = rows.into_iter().map(|r| {
        (
            r.id,
            r.user_id,
            r.created_at.unwrap_or(crate::model::UNSTORABLE_TIME),
            r.updated_at,
        )
    });
    let by_id: std::collections::HashMap<AppointmentId, (UserId, DateTime<Utc>, DateTime<Utc>)> =
        rows.map(|(id, u, c, up)| (id, (u, c, up))).collect();
    Ok(items
        .iter()
        .filter_map(|(id, fields)| {
            by_id
                .get(id)
                .map(|(user_id, created_at, updated_at)| AppointmentRow {
                    id: *id,
                    user_id: *user_id,
                    fields: (*fields).clone(),
                    created_at: *created_at,
                    updated_at: *updated_at,
                })
        })
        .collect())
}

/// Deletes appointments. Returns (id, user) of the rows that existed.
pub async fn delete(
    conn: &mut PgConnection,
    ids: &[AppointmentId],
) -> Result<Vec<(AppointmentId, UserId)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query!(
        r#"DELETE FROM public.appointments WHERE id = ANY($1)
         RETURNING id AS "id: AppointmentId", user_id AS "user_id: UserId""#,
        ids as &[AppointmentId],
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.user_id)).collect())
}
