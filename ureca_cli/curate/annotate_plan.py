"""The captioning graph of one tree record, and the workers that run it.

``plan_record`` checks a tree record and orders its nodes (breadth-first from each main object, siblings by
area, largest first, then id). Each captioned node needs one top-down request (its short phrase: after its
parent's phrase and its earlier siblings' phrases) and, if it has children, one bottom-up request (its
paragraph: after its own phrase and all its children's long captions). ``_ImageState`` records answers and
says which requests each answer makes ready; ``_Workers`` runs ready requests, earliest image first, then
longest remaining chain first (``remaining_chain``); ``count_requests`` gives the totals benchmarks compare.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import records as R
from ..errors import InputError


@dataclass
class Plan:
    """The captioning graph of one image record: which nodes, in which order, with which dependencies."""

    nodes: dict[Any, dict]  # id -> node (the record's own dicts, updated in place)
    mains: list[Any]  # main objects, record order
    kids: dict[Any, list[Any]]  # id -> captioned children, by area desc then id
    main_of: dict[Any, Any]  # id -> its main object's id

    @property
    def order(self) -> list[Any]:
        """Every captioned node, breadth-first from each main object."""
        out = []
        for m in self.mains:
            queue = [m]
            while queue:
                n = queue.pop(0)
                out.append(n)
                queue.extend(self.kids[n])
        return out


def _sort_key(node: dict) -> tuple:
    nid = node[R.ID]
    return (-(node.get(R.AREA) or 0), (0, nid) if isinstance(nid, int | float) else (1, str(nid)))


def plan_record(rec: dict, where: str) -> Plan:
    """Check that ``rec`` is a tree record and plan its captions; ``InputError`` names what is wrong."""
    R.check_image_record(rec, where)
    nodes: dict[Any, dict] = {}
    for i, node in enumerate(rec[R.NODES]):
        if R.ROLE not in node or R.PARENT not in node:
            missing = R.ROLE if R.ROLE not in node else R.PARENT
            raise InputError(f"nodes[{i}] has no '{missing}': not a tree record (make one with `ureca tree`)", source=where)
        if node[R.ROLE] not in R.ROLES:
            raise InputError(f"nodes[{i}] has role {node[R.ROLE]!r}; expected one of {', '.join(R.ROLES)}", source=where)
        if node[R.ID] in nodes:
            raise InputError(f"nodes[{i}]: id {node[R.ID]!r} appears twice", source=where)
        nodes[node[R.ID]] = node
    children: dict[Any, list[Any]] = {nid: [] for nid in nodes}
    for nid, node in nodes.items():
        parent = node[R.PARENT]
        if parent is None:
            continue
        if parent not in nodes:
            raise InputError(f"node {nid!r} names parent {parent!r}, which is not in the record", source=where)
        children[parent].append(nid)
    mains = [nid for nid, n in nodes.items() if n[R.ROLE] == R.ROLE_MAIN]
    kids: dict[Any, list[Any]] = {}
    main_of: dict[Any, Any] = {}
    for m in mains:
        queue, seen = [m], {m}
        while queue:
            n = queue.pop(0)
            main_of[n] = m
            ks = [c for c in children[n] if nodes[c][R.ROLE] != R.ROLE_DROPPED and nodes[c][R.ROLE] != R.ROLE_MAIN]
            ks.sort(key=lambda c: _sort_key(nodes[c]))
            for c in ks:
                if c in seen:
                    raise InputError(f"node {c!r} is its own ancestor: the tree has a cycle", source=where)
                seen.add(c)
            kids[n] = ks
            queue.extend(ks)
    return Plan(nodes, mains, kids, main_of)


class Workers:
    """``n`` threads running queued calls, lowest priority tuple first (ties in submission order)."""

    def __init__(self, n: int):
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._count = itertools.count()
        self._threads = [threading.Thread(target=self._loop, name=f"ureca-chat-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def submit(self, priority: tuple, fn: Callable[[], None]) -> None:
        self._queue.put((0, priority, next(self._count), fn))

    def _loop(self) -> None:
        while True:
            _, _, _, fn = self._queue.get()
            if fn is None:
                return
            fn()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put((1, (), next(self._count), None))  # after every queued call
        for t in self._threads:
            t.join()


class ImageState:
    """The captions of one image in flight and which requests each new caption unblocks."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.parent_of = {c: p for p, ks in plan.kids.items() for c in ks}
        self.short: dict[Any, str] = {}
        self.long: dict[Any, str] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.total = len(plan.order)

    def fail(self, error: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
        self.done.set()

    def record(self, kind: str, nid: Any, answer: str) -> list[tuple[str, Any]]:
        """Store an answer; return the requests ``(kind, node)`` it makes ready."""
        plan, ready = self.plan, []
        with self.lock:
            if kind == "short":
                self.short[nid] = answer
                kids = plan.kids[nid]
                if kids:
                    ready.append(("short", kids[0]))  # the first child needs only its parent
                p = self.parent_of.get(nid)
                if p is not None:
                    sibs = plan.kids[p]
                    i = sibs.index(nid)
                    if i + 1 < len(sibs):
                        ready.append(("short", sibs[i + 1]))  # the next sibling sees this phrase
                if not kids:
                    self.long[nid] = answer  # a leaf keeps its phrase
                    ready.extend(self._after_long(nid))
            else:
                self.long[nid] = answer
                ready.extend(self._after_long(nid))
            if len(self.long) == self.total:
                self.done.set()
        return ready

    def _after_long(self, nid: Any) -> list[tuple[str, Any]]:
        p = self.parent_of.get(nid)
        if p is not None and all(c in self.long for c in self.plan.kids[p]):
            return [("long", p)]
        return []


def remaining_chain(plan: Plan) -> dict[tuple[str, Any], int]:
    """For each request ``(kind, node)``: the longest chain of requests that must still follow it, itself
    included (the critical-path priority)."""
    parent_of = {c: p for p, ks in plan.kids.items() for c in ks}
    long_chain: dict[Any, int] = {}
    for nid in plan.order:  # parents first: a paragraph is followed by its ancestors' paragraphs
        up = long_chain[parent_of[nid]] if nid in parent_of else 0
        long_chain[nid] = up + (1 if plan.kids[nid] else 0)
    out: dict[tuple[str, Any], int] = {("long", n): c for n, c in long_chain.items() if plan.kids[n]}
    for nid in reversed(plan.order):  # children and later siblings first
        kids = plan.kids[nid]
        after = [out[("short", kids[0])]] if kids else [long_chain[nid]]
        p = parent_of.get(nid)
        if p is not None:
            sibs = plan.kids[p]
            i = sibs.index(nid)
            if i + 1 < len(sibs):
                after.append(out[("short", sibs[i + 1])])
        out[("short", nid)] = 1 + max(after)
    return out


def count_requests(plan: Plan) -> tuple[int, int]:
    """(requests, longest chain of dependent requests) for one planned image, for benchmarks."""
    parent_of = {c: p for p, ks in plan.kids.items() for c in ks}
    short_done: dict[Any, int] = {}
    for nid in plan.order:  # breadth-first: parents and earlier siblings come first
        p = parent_of.get(nid)
        dep = 0
        if p is not None:
            sibs = plan.kids[p]
            i = sibs.index(nid)
            dep = short_done[sibs[i - 1]] if i > 0 else short_done[p]
        short_done[nid] = dep + 1
    long_done: dict[Any, int] = {}
    for nid in reversed(plan.order):  # children before parents
        kids = plan.kids[nid]
        long_done[nid] = short_done[nid] if not kids else max([short_done[nid]] + [long_done[c] for c in kids]) + 1
    total = len(plan.order) + sum(1 for n in plan.order if plan.kids[n])
    return total, max(long_done.values(), default=0)
