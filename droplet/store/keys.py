"""Every etcd key Droplet writes, built in one place. All live under `settings.etcd_prefix`."""

from __future__ import annotations


class StoreKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.values = prefix + "values/"
        self.results = prefix + "results/"
        self.chunks = prefix + "chunks/"
        self.calls = prefix + "calls/"
        self.functions = prefix + "functions/"
        self.dags = prefix + "dags/"
        self.pins = prefix + "pins/"
        self.workers = prefix + "workers/"
        self.schedulers = prefix + "schedulers/"
        self.claims = prefix + "claims/"
        # Every worker that ever joined, without a lease: a dead one stays listed until a
        # scheduler has re-routed what was left in its queue.
        self.fleet = prefix + "fleet/"
        self.reaping = prefix + "reaping/"
        self.deliveries = prefix + "deliveries/"  # redelivery counts of suspect messages

    def value(self, key: str) -> str:
        return self.values + key

    def result(self, key: str) -> str:
        return self.results + key

    def blob(self, blob_id: str) -> str:
        return f"{self.chunks}{blob_id}/"

    def chunk(self, blob_id: str, index: int) -> str:
        return f"{self.chunks}{blob_id}/{index:08d}"

    def call_done(self, call_id: str) -> str:
        return self.calls + call_id

    def function(self, name: str) -> str:
        return self.functions + name

    def dag(self, name: str) -> str:
        return self.dags + name

    def pin(self, worker_id: str) -> str:
        return self.pins + worker_id

    def worker(self, worker_id: str) -> str:
        return self.workers + worker_id

    def scheduler(self, scheduler_id: str) -> str:
        return self.schedulers + scheduler_id

    def fleet_member(self, worker_id: str) -> str:
        return self.fleet + worker_id

    def reaper(self, worker_id: str) -> str:
        return self.reaping + worker_id

    def delivery_count(self, digest: str) -> str:
        return self.deliveries + digest

    def claim(self, call_id: str) -> str:
        return self.claims + call_id

    @staticmethod
    def tail(full_key: str, collection: str) -> str:
        """The name part of a key under one of the collections above."""
        return full_key[len(collection):]
