"""The result of `tvm_tqs.score`: `TQSReport`, with one `SiteScore` per fused call site, and its JSON form."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .graph import FusedOp

REPORT_VERSION = 1


@dataclass(frozen=True)
class SiteScore:
    """The TQS result of one fused call site (see docs/tqs.md for every formula).

    ``tqs`` is the growth rate (natural log per time step) of the seed-averaged divergence curve, ``gain``
    the mean divergence per unit of injected relative error; ``*_ci`` are bootstrap intervals over seeds
    (None with one seed). ``gain_first_call`` and ``gain_first_step`` are the same gain over the first
    model call only and over the first time step only (single-step sensitivities, read from the same
    rollout). ``linearity_ratio`` = d(eps) / d(eps/2), 2 for a linear response. ``status`` is "ok",
    "skipped" (cannot be perturbed; `reason` says why) or "no effect" (the perturbation never reaches
    the forecast).
    """

    site: int
    name: str
    anchor: str
    kinds: tuple[str, ...]
    status: str
    reason: str | None = None
    tqs: float | None = None
    tqs_ci: tuple[float, float] | None = None
    growth_endpoint: float | None = None
    gain: float | None = None
    gain_ci: tuple[float, float] | None = None
    gain_final: float | None = None
    gain_first_call: float | None = None
    gain_first_step: float | None = None
    linearity_ratio: float | None = None
    linear: bool | None = None
    curve: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("tqs_ci", "gain_ci"):
            d[key] = None if d[key] is None else [float(v) for v in d[key]]
        d["kinds"] = list(self.kinds)
        d["curve"] = [float(v) for v in self.curve]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SiteScore:
        d = dict(d)
        d["kinds"] = tuple(d["kinds"])
        d["curve"] = tuple(d["curve"])
        for key in ("tqs_ci", "gain_ci"):
            d[key] = None if d[key] is None else tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class TQSReport:
    """What `score` found: one `SiteScore` per call site, the op table, and how it was measured."""

    model: str
    mode: str
    horizon: int
    seeds: int
    seed: int
    eps: float
    contexts: str
    burn_in_calls: int
    stride: int
    calls: int
    batch: int
    executions: int
    method: str
    linearity_eps: float | None
    linearity_seeds: int
    spec: dict
    sites: tuple[SiteScore, ...]
    ops: tuple[FusedOp, ...]
    notes: tuple[str, ...] = ()
    version: int = REPORT_VERSION
    path: str = "rows"  # how rows ran: "rows" (batch rows of one call) or "calls" (a call per row)
    path_reason: str | None = None  # why the calls path ran

    def ranked(self, by: str = "tqs") -> list[SiteScore]:
        """Scored sites, most sensitive first; unscored sites last.

        Parameters
        ----------
        by : {"tqs", "gain"}
            The key; ties are broken by the other one, then by site index.
        """
        if by not in ("tqs", "gain"):
            raise ValueError(f"by must be 'tqs' or 'gain', got {by!r}")
        scored = [s for s in self.sites if getattr(s, by) is not None]
        rest = [s for s in self.sites if getattr(s, by) is None]
        other = "gain" if by == "tqs" else "tqs"
        scored.sort(key=lambda s: (-getattr(s, by), -(getattr(s, other) or 0.0), s.site))
        return scored + rest

    def site(self, index: int) -> SiteScore:
        """The score of call site `index` (StopIteration where the report has none).

        Parameters
        ----------
        index : int
            `SiteScore.site`, the fused call site's index.
        """
        return next(s for s in self.sites if s.site == index)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["sites"] = [s.to_dict() for s in self.sites]
        d["ops"] = [op.to_dict() for op in self.ops]
        d["notes"] = list(self.notes)
        return d

    def to_json(self, indent: int | None = None) -> str:
        """The report as strict JSON (`from_json` reads it back to an equal report).

        Parameters
        ----------
        indent : int, optional
            As for `json.dumps`.
        """
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict) -> TQSReport:
        d = dict(d)
        d["sites"] = tuple(SiteScore.from_dict(s) for s in d["sites"])
        d["ops"] = tuple(FusedOp.from_dict(op) for op in d["ops"])
        d["notes"] = tuple(d["notes"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> TQSReport:
        return cls.from_dict(json.loads(text))
