"""Containment of many masks at once, computed on their COCO RLE runs with numpy (no bitmap is decoded).

A mask is a set of foreground intervals ``[start, end)`` of the flat column-major pixel index (the order COCO
RLE counts run in). ``RunSet`` reads the compressed counts of every mask of one image in a single vectorised
pass (checking them as it goes: corrupt counts can hang or crash pycocotools), and ``intersections`` gives
``|a ∩ b|`` for any list of pairs at once: each interval of the mask with fewer intervals is looked up in the
other's cumulative coverage (two ``searchsorted`` calls for all pairs together). Areas and pixel boxes come
from the same intervals; the boxes equal ``pycocotools.mask.toBbox`` (XYWH covering every pixel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class BadCounts(ValueError):
    """The counts of mask ``index`` cannot be read; ``reason`` says why."""

    def __init__(self, index: int, reason: str):
        super().__init__(reason)
        self.index = index
        self.reason = reason


@dataclass
class RunSet:
    """The foreground intervals of ``n`` masks of one ``height x width`` image.

    ``starts``/``ends``: ``int64`` interval bounds ``[start, end)`` in a global index: mask ``k``'s pixel at
    flat column-major index ``p`` is ``k * height * width + p``, so all intervals of all masks form one sorted
    array; mask ``k``'s intervals are ``[offsets[k], offsets[k + 1])``. ``areas``: pixels per mask.
    ``boxes``: ``n x 4`` float XYWH covering each mask's pixels (zeros for an empty mask), as pycocotools'
    ``toBbox``. ``n_runs``: RLE runs per mask.
    """

    height: int
    width: int
    starts: np.ndarray
    ends: np.ndarray
    offsets: np.ndarray
    areas: np.ndarray
    boxes: np.ndarray
    n_runs: np.ndarray

    @property
    def n(self) -> int:
        return len(self.areas)

    @classmethod
    def from_counts(cls, counts: list[bytes], height: int, width: int) -> RunSet:
        """Read COCO compressed RLE counts (pycocotools' ``rleFrString``, vectorised over all masks).

        Raises ``BadCounts`` for the first mask whose counts hold characters outside the alphabet, end in the
        middle of a number, decode to a negative run, or do not cover exactly ``height * width`` pixels.
        """
        n = len(counts)
        hw = height * width
        lens = np.fromiter((len(c) for c in counts), dtype=np.int64, count=n)
        if n == 0:
            z = np.zeros(0, np.int64)
            return cls(height, width, z, z, np.zeros(1, np.int64), z, np.zeros((0, 4)), z)
        if lens.min() == 0:
            raise BadCounts(int(np.argmin(lens)), "empty counts")
        char_end = np.cumsum(lens)  # one past each mask's last character
        raw = np.frombuffer(b"".join(counts), dtype=np.uint8)
        bad = (raw < 48) | (raw > 111)
        if bad.any():
            raise BadCounts(_owner_of(np.flatnonzero(bad)[0], char_end), "counts hold characters outside the RLE alphabet")
        c = raw - np.uint8(48)  # 0..63; bit 0x20 = "more digits follow"
        cont = c >= 32
        if cont[char_end - 1].any():
            raise BadCounts(int(np.flatnonzero(cont[char_end - 1])[0]), "counts end in the middle of a number")
        ends = np.flatnonzero(~cont)  # the last character of every number
        digits = np.diff(ends, prepend=-1)
        if digits.max() > 7:
            raise BadCounts(_owner_of(ends[np.argmax(digits > 7)], char_end), "counts hold a number too long for a run")
        first_char = ends - digits + 1
        x = (c[first_char] & 31).astype(np.int64)
        for d in range(1, int(digits.max())):  # 5 more bits per extra digit
            longer = np.flatnonzero(digits > d)
            x[longer] |= (c[first_char[longer] + d] & 31).astype(np.int64) << (5 * d)
        negative = (c[ends] & 16) != 0
        x[negative] -= np.left_shift(np.int64(1), 5 * digits[negative])

        # numbers per mask; run k >= 3 is stored as x[k] = run[k] - run[k - 2]: cumulative sums along each
        # mask's odd chain (k = 1, 3, ...) and even chain (k = 2, 4, ...), run 0 stands alone
        num_end = np.searchsorted(ends, char_end - 1, side="right")
        n_num = np.diff(num_end, prepend=0)
        num_off = num_end - n_num  # each mask's first number
        g0 = np.repeat(num_off, n_num)
        k = np.arange(x.size) - g0
        z = np.where(k == 0, 0, x)
        chain = np.empty_like(z)  # cumulative sums along every other element, globally
        chain[0::2] = np.cumsum(z[0::2])
        chain[1::2] = np.cumsum(z[1::2])
        before = np.concatenate(([0], chain))  # before[g] = chain[g - 1]
        base = np.where(k % 2 == 0, chain[g0], before[g0])
        runs = np.where(k == 0, x, chain - base)
        if (runs < 0).any():
            raise BadCounts(int(np.searchsorted(num_end, np.argmax(runs < 0), side="right")),
                            "counts decode to a negative run")
        totals = np.add.reduceat(runs, num_off)
        if (totals != hw).any():
            i = int(np.flatnonzero(totals != hw)[0])
            raise BadCounts(i, f"runs cover {int(totals[i])} pixels, the size [{height}, {width}] has {hw}")

        # foreground intervals: the odd runs, in the global index (the runs of mask k tile [k*hw, (k+1)*hw))
        pos_end = np.cumsum(runs)
        fg = (k % 2 == 1) & (runs > 0)
        iv_end = pos_end[fg]
        iv_start = iv_end - runs[fg]
        iv_count = np.add.reduceat(fg.astype(np.int64), num_off)
        offsets = np.concatenate(([0], np.cumsum(iv_count)))
        length = iv_end - iv_start
        areas = np.add.reduceat(np.append(length, 0), offsets[:-1]) * (iv_count > 0)

        boxes = np.zeros((n, 4), dtype=np.float64)
        has = iv_count > 0
        if has.any():
            local = np.repeat(np.arange(n, dtype=np.int64) * hw, iv_count)
            col_s, row_s = np.divmod(iv_start - local, height)
            col_e, row_e = np.divmod(iv_end - 1 - local, height)
            wraps = col_e > col_s  # an interval over a column break holds rows H-1 and 0
            y0 = np.where(wraps, 0, row_s)
            y1 = np.where(wraps, height - 1, row_e)
            first, lastiv = offsets[:-1][has], offsets[1:][has] - 1
            xmin, xmax = col_s[first], col_e[lastiv]
            ymin = np.minimum.reduceat(y0, first)
            ymax = np.maximum.reduceat(y1, first)
            boxes[has] = np.stack([xmin, ymin, xmax - xmin + 1, ymax - ymin + 1], axis=1)
        return cls(height, width, iv_start, iv_end, offsets, areas.astype(np.int64), boxes, n_num)

    def intersections(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``|mask a[p] ∩ mask b[p]|`` for every pair ``p`` (``int64``), all pairs in one vectorised pass."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        out = np.zeros(a.size, dtype=np.int64)
        if a.size == 0:
            return out
        count = np.diff(self.offsets)
        swap = count[a] > count[b]  # look up the mask with fewer intervals in the other one
        q = np.where(swap, b, a)
        t = np.where(swap, a, b)
        qn = count[q]
        live = (qn > 0) & (count[t] > 0)
        if not live.any():
            return out
        q, t, qn = q[live], t[live], qn[live]
        total = int(qn.sum())
        seg_start = np.concatenate(([0], np.cumsum(qn)[:-1]))
        idx = np.arange(total) + np.repeat(self.offsets[q] - seg_start, qn)
        shift = np.repeat((t - q) * (self.height * self.width), qn)  # move each lookup into its target's block
        g_start = np.append(self.starts, np.iinfo(np.int64).max)
        g_len = np.concatenate(([0], np.cumsum(self.ends - self.starts)))
        base = np.repeat(g_len[self.offsets[t]], qn)

        def covered(x: np.ndarray) -> np.ndarray:  # pixels of the target mask before global index x
            j = np.searchsorted(self.ends, x, side="right")
            return g_len[j] - base + np.clip(x - g_start[j], 0, None)

        per_interval = covered(self.ends[idx] + shift) - covered(self.starts[idx] + shift)
        out[live] = np.add.reduceat(per_interval, seg_start)
        return out


def _owner_of(char_index: int, char_end: np.ndarray) -> int:
    """The mask a character of the joined counts belongs to."""
    return int(np.searchsorted(char_end, char_index, side="right"))
