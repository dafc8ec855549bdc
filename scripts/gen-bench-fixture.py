#!/usr/bin/env python3
"""Generates fixtures/bench: one 10,000-event `primary` calendar for benchmarks.

Deterministic: the same arguments always write the same bytes (seeded RNG, a
fixed anchor date instead of "now"). Events spread from 60 days before the
anchor to 300 days after it, so a full sync with the default 90-day lookback
sees all of them while the anchor is recent; pass --anchor to move them.

Mix (Google's own wire format, as events.list returns it):
  * timed events in the calendar's zone, half with their own start.timeZone
  * ~5% all-day events (start.date / end.date), some spanning several days
  * ~2% events in other zones (America/New_York, Asia/Tokyo)
  * 50 weekly series (COUNT=8) among the 10,000 items, each a master
  * descriptions, locations, attendees and private extended properties on some

Usage: scripts/gen-bench-fixture.py [--out fixtures/bench] [--count 10000]
                                    [--anchor 2026-11-01] [--seed 42]
"""

import argparse
import datetime as dt
import json
import os
import random
import zoneinfo

BASE32HEX = "0123456789abcdefghijklmnopqrstuv"
CAL_ZONE = "Europe/Berlin"
SUMMARIES = [
    "Stand-up", "1:1", "Lunch", "Dentist", "Gym", "Planning", "Review",
    "Call with supplier", "Doctor", "School pick-up", "Yoga", "Team retro",
    "Haircut", "Car service", "Parents' evening", "Interview", "Workshop",
]
LOCATIONS = ["Room 4.01", "Café Liebling", "Zoom", "Office", "Home", None, None, None]


def event_id(rng, n):
    tail = "".join(rng.choice(BASE32HEX) for _ in range(10))
    return f"bench{n:05d}{tail}"


def rfc3339(local, zone):
    aware = local.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    return aware.isoformat()


def stamp(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "fixtures", "bench"))
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--anchor", default="2026-11-01")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    anchor = dt.datetime.fromisoformat(args.anchor)
    series_every = max(args.count // 50, 1)
    items = []
    for n in range(args.count):
        day = anchor + dt.timedelta(days=rng.randint(-60, 300))
        updated = anchor - dt.timedelta(days=rng.randint(1, 200), seconds=rng.randint(0, 86399),
                                        milliseconds=rng.randint(0, 999))
        item = {
            "kind": "calendar#event",
            "id": event_id(rng, n),
            "status": "confirmed",
            "created": stamp(updated - dt.timedelta(days=rng.randint(0, 30))),
            "updated": stamp(updated),
            "summary": f"{rng.choice(SUMMARIES)} #{n}",
        }
        location = rng.choice(LOCATIONS)
        if location:
            item["location"] = location
        if rng.random() < 0.3:
            item["description"] = f"Generated benchmark event {n}."
        roll = rng.random()
        if roll < 0.05:
            span = 1 if rng.random() < 0.8 else rng.randint(2, 7)
            item["start"] = {"date": day.date().isoformat()}
            item["end"] = {"date": (day.date() + dt.timedelta(days=span)).isoformat()}
        else:
            zone = CAL_ZONE
            if roll < 0.07:
                zone = rng.choice(["America/New_York", "Asia/Tokyo"])
            start = day.replace(hour=rng.randint(7, 19), minute=rng.choice([0, 15, 30, 45]))
            end = start + dt.timedelta(minutes=rng.choice([15, 30, 45, 60, 90, 120]))
            with_zone = zone != CAL_ZONE or rng.random() < 0.5
            item["start"] = {"dateTime": rfc3339(start, zone)}
            item["end"] = {"dateTime": rfc3339(end, zone)}
            if with_zone or n % series_every == 0:
                item["start"]["timeZone"] = zone
                item["end"]["timeZone"] = zone
            if n % series_every == 0:
                item["recurrence"] = ["RRULE:FREQ=WEEKLY;COUNT=8"]
        if rng.random() < 0.1:
            item["attendees"] = [
                {"email": "owner@fake-google.test", "self": True, "responseStatus": "accepted"},
                {"email": f"guest{n}@example.com", "responseStatus": rng.choice(["accepted", "needsAction", "tentative"])},
            ]
        if rng.random() < 0.05:
            item["extendedProperties"] = {"private": {"benchTag": str(n)}}
        items.append(item)

    os.makedirs(args.out, exist_ok=True)
    calendar = {
        "kind": "calendar#events",
        "summary": "Benchmark calendar",
        "timeZone": CAL_ZONE,
        "accessRole": "owner",
        "items": items,
    }
    with open(os.path.join(args.out, "primary.json"), "w", encoding="utf-8") as f:
        json.dump(calendar, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    oauth = {
        "client_id": "123456789012-fakegoogle0bench0client.apps.googleusercontent.com",
        "client_secret": "GOCSPX-fake-google-bench-secret",
        "refresh_tokens": ["1//0bench-refresh-token"],
    }
    with open(os.path.join(args.out, "oauth.json"), "w", encoding="utf-8") as f:
        json.dump(oauth, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
