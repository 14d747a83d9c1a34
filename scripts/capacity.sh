#!/usr/bin/env bash
# How many Vigil instances, and how much database and Redis, for your numbers: the capacity
# model of docs/scaling.md applied to the unit costs measured in BENCHMARKS.md (its "Unit
# costs" table, read by key).
#
# Usage: bash scripts/capacity.sh --sensors 10000 --hz 1 --dashboards 200
# Options:
#   --sensors N        producers posting events (required)
#   --hz F             events per second per sensor (1)
#   --dashboards C     live clients on /ws or /api/events/stream (0)
#   --sites S          sites the sensors are spread over evenly (1)
#   --per-site         each dashboard watches one site (a source filter), so it receives 1/S of
#                      the events; without it every dashboard receives every event
#   --bulk             events arrive in bulk POSTs from gateways (the bulk unit costs)
#   --cores N          CPUs per Vigil instance (2)
#   --utilisation U    the share of an instance's CPUs to plan for (0.5: room for bursts, and
#                      for the others to take over one instance's load)
#   --benchmarks FILE  where the unit costs are (BENCHMARKS.md)
#   --json             the answer as one JSON object
set -euo pipefail
VIGIL_BENCHMARKS_DEFAULT="$(dirname "$0")/../BENCHMARKS.md" exec python3 - "$@" <<'PY'
import argparse, json, math, os, re, sys

parser = argparse.ArgumentParser(prog="scripts/capacity.sh", description="Vigil's capacity model")
parser.add_argument("--sensors", type=int, required=True, help="producers posting events")
parser.add_argument("--hz", type=float, default=1.0, help="events per second per sensor (1)")
parser.add_argument("--dashboards", type=int, default=0, help="live clients on /ws or /api/events/stream (0)")
parser.add_argument("--sites", type=int, default=1, help="sites the sensors are spread over evenly (1)")
parser.add_argument("--per-site", action="store_true", help="each dashboard watches one site, so receives 1/sites of the events")
parser.add_argument("--bulk", action="store_true", help="events arrive in bulk POSTs from gateways (the bulk unit costs)")
parser.add_argument("--cores", type=float, default=2.0, help="CPUs per Vigil instance (2)")
parser.add_argument("--utilisation", type=float, default=0.5, help="share of an instance's CPUs to plan for (0.5)")
parser.add_argument("--benchmarks", default=os.path.normpath(os.environ["VIGIL_BENCHMARKS_DEFAULT"]), help="where the unit costs are (the repository's BENCHMARKS.md)")
parser.add_argument("--json", action="store_true", help="the answer as one JSON object")
args = parser.parse_args(sys.argv[1:])
if args.sensors < 0 or args.hz <= 0 or args.dashboards < 0 or args.sites < 1:
    parser.error("sensors and dashboards must be 0 or more, hz above 0, sites 1 or more")
if not (0 < args.utilisation <= 1) or args.cores <= 0:
    parser.error("--utilisation must be in (0, 1] and --cores above 0")

try:
    page = open(args.benchmarks, encoding="utf-8").read()
except OSError as error:
    sys.exit(f"capacity: cannot read {args.benchmarks}: {error}")

# The unit costs: rows "| words | `key` | number unit |".
# A difference of two runs (a further subscriber's cost) can come out below zero by noise;
# no unit of work costs less than nothing.
costs = {key: max(0.0, float(value)) for key, value in
         re.findall(r"^\|[^|\n]*\| `([a-z0-9_]+)` \| (-?[0-9.]+)[^|\n]*\|$", page, re.M)}
needed = ["vigil_us_per_event", "mariadb_us_per_event", "redis_us_per_event",
          "vigil_us_per_bulk_event", "mariadb_us_per_bulk_event", "redis_us_per_bulk_event",
          "redis_bytes_in_per_event", "redis_bytes_out_per_event", "ws_ms_per_1000_deliveries",
          "ws_idle_kib", "vigil_us_per_event_received", "redis_us_per_event_per_subscriber",
          "redis_bytes_out_per_event_per_subscriber"]
missing = [key for key in needed if key not in costs]
if missing:
    sys.exit(f"capacity: {args.benchmarks} has no unit cost {', '.join(missing)}; "
             "run `bash scripts/bench.sh` to measure them")
written = re.search(r"on (\d{4}-\d{2}-\d{2}) at (\d{2}:\d{2}) UTC from commit\s+`([^`]+)`", page)
measured = f"{written.group(1)} {written.group(2)} UTC, {written.group(3)}" if written else "date unknown"

suffix = "_bulk_event" if args.bulk else "_event"
events = args.sensors * args.hz
share = 1 / args.sites if args.per_site else 1.0
deliveries = events * args.dashboards * share
ingest_cores = events * costs["vigil_us_per" + suffix] / 1e6
delivery_cores = deliveries * costs["ws_ms_per_1000_deliveries"] / 1e6
budget = args.cores * args.utilisation
received_us = costs["vigil_us_per_event_received"]
def vigil_cores_for(instances):
    # Every instance but the one that took an event also reads it from Redis.
    return ingest_cores + delivery_cores + (instances - 1) * events * received_us / 1e6
# Instances: enough for all of that at the planned utilisation; at least 2, so that one can
# fail or restart. Past the point where one more instance adds more than its share, adding
# instances no longer helps (every instance reads every event): partition by site instead.
instances = 2
while vigil_cores_for(instances) / instances > budget:
    if events * received_us / 1e6 >= budget:
        break
    instances += 1
vigil_cores = vigil_cores_for(instances)
subscribers = instances - 1
clients_per_instance = math.ceil(args.dashboards / instances)
answer = {
    "measured": measured,
    "events_per_s": events,
    "deliveries_per_s": deliveries,
    "instances": instances,
    "vigil_cores": vigil_cores,
    "vigil_cores_per_instance": vigil_cores / instances,
    "clients_per_instance": clients_per_instance,
    "client_memory_mib_per_instance": clients_per_instance * costs["ws_idle_kib"] / 1024,
    "database_rows_per_s": events,
    "database_cores": events * costs["mariadb_us_per" + suffix] / 1e6,
    "redis_cores": events * (costs["redis_us_per" + suffix]
                             + subscribers * costs["redis_us_per_event_per_subscriber"]) / 1e6,
    # With the instances each publishing their own batches, Redis's CPU per further instance
    # was measured higher than one publisher's further subscribers cost it (docs/scaling.md,
    # "Several instances on one machine"): the model's figure is the floor, this the ceiling.
    "redis_cores_posting_instances": None if "redis_us_per_event_per_posting_instance" not in costs else
        events * (costs["redis_us_per" + suffix]
                  + subscribers * max(costs["redis_us_per_event_per_subscriber"],
                                      costs["redis_us_per_event_per_posting_instance"])) / 1e6,
    "redis_ingress_mib_per_s": events * costs["redis_bytes_in_per_event"] / 2**20,
    "redis_egress_mib_per_s": events * (costs["redis_bytes_out_per_event"]
                                        + subscribers * costs["redis_bytes_out_per_event_per_subscriber"]) / 2**20,
}
# Where one component runs out (docs/scaling.md, "Where one of each runs out").
warnings = []
if vigil_cores / instances > budget:
    warnings.append("each instance reads every event, and at this rate that alone fills an instance's budget: partition sites over separate deployments (docs/scaling.md)")
if answer["redis_cores"] > 0.5:
    warnings.append("Redis executes commands on one thread: past half a core, shard pub/sub by site (Redis Cluster, SPUBLISH) or give sites their own Redis")
elif (answer["redis_cores_posting_instances"] or 0) > 0.5:
    warnings.append("Redis may pass half a core with every instance posting (the higher figure): measure it under your load, and shard pub/sub by site (Redis Cluster, SPUBLISH) or give sites their own Redis if it does")
if answer["redis_egress_mib_per_s"] > 100:
    warnings.append("Redis sends every event to every instance: past ~100 MiB/s of egress, partition instances by site so each receives only its sites' events")
if answer["database_cores"] > 8:
    warnings.append("more database CPU than one primary is usually given: partition sites onto separate databases, or a write-scaling engine (TiDB, Vitess)")
answer["warnings"] = warnings

if args.json:
    print(json.dumps(answer))
    sys.exit(0)
mode = "bulk POSTs" if args.bulk else "single-event POSTs"
seen = f"1/{args.sites} of the events (one site each)" if args.per_site else "every event"
print(f"{args.sensors} sensors × {args.hz:g} Hz = {events:,.0f} events/s in {mode}; {args.dashboards} dashboards, each receiving {seen}: {deliveries:,.0f} deliveries/s")
print(f"unit costs from {args.benchmarks} ({measured})")
print()
rows = [
    ("Vigil instances", f"{instances}, of {args.cores:g} CPUs each, planned at {args.utilisation:.0%} of them (at least 2)",
     f"CPU = events × {costs['vigil_us_per' + suffix]:g} µs + deliveries × {costs['ws_ms_per_1000_deliveries']:g} ms/1,000 + (instances − 1) × events × {received_us:g} µs = {vigil_cores:.2f} CPUs"),
    ("per instance", f"{answer['vigil_cores_per_instance']:.2f} CPUs, {clients_per_instance} clients, {answer['client_memory_mib_per_instance']:.1f} MiB for them",
     f"clients × {costs['ws_idle_kib']:g} KiB idle, plus the process itself"),
    ("database", f"{events:,.0f} rows/s, {answer['database_cores']:.2f} CPUs", f"events × {costs['mariadb_us_per' + suffix]:g} µs"),
    ("Redis", f"{answer['redis_cores']:.2f} CPU, in {answer['redis_ingress_mib_per_s']:.1f} MiB/s, out {answer['redis_egress_mib_per_s']:.1f} MiB/s",
     f"events × ({costs['redis_us_per' + suffix]:g} + {subscribers} × {costs['redis_us_per_event_per_subscriber']:g}) µs; out = events × ({costs['redis_bytes_out_per_event']:g} + {subscribers} × {costs['redis_bytes_out_per_event_per_subscriber']:g}) B"),
]
if answer["redis_cores_posting_instances"] is not None:
    rows.append(("", f"up to {answer['redis_cores_posting_instances']:.2f} CPU with every instance posting",
                 f"events × ({costs['redis_us_per' + suffix]:g} + {subscribers} × {costs['redis_us_per_event_per_posting_instance']:g}) µs, as measured with instances stacked on one machine"))
width = max(len(name) for name, _, _ in rows)
for name, value, formula in rows:
    print(f"{name:<{width}}  {value}")
    print(f"{'':<{width}}  {formula}")
for warning in warnings:
    print(f"\nwarning: {warning}")
PY
