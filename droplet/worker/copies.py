"""The race between the copies of a speculative DAG step (droplet/speculation.py): one winner.

Each copy runs the step on its own worker and then decides, in etcd, under the step's race
records `joins/<schedule>/<step>$copies/` (the fan-in records of joins.py, reused):

* a valid result (not an error, not equal to one of `invalid_results`) writes `done`, naming
  its copy, in a transaction that holds only while `done` is absent: the first valid copy wins
  and only its commit sends the result on (or stores the call's outcome); every later copy
  finds `done` there and sends nothing. Copies finishing at the same moment race on that one
  key: exactly one commit takes effect.
* a losing result (invalid, or the copy failed) is recorded as the copy's partial, guarded on
  the records' version key like a join's partials; the copy that records the last of all the
  copies' losses writes `done` (aborted) and fails the call instead (a MULTI call whose copies
  all lost their snapshot runs again on a fresh one instead). Two losers recording at
  once cannot both miss each other: the second one's guard fails, and it sends itself its
  result (`copy_result`) to decide again, without running the function again.
* a copy with a valid result also writes a cancel record for the race (`cancels/`, watched by
  every worker): copies still running are interrupted like a cancelled call (a CallCancelled
  raised in the function) and their workers are free at once; code stuck in C runs on to its
  end (the worker is not exited for a lost race).
* a copy that starts after the race is decided does not run; a redelivered trigger of the
  winning copy sends its result on again (its first sending may not have been confirmed);
  redelivered triggers of the other copies are dropped.
* the records hold a winner's result only up to RECORD_MAX_BYTES (etcd takes ~1 MiB in one
  transaction): a larger win is recorded without it, and its redelivered trigger runs the
  copy again to send a result on, as a redelivered ordinary step does. A loss keeps only
  what may be read back: a small result, or the error (its message cut short).

So a DAG call gets one outcome, and a winning step sends exactly one result on, whatever the
timing of its copies; a copy whose worker is killed is redelivered or rerouted like any DAG
trigger and runs again, so the race always ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from droplet.errors import user_failure
from droplet.outbox import Outgoing
from droplet.proto import pb
from droplet.proto.envelope import MESSAGE_ROOM_BYTES
from droplet.proto.replies import error_value
from droplet.speculation import copies_scheduled, speculative_spec
from droplet.store import serializer
from droplet.store.commits import Commit
from droplet.worker.executor import TimeLimitExceeded, time_limit
from droplet.worker.handlers import WorkerState
from droplet.worker.joins import JoinState

RACE_SUFFIX = "$copies"  # "$" is outside function names: no clash with a real step
# The record that interrupts the losing copies still running is needed only until every
# worker's watch has seen it (a copy that starts later finds the race decided instead).
STOP_RECORD_TTL_S = 60.0
# Largest result a race record holds (a winner's, with a MULTI call's writes, or a loser's):
# etcd refuses transactions over ~1 MiB (commits.MAX_TXN_BYTES), and a commit refused for its
# size is not one the worker can retry.
RECORD_MAX_BYTES = 256 * 1024
# How long loading a copy's result and comparing it with invalid_results may take (is_valid).
COMPARE_LIMIT_S = 10.0
log = logging.getLogger(__name__)


@dataclass
class Race:
    schedule: pb.DagSchedule
    target: str
    spec: pb.Speculative
    copies: int  # copies scheduled for this call
    seen: JoinState  # the race's records as read before deciding

    @property
    def key(self) -> str:
        return self.target + RACE_SUFFIX

    @property
    def stop_id(self) -> str:
        """The id under cancels/ that interrupts this race's copies still running."""
        return f"{self.schedule.id}.{self.target}.decided"


def race_of(schedule: pb.DagSchedule, target: str, state: WorkerState) -> Race | None:
    """The race of a speculative step (its records read now), or None for an ordinary one."""
    spec = speculative_spec(schedule.dag, target)
    if spec is None:
        return None
    seen = state.joins.read(schedule.id, target + RACE_SUFFIX)
    return Race(schedule, target, spec, copies_scheduled(schedule, target), seen)


def is_valid(spec: pb.Speculative, value: pb.Value) -> bool:
    """Whether a copy's result may win: not an error and equal to no invalid result.

    Loading the result and comparing it run the user's code (`__setstate__`, `__eq__`) in
    the worker's handler, after the function's own time limit: they are bounded by
    COMPARE_LIMIT_S, else a result whose `__eq__` never returns would hold the worker forever
    (no cancel reaches it). Running out of time counts as raising does: a result that cannot
    be loaded is invalid, a comparison that does not finish is "not equal"."""
    if value.type == pb.ERROR:
        return False
    if not spec.invalid_results:
        return True
    loaded = False
    try:
        with time_limit(COMPARE_LIMIT_S):
            try:
                result = serializer.load(value)
            except Exception:
                return False
            loaded = True
            return not any(_equal(result, bad) for bad in spec.invalid_results)
    except TimeLimitExceeded:
        log.warning("a result of %r took over %gs to load or compare with its invalid_results",
                    spec.function, COMPARE_LIMIT_S)
        return loaded


def _equal(result: object, bad: pb.Value) -> bool:
    try:
        return bool(result == serializer.load(bad))
    except BaseException as exc:  # one that cannot be loaded or compared: not equal
        if not user_failure(exc):  # (a time limit goes on up; an __eq__ raising SystemExit
            raise  # does not end the worker)
        return False


def won(race: Race, done: pb.DagTrigger, copy: int, state: WorkerState) -> Commit:
    """The commit that makes this copy the winner; it holds only while nobody won."""
    done.copy = copy
    schedule_id = race.schedule.id
    key = state.keys.join_done(schedule_id, race.key)
    kept = done
    if done.ByteSize() > RECORD_MAX_BYTES:  # the win alone: see is_elided
        kept = pb.DagTrigger(id=done.id, source=done.source, copy=copy,
                             observed_revision=done.observed_revision)
    return Commit(records={key: state.joins.seal(key, kept)},
                  clears=[state.joins.parts_prefix(schedule_id, race.key)], absent=key)


def is_elided(decided: pb.DagTrigger) -> bool:
    """Whether the race's winner was recorded without its result (too large for the race's
    etcd transaction): a redelivered winner then runs again to send its result on, as a
    redelivered ordinary step does."""
    return not decided.aborted and not decided.HasField("result")


def stop_losers(race: Race, state: WorkerState) -> Commit:
    """The cancel record that interrupts the other copies still running (worker/cancel.py,
    as a cancel would, but without ever exiting their workers). Written by a copy with a
    valid result whether or not its own win took effect: either way the race is decided."""
    return Commit(records={state.keys.cancel(race.stop_id): b"1"},
                  records_ttl_s=STOP_RECORD_TTL_S)


def lost(race: Race, value: pb.Value, copy: int,
         state: WorkerState) -> tuple[Commit, pb.Value | None]:
    """The commit recording this copy's loss, and the call's failure when it was the last
    copy still running (then the commit also closes the race)."""
    schedule_id = race.schedule.id
    record = pb.DagTrigger(id=schedule_id, source=str(copy), aborted=True, copy=copy)
    kept = _kept_loss(value, RECORD_MAX_BYTES)
    if kept is not None:
        record.result.CopyFrom(kept)
    parts = dict(race.seen.parts)
    parts[str(copy)] = record
    guard = state.joins.unchanged_since(schedule_id, race.key, race.seen)
    if not all(str(i) in parts for i in range(race.copies)):
        key = state.keys.join_part(schedule_id, race.key, str(copy))
        version = state.joins.version_key(schedule_id, race.key)
        return Commit(records={key: state.joins.seal(key, record), version: b""},
                      guards=[guard]), None
    key = state.keys.join_done(schedule_id, race.key)
    closed = Commit(records={key: state.joins.seal(key, record)},
                    clears=[state.joins.parts_prefix(schedule_id, race.key)], absent=key,
                    guards=[guard])
    return closed, _failure(race, [parts[str(i)].result for i in range(race.copies)])


def _failure(race: Race, results: list[pb.Value]) -> pb.Value:
    """The first copy's error when a copy failed; otherwise, every result being invalid, an
    EXECUTION_ERROR saying so."""
    for value in results:
        if value.type == pb.ERROR:
            return value
    return error_value(pb.EXECUTION_ERROR, (
        f"every copy ({race.copies}) of speculative function {race.target!r} returned an "
        "invalid result"))


def _kept_loss(value: pb.Value, max_bytes: int) -> pb.Value | None:
    """What of a losing result may be read back, in at most ~max_bytes: only a failure's
    error ever is (the call's failure names it), so a small result stays whole, an error
    keeps its code, its exception's class name (when short: a qualified name) and the head
    of its message (cut in bytes, never inside a character), and a large invalid result
    nothing."""
    if value.ByteSize() <= max_bytes:
        return value
    if value.type != pb.ERROR:
        return None
    info = pb.ErrorInfo.FromString(value.body)
    room = max(0, max_bytes - 64)  # 64: the Value's and ErrorInfo's tags and lengths
    kind = info.exception_type if len(info.exception_type.encode()) <= min(256, room) else ""
    room -= len(kind.encode())
    head = info.message.encode()[:room].decode(errors="ignore")
    return error_value(info.code, head, exception_type=kind)


def decide_again(trigger: pb.DagTrigger, value: pb.Value, state: WorkerState) -> Outgoing:
    """This copy's trigger, carrying its result, back to this worker: its loss is recorded
    again on fresh records (another loss was recorded in between).

    The trigger that came in fitted in one message with the upstream's result; going back,
    the function does not run again, so that result is left out and the loss takes its
    room, cut to what the records would keep of it and to what the message can carry (else
    the broker would refuse the trigger by closing the worker's channel, on every run)."""
    again = pb.DagTrigger()
    again.CopyFrom(trigger)
    again.ClearField("result")
    again.ClearField("copy_result")  # decided again before: its room is the loss's own
    room = state.max_message_bytes - MESSAGE_ROOM_BYTES - again.ByteSize()
    kept = _kept_loss(value, min(RECORD_MAX_BYTES, room))
    if kept is None:
        again.copy_result.SetInParent()  # a loss, with nothing to read back
    else:
        again.copy_result.CopyFrom(kept)
    return Outgoing(state.names.worker(state.worker_id), pb.Message(trigger=again))
