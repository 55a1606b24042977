"""The live loss plot: SMASH training loss (left axis, nats) and validation SMASH error (right axis, %) against
step, or one final training's curves against epoch; drawn with plotext 6 (`plotext.figure`).

A `Curve` keeps running prefix sums and an exponential moving average as points arrive, so drawing it
downsampled to the plot's width costs O(width) however many steps the run has logged. plotext keeps global
state, so the figure is only ever built here, on the event loop, and only when data, size or a toggle changed.
"""

from __future__ import annotations

import math

import plotext
from rich.text import Text
from textual.widget import Widget

SMOOTH_ALPHA = 0.05  # EMA weight of a new logged point: roughly the mean of the last ~40 rows
LOG_FLOOR = 1e-4  # log scale cannot show 0; an error of exactly 0 is drawn at this value
COLORS = ("bright_blue", "bright_green", "bright_red")  # the "simple" theme's first three series colours


class Curve:
    """A growing series of (x, y) points; `view(n)` gives at most n points (bucket means, or the EMA)."""

    def __init__(self) -> None:
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.cum: list[float] = [0.0]  # cum[i] = sum of ys[:i]
        self.ema: list[float] = []

    def __len__(self) -> int:
        return len(self.xs)

    def extend(self, points: list[tuple[float, float]]) -> None:
        for x, y in points:
            if y is None or math.isnan(y):
                continue
            self.xs.append(x)
            self.ys.append(y)
            self.cum.append(self.cum[-1] + y)
            self.ema.append(y if not self.ema else self.ema[-1] + SMOOTH_ALPHA * (y - self.ema[-1]))

    def replace(self, points: list[tuple[float, float]]) -> None:
        self.__init__()  # type: ignore[misc]
        self.extend(points)

    def view(self, n: int, smooth: bool = False) -> tuple[list[float], list[float]]:
        """At most `n` points spread evenly over the series: each the mean of its bucket (or the EMA at
        the bucket's end when smoothing), at the bucket's last x."""
        size = len(self.xs)
        if size <= n:
            return list(self.xs), list(self.ema if smooth else self.ys)
        xs, ys = [], []
        for b in range(1, n + 1):
            lo, hi = (b - 1) * size // n, b * size // n
            if hi == lo:
                continue
            xs.append(self.xs[hi - 1])
            ys.append(self.ema[hi - 1] if smooth else (self.cum[hi] - self.cum[lo]) / (hi - lo))
        return xs, ys


class LossPlot(Widget):
    """Shows `train` and `val` (the search) or, after `show_final(id)`, that final training's curves."""

    DEFAULT_CSS = "LossPlot { height: 1fr; min-height: 6; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.train, self.val = Curve(), Curve()
        self.finals: dict[int, dict[str, Curve]] = {}  # final id -> train_loss / val_error / test_error
        self.final_names: dict[int, str] = {}
        self.log_scale = False
        self.smooth = False
        self.final_id: int | None = None  # which final to show; None: the search
        self.colorless = False
        self._cache: tuple[tuple, Text] | None = None

    # -- data ------------------------------------------------------------------------------------------
    def add_steps(self, train: list[dict], val: list[dict]) -> None:
        self.train.extend([(r["step"], r["loss"]) for r in train])
        self.val.extend([(r["step"], 100 * r["error"]) for r in val if r["error"] is not None])
        self._changed()

    def set_final(self, final_id: int, name: str, rows: list[dict]) -> None:
        curves = self.finals.setdefault(final_id, {"train_loss": Curve(), "val_error": Curve(),
                                                    "test_error": Curve()})
        self.final_names[final_id] = name
        for key, curve in curves.items():
            scale = 1 if key == "train_loss" else 100
            curve.replace([(r["epoch"], scale * r[key]) for r in rows if r[key] is not None])
        self._changed()

    def cycle_view(self) -> str:
        """Search -> each final in turn -> search; returns what is shown now."""
        ids = sorted(self.finals)
        pos = ids.index(self.final_id) + 1 if self.final_id in ids else 0
        self.final_id = ids[pos] if pos < len(ids) else None
        self._changed()
        return self.caption().plain

    def _changed(self) -> None:
        self._cache = None
        self.refresh()

    # -- drawing --------------------------------------------------------------------------------------
    def caption(self) -> Text:
        mode = "log" if self.log_scale else "linear"
        smooth = ", smoothed" if self.smooth else ""
        if self.final_id is None:
            more = f"  g: {len(self.finals)} final curve(s)" if self.finals else ""
            parts = [("train loss", COLORS[0]), (" (left)  ", ""), ("val SMASH err %", COLORS[1]),
                     (f" (right)  [{mode}{smooth}]{more}", "")]
        else:
            parts = [(f"final #{self.final_id} {self.final_names.get(self.final_id, '')}: ", "bold"),
                     ("train loss", COLORS[0]), ("  ", ""), ("val err %", COLORS[1]), ("  ", ""),
                     ("test err %", COLORS[2]), (f"  [{mode}{smooth}]", "")]
        return Text.assemble(*[(p, "" if self.colorless else s) for p, s in parts])

    def render(self) -> Text:
        w, h = self.content_size.width, self.content_size.height
        key = (w, h, self.log_scale, self.smooth, self.final_id, self.colorless)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.draw(w, h))
        return self._cache[1]

    def draw(self, width: int, height: int) -> Text:
        """Build the figure at this size (also what the benchmark times)."""
        series = self._series()
        if width < 20 or height < 4:
            return Text("(too small for the plot)")
        if not any(len(c) for c, _ in series):
            return Text("no training steps logged yet", style="dim")
        f = plotext.figure
        f.clear()
        f.theme("colorless" if self.colorless else "simple")
        f.plot_size(width, height)
        points = 2 * width  # the hd marker draws two points per cell
        for curve, side in series:
            if len(curve) == 0:
                continue
            xs, ys = curve.view(points, self.smooth)
            if self.log_scale:
                ys = [max(y, LOG_FLOOR) for y in ys]
            f.draw(f.signal(xs, ys, yside=side).lines())
        f.legend(False)
        if self.log_scale:
            for side in ("left", "right"):
                f.ruler("y", side).scale("log")
        m = f.build()
        return Text(m.string(colorless=True)) if self.colorless else Text.from_ansi(str(m))

    def _series(self) -> list[tuple[Curve, str]]:
        if self.final_id is None or self.final_id not in self.finals:
            return [(self.train, "left"), (self.val, "right")]
        c = self.finals[self.final_id]
        return [(c["train_loss"], "left"), (c["val_error"], "right"), (c["test_error"], "right")]

