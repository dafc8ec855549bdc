//! The contract as files (contract/): the JSON Schema checks the Rust payload
//! types, and [`assert_valid`] is what every subscriber helper of this suite
//! runs on each payload it receives.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use chrono::{TimeZone, Utc};
use plansync::deltas::{
    AppointmentPayload, ConnectionPayload, DeltaAction, GoogleSync, PlanItemDelta,
    PlanItemDeltaPayload, UserDeltaMessage,
};
use plansync::ids::{AppointmentId, ConnectionId, UserId};
use serde_json::{json, Value};

pub fn contract_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contract")
}

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let text = std::fs::read_to_string(contract_dir().join("plan-item-delta.schema.json"))
            .expect("contract/plan-item-delta.schema.json exists");
        serde_json::from_str(&text).expect("the schema is JSON")
    })
}

/// Which definition a payload is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// The root: a published message (JSON channel or Socket.IO payload).
    Message,
    UserDeltaMessage,
    PlanItemDeltaPayload,
    CatchUpAnswer,
    CatchUpGone,
    PlanItemDelta,
}

/// A validator for `shape`: the schema itself, or the schema's `$defs` under
/// a root that refers to the definition.
fn with_validator<T>(shape: Shape, f: impl FnOnce(&jsonschema::Validator) -> T) -> T {
    static CACHE: OnceLock<Mutex<HashMap<Shape, &'static jsonschema::Validator>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let validator = *cache.lock().unwrap().entry(shape).or_insert_with(|| {
        let mut root = schema().clone();
        if shape != Shape::Message {
            let defs = root["$defs"].clone();
            root = json!({
                "$schema": root["$schema"],
                "$defs": defs,
                "$ref": format!("#/$defs/{shape:?}"),
            });
        }
        let validator =
            jsonschema::draft202012::new(&root).expect("the schema compiles (draft 2020-12)");
        Box::leak(Box::new(validator))
    });
    f(validator)
}

/// The schema's complaints about `value` as `shape`, empty when valid.
pub fn errors(shape: Shape, value: &Value) -> Vec<String> {
    with_validator(shape, |v| {
        v.iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    })
}

/// Panics unless `value` is a valid `shape`.
#[track_caller]
pub fn assert_valid(shape: Shape, value: &Value) {
    let errors = errors(shape, value);
    assert!(
        errors.is_empty(),
        "{shape:?} violates contract/plan-item-delta.schema.json: {errors:?}\n{value}"
    );
}

fn appointment(google: bool) -> AppointmentPayload {
    let t = Utc.with_ymd_and_hms(2026, 12, 10, 15, 0, 0).unwrap();
    AppointmentPayload {
        id: AppointmentId(17),
        user_id: UserId(3),
        summary: "Dentist".into(),
        description: None,
        location: Some("Main St 1".into()),
        start_at: t,
        end_at: t + chrono::Duration::minutes(45),
        start_time_zone: Some("Europe/Berlin".into()),
        end_time_zone: None,
        all_day: false,
        created_at: t,
        updated_at: t + chrono::Duration::milliseconds(1),
        google_sync: google.then(|| GoogleSync {
            calendar_id: "primary".into(),
            event_id: "abc123".into(),
            etag: Some("\"318\"".into()),
            remote_updated_at: None,
        }),
    }
}

fn every_kind_of_delta() -> Vec<PlanItemDelta> {
    let mut link = PlanItemDelta::google_link(ConnectionPayload {
        id: ConnectionId(4),
        calendar_id: "primary".into(),
        needs_reauth: true,
        calendar_gone: false,
        last_error: Some("invalid_grant".into()),
    });
    link.version = Some(9);
    let mut recovered = PlanItemDelta::google_link(ConnectionPayload {
        id: ConnectionId(4),
        calendar_id: "primary".into(),
        needs_reauth: false,
        calendar_gone: false,
        last_error: None,
    });
    recovered.version = Some(10);
    vec![
        PlanItemDelta::appointment_upsert(DeltaAction::Created, 5, appointment(true)),
        PlanItemDelta::appointment_upsert(DeltaAction::Updated, 6, appointment(false)),
        PlanItemDelta::appointment_deleted(AppointmentId(17), 7),
        PlanItemDelta::plan_updated(8),
        link,
        recovered,
    ]
}

#[test]
fn the_rust_payload_types_validate_against_the_schema() {
    let deltas = every_kind_of_delta();
    for delta in &deltas {
        assert_valid(Shape::PlanItemDelta, &serde_json::to_value(delta).unwrap());
    }
    let message = serde_json::to_value(UserDeltaMessage {
        user_id: UserId(3),
        deltas: deltas.clone(),
    })
    .unwrap();
    assert_valid(Shape::UserDeltaMessage, &message);
    assert_valid(Shape::Message, &message);
    let payload = serde_json::to_value(PlanItemDeltaPayload { deltas }).unwrap();
    assert_valid(Shape::PlanItemDeltaPayload, &payload);
    assert_valid(Shape::Message, &payload);
    // What the publisher splices from outbox text is the same document.
    let raw: Vec<String> = every_kind_of_delta()
        .iter()
        .map(|d| serde_json::to_string(d).unwrap())
        .collect();
    let raw: Vec<&str> = raw.iter().map(String::as_str).collect();
    let spliced: Value = serde_json::from_slice(&plansync::deltas::publish::json_message_raw(
        UserId(3),
        &raw,
    ))
    .unwrap();
    assert_valid(Shape::UserDeltaMessage, &spliced);
}

/// Payloads the contract forbids, and whether TypeScript's types can say so
/// too (a string pattern, like the timestamps', is beyond them).
fn invalid_cases() -> Vec<(&'static str, Value, bool)> {
    let valid = serde_json::to_value(PlanItemDelta::appointment_upsert(
        DeltaAction::Created,
        5,
        appointment(true),
    ))
    .unwrap();
    let mut cases = Vec::new();
    // An AppointmentPayload key missing (all are always present).
    let mut v = valid.clone();
    v["data"]["appointment"]
        .as_object_mut()
        .unwrap()
        .remove("location");
    cases.push(("missing location", v, true));
    // A timestamp without milliseconds.
    let mut v = valid.clone();
    v["data"]["appointment"]["startAt"] = json!("2026-12-10T15:00:00Z");
    cases.push(("seconds-only timestamp", v, false));
    // A deleted delta with data.
    let mut v = valid.clone();
    v["action"] = json!("deleted");
    cases.push(("deleted with data", v, true));
    // A plan delta naming an entity.
    let mut v = serde_json::to_value(PlanItemDelta::plan_updated(3)).unwrap();
    v["entityId"] = json!(7);
    cases.push(("plan with entity", v, true));
    // A link delta without its connection's lastError key.
    let mut v = serde_json::to_value(every_kind_of_delta()[4].clone()).unwrap();
    v["data"]["connection"]
        .as_object_mut()
        .unwrap()
        .remove("lastError");
    cases.push(("connection without lastError", v, true));
    // A link delta naming another section.
    let mut v = serde_json::to_value(every_kind_of_delta()[4].clone()).unwrap();
    v["data"]["section"] = json!("bills");
    cases.push(("link delta of another section", v, true));
    // No version.
    let mut v = valid;
    v.as_object_mut().unwrap().remove("version");
    cases.push(("no version", v, true));
    cases
}

#[test]
fn the_schema_refuses_what_the_contract_forbids() {
    for (what, case, _) in invalid_cases() {
        assert!(
            !errors(Shape::PlanItemDelta, &case).is_empty(),
            "the schema accepted {what}: {case}"
        );
    }
    assert_valid(Shape::CatchUpGone, &json!({"planVersion": 12}));
    assert!(!errors(Shape::CatchUpGone, &json!({"planVersion": "12"})).is_empty());
}

/// The TypeScript types agree with the schema: `tsc --strict` accepts every
/// kind of payload the schema accepts (built from the Rust types), and
/// refuses the forbidden ones it can express (each marked
/// `@ts-expect-error`, so an accepted one fails the check).
#[test]
fn the_typescript_types_accept_what_the_schema_accepts_and_refuse_the_rest() {
    crate::realtime::ensure_node_modules();
    let deltas = every_kind_of_delta();
    let samples = [
        (
            "UserDeltaMessage",
            serde_json::to_value(UserDeltaMessage {
                user_id: UserId(3),
                deltas: deltas.clone(),
            })
            .unwrap(),
        ),
        (
            "PlanItemDeltaPayload",
            serde_json::to_value(PlanItemDeltaPayload {
                deltas: deltas.clone(),
            })
            .unwrap(),
        ),
        (
            "CatchUpAnswer",
            json!({"userId": 3, "planVersion": 12, "deltas": deltas}),
        ),
        ("CatchUpGone", json!({"planVersion": 12})),
    ];
    let types = contract_dir().join("plan-item-delta");
    let mut source = format!(
        "import type {{ UserDeltaMessage, PlanItemDeltaPayload, CatchUpAnswer, CatchUpGone, \
         PlanItemDelta }} from {:?};\n",
        types.display().to_string()
    );
    for (i, (shape, sample)) in samples.iter().enumerate() {
        let shape_enum = match *shape {
            "UserDeltaMessage" => Shape::UserDeltaMessage,
            "PlanItemDeltaPayload" => Shape::PlanItemDeltaPayload,
            "CatchUpAnswer" => Shape::CatchUpAnswer,
            _ => Shape::CatchUpGone,
        };
        assert_valid(shape_enum, sample);
        source.push_str(&format!("export const ok{i}: {shape} = {sample};\n"));
    }
    for (i, (what, case, typescript_catches)) in invalid_cases().into_iter().enumerate() {
        if typescript_catches {
            // One line, so the directive covers wherever tsc reports it.
            source.push_str(&format!(
                "// {what}\n// @ts-expect-error\nexport const bad{i}: PlanItemDelta = {case};\n"
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("check.ts");
    std::fs::write(&file, &source).unwrap();
    let tsc = crate::realtime::realtime_dir().join("node_modules/.bin/tsc");
    let out = std::process::Command::new(tsc)
        .args([
            "--noEmit",
            "--strict",
            "--exactOptionalPropertyTypes",
            "--module",
            "esnext",
            "--moduleResolution",
            "bundler",
            "--target",
            "es2022",
        ])
        .arg(&file)
        .output()
        .expect("tsc runs (realtime/node_modules, from `npm ci`)");
    assert!(
        out.status.success(),
        "tsc disagrees with the schema:\n{}{}\n{source}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
