//! Google's request budget, shared by the fleet: [`Quota`], the worker's
//! implementation of [`CallBudget`].
//!
//! Guarantees:
//! - **One budget per project.** Every worker of every region that uses the
//!   same Redis, `PLANSYNC_REDIS_PREFIX` and OAuth client draws on one GCRA
//!   limiter (`{prefix}quota:{client_id}:project`) of `PLANSYNC_GOOGLE_QPM`
//!   requests per minute, and on one per connection
//!   (`…:conn:{connection}`) of `PLANSYNC_GOOGLE_USER_QPM`. Both are checked
//!   and taken in one Lua script on Redis's clock, so the check is atomic
//!   across the fleet and no worker's clock matters. The burst allowed on top
//!   of the rate is one second's worth: in any window of `w` seconds the fleet
//!   sends at most `qpm * w / 60 + qpm / 60` requests (at least one).
//! - **Bounded waits.** A call that finds no budget waits for it up to
//!   [`MAX_WAIT`]; beyond that it is refused with the time the next request is
//!   due, and the job snoozes without spending an attempt
//!   ([`crate::google::GoogleError::OverBudget`]).
//! - **Never unlimited.** When Redis does not answer (within
//!   [`REDIS_TIMEOUT`]), the worker falls back to a local limiter of its share:
//!   both budgets divided by the live workers it last saw in Postgres
//!   ([`crate::store::workers`], set through [`Quota::set_live_workers`]). It
//!   tries Redis again every [`REDIS_RETRY`] and returns to the shared limiter
//!   as soon as Redis answers.
//! - **Visible.** `plansync_quota_waits_total{scope}`,
//!   `plansync_quota_budget_per_min` (the budget this worker draws on now: the
//!   project's, or its fallback share), `plansync_quota_shared` (1 on Redis, 0
//!   on the fallback) and `plansync_quota_used_per_min` (this worker's
//!   requests in the last minute, also written to its heartbeat row, which
//!   `status` sums).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{QuotaSettings, RedisSettings};
use crate::google::{AcquireFuture, BudgetScope, Call, CallBudget, OverBudget};

/// The longest a call waits for budget before its job snoozes instead.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// How long one Redis round trip of the limiter may take before the worker
/// uses its fallback share for this call.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// After Redis failed, how long the fallback is used before Redis is tried
/// again (so an outage costs one timeout per interval, not one per call).
pub const REDIS_RETRY: Duration = Duration::from_secs(1);
/// The longest polling interval the budget can stretch to.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(30 * 86_400);

pub mod metric {
    pub const WAITS: &str = "plansync_quota_waits_total";
    pub const BUDGET: &str = "plansync_quota_budget_per_min";
    pub const USED: &str = "plansync_quota_used_per_min";
    pub const SHARED: &str = "plansync_quota_shared";
    pub const POLL_INTERVAL: &str = "plansync_poll_interval_seconds";

    pub fn describe() {
        metrics::describe_counter!(
            crate::google::CALLS_METRIC,
            "Google requests, by operation and outcome (over_budget: refused locally, not sent)"
        );
        metrics::describe_counter!(WAITS, "Google calls that waited for budget, by scope");
        metrics::describe_gauge!(
            BUDGET,
            "Google requests per minute this worker draws on: the project's, or its fallback share"
        );
        metrics::describe_gauge!(USED, "Google requests this worker sent in the last minute");
        metrics::describe_gauge!(
            SHARED,
            "1 while the fleet-wide limiter (Redis) answers, 0 on the fallback share"
        );
        metrics::describe_gauge!(
            POLL_INTERVAL,
            "The scheduler's effective polling interval (stretched to fit the budget)"
        );
    }
}

/// The polling interval that keeps `connections` polls per interval within
/// `poll_share` of the project budget: `base`, or longer when
/// `connections * 60 / (share * qpm)` seconds exceeds it.
pub fn effective_poll_interval(
    base: Duration,
    connections: i64,
    settings: &QuotaSettings,
) -> Duration {
    let polls_per_min = f64::from(settings.project_per_min) * settings.poll_share;
    let needed = connections.max(0) as f64 * 60.0 / polls_per_min.max(f64::MIN_POSITIVE);
    let needed = Duration::from_secs_f64(needed.ceil().min(MAX_POLL_INTERVAL.as_secs_f64()));
    base.max(needed)
}

/// GCRA over Redis (see the module doc). KEYS[1] the project, KEYS[2] the
/// connection (optional); ARGV: per key, the emission interval and the burst
/// capacity times it (ms). Returns `{1, 0}` when granted, `{0, wait_ms,
/// scope}` (scope 1 project, 2 connection) when not; nothing is taken then.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function probe(key, interval, window)
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  local new_tat = tat + interval
  return new_tat, new_tat - now - window
end
local p_tat, p_wait = probe(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
local wait, scope = p_wait, 1
local u_tat
if #KEYS > 1 then
  local u_wait
  u_tat, u_wait = probe(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
  if u_wait > wait then wait, scope = u_wait, 2 end
end
if wait > 0 then return {0, math.ceil(wait), scope} end
redis.call('SET', KEYS[1], string.format('%.3f', p_tat), 'PX', math.ceil(p_tat - now) + 1000)
if u_tat then
  redis.call('SET', KEYS[2], string.format('%.3f', u_tat), 'PX', math.ceil(u_tat - now) + 1000)
end
return {1, 0, 0}
";

/// One rate: an emission interval and a burst window, both in ms.
#[derive(Debug, Clone, Copy)]
struct Rate {
    interval_ms: f64,
    window_ms: f64,
}

impl Rate {
    /// `per_min` requests a minute with one second's worth (at least one) as
    /// burst.
    fn per_min(per_min: f64) -> Rate {
        let per_min = per_min.max(0.001);
        let interval_ms = 60_000.0 / per_min;
        let burst = (per_min / 60.0).floor().max(1.0);
        Rate {
            interval_ms,
            window_ms: interval_ms * burst,
        }
    }

    /// Takes one request from a GCRA state `tat` at `now` (ms), or says how
    /// long until one is due.
    fn take(self, tat: &mut f64, now: f64) -> Result<(), f64> {
        let new_tat = tat.max(now) + self.interval_ms;
        let wait = new_tat - now - self.window_ms;
        if wait > 0.0 {
            return Err(wait);
        }
        *tat = new_tat;
        Ok(())
    }

    /// Whether a take would succeed, without taking.
    fn wait(self, tat: f64, now: f64) -> f64 {
        tat.max(now) + self.interval_ms - now - self.window_ms
    }
}

/// The fallback limiter: this worker's share, on its own clock.
#[derive(Default)]
struct Local {
    project: f64,
    connections: HashMap<String, f64>,
}

/// Requests granted per second over the last minute.
struct Usage {
    buckets: [(u64, u32); 60],
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            buckets: [(0, 0); 60],
        }
    }
}

impl Usage {
    fn record(&mut self, sec: u64) {
        let slot = &mut self.buckets[(sec % 60) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += 1;
    }

    fn last_minute(&self, sec: u64) -> u64 {
        self.buckets
            .iter()
            .filter(|(s, _)| *s + 60 > sec && *s <= sec)
            .map(|(_, n)| u64::from(*n))
            .sum()
    }
}

struct Inner {
    settings: QuotaSettings,
    redis: Option<redis::Client>,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    script: redis::Script,
    project_key: String,
    connection_key_prefix: String,
    /// Redis is not tried again before this instant.
    redis_down_until: Mutex<Option<Instant>>,
    shared: AtomicBool,
    live_workers: AtomicU64,
    local: Mutex<Local>,
    usage: Mutex<Usage>,
    started: Instant,
}

/// The fleet-wide limiter of one worker process. Clones share everything.
#[derive(Clone)]
pub struct Quota {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quota")
            .field("settings", &self.inner.settings)
            .field("project_key", &self.inner.project_key)
            .field("shared", &self.is_shared())
            .finish_non_exhaustive()
    }
}

impl Quota {
    /// A limiter on the Redis of `redis` (its URL and prefix) for the OAuth
    /// client `client_id`. Nothing is connected until the first call.
    pub fn new(
        settings: QuotaSettings,
        redis: &RedisSettings,
        client_id: &str,
    ) -> Result<Quota, crate::deltas::connect::ConnectError> {
        let client = crate::deltas::connect::client(redis)?;
        Ok(Quota::build(
            settings,
            Some(client),
            &redis.prefix,
            client_id,
        ))
    }

    /// A limiter without Redis: always this worker's share (tests, and
    /// deployments that choose a local limit).
    pub fn local_only(settings: QuotaSettings, client_id: &str) -> Quota {
        Quota::build(settings, None, "", client_id)
    }

    fn build(
        settings: QuotaSettings,
        redis: Option<redis::Client>,
        prefix: &str,
        client_id: &str,
    ) -> Quota {
        let base = format!("{prefix}quota:{client_id}");
        let quota = Quota {
            inner: Arc::new(Inner {
                settings,
                redis,
                connection: tokio::sync::Mutex::new(None),
                script: redis::Script::new(GCRA_SCRIPT),
                project_key: format!("{base}:project"),
                connection_key_prefix: format!("{base}:conn:"),
                redis_down_until: Mutex::new(None),
                shared: AtomicBool::new(false),
                live_workers: AtomicU64::new(1),
                local: Mutex::new(Local::default()),
                usage: Mutex::new(Usage::default()),
                started: Instant::now(),
            }),
        };
        quota.publish_gauges();
        quota
    }

    pub fn settings(&self) -> &QuotaSettings {
        &self.inner.settings
    }

    /// The Redis key of the project's limiter (for tests and operators).
    pub fn project_key(&self) -> &str {
        &self.inner.project_key
    }

    /// Whether the last decision came from the fleet-wide limiter.
    pub fn is_shared(&self) -> bool {
        self.inner.shared.load(Ordering::Relaxed)
    }

    /// The live workers seen in Postgres (at least 1): the fallback divides
    /// the budgets by this.
    pub fn set_live_workers(&self, n: i64) {
        let n = u64::try_from(n).unwrap_or(1).max(1);
        self.inner.live_workers.store(n, Ordering::Relaxed);
        self.publish_gauges();
    }

    /// The live workers last handed in by [`Quota::set_live_workers`].
    pub fn live_workers(&self) -> u64 {
        self.inner.live_workers.load(Ordering::Relaxed)
    }

    /// Requests this worker was granted in the last minute.
    pub fn used_per_min(&self) -> u64 {
        let n = self
            .inner
            .usage
            .lock()
            .expect("usage lock")
            .last_minute(unix_secs());
        metrics::gauge!(metric::USED).set(n as f64);
        n
    }

    /// The project budget this worker draws on now.
    pub fn budget_in_use(&self) -> f64 {
        let project = f64::from(self.inner.settings.project_per_min);
        if self.is_shared() {
            project
        } else {
            project / self.inner.live_workers.load(Ordering::Relaxed) as f64
        }
    }

    fn publish_gauges(&self) {
        metrics::gauge!(metric::BUDGET).set(self.budget_in_use());
        metrics::gauge!(metric::SHARED).set(if self.is_shared() { 1.0 } else { 0.0 });
    }

    /// One request for `principal`, waiting up to [`MAX_WAIT`] for it.
    pub async fn acquire_for(&self, principal: Option<&str>) -> Result<(), OverBudget> {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            match self.try_take(principal).await {
                Ok(()) => {
                    self.inner
                        .usage
                        .lock()
                        .expect("usage lock")
                        .record(unix_secs());
                    return Ok(());
                }
                Err(over) => {
                    let now = Instant::now();
                    if now + over.retry_after > deadline {
                        return Err(over);
                    }
                    metrics::counter!(metric::WAITS, "scope" => over.scope.as_str()).increment(1);
                    // A little jitter so waiters woken together do not all
                    // find the same single request.
                    let jitter = over.retry_after.mul_f64(rand::random::<f64>() * 0.1);
                    tokio::time::sleep(over.retry_after + jitter).await;
                }
            }
        }
    }

    async fn try_take(&self, principal: Option<&str>) -> Result<(), OverBudget> {
        if let Some(answer) = self.try_redis(principal).await {
            return answer;
        }
        self.take_local(principal)
    }

    /// The shared limiter's answer, or `None` when Redis cannot give one now.
    async fn try_redis(&self, principal: Option<&str>) -> Option<Result<(), OverBudget>> {
        let inner = &self.inner;
        let client = inner.redis.as_ref()?;
        if let Some(until) = *inner.redis_down_until.lock().expect("redis state lock") {
            if Instant::now() < until {
                return None;
            }
        }
        let attempt = async {
            let mut conn = {
                let mut slot = inner.connection.lock().await;
                match slot.as_ref() {
                    Some(conn) => conn.clone(),
                    None => {
                        let conn = client.get_multiplexed_async_connection().await?;
                        *slot = Some(conn.clone());
                        conn
                    }
                }
            };
            let project = Rate::per_min(f64::from(inner.settings.project_per_min));
            let user = Rate::per_min(f64::from(inner.settings.user_per_min));
            let mut invocation = inner.script.prepare_invoke();
            invocation
                .key(&inner.project_key)
                .arg(project.interval_ms)
                .arg(project.window_ms);
            if let Some(p) = principal {
                invocation
                    .key(format!("{}{p}", inner.connection_key_prefix))
                    .arg(user.interval_ms)
                    .arg(user.window_ms);
            }
            invocation.invoke_async::<(i64, i64, i64)>(&mut conn).await
        };
        match tokio::time::timeout(REDIS_TIMEOUT, attempt).await {
            Ok(Ok((granted, wait_ms, scope))) => {
                if !inner.shared.swap(true, Ordering::Relaxed) {
                    tracing::info!("Google budget: using the fleet-wide limiter in Redis");
                    self.publish_gauges();
                }
                Some(if granted == 1 {
                    Ok(())
                } else {
                    Err(OverBudget {
                        retry_after: Duration::from_millis(wait_ms.max(1) as u64),
                        scope: if scope == 2 {
                            BudgetScope::Connection
                        } else {
                            BudgetScope::Project
                        },
                    })
                })
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {REDIS_TIMEOUT:?}"),
                };
                *inner.connection.lock().await = None;
                *inner.redis_down_until.lock().expect("redis state lock") =
                    Some(Instant::now() + REDIS_RETRY);
                // Log the switch, not every failed retry.
                if inner.shared.swap(false, Ordering::Relaxed)
                    || inner.started.elapsed() < REDIS_RETRY
                {
                    tracing::warn!(
                        %error,
                        live_workers = inner.live_workers.load(Ordering::Relaxed),
                        "Google budget: Redis unreachable, using this worker's share"
                    );
                }
                self.publish_gauges();
                None
            }
        }
    }

    /// This worker's share: both budgets divided by the live workers.
    fn take_local(&self, principal: Option<&str>) -> Result<(), OverBudget> {
        let inner = &self.inner;
        let workers = inner.live_workers.load(Ordering::Relaxed).max(1) as f64;
        let project = Rate::per_min(f64::from(inner.settings.project_per_min) / workers);
        let user = Rate::per_min(f64::from(inner.settings.user_per_min) / workers);
        let now = inner.started.elapsed().as_secs_f64() * 1000.0;
        let mut local = inner.local.lock().expect("local quota lock");
        let over = |wait: f64, scope| OverBudget {
            retry_after: Duration::from_secs_f64(wait.max(1.0) / 1000.0),
            scope,
        };
        let project_wait = project.wait(local.project, now);
        if project_wait > 0.0 {
            return Err(over(project_wait, BudgetScope::Project));
        }
        if let Some(p) = principal {
            // Forget connections whose state no longer limits anything.
            if local.connections.len() > 10_000 {
                local.connections.retain(|_, tat| *tat > now);
            }
            let tat = local.connections.entry(p.to_owned()).or_insert(0.0);
            user.take(tat, now)
                .map_err(|wait| over(wait, BudgetScope::Connection))?;
        }
        project
            .take(&mut local.project, now)
            .map_err(|wait| over(wait, BudgetScope::Project))
    }
}

impl CallBudget for Quota {
    fn acquire<'a>(&'a self, call: Call<'a>) -> AcquireFuture<'a> {
        Box::pin(self.acquire_for(call.principal))
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(qpm: u32, user: u32, share: f64) -> QuotaSettings {
        QuotaSettings {
            project_per_min: qpm,
            user_per_min: user,
            poll_share: share,
        }
    }

    #[test]
    fn the_interval_stretches_only_beyond_the_poll_share() {
        let s = settings(9_000, 500, 0.5);
        let base = Duration::from_secs(300);
        // 4,500 polls/min: 22,500 connections fit in 300 s.
        assert_eq!(effective_poll_interval(base, 0, &s), base);
        assert_eq!(effective_poll_interval(base, 22_500, &s), base);
        assert_eq!(
            effective_poll_interval(base, 1_000_000, &s),
            Duration::from_secs(13_334)
        );
        let small = settings(600, 500, 0.5);
        assert_eq!(
            effective_poll_interval(base, 10_000, &small),
            Duration::from_secs(2_000)
        );
        assert_eq!(
            effective_poll_interval(base, i64::MAX, &settings(1, 1, 0.01)),
            MAX_POLL_INTERVAL
        );
    }

    #[test]
    fn gcra_allows_the_rate_plus_one_seconds_burst() {
        let rate = Rate::per_min(120.0);
        let mut tat = 0.0;
        // From idle: the burst (2), then one every 500 ms.
        let mut granted = 0;
        let mut now = 0.0;
        while now <= 10_000.0 {
            while rate.take(&mut tat, now).is_ok() {
                granted += 1;
            }
            now += 10.0;
        }
        assert!((21..=22).contains(&granted), "{granted}");
    }

    #[tokio::test]
    async fn the_local_share_divides_by_live_workers_and_keys_connections_apart() {
        let quota = Quota::local_only(settings(600, 60, 0.5), "client");
        quota.set_live_workers(2);
        // 300/min share: 5/s burst.
        let mut granted = 0;
        while quota.take_local(None).is_ok() {
            granted += 1;
        }
        assert_eq!(granted, 5);
        let over = quota.take_local(None).unwrap_err();
        assert_eq!(over.scope, BudgetScope::Project);
        assert!(over.retry_after <= Duration::from_millis(200), "{over:?}");

        let quota = Quota::local_only(settings(6_000, 60, 0.5), "client");
        // One connection's burst of one (60/min), another still proceeds.
        quota.take_local(Some("1")).unwrap();
        let over = quota.take_local(Some("1")).unwrap_err();
        assert_eq!(over.scope, BudgetScope::Connection);
        quota.take_local(Some("2")).unwrap();
        assert!(!quota.is_shared());
    }

    #[test]
    fn usage_counts_the_last_minute_only() {
        let mut usage = Usage::default();
        usage.record(1_000);
        usage.record(1_000);
        usage.record(1_030);
        assert_eq!(usage.last_minute(1_030), 3);
        assert_eq!(usage.last_minute(1_061), 1);
        usage.record(1_060);
        assert_eq!(usage.last_minute(1_060), 2);
    }
}
