"""Price impact of liquidations: what a stress scenario's later rounds shock the marks by.

Closing a liquidated long sells it and closing a liquidated short buys it back. A symbol's *net
forced sale* in a round is ``S = Σ Q × MP`` (USDT) over the positions of the pools newly at
liquidation in that round, at that round's marks (a long, ``Q > 0``, sells). An impact
``m/D`` (written ``1%/10000000``) says that a net forced sale of ``D`` USDT moves the mark down
by ``m``; after the round the mark is

    MP_next = MP × (1 − m) ^ (S / D)

so that:

* a sale of ``D`` moves the mark by ``−m``, a purchase of ``D`` (``S = −D``) by
  ``1 / (1 − m) − 1`` (up);
* the mark stays positive whatever ``S`` (``0 < m < 1``);
* a sale split over rounds moves the mark as the whole sale would (the exponents add).

A symbol takes its own impact, else the ``*`` (``ALL``) impact, else none: its mark does not
move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from marginwatch.engine.scenarios import ALL, ONE


@dataclass(frozen=True, slots=True)
class Impact:
    """A net forced sale of ``depth`` USDT moves the mark down by ``move`` (``0 < move < 1``)."""

    move: Decimal
    depth: Decimal

    def factor(self, net_sold: Decimal) -> Decimal:
        """The mark's multiplier after a net forced sale: ``(1 − m) ^ (S / D)``."""
        return (ONE - self.move) ** (net_sold / self.depth)


@dataclass(frozen=True, slots=True)
class ImpactModel:
    """Each symbol's impact; ``ALL`` for the symbols without their own."""

    of: Mapping[str, Impact]

    def impact_for(self, symbol: str) -> Impact | None:
        """The symbol's own impact, else the ``*`` one, else ``None``."""
        return self.of.get(symbol, self.of.get(ALL))


def impacted_moves(model: ImpactModel, net_sold: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Each symbol with an impact and a net forced sale: its mark's move, ``factor − 1``."""
    moved: dict[str, Decimal] = {}
    for symbol, sold in net_sold.items():
        impact = model.impact_for(symbol)
        if impact is not None and sold:
            moved[symbol] = impact.factor(sold) - ONE
    return moved
