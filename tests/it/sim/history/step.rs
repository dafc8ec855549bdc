//! [`Sim::step`]: what each operation of a history does, on both sides.

use super::*;

impl Sim {
    /// Runs one operation.
    pub async fn step(&mut self, index: usize, op: &Op) {
        self.op = index;
        match op {
            Op::HostInsert(f) => {
                let id = self
                    .host_write(None, f)
                    .await
                    .expect("an insert returns its row");
                let offline = if self.connected {
                    ""
                } else {
                    " (disconnected)"
                };
                self.did("host_insert", format!("host insert #{id} {f:?}{offline}"));
            }
            Op::HostUpdate { pick, change } => {
                let ids = self.host_ids().await;
                if ids.is_empty() {
                    return self.note(format!("{index:>4} host update: no appointment"));
                }
                let id = ids[(*pick % ids.len() as u64) as usize];
                if !self.host_update(id, change).await {
                    return self.note(format!("{index:>4} host update: #{id} vanished"));
                }
                let offline = if self.connected {
                    ""
                } else {
                    " (disconnected)"
                };
                self.did(
                    "host_update",
                    format!("host update #{id} {change:?}{offline}"),
                );
            }
            Op::HostDelete { pick } => {
                let ids = self.host_ids().await;
                if ids.is_empty() {
                    return self.note(format!("{index:>4} host delete: no appointment"));
                }
                let id = ids[(*pick % ids.len() as u64) as usize];
                self.tie_appointment(id).await;
                sqlx::query("DELETE FROM appointments WHERE id = $1")
                    .bind(id)
                    .execute(self.pool())
                    .await
                    .unwrap();
                self.touch(Key::Appointment(id), Side::Host, None);
                let offline = if self.connected {
                    ""
                } else {
                    " (disconnected)"
                };
                self.did("host_delete", format!("host delete #{id}{offline}"));
            }
            Op::GoogleCreate(f) => {
                let event = self
                    .sync
                    .google
                    .create_event(CALENDAR, event_body(f))
                    .unwrap();
                let id = event["id"].as_str().unwrap().to_owned();
                let row = Row::from_event(&event, &self.calendar_zone);
                self.touch(
                    Key::Event(id.clone()),
                    Side::Google,
                    Some((row, updated_of(&event))),
                );
                self.did("google_create", format!("google create {id} {f:?}"));
            }
            Op::GoogleCreateSeries {
                fields,
                weekly,
                count,
            } => {
                let mut f = fields.clone();
                // Google wants a zone on a recurring timed event.
                if let When::Timed {
                    start_zone,
                    end_zone,
                    ..
                } = &mut f.when
                {
                    let zone = start_zone.clone().unwrap_or(self.calendar_zone.clone());
                    *start_zone = Some(zone.clone());
                    *end_zone = Some(zone);
                }
                let mut body = event_body(&f);
                let freq = if *weekly { "WEEKLY" } else { "DAILY" };
                body["recurrence"] = json!([format!("RRULE:FREQ={freq};COUNT={count}")]);
                let master = self.sync.google.create_event(CALENDAR, body).unwrap();
                let master_id = master["id"].as_str().unwrap().to_owned();
                let instances: Vec<Value> = self
                    .live_events()
                    .into_iter()
                    .filter(|e| e["recurringEventId"].as_str() == Some(master_id.as_str()))
                    .collect();
                for instance in &instances {
                    let row = Row::from_event(instance, &self.calendar_zone);
                    let id = instance["id"].as_str().unwrap().to_owned();
                    self.touch(
                        Key::Event(id),
                        Side::Google,
                        Some((row, updated_of(instance))),
                    );
                }
                self.did(
                    "google_create_series",
                    format!(
                        "google create series {master_id} ({freq} x{count}: {} instances) {f:?}",
                        instances.len()
                    ),
                );
            }
            Op::GoogleEdit { pick, change } => {
                let events = self.live_events();
                if events.is_empty() {
                    return self.note(format!("{index:>4} google edit: no event"));
                }
                let event = events[(*pick % events.len() as u64) as usize].clone();
                self.tie_event(&event).await;
                if !self.google_edit(&event, change) {
                    return self.note(format!("{index:>4} google edit: event vanished"));
                }
                self.did(
                    "google_edit",
                    format!("google edit {} {change:?}", event["id"].as_str().unwrap()),
                );
            }
            Op::GoogleDelete { pick } => {
                let events = self.live_events();
                if events.is_empty() {
                    return self.note(format!("{index:>4} google delete: no event"));
                }
                let event = events[(*pick % events.len() as u64) as usize].clone();
                self.tie_event(&event).await;
                let id = event["id"].as_str().unwrap().to_owned();
                if self.sync.google.delete_event(CALENDAR, &id).is_err() {
                    return self.note(format!("{index:>4} google delete: {id} vanished"));
                }
                self.touch(Key::Event(id.clone()), Side::Google, None);
                self.did("google_delete", format!("google delete {id}"));
            }
            Op::BothEdit {
                pick,
                host,
                google,
                google_first,
            } => {
                // Items linked on both sides whose event is live.
                let links: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT l.appointment_id, l.event_id FROM plansync.links l \
                     JOIN appointments a ON a.id = l.appointment_id \
                     WHERE a.user_id = $1 ORDER BY a.id",
                )
                .bind(USER)
                .fetch_all(self.pool())
                .await
                .unwrap();
                let live = self.live_events();
                let pairs: Vec<(i64, Value)> = links
                    .into_iter()
                    .filter_map(|(a, e)| {
                        live.iter()
                            .find(|ev| ev["id"].as_str() == Some(e.as_str()))
                            .map(|ev| (a, ev.clone()))
                    })
                    .collect();
                if pairs.is_empty() {
                    return self.note(format!("{index:>4} both-sides edit: no linked item"));
                }
                let (id, event) = pairs[(*pick % pairs.len() as u64) as usize].clone();
                self.model.tie(id, event["id"].as_str().unwrap());
                let (host_done, google_done) = if *google_first {
                    let g = self.google_edit(&event, google);
                    (self.host_update(id, host).await, g)
                } else {
                    let h = self.host_update(id, host).await;
                    (h, self.google_edit(&event, google))
                };
                if !(host_done && google_done) {
                    return self.note(format!(
                        "{index:>4} both-sides edit #{id}: vanished (host done: {host_done}, google done: {google_done})"
                    ));
                }
                self.did(
                    "both_edit",
                    format!(
                        "both-sides edit #{id} / {} (google first: {google_first}) host {host:?} google {google:?}",
                        event["id"].as_str().unwrap()
                    ),
                );
            }
            Op::Pass => {
                self.ensure_main().await;
                let main = self.main.as_ref().unwrap();
                let id = main.id.clone();
                match main.pass().await {
                    Ok(r) => self.did(
                        "pass",
                        format!(
                            "pass on {id}: ran {} succeeded {} failed {} rescued {}",
                            r.ran, r.succeeded, r.failed, r.rescued
                        ),
                    ),
                    Err(err) => panic!("a pass on {id} could not run: {err:?}"),
                }
            }
            Op::Notify => {
                if !self.connected {
                    return self.note(format!("{index:>4} notify: disconnected"));
                }
                self.enqueue_pull().await;
                self.did("notify", "pull enqueued (notification)".into());
            }
            Op::Fault { kind, variant } => {
                let google = &self.sync.google;
                let lost = if variant % 2 == 0 {
                    Lost::Error
                } else {
                    Lost::Drop
                };
                let text = match kind {
                    ops::FaultKind::LostInsert => {
                        google.inject_fault(
                            Operation::Insert,
                            Fault::LoseResponse { then: lost },
                            1,
                        );
                        format!("fault: next insert's answer lost ({lost:?})")
                    }
                    ops::FaultKind::LostPatch => {
                        google.inject_fault(
                            Operation::Patch,
                            Fault::LoseResponse { then: lost },
                            1,
                        );
                        format!("fault: next patch's answer lost ({lost:?})")
                    }
                    ops::FaultKind::List5xx => {
                        let fault = if variant % 2 == 0 {
                            Fault::BackendError
                        } else {
                            Fault::Unavailable
                        };
                        google.inject_fault(Operation::List, fault.clone(), 1);
                        format!("fault: next list answers {fault:?}")
                    }
                    ops::FaultKind::RateLimited => {
                        let op = [Operation::Insert, Operation::Patch, Operation::List]
                            [(*variant % 3) as usize];
                        google.inject_fault(
                            op,
                            Fault::RateLimit {
                                status: 429,
                                user: variant & 4 != 0,
                                retry_after_secs: Some(1),
                            },
                            1,
                        );
                        format!("fault: next {op:?} answers 429, Retry-After 1")
                    }
                    ops::FaultKind::SyncTokenGone => {
                        google.invalidate_sync_tokens(CALENDAR).unwrap();
                        "fault: sync tokens invalidated (410 next)".to_owned()
                    }
                };
                self.did("fault", text);
            }
            Op::Kill { at, extra_ms } => self.kill(*at, *extra_ms).await,
            Op::ToggleConnection => {
                if self.connected {
                    plansync::store::connections::disconnect(
                        self.pool(),
                        ConnectionId(self.connection),
                    )
                    .await
                    .unwrap();
                    self.connected = false;
                    self.did("disconnect", format!("disconnect {}", self.connection));
                } else {
                    self.connect().await;
                    self.did("reconnect", format!("re-connect {}", self.connection));
                }
            }
            Op::ToggleReplica { kill } => match self.replica.take() {
                None => {
                    let process = self.process("replica").await;
                    let stop = CancellationToken::new();
                    let task = process.spawn_run(stop.clone());
                    let id = process.id.clone();
                    self.replica = Some((process, stop, task));
                    self.did("replica_start", format!("second replica {id} runs"));
                }
                Some((process, stop, task)) => {
                    let id = process.id.clone();
                    if *kill {
                        let claimed = self.kill_process(process).await;
                        self.did("replica_stop", format!("kill -9 replica {id}: {claimed}"));
                    } else {
                        stop.cancel();
                        tokio::time::timeout(Duration::from_secs(30), task)
                            .await
                            .expect("the replica stops within its grace")
                            .expect("the replica's task ends");
                        drop(process);
                        self.did("replica_stop", format!("replica {id} stopped (SIGTERM)"));
                    }
                }
            },
        }
    }
}
