"""The leaderboard's data, kept apart from the widget: every scored architecture of the run, its rank by
SMASH error, its best final training, and the safe filter language (`params < 2e6 and smash < 30%`).

Ranks follow the results file's `leaderboard` view: an architecture's latest ok score counts, best first,
ties broken by score order; a filter hides rows but leaves ranks alone. New scores are inserted with
`bisect`, so a refresh costs O(new rows x log n) plus the rows shown, not a re-sort of the whole run.
"""

from __future__ import annotations

import heapq
import operator
import re
from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smash_engine import halving
from smash_engine.errors import ConfigError

# Filterable and sortable fields: the names a user may type (and aliases) -> Entry attribute.
FIELDS = {"rank": "rank", "smash": "smash_error", "smash_error": "smash_error", "error": "smash_error",
          "params": "params", "flops": "flops", "ops": "n_ops", "n_ops": "n_ops", "depth": "depth",
          "source": "source", "test": "test_error", "test_error": "test_error", "final": "final_status",
          "verify": "verify_error", "verify_error": "verify_error"}
PERCENT_FIELDS = {"smash_error", "test_error", "verify_error"}
TEXT_FIELDS = {"source", "final_status"}
OPS: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt,
                                               ">=": operator.ge, "=": operator.eq, "==": operator.eq,
                                               "!=": operator.ne}
_CONDITION = re.compile(r"^\s*([A-Za-z_]+)\s*(<=|>=|!=|==|=|<|>)\s*(\S+)\s*$")
_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9}


@dataclass
class Entry:
    arch_id: str
    smash_error: float
    score_id: int
    params: int | None = None
    flops: int | None = None
    n_ops: int | None = None
    depth: int | None = None
    source: str | None = None
    rank: int = 0
    final_status: str | None = None
    final_epoch: int = 0
    final_epochs: int = 0
    test_error: float | None = None
    # the verify phase (successive halving): its highest rung (0-based), that training's status, the held-out
    # error and loss of its highest finished rung (the halving ranks by loss), why it is a candidate, and whether
    # it is still in (at the phase's top)
    verify_error: float | None = None
    verify_loss: float | None = None
    verify_status: str | None = None
    verify_rung: int | None = None
    verify_done_rung: int | None = None
    verify_in: bool = False
    verify_via: str | None = None

    def key(self) -> tuple[float, int]:
        return (self.smash_error, self.score_id)


Condition = tuple[str, Callable[[Any, Any], bool], Any]


def parse_filter(text: str) -> list[Condition]:
    """`field op value [and ...]` -> conditions; raises ConfigError with what to type instead. Only known
    field names and the six comparison operators are accepted; values are numbers (`2e6`, `1.5M`, `30%`) or,
    for source and final, a word. Nothing the user types reaches SQL: filters run over the rows in memory."""
    conditions = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        m = _CONDITION.match(part)
        if not m:
            raise ConfigError(f"cannot read {part!r}: write FIELD OP VALUE, e.g. params < 2e6 (OP one of "
                              "< <= > >= = !=)")
        name, op, raw = m.group(1).lower(), m.group(2), m.group(3)
        if name not in FIELDS:
            raise ConfigError(f"unknown field {name!r}: use one of {', '.join(sorted(set(FIELDS)))}")
        field = FIELDS[name]
        conditions.append((field, OPS[op], _value(field, raw, op)))
    return conditions


def _value(field: str, raw: str, op: str) -> Any:
    if field in TEXT_FIELDS:
        if op not in ("=", "==", "!="):
            raise ConfigError(f"{field} is text: compare it with = or !=")
        return raw.lower()
    text, scale = raw.lower(), 1.0
    if text.endswith("%"):
        text, scale = text[:-1], 0.01
    elif text[-1:] in _SUFFIX:
        text, scale = text[:-1], _SUFFIX[text[-1]]
    try:
        value = float(text) * scale
    except ValueError:
        raise ConfigError(f"{raw!r} is not a number (e.g. 2e6, 1.5M, 30%)") from None
    if field in PERCENT_FIELDS and scale == 1.0 and value > 1:
        value /= 100  # "smash < 30" means 30 %, errors are stored as 0..1
    return value


def matches(e: Entry, conditions: list[Condition]) -> bool:
    for field, op, value in conditions:
        have = getattr(e, field)
        if have is None:
            return False
        if isinstance(value, str):
            have = str(have).lower()
        if not op(have, value):
            return False
    return True


class BoardModel:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.order: list[tuple[float, int, str]] = []  # (smash_error, score_id, arch_id), best first
        self._verified: set[str] = set()  # arch ids holding verify values

    def __len__(self) -> int:
        return len(self.entries)

    def add_scores(self, rows: list[dict[str, Any]]) -> None:
        """Score rows oldest first (from `store.scores_since`): failed ones are not ranked, a re-score
        replaces the architecture's previous one (the view counts the latest)."""
        for r in rows:
            if r["status"] != "ok" or r["smash_error"] is None:
                continue
            old = self.entries.get(r["arch_id"])
            if old is not None:
                del self.order[self._position(old)]
                old.smash_error, old.score_id = r["smash_error"], r["id"]
                e = old
            else:
                e = self.entries[r["arch_id"]] = Entry(
                    r["arch_id"], r["smash_error"], r["id"], r.get("params"), r.get("flops"), r.get("n_ops"),
                    r.get("depth"), r.get("source"))
            insort(self.order, (e.smash_error, e.score_id, e.arch_id))

    def set_finals(self, finals: list[dict[str, Any]]) -> list[str]:
        """Attach each architecture's best final (done first, then lowest test error, then newest);
        returns the arch ids whose final changed."""
        best: dict[str, dict[str, Any]] = {}
        for f in finals:
            cur = best.get(f["arch_id"])
            if cur is None or _final_key(f) < _final_key(cur):
                best[f["arch_id"]] = f
        changed = []
        for arch_id, f in best.items():
            e = self.entries.get(arch_id)
            new = (f["status"], f["epoch"], f["epochs"], f["test_error"])
            if e is not None and (e.final_status, e.final_epoch, e.final_epochs, e.test_error) != new:
                e.final_status, e.final_epoch, e.final_epochs, e.test_error = new
                changed.append(arch_id)
        return changed

    def set_verifications(self, rows: list[dict[str, Any]]) -> list[str]:
        """Attach each candidate's standing in the verify phase (rows: a row per candidate and rung, from
        `store.verifications`); returns the arch ids whose values changed."""
        reached, done = halving.latest(rows), halving.latest(rows, done=True)
        top = max((r["rung"] for r in rows), default=0)
        changed = []
        for arch_id in [*reached, *(a for a in self._verified if a not in reached)]:
            e = self.entries.get(arch_id)
            if e is None:
                continue
            last, fin = reached.get(arch_id), done.get(arch_id)
            new = (None, None, None, None, None, False, None) if last is None else (
                last["status"], fin["val_error"] if fin else None, fin.get("val_loss") if fin else None,
                last["rung"], fin["rung"] if fin else None, last["rung"] == top, last["via"])
            if _verify_fields(e) != new:
                (e.verify_status, e.verify_error, e.verify_loss, e.verify_rung, e.verify_done_rung, e.verify_in,
                 e.verify_via) = new
                changed.append(arch_id)
        # a candidate whose rows went (a file replaced under the UI) must not keep its old standing
        self._verified = {a for a in reached if a in self.entries}
        return changed

    def _position(self, e: Entry) -> int:
        return bisect_left(self.order, (e.smash_error, e.score_id, e.arch_id))

    def top(self, n: int, conditions: list[Condition], sort: str = "rank", reverse: bool = False) -> list[Entry]:
        """The first n entries (ranks filled in) passing `conditions`, in `sort` order."""
        if sort == "rank" and not reverse:
            out = []
            for i, (_, _, arch_id) in enumerate(self.order):
                e = self.entries[arch_id]
                e.rank = i + 1
                if matches(e, conditions):
                    out.append(e)
                    if len(out) == n:
                        break
            return out
        for i, (_, _, arch_id) in enumerate(self.order):
            self.entries[arch_id].rank = i + 1
        pool = [e for e in self.entries.values() if matches(e, conditions)]

        def key(e: Entry) -> tuple:
            v = verify_key(e) if sort == "verify_error" else getattr(e, sort)
            missing = v is None  # rows without the value go last in either direction
            return (missing if not reverse else not missing, v if v is not None else 0, e.rank)

        pick = heapq.nlargest if reverse else heapq.nsmallest
        return pick(n, pool, key=key)

    def count(self, conditions: list[Condition]) -> int:
        return sum(1 for e in self.entries.values() if matches(e, conditions)) if conditions else len(self)


def _final_key(f: dict[str, Any]) -> tuple:
    return (f["status"] != "done", f["test_error"] is None, f["test_error"] or 0.0, -f["id"])


def _verify_fields(e: Entry) -> tuple:
    return (e.verify_status, e.verify_error, e.verify_loss, e.verify_rung, e.verify_done_rung, e.verify_in,
            e.verify_via)


def verify_key(e: Entry) -> tuple | None:
    """Sorting by verify lists the candidates as halving goes: a higher rung reached first (the survivors),
    then those already trained there, then by held-out loss as the halving ranks them (error where a file from
    before schema 6 has no loss): the order final training takes them in."""
    if e.verify_rung is None:
        return None
    done = -1 if e.verify_done_rung is None else e.verify_done_rung
    return (-e.verify_rung, -done, e.verify_loss is None, e.verify_loss or 0.0,
            e.verify_error if e.verify_error is not None else 0.0)


def verify_line(arch_id: str, rows: list[dict[str, Any]], eta: int | None, over: bool) -> str | None:
    """One line on `arch_id`'s way through the verify phase, or None if it was no candidate. `rows` are the
    run's verifications; `eta` its verify_eta, which with the candidates fixes how many rungs the phase has
    (None for files from before halving: their total is not known, so none is shown); `over`: the run has
    left the phase, so the top rung's candidates are ranked, not "still in"."""
    mine = sorted((r for r in rows if r["arch_id"] == arch_id), key=lambda r: r["rung"])
    if not mine:
        return None
    top = max(r["rung"] for r in rows)
    planned = len(halving.sizes(sum(r["rung"] == 0 for r in rows), eta)) if eta else None
    total = f"/{planned}" if planned and planned > top else ""  # a total the rows contradict is not shown

    def rung(r: dict[str, Any]) -> str:
        return f"rung {r['rung'] + 1}{total}"

    last = mine[-1]
    notes = [] if last["via"] == "smash" else [f"via {last['via']}"]
    if last["rung"] < top:
        where = f"out at {rung(last)}"
    else:
        at_top = {r["arch_id"] for r in rows if r["rung"] == top}
        order = [a for a in halving.order(rows) if a in at_top]
        if over and arch_id in order:
            place = order.index(arch_id)
            notes.insert(0, f"{'best' if place == 0 else _ordinal(place + 1)} of {len(order)}")
        else:
            notes.insert(0, "still in")
        where = rung(last)
    seeds = last.get("seeds") or 1
    images = f"{last['images'] * last['epochs']:,} images" + (f" x {seeds} seeds" if seeds > 1 else "")
    loss = "" if last.get("val_loss") is None else f" (loss {last['val_loss']:.3f})"
    what = {"done": f"held-out {_percent(last['val_error'])}{loss} on {images}", "running": f"training on {images}",
            "queued": f"queued for {images}"}.get(last["status"], last["status"])
    before = [f"rung {r['rung'] + 1} {_percent(r['val_error'])}" for r in reversed(mine[:-1])
              if r["status"] == "done"]
    return (f"verify: {where}" + (f" ({', '.join(notes)})" if notes else "") + f", {what}"
            + (f"; {', '.join(before)}" if before else ""))


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
