"""Accounts read from Redis straight into column rows (the worker's compact book).

A partition's accounts are read in pipelined chunks of ``READ_CHUNK`` and each stored state is
parsed with the standard JSON decoder into floats, without building domain objects: the rows
are for the float screen, and an account that needs exact work is read again, in full, when it
does. A state the fast reader cannot take as it is (a missing field, an unknown symbol or side,
a number that is not a finite decimal string, another account's id) is parsed by the snapshot
model, which reports it to ``BadRecords`` if it is corrupt, as ``read_accounts`` does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from marginwatch.base.pools import SIDES
from marginwatch.engine.types import Account, MarginMode
from marginwatch.state.accounts import read_account_fields, stored_account
from marginwatch.state.bad_records import BadRecords

SIDE_INDEX = {side.value: index for index, side in enumerate(SIDES)}
ISOLATED = MarginMode.ISOLATED.value
Row = tuple[int, bool, int, float, float, float, int]  # account, isolated, symbol, Q, EP, iw, side


@dataclass
class AccountRows:
    """Accounts (id, version, cross wallet) and their positions as rows, in read order."""

    account_ids: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    cross_wallet: list[float] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.account_ids)

    def column(self, index: int, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """Column ``index`` of ``Row`` as an array."""
        return np.array([row[index] for row in self.rows], dtype=dtype)


def read_account_rows(
    client: redis.Redis,
    partition: int,
    account_ids: Sequence[str],
    symbol_index: Mapping[str, int],
    bad: BadRecords | None = None,
) -> AccountRows:
    """The rows of several accounts of one partition; absent and corrupt ones are left out."""
    found = AccountRows()
    for account_id, version, state in read_account_fields(client, partition, account_ids):
        if state is not None:
            add_account(found, account_id, version, state, symbol_index, bad)
    return found


def add_account(
    found: AccountRows,
    account_id: str,
    version: bytes | None,
    state: bytes,
    symbol_index: Mapping[str, int],
    bad: BadRecords | None,
) -> None:
    """Append one stored account's rows: by the fast reader, else by the snapshot model."""
    number = len(found.account_ids)
    try:
        wallet, rows = fast_rows(number, account_id, state, symbol_index)
    except (ValueError, KeyError, TypeError, AttributeError):
        stored = stored_account(account_id, version, state, bad)
        if stored is None or not known_symbols(stored.account, symbol_index, bad):
            return
        wallet, rows = domain_rows(number, stored.account, symbol_index)
    found.account_ids.append(account_id)
    found.versions.append(int(version or 0))
    found.cross_wallet.append(wallet)
    found.rows += rows


def fast_rows(
    number: int, account_id: str, state: bytes, symbol_index: Mapping[str, int]
) -> tuple[float, list[Row]]:
    """The cross wallet and rows of a state as ``account_to_json`` writes it; raises on
    anything else."""
    data = json.loads(state)
    if data["account_id"] != account_id:
        raise ValueError("another account")
    rows = [
        (number, p["margin_mode"] == ISOLATED, symbol_index[p["symbol"]],
         _decimal(p["quantity"]), _decimal(p["entry_price"]),
         _decimal(p.get("isolated_wallet", "0")), SIDE_INDEX[p["position_side"]])
        for p in data["positions"]
    ]  # fmt: skip
    return _decimal(data["cross_wallet_balance"]), rows


def _decimal(text: str) -> float:
    """A decimal string as a finite float (a JSON number or anything else raises)."""
    value = float(text) if isinstance(text, str) else math.nan
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def known_symbols(
    account: Account, symbol_index: Mapping[str, int], bad: BadRecords | None
) -> bool:
    """Whether every symbol of the account has a bracket table (reported if not)."""
    unknown = sorted({p.symbol for p in account.positions} - set(symbol_index))
    if unknown:
        (bad or BadRecords()).report("account", account.account_id, f"unknown symbols {unknown}")
    return not unknown


def domain_rows(
    number: int, account: Account, symbol_index: Mapping[str, int]
) -> tuple[float, list[Row]]:
    """The cross wallet and rows of a domain account."""
    rows = [
        (number, p.is_isolated, symbol_index[p.symbol], float(p.quantity), float(p.entry_price),
         float(p.isolated_wallet or 0), SIDE_INDEX[p.position_side.value])
        for p in account.positions
    ]  # fmt: skip
    return float(account.cross_wallet_balance), rows
