"""Every etcd key Droplet writes, built in one place. All live under `settings.etcd_prefix`.

    values/<key>            user values, and DAG results under a caller's output key
    results/<call id>       each call's outcome, written once; kept `result_window_s` (the
                            caller has its reply), or `result_ttl_s` when read by key later
    chunks/<blob>/<n>       the parts of a large value; pending/<blob> until its head links it
    functions/<name>        registered functions (signed, bound to name and registration)
    dags/<name>             DAG records; pins/<worker> and placements/<dag>/<function> pin them
    workers/<id>            live workers (under their lease); fleet/<id> every worker that joined
    schedulers/<id>         live schedulers (under their lease)
    joins/<schedule>/<fn>/  fan-in state of a DAG step: src/<source> partials, done
    claims/<id>             long calls acked and held by a worker
    requests/<id>           answers to admin requests (a redelivery gets the same answer)
    reaping/<id>            which scheduler drains a dead worker's queue
    deliveries/<digest>     redelivery counts of suspect messages
    recent/<worker id>      what a worker ran lately, for the dashboard (under its lease)
    cancels/<call id>       a call cancelled (written with its CANCELLED outcome); every
                            worker watches this prefix to skip or interrupt the call
    fired/<call id>         a delayed call that came due and was placed (once per call)
"""

from __future__ import annotations


class StoreKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.values = prefix + "values/"
        self.results = prefix + "results/"
        self.chunks = prefix + "chunks/"
        self.pending = prefix + "pending/"
        self.functions = prefix + "functions/"
        self.dags = prefix + "dags/"
        self.pins = prefix + "pins/"
        self.placements = prefix + "placements/"
        self.workers = prefix + "workers/"
        self.schedulers = prefix + "schedulers/"
        self.joins = prefix + "joins/"
        self.claims = prefix + "claims/"
        self.requests = prefix + "requests/"
        # Every worker that ever joined, without a lease: a dead one stays listed until a
        # scheduler has re-routed what was left in its queue.
        self.fleet = prefix + "fleet/"
        self.reaping = prefix + "reaping/"
        self.deliveries = prefix + "deliveries/"
        self.recent = prefix + "recent/"
        self.cancels = prefix + "cancels/"
        self.fired = prefix + "fired/"

    def value(self, key: str) -> str:
        return self.values + key

    def result(self, call_id: str) -> str:
        return self.results + call_id

    def blob(self, blob_id: str) -> str:
        return f"{self.chunks}{blob_id}/"

    def chunk(self, blob_id: str, index: int) -> str:
        return f"{self.chunks}{blob_id}/{index:08d}"

    def pending_blob(self, blob_id: str) -> str:
        return self.pending + blob_id

    def function(self, name: str) -> str:
        return self.functions + name

    def dag(self, name: str) -> str:
        return self.dags + name

    def pin(self, worker_id: str) -> str:
        return self.pins + worker_id

    def placement(self, dag_name: str, function_name: str) -> str:
        return f"{self.placements}{dag_name}/{function_name}"

    def worker(self, worker_id: str) -> str:
        return self.workers + worker_id

    def scheduler(self, scheduler_id: str) -> str:
        return self.schedulers + scheduler_id

    def fleet_member(self, worker_id: str) -> str:
        return self.fleet + worker_id

    def join(self, schedule_id: str, target: str) -> str:
        return f"{self.joins}{schedule_id}/{target}/"

    def join_part(self, schedule_id: str, target: str, source: str) -> str:
        return f"{self.join(schedule_id, target)}src/{source}"

    def join_done(self, schedule_id: str, target: str) -> str:
        return f"{self.join(schedule_id, target)}done"

    def request(self, request_id: str) -> str:
        return self.requests + request_id

    def reaper(self, worker_id: str) -> str:
        return self.reaping + worker_id

    def delivery_count(self, digest: str) -> str:
        return self.deliveries + digest

    def recent_calls(self, worker_id: str) -> str:
        return self.recent + worker_id

    def cancel(self, call_id: str) -> str:
        return self.cancels + call_id

    def fired_call(self, call_id: str) -> str:
        return self.fired + call_id

    def claim(self, claim_id: str) -> str:
        return self.claims + claim_id

    def relative(self, full_key: str) -> str:
        """A key below the namespace prefix (what signatures of stored values are bound to)."""
        return full_key[len(self.prefix):]

    @staticmethod
    def tail(full_key: str, collection: str) -> str:
        """The name part of a key under one of the collections above."""
        return full_key[len(collection):]
