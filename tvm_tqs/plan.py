"""The precision plan compile() produces: per site what runs, why, and what it is predicted to cost."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SitePlan:
    """One fused call site of the fp32 graph in the plan.

    ``group`` is the weight id the site shares with others (an unrolled recurrence): such sites are
    decided together. ``error_share`` is the site's part of the predicted squared relative rollout
    error (its group's e_g^2 split by gain; with the cross-group model the group's part includes half of its
    interaction terms and can be negative), so the shares add up to ``Plan.predicted_error ** 2``.
    ``size_bytes`` counts the group's weight storage once, on its first site. ``latency_ms`` is the
    per-site kernel latency from the latency table (``latency_source``: measured, cached, predicted,
    corrected) or None when latency was not part of the job.
    """

    site: int
    name: str
    kinds: tuple[str, ...]
    anchor: str
    precision: str
    options: tuple[str, ...]
    group: str | None = None
    tqs: float | None = None
    gain: float | None = None
    error_share: float = 0.0
    size_bytes: float = 0.0
    bops: float = 0.0
    latency_ms: float | None = None
    latency_source: str | None = None
    kernel: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> SitePlan:
        return cls(**{**d, "kinds": tuple(d["kinds"]), "options": tuple(d["options"])})


@dataclass(frozen=True)
class Plan:
    """The whole plan: sites, the budget it was solved for, and the totals it reaches.

    ``totals`` and ``fp32_totals`` hold ``size_bytes`` (all constants: quantized weights with their
    scales plus the float constants), ``avg_bits`` (element-weighted bits of the quantizable weights),
    ``bops`` (MACs x weight bits x activation bits) and, when latency was part of the job,
    ``latency_ms`` (the latency table's sum over sites). ``predicted_error`` is the error model's
    relative rollout error (docs/error_model.md).
    """

    sites: tuple[SitePlan, ...]
    budget: dict
    totals: dict
    fp32_totals: dict
    predicted_error: float
    method: str
    optimal: bool

    @property
    def precisions(self) -> dict[int, str]:
        return {s.site: s.precision for s in self.sites}

    def counts(self) -> dict[str, int]:
        """How many quantizable sites run at each precision."""
        out: dict[str, int] = {}
        for s in self.sites:
            if len(s.options) > 1:
                out[s.precision] = out.get(s.precision, 0) + 1
        return out

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["sites"] = [s.to_dict() for s in self.sites]
        if math.isnan(self.predicted_error):  # forced plans are not predicted; keep the JSON strict
            d["predicted_error"] = None
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        error = d["predicted_error"]
        return cls(
            **{
                **d,
                "sites": tuple(SitePlan.from_dict(s) for s in d["sites"]),
                "predicted_error": math.nan if error is None else error,
            }
        )
