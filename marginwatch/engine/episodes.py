"""What is due for a margin pool, by the rules the worker sends on, the executor confirms and
the replay follows (``marginwatch replay``): one place for each rule.

* A pool *enters* a margin-call episode when its status reaches ``margin_call`` (ratio >=
  ``margin_call_ratio``, or margin balance <= 0) outside an episode: one margin call.
* The episode *ends* when the ratio falls below ``rearm_below`` (``margin_call_ratio −
  margin_call_hysteresis``): one resolution; the next margin call needs a new episode.
* A pool at ``liquidation`` is liquidated once per confirmation (``liquidation_sent``: its
  liquidation was already sent and not settled).

The executor confirms each action exactly at the newest marks (``EpisodeRules.calls`` and
``resolves``, and the pool still at ``liquidation``). The array functions select the pools of an
evaluation where an action may be due, and settle the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from marginwatch.engine.batch import BatchResult, IntArray
from marginwatch.engine.types import Status

MARGIN_CALL_CODE = Status.MARGIN_CALL.severity
LIQUIDATION_CODE = Status.LIQUIDATION.severity


@dataclass(frozen=True, slots=True)
class EpisodeRules:
    """The two levels of an episode: where it starts and below which it ends."""

    margin_call_ratio: Decimal
    rearm_below: Decimal

    def calls(self, margin_ratio: Decimal | None) -> bool:
        """Whether a ratio calls for a margin call (``None``: margin balance <= 0)."""
        return margin_ratio is None or margin_ratio >= self.margin_call_ratio

    def resolves(self, margin_ratio: Decimal | None) -> bool:
        """Whether a ratio ends an episode."""
        return margin_ratio is not None and margin_ratio < self.rearm_below


@dataclass(frozen=True, slots=True)
class Due:
    """The actions due for a pool, and whether it is in an episode after them."""

    margin_call: bool
    resolution: bool
    liquidation: bool
    in_episode: bool


def due_for(
    status: Status,
    margin_ratio: Decimal | None,
    in_episode: bool,
    liquidation_sent: bool,
    rules: EpisodeRules,
) -> Due:
    """What a pool's confirmed status and ratio call for (the module docstring's rules)."""
    liquidation = status is Status.LIQUIDATION and not liquidation_sent
    if not in_episode and status.severity >= MARGIN_CALL_CODE:
        return Due(margin_call=True, resolution=False, liquidation=liquidation, in_episode=True)
    if in_episode and rules.resolves(margin_ratio):
        return Due(margin_call=False, resolution=True, liquidation=liquidation, in_episode=False)
    return Due(margin_call=False, resolution=False, liquidation=liquidation, in_episode=in_episode)


def candidate_pools(
    pools: IntArray,
    result: BatchResult,
    confirmed_status: npt.NDArray[np.int8],
    in_episode: npt.NDArray[np.bool_],
    rearm_below: Decimal,
) -> IntArray:
    """Of the evaluated ``pools``, those where an action may be due (to be decided): entering
    a new status at margin call or above, in an episode below the re-arm level, or uncertain."""
    status, ratio = result.status[pools], result.margin_ratio[pools]
    entering = (status >= MARGIN_CALL_CODE) & (confirmed_status[pools] != status)
    recovering = in_episode[pools] & (ratio < float(rearm_below))
    selected: IntArray = pools[entering | recovering | result.uncertain[pools]]
    return selected


def settle_quiet_pools(
    pools: IntArray,
    candidates: IntArray,
    result: BatchResult,
    confirmed_status: npt.NDArray[np.int8],
) -> None:
    """Of ``pools``, those not candidates and below margin call need no action: their screened
    status is their confirmed status."""
    quiet = pools[np.isin(pools, candidates, invert=True)]
    quiet = quiet[result.status[quiet] < MARGIN_CALL_CODE]
    confirmed_status[quiet] = result.status[quiet]
