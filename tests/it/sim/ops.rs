//! The operations of a simulated history and how a seed draws them.
//!
//! A history is drawn up front from the seed alone (a portable ChaCha8
//! stream), so a seed always replays the same sequence of operations; which
//! appointment or event an operation targets is a number resolved against the
//! state at the time it runs (the `pick`), and the timing of kills and of the
//! second replica is the machine's.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Zones an appointment or event may carry; `None` means "the calendar's".
pub const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
];

/// One appointment's columns as the host writes them (or as Google's UI
/// would enter an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub summary: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub when: When,
}

/// Start, end and zones, or an all-day span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    Timed {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        start_zone: Option<String>,
        end_zone: Option<String>,
    },
    /// `days` whole days from `date` (end exclusive, as Google's `end.date`).
    AllDay { date: NaiveDate, days: u32 },
}

impl When {
    pub fn start_end(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        match self {
            When::Timed { start, end, .. } => (*start, *end),
            When::AllDay { date, days } => {
                let start = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap());
                (start, start + Duration::days(i64::from(*days)))
            }
        }
    }
}

/// A partial edit: `None` leaves a column as it is; `Some(None)` clears a
/// nullable one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    pub summary: Option<String>,
    pub description: Option<Option<String>>,
    pub location: Option<Option<String>>,
    pub when: Option<When>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// The next insert takes effect but its answer is lost.
    LostInsert,
    /// The next patch takes effect but its answer is lost.
    LostPatch,
    /// The next list answers 500 or 503.
    List5xx,
    /// The next call of an operation answers 429 with `Retry-After`.
    RateLimited,
    /// Every sync token issued so far answers 410.
    SyncTokenGone,
}

pub const FAULT_KINDS: &[FaultKind] = &[
    FaultKind::LostInsert,
    FaultKind::LostPatch,
    FaultKind::List5xx,
    FaultKind::RateLimited,
    FaultKind::SyncTokenGone,
];

/// What a `kill -9` is timed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillAt {
    /// A pull is enqueued and its list answer delayed: the kill lands while
    /// the pull waits on Google.
    SlowList,
    /// The next insert answers late (if one comes in this pass).
    SlowInsert,
    /// Whenever a job of the pass is first seen claimed, plus `extra_ms`.
    Anywhere,
}

#[derive(Debug, Clone)]
pub enum Op {
    HostInsert(Fields),
    HostUpdate {
        pick: u64,
        change: Change,
    },
    HostDelete {
        pick: u64,
    },
    GoogleCreate(Fields),
    /// A recurring event (`RRULE:FREQ=…;COUNT=count`): each instance is an
    /// appointment of its own.
    GoogleCreateSeries {
        fields: Fields,
        weekly: bool,
        count: u8,
    },
    GoogleEdit {
        pick: u64,
        change: Change,
    },
    GoogleDelete {
        pick: u64,
    },
    /// The same item edited on both sides before the worker sees either.
    BothEdit {
        pick: u64,
        host: Change,
        google: Change,
        google_first: bool,
    },
    /// One worker pass (restarting the worker first if it was killed).
    Pass,
    /// A pull enqueued, as a webhook or the poll timer would.
    Notify,
    Fault {
        kind: FaultKind,
        variant: u8,
    },
    Kill {
        at: KillAt,
        extra_ms: u64,
    },
    /// Disconnect when connected, re-connect when disconnected.
    ToggleConnection,
    /// Start the second replica when it is not running, stop it (gracefully
    /// or with `kill -9` when `kill`) when it is.
    ToggleReplica {
        kill: bool,
    },
}

/// The kinds the coverage assertion counts.
pub const OP_KINDS: &[&str] = &[
    "host_insert",
    "host_update",
    "host_delete",
    "google_create",
    "google_create_series",
    "google_edit",
    "google_delete",
    "both_edit",
    "pass",
    "notify",
    "fault",
    "kill",
    "disconnect",
    "reconnect",
    "replica_start",
    "replica_stop",
];

const WORDS: &[&str] = &[
    "Dentist",
    "Standup",
    "Zahnärztin",
    "会議",
    "Lunch with Ana",
    "Flight LH 441",
    "Yoga 🧘",
    "Review \"Q4\"",
];

/// Draws one operation: (rng, op index, today).
type MakeOp = fn(&mut ChaCha8Rng, usize, NaiveDate) -> Op;

/// Draws `steps` operations. `today` anchors the dates (appointments fall in
/// the weeks after it, inside any lookback window).
pub fn draw(rng: &mut ChaCha8Rng, steps: usize, today: NaiveDate) -> Vec<Op> {
    let weights: &[(u32, MakeOp)] = &[
        (12, |r, i, d| Op::HostInsert(fields(r, &format!("h{i}"), d))),
        (12, |r, i, d| Op::HostUpdate {
            pick: r.gen(),
            change: change(r, i, d),
        }),
        (5, |r, _, _| Op::HostDelete { pick: r.gen() }),
        (8, |r, i, d| {
            Op::GoogleCreate(fields(r, &format!("g{i}"), d))
        }),
        (2, |r, i, d| Op::GoogleCreateSeries {
            fields: fields(r, &format!("s{i}"), d),
            weekly: r.gen(),
            count: r.gen_range(2..5),
        }),
        (10, |r, i, d| Op::GoogleEdit {
            pick: r.gen(),
            change: change(r, i, d),
        }),
        (4, |r, _, _| Op::GoogleDelete { pick: r.gen() }),
        (5, |r, i, d| Op::BothEdit {
            pick: r.gen(),
            host: change(r, i, d),
            google: change(r, i + 10_000, d),
            google_first: r.gen(),
        }),
        (20, |_, _, _| Op::Pass),
        (5, |_, _, _| Op::Notify),
        (10, |r, _, _| Op::Fault {
            kind: FAULT_KINDS[r.gen_range(0..FAULT_KINDS.len())],
            variant: r.gen(),
        }),
        (3, |r, _, _| Op::Kill {
            at: match r.gen_range(0..3) {
                0 => KillAt::SlowList,
                1 => KillAt::SlowInsert,
                _ => KillAt::Anywhere,
            },
            extra_ms: r.gen_range(0..20),
        }),
        (2, |_, _, _| Op::ToggleConnection),
        (2, |r, _, _| Op::ToggleReplica { kill: r.gen() }),
    ];
    let total: u32 = weights.iter().map(|(w, _)| w).sum();
    (0..steps)
        .map(|i| {
            let mut n = rng.gen_range(0..total);
            for (w, make) in weights {
                if n < *w {
                    return make(rng, i, today);
                }
                n -= w;
            }
            unreachable!("weights cover the range")
        })
        .collect()
}

fn maybe_text(rng: &mut ChaCha8Rng, what: &str, tag: &str) -> Option<String> {
    match rng.gen_range(0..3) {
        0 => None,
        1 => Some(format!("{what} {tag}")),
        _ => Some(format!("{what} {tag}\nsecond line, ünïcode ✓")),
    }
}

fn zone(rng: &mut ChaCha8Rng) -> Option<String> {
    if rng.gen_bool(0.4) {
        None
    } else {
        Some(ZONES[rng.gen_range(0..ZONES.len())].to_owned())
    }
}

pub fn when(rng: &mut ChaCha8Rng, today: NaiveDate) -> When {
    let date = today + Duration::days(rng.gen_range(1..40));
    if rng.gen_bool(0.2) {
        return When::AllDay {
            date,
            days: rng.gen_range(1..3),
        };
    }
    let start = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
        + Duration::minutes(15 * rng.gen_range(20..84));
    let end = start + Duration::minutes(15 * rng.gen_range(1..13));
    let start_zone = zone(rng);
    // Mostly one zone for both ends, as calendar UIs write them.
    let end_zone = if rng.gen_bool(0.85) {
        start_zone.clone()
    } else {
        zone(rng)
    };
    When::Timed {
        start,
        end,
        start_zone,
        end_zone,
    }
}

pub fn fields(rng: &mut ChaCha8Rng, tag: &str, today: NaiveDate) -> Fields {
    let word = WORDS[rng.gen_range(0..WORDS.len())];
    Fields {
        summary: format!("{word} {tag}"),
        description: maybe_text(rng, "notes", tag),
        location: maybe_text(rng, "room", tag),
        when: when(rng, today),
    }
}

fn change(rng: &mut ChaCha8Rng, i: usize, today: NaiveDate) -> Change {
    let tag = format!("e{i}");
    let mut c = Change::default();
    // At least one column changes.
    while c == Change::default() {
        if rng.gen_bool(0.5) {
            c.summary = Some(format!("{} {tag}", WORDS[rng.gen_range(0..WORDS.len())]));
        }
        if rng.gen_bool(0.3) {
            c.description = Some(maybe_text(rng, "notes", &tag));
        }
        if rng.gen_bool(0.3) {
            c.location = Some(maybe_text(rng, "room", &tag));
        }
        if rng.gen_bool(0.35) {
            c.when = Some(when(rng, today));
        }
    }
    c
}
