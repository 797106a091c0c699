"""Seeds that pay, or step aside: when :class:`dgl_mvs.MVSSampler` draws importance-sampled seeds.

Importance-sampled seeds whose gradient estimate has ``r`` times the variance of uniform seeds
are worth a batch ``1 / r`` times larger (Katharopoulos and Fleuret, "Not All Samples Are
Created Equal", ICML 2018, whose switch turns importance sampling on only when that equivalent
batch increase pays for its cost).  Here the cost is the sampler's own work on top of uniform
seeds on the same blocks: the score refreshes that keep the probabilities fresh, the draw and
the score bookkeeping, as a share ``c`` of a training step.  The seeds pay when
``1 / r > 1 + c``; while they do not, the sampler draws uniform seeds with the plain mean
(weights ``1 / B``, every training node once per epoch as with ``shuffle=True``).

**What r is measured on.**  Each step's ``update_scores`` hands over fresh gradient norms
``f`` of the nodes just drawn, for free.  At the end of every interval (the steps that share
one set of probabilities), those rows estimate, for the probabilities that the score table
gave at the interval's start (``q``, the minimal-variance ones, mixed with each candidate
uniform share ``a``), the closed-form variance ``sum (1 - q_i) / q_i f_i^2`` of the
Horvitz-Thompson mean, and the same for uniform seeds, each term weighted by one over the
probability with which its node was drawn (:func:`dgl_mvs.variance.sampled_mix_variances`):
their ratio is ``r`` of the probabilities that importance sampling would use now, staleness
included, whichever seeds are drawn.  The uniform share with the least variance is the one
used.  The estimates of the last intervals count, each interval half as much as the next.

**When scores are refreshed.**  A refresh costs ``R`` training steps (the row model) and
brings the probabilities back to fresh; its value fades as the scores go stale.  The value of
a step's importance sampling over uniform seeds, net of its per-step cost, is
``v(1 / r) = max(0, 1 / r - 1 - c_step)``.  Right after a refresh the fresh rows give ``r0``;
at the end of every interval the steps' shortfall ``v(1 / r0) - v(1 / r)`` is added up, and
a refresh runs once that sum reaches ``R`` (for a linear decline of ``1 / r``, the schedule
that costs least in refreshes and lost variance together).  Before the first refresh ``r0``
is ``r*``, the ratio of the minimal-variance probabilities of the fresh norms themselves
with the best uniform share (:func:`dgl_mvs.variance.sampled_optimal_probabilities`, an
optimistic bound: what scores refreshed now could give), so the first refresh comes as soon as the fresh scores differ enough from
the table's to pay for it, and the seeds can start within the first epoch.  The refreshes
also keep to a budget: one refresh per ``P`` steps (``score_every``, by default
:data:`REFRESH_SHARE` of the training time by the row model) on average, with one in
advance; uniform seeds need no refresh to measure whether importance sampling would pay, and
refresh only when the shortfall says so.

**Reproducible.**  ``r`` and ``r*`` come from the scores, which are the same in every run of
a seed.  The cost is by default a model, not a timing: the regular refreshes are scheduled so
that they cost about :data:`REFRESH_SHARE` of the training time by the sampler's row count
(a score refresh costs about as much per row as a training step, measured), plus
:data:`STEP_SHARE` for the draw and the score bookkeeping, so every run of a seed makes the
same choices.  The sampler also times its own work with :func:`time.perf_counter` in the
training process; the measured share is reported next to the model's
(:meth:`dgl_mvs.MVSSampler.seed_report`), and ``overhead="measured"`` makes the choices from
the measured times, at the price of runs that then depend on the machine's speed and load.
"""
from __future__ import annotations

import collections
import math
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .variance import sampled_mix_variances, sampled_optimal_probabilities

__all__ = ["SeedSwitch", "SeedReport", "MIX_CHOICES", "REFRESH_SHARE", "STEP_SHARE",
           "IMPORTANCE"]

#: Uniform shares ``a`` of ``(1 - a) p + a B / n`` chosen from (1.0: uniform seeds).
MIX_CHOICES = (0.1, 0.25, 0.5, 1.0)
#: Share of the training time that the regular score refreshes aim at (by the row model).
REFRESH_SHARE = 0.03
#: Modelled cost of drawing importance-sampled seeds (the draw, the weights, the score
#: bookkeeping) as a share of a training step; the benchmark measures it.
STEP_SHARE = 0.02
#: Refreshes the budget holds at most (one per ``score_every`` steps accrues).
_MAX_CREDIT = 2.0
#: Settings of ``MVSSampler(importance=...)``.
IMPORTANCE = ("auto", "always")
#: Weight of the previous intervals' estimates against the last one's.
_FORGET = 0.5
#: Step times kept for the measured medians.
_RECENT = 64


def _recent() -> collections.deque:
    """The last :data:`_RECENT` times of one kind (a module function: samplers pickle)."""
    return collections.deque(maxlen=_RECENT)


def _inverse(ratio: float) -> float:
    """``1 / ratio``, the equivalent batch factor (inf for a zero ratio)."""
    return 1.0 / ratio if ratio > 0 else math.inf


@dataclass
class SeedReport:
    """Where the seed switch stands: what the seeds gain, what they cost, what was chosen.

    ``print(sampler.seed_report())`` gives a readable summary; the fields are for programs.
    """

    #: "auto" (the seeds must pay) or "always" (importance sampling whenever it helps).
    importance: str
    #: "mvs" (importance-sampled seeds) or "uniform" (uniform seeds, weights 1 / B).
    mode: str
    #: Uniform share ``a`` in use (1.0: uniform seeds).
    uniform_mix: float
    #: Predicted variance ratio ``r`` of the best share against uniform seeds (nan: none yet).
    ratio: float
    #: The best share behind ``ratio`` (nan: none yet).
    best_mix: float
    #: Equivalent batch-size factor ``1 / r``.
    equivalent_batch: float
    #: Cost share ``c`` that the choice compares ``1 / r`` with (model, number or measured).
    overhead: float
    #: The modelled share: :data:`STEP_SHARE` plus the refreshes' share by the row model.
    overhead_model: float
    #: The share measured in this process (nan until a refresh and some steps were timed).
    overhead_measured: float
    #: Whether ``1 / r > 1 + c`` at the last choice (None: no measurement yet).
    pays: bool | None
    #: Predicted ratio ``r*`` of the minimal-variance p of the fresh scores themselves, with
    #: the best share (what a score refresh would give; nan: none yet).
    fresh_ratio: float
    #: Training steps whose fresh scores the current estimate rests on (the earlier
    #: intervals' counted at their weight).
    window_steps: int
    #: Score refreshes so far, and the step after which the last one ran (-1: none).
    refreshes: int
    last_refresh: int
    #: The shortfall added up since the last refresh, and the refresh cost ``R`` it is
    #: compared with, in training steps.
    shortfall: float
    refresh_steps: float
    #: Refreshes the budget allows now, and the steps per refresh it accrues
    #: (``score_every``; 0: no refreshes).
    credit: float
    score_every: int
    #: Why the current seeds were chosen, and why the last refresh ran.
    reason: str
    refresh_reason: str
    #: Milliseconds measured in this process: step, update_scores and the draws (medians,
    #: the draws only where they run in this process), refresh and the interval's
    #: publication (means).
    timings_ms: dict = field(default_factory=dict)

    def __str__(self) -> str:
        def num(x, fmt):
            return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) \
                else format(x, fmt)

        lines = [
            f"seeds: {self.mode} (importance={self.importance!r}, uniform share "
            f"{self.uniform_mix:g}) - {self.reason}",
            f"  variance ratio r = {num(self.ratio, '.3f')} against uniform seeds (share "
            f"{num(self.best_mix, 'g')}), equivalent batch x{num(self.equivalent_batch, '.2f')};"
            f" fresh scores would give r* = {num(self.fresh_ratio, '.3f')} (over "
            f"{self.window_steps} steps)",
            f"  overhead c = {num(self.overhead, '.1%')} of a step (model "
            f"{num(self.overhead_model, '.1%')}, measured {num(self.overhead_measured, '.1%')})"
            f"; pays (1/r > 1 + c): {'n/a' if self.pays is None else self.pays}",
            f"  score refreshes: {self.refreshes}, the last after step {self.last_refresh}"
            + (f" ({self.refresh_reason})" if self.refresh_reason else ""),
            f"  next refresh when the shortfall since the last one ({self.shortfall:.1f} steps)"
            f" reaches its cost ({self.refresh_steps:.1f} steps) and the budget allows it "
            f"({self.credit:.2f} refreshes, one more every {self.score_every} steps)",
        ]
        if self.timings_ms:
            lines.append("  measured ms: " + ", ".join(
                f"{k} {v:.3f}" for k, v in self.timings_ms.items()))
        return "\n".join(lines)


class SeedSwitch:
    """The choice between importance-sampled and uniform seeds, and when scores are refreshed.

    Used by :class:`dgl_mvs.MVSSampler` (one-hop blocks, frozen probabilities) in its
    training process; its state is part of the sampler's ``state_dict``.  At the end of every
    interval the sampler hands over the interval's fresh rows (:meth:`add_interval`) and asks
    for the next interval's uniform share (:meth:`decide`); then whether a score refresh is
    due (:meth:`due`), and reports one (:meth:`refreshed`).

    Parameters
    ----------
    mixes : tuple of float
        Uniform shares to choose from; 1.0 (uniform seeds) is always among them.
    importance : str
        "auto": importance-sampled seeds only while ``1 / r > 1 + c``; "always": whenever
        some share beats uniform seeds on the fresh scores.
    overhead : float, str or None
        ``c``: None for the model, a number in ``[0, 10]``, or "measured".
    period : int
        ``P``: at most this many steps between refreshes while importance-sampled seeds are
        drawn, and the horizon over which a refresh's gain is counted (0: no refreshes).
    interval : int
        Steps per interval.
    refresh_steps : float
        ``R``: the modelled cost of one refresh in training steps.
    batch_size : float
        Seeds per step (all ranks together).
    initial_mix : float
        Uniform share before the first choice.
    """

    def __init__(self, mixes, importance: str, overhead, period: int, interval: int,
                 refresh_steps: float, batch_size: float, initial_mix: float = 1.0):
        self.mixes = tuple(sorted(set(float(a) for a in mixes) | {1.0}))
        self.importance = importance
        self.overhead_setting = overhead
        self.period = int(period)
        self.interval = int(interval)
        self.refresh_steps = float(refresh_steps)
        self.batch_size = float(batch_size)
        self.mix = float(initial_mix)
        # Variance sums of the shares (the last one uniform), then of the fresh optimum.
        self.window = torch.zeros(len(self.mixes) + 1, dtype=torch.float64)
        self.window_steps = 0.0
        self.refreshes = 0
        self.last_refresh = -1
        self.ratio = math.nan
        self.best_mix = math.nan
        self.fresh_ratio = math.nan
        self.pays: bool | None = None
        #: 1/r measured right after the last refresh (None: not yet), the shortfall added
        #: up since, and the refreshes the budget allows.
        self.reference: float | None = None
        self.shortfall = 0.0
        self.credit = 1.0
        self.reason = "uniform seeds until fresh scores have measured r"
        self.refresh_reason = ""
        #: One entry per choice: (step, uniform share chosen, r, r*, 1 + c).
        self.history: list[tuple[int, float, float, float, float]] = []
        self._rows: list[tuple[Tensor, Tensor]] = []
        self._seconds: dict[str, collections.deque] = collections.defaultdict(_recent)
        self._last_exit: float | None = None
        self._last_exit_step = -2
        self._refresh_total = 0.0
        self._steps_timed = 0

    # ------------------------------------------------------------------ the estimate
    def record(self, nodes: Tensor, fresh: Tensor) -> None:
        """Keep one step's fresh rows until its interval ends."""
        self._rows.append((nodes, fresh))

    def take_rows(self) -> tuple[Tensor, Tensor, int] | None:
        """``(nodes, fresh, steps)`` recorded since the last call (or refresh), concatenated."""
        rows, self._rows = self._rows, []
        if not rows:
            return None
        return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows]), len(rows)

    def add_interval(self, candidate: Tensor, fresh: Tensor, drawn_with: Tensor,
                     uniform: float, steps: int) -> None:
        """Add one interval's estimates (:mod:`dgl_mvs.variance`), the earlier ones halved."""
        values = sampled_mix_variances(candidate, fresh, drawn_with, uniform, self.mixes)
        # Each step's rows stand for the whole pool: ``steps`` pools, ``steps`` budgets.
        optimum = sampled_optimal_probabilities(fresh, drawn_with, self.batch_size * int(steps))
        fresh_values = sampled_mix_variances(optimum, fresh, drawn_with, uniform, self.mixes)
        self.window.mul_(_FORGET)
        self.window[:-1].add_(values)
        self.window[-1] += float(fresh_values.min())  # its best share
        self.window_steps = self.window_steps * _FORGET + int(steps)

    def _measured(self) -> bool:
        return self.window_steps >= self.interval and float(self.window[-2]) > 0

    # ------------------------------------------------------------------ the choice
    def decide(self, step: int, overhead_model: float) -> float:
        """The uniform share of the next interval, chosen at the end of ``step``."""
        if not self._measured():
            return self.mix  # not measured yet: keep the current choice
        uniform_var = float(self.window[-2])
        ratios = (self.window / uniform_var).tolist()
        best = len(self.mixes) - 1
        for index in range(len(self.mixes) - 2, -1, -1):  # ties go to the larger share
            if ratios[index] < ratios[best] * (1.0 - 1e-9):
                best = index
        self.ratio, self.best_mix, self.fresh_ratio = ratios[best], self.mixes[best], ratios[-1]
        cost = 1.0 + self.overhead(overhead_model)
        gain = 1.0 / self.ratio if self.ratio > 0 else math.inf
        if self.best_mix >= 1.0:
            self.pays = False
            self.mix = 1.0
            self.reason = "uniform seeds: no share of the scores beats them on fresh scores"
        elif self.importance == "always" or gain > cost:
            self.pays = gain > cost
            self.mix = self.best_mix
            self.reason = (f"importance-sampled seeds: 1/r = {gain:.3f} > 1 + c = {cost:.3f}"
                           if self.pays else
                           f"importance-sampled seeds (importance='always'): 1/r = {gain:.3f}, "
                           f"1 + c = {cost:.3f}")
        else:
            self.pays = False
            self.mix = 1.0
            self.reason = (f"uniform seeds: the equivalent batch 1/r = {gain:.3f} does not pay "
                           f"for the overhead 1 + c = {cost:.3f}")
        self.history.append((step, self.mix, self.ratio, self.fresh_ratio, cost))
        return self.mix

    def overhead(self, overhead_model: float) -> float:
        """``c``: the model's, the number given, or the measured share (model if unmeasured)."""
        if self.overhead_setting is None:
            return overhead_model
        if self.overhead_setting == "measured":
            measured = self.measured_overhead()
            return overhead_model if math.isnan(measured) else measured
        return float(self.overhead_setting)

    # ------------------------------------------------------------------ refreshes
    def _refresh_cost(self) -> float:
        """``R`` in steps: the model's, or the measured one with ``overhead="measured"``."""
        if self.overhead_setting == "measured":
            refresh, step = self._mean("refresh"), self._median("step")
            if not math.isnan(refresh) and step > 0:
                return refresh / step
        return self.refresh_steps

    def add_shortfall(self, steps: int, overhead_model: float) -> None:
        """At an interval's end: the budget accrues; the shortfall of ``steps`` measured steps
        against the last refresh is added (module notes)."""
        self.credit = min(_MAX_CREDIT, self.credit + self.interval / self.period) \
            if self.period else 0.0
        if not steps or not self._measured():
            return
        per_step = max(0.0, self.overhead(overhead_model) - self.refresh_steps / self.period) \
            if self.period else self.overhead(overhead_model)
        now = self._value(_inverse(self.ratio), per_step)
        if self.reference is None and self.last_refresh >= 0:
            self.reference = _inverse(self.ratio)  # the first estimate after a refresh
            return
        reference = _inverse(self.fresh_ratio) if self.reference is None else self.reference
        self.shortfall += steps * max(0.0, self._value(reference, per_step) - now)

    @staticmethod
    def _value(gain: float, per_step: float) -> float:
        """``v``: the worth of a step's importance sampling over uniform seeds, net."""
        return max(0.0, min(gain, 1e6) - 1.0 - per_step)

    def due(self) -> bool:
        """Whether a score refresh runs now: it pays for itself, and the budget allows it."""
        if not self.period or self.credit < 1.0 or self.shortfall < self._refresh_cost():
            return False
        self.refresh_reason = (
            f"{self.shortfall:.1f} steps' worth of variance lost to stale scores against a "
            f"refresh's {self._refresh_cost():.1f} steps")
        return True

    def refreshed(self, step: int) -> None:
        """A refresh ran at the end of ``step``: a new estimate starts, the budget is used."""
        self.refreshes += 1
        self.last_refresh = step
        self.credit = max(0.0, self.credit - 1.0)
        self.shortfall = 0.0
        self.reference = None  # measured by the first estimate after it
        self.window.zero_()
        self.window_steps = 0.0
        self._rows = []

    # ------------------------------------------------------------------ timings
    def timed(self, what: str, seconds: float) -> None:
        """Record ``seconds`` spent on ``what`` in this process."""
        self._seconds[what].append(seconds)
        if what == "refresh":
            self._refresh_total += seconds

    def step_done(self, step: int) -> None:
        """The end of update_scores of ``step``: the time since the previous one is a step."""
        now = time.perf_counter()
        if self._last_exit is not None and step == self._last_exit_step + 1:
            self._seconds["step"].append(now - self._last_exit)
        self._last_exit, self._last_exit_step = now, step
        self._steps_timed += 1

    def _median(self, what: str) -> float:
        values = self._seconds.get(what)
        return statistics.median(values) if values else math.nan

    def _mean(self, what: str) -> float:
        values = self._seconds.get(what)
        return statistics.fmean(values) if values else math.nan

    def measured_overhead(self) -> float:
        """The measured cost share of importance-sampled seeds (nan until measured).

        Per step: the refreshes (their total time over the steps timed, at least one every
        regular period), ``update_scores``, the draw (where it runs in this process) and the
        interval's publication, over the median step time.
        """
        step = self._median("step")
        refresh = self._mean("refresh")
        if math.isnan(step) or math.isnan(refresh) or step <= 0 or not self.period:
            return math.nan
        draw = self._median("draw_mvs")
        publish = self._mean("publish_mvs")
        refreshes = max(refresh / self.period, self._refresh_total / max(1, self._steps_timed))
        extra = refreshes + self._median("update")
        extra += 0.0 if math.isnan(draw) else draw
        extra += 0.0 if math.isnan(publish) else publish / self.interval
        return extra / step

    def timings_ms(self) -> dict:
        """Milliseconds measured in this process (medians; means for the rare events)."""
        out = {}
        for what, how in (("step", self._median), ("update", self._median),
                          ("draw_uniform", self._median), ("draw_mvs", self._median),
                          ("refresh", self._mean), ("publish_mvs", self._mean),
                          ("publish_uniform", self._mean)):
            value = how(what)
            if not math.isnan(value):
                out[what] = value * 1e3
        return out

    # ------------------------------------------------------------------ report and state
    def report(self, overhead_model: float) -> SeedReport:
        ratio = self.ratio
        return SeedReport(
            importance=self.importance, mode="mvs" if self.mix < 1.0 else "uniform",
            uniform_mix=self.mix, ratio=ratio, best_mix=self.best_mix,
            equivalent_batch=1.0 / ratio if ratio > 0 else math.nan,
            fresh_ratio=self.fresh_ratio,
            overhead=self.overhead(overhead_model), overhead_model=overhead_model,
            overhead_measured=self.measured_overhead(), pays=self.pays,
            window_steps=round(self.window_steps), refreshes=self.refreshes,
            last_refresh=self.last_refresh, shortfall=self.shortfall,
            refresh_steps=self._refresh_cost(), credit=self.credit, score_every=self.period,
            reason=self.reason, refresh_reason=self.refresh_reason,
            timings_ms=self.timings_ms(),
        )

    _SCALARS = ("mix", "window_steps", "refreshes", "last_refresh", "ratio", "best_mix",
                "fresh_ratio", "pays", "reference", "shortfall", "credit", "reason",
                "refresh_reason")

    def state_dict(self) -> dict:
        """Everything a resume needs to choose as the uninterrupted run (not the timings)."""
        state = {name: getattr(self, name) for name in self._SCALARS}
        state.update(
            window=self.window.clone(), history=list(self.history),
            rows=[(nodes.cpu().clone(), fresh.cpu().clone()) for nodes, fresh in self._rows],
        )
        return state

    def check_state_dict(self, state: object) -> None:
        """Raise ValueError if ``state`` is not a seed switch state that fits this one."""
        needed = set(self._SCALARS) | {"window", "rows"}
        if not isinstance(state, dict) or not needed <= set(state):
            missing = sorted(needed - set(state)) if isinstance(state, dict) else "all"
            raise ValueError(f"sampler state's seed switch ('seeds') is missing {missing}")
        window = state["window"]
        if not torch.is_tensor(window) or tuple(window.shape) != tuple(self.window.shape):
            raise ValueError(
                f"sampler state's seed switch has {tuple(getattr(window, 'shape', ()))} "
                f"variance sums, this sampler keeps {tuple(self.window.shape)} (uniform "
                f"shares {self.mixes} and the fresh optimum)"
            )

    def load_state_dict(self, state: dict, device) -> None:
        """Restore :meth:`state_dict` (checked first; the timings start anew)."""
        self.check_state_dict(state)
        for name in self._SCALARS:
            setattr(self, name, state[name])
        self.window.copy_(state["window"])
        self.history = [tuple(h) for h in state.get("history", [])]
        self._rows = [(nodes.to(device), fresh.to(device)) for nodes, fresh in state["rows"]]
        self._seconds.clear()
        self._last_exit, self._last_exit_step = None, -2
        self._refresh_total, self._steps_timed = 0.0, 0
