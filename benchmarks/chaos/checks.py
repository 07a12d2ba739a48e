"""The chaos run's checks: what Redis holds at the end against what had to happen."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING

from benchmarks.chaos import book
from benchmarks.chaos.inputs import AccountEvents
from benchmarks.chaos.world import Receiver
from marginwatch.base import keys
from marginwatch.state.accounts import read_account
from marginwatch.state.fund import read_ledgers

if TYPE_CHECKING:  # the run imports this module
    from benchmarks.chaos.scenario import Run

PoolKind = tuple[str, str, str]  # (account id, pool, kind)


def recorded(run: Run) -> Counter[PoolKind]:
    """Every margin call, resolution, liquidation and skip recorded, by pool."""
    found: Counter[PoolKind] = Counter()
    for p in range(run.config.partitions):
        for stream in (keys.margin_call_events(p), keys.liquidations(p)):
            for _id, f in run.client.xrange(stream):
                found[(f[b"account_id"].decode(), f[b"pool"].decode(), f[b"kind"].decode())] += 1
    return found


def check(run: Run, events: AccountEvents | None) -> None:
    """Every check; each failure is a line of ``run.report.problems``."""
    report = run.report
    report.accounts = len(run.accounts)
    report.faults.update(run.supervisor.faults)
    report.problems.extend(f"daemon died unasked: {line}" for line in run.supervisor.unexpected)
    found = recorded(run)
    check_actions(run, found)
    check_fund(run)
    check_wallets(run)
    if events is not None:
        check_account_events(run, events)
    check_webhooks(run)


def check_actions(run: Run, found: Counter[PoolKind]) -> None:
    """Each pool's margin calls, resolutions and liquidation exactly as its story says; a
    healthy pool never touched (no liquidation entry, not even a skip)."""
    report, sent_optional, allowed_optional = run.report, 0, 0
    for (account_id, pool), told in run.stories.items():
        want = {"margin_call": told.margin_calls, "resolved": told.resolutions,
                "liquidation": int(told.liquidated_at is not None)}  # fmt: skip
        for kind, count in want.items():
            seen = found[(account_id, pool, kind)]
            if kind == "margin_call" and told.margin_calls_optional:
                extra = min(seen - count, told.margin_calls_optional) if seen > count else 0
                sent_optional, allowed_optional = sent_optional + extra, allowed_optional + 1
                seen -= extra
            report.expected[kind] += count
            report.seen[kind] += seen
            report.lost[kind] += max(count - seen, 0)
            report.duplicated[kind] += max(seen - count, 0)
        if told.liquidated_at is None and found[(account_id, pool, "skipped")]:
            report.problems.append(f"{account_id} {pool}: healthy, yet a liquidation was tried")
    report.optional_margin_calls = (sent_optional, allowed_optional)
    for kind in book.KINDS:
        if report.lost[kind] or report.duplicated[kind]:
            report.problems.append(f"{kind}: {report.lost[kind]} lost, "
                                   f"{report.duplicated[kind]} duplicated")  # fmt: skip


def check_fund(run: Run) -> None:
    """The fund: its start plus every expected fee, minus every expected deficit."""
    change = sum((told.fund_change for told in run.stories.values()), Decimal(0))
    held = sum(read_ledgers(run.client, range(run.config.partitions)).values(), Decimal(0))
    if held != book.FUND + change:
        run.report.problems.append(f"insurance fund {held}, expected {book.FUND + change}")


def check_wallets(run: Run) -> None:
    """A liquidated isolated pool leaves its account's cross wallet alone (C: 100); the other
    liquidated pools end empty; the untouched ones keep their positions."""
    for account in run.accounts:
        stored = read_account(run.client, account.account_id, run.config.partitions)
        if stored is None:
            run.report.problems.append(f"{account.account_id}: gone")
            continue
        liquidated = any(run.stories[(account.account_id, pool)].liquidated_at is not None
                         for pool in book.pools(account))  # fmt: skip
        if liquidated and stored.account.positions:
            run.report.problems.append(f"{account.account_id}: liquidated, positions left")
        if not liquidated and stored.account.positions != account.positions:
            run.report.problems.append(f"{account.account_id}: untouched, positions changed")
        if account.account_id.startswith("C") and stored.account.cross_wallet_balance != 100:
            run.report.problems.append(
                f"{account.account_id}: cross wallet {stored.account.cross_wallet_balance}, "
                "expected 100 (the isolated deficit is the fund's)"
            )


def check_account_events(run: Run, events: AccountEvents) -> None:
    """Each valid deposit applied once (its duplicate not), each invalid event dead-lettered
    with a reason."""
    for account_id, deposits in events.deposits.items():
        stored = read_account(run.client, account_id, run.config.partitions)
        start = book.cohort_account("B", account_id).cross_wallet_balance
        if stored is None or stored.account.cross_wallet_balance != start + deposits:
            held = None if stored is None else stored.account.cross_wallet_balance
            run.report.problems.append(f"{account_id}: wallet {held}, expected {start + deposits}")
    letters = [f for p in range(run.config.partitions)
               for _id, f in run.client.xrange(keys.dead_letters(p))]  # fmt: skip
    run.report.malformed["account events dead-lettered"] = len(letters)
    if len(letters) != events.invalid:
        run.report.problems.append(f"{len(letters)} dead letters for {events.invalid} invalid")
    if any(not f.get(b"reason") for f in letters):
        run.report.problems.append("a dead letter without a reason")


def check_webhooks(run: Run) -> None:
    """Every margin-call event delivered at least once (a receiver deduplicates on its id)."""
    ids = run.event_ids()
    with Receiver.lock:
        deliveries = Counter(Receiver.deliveries)
    missing = [i for i in ids if i not in deliveries]
    run.report.webhooks = {"events": len(ids), "delivered": len(ids) - len(missing),
                           "deliveries": sum(deliveries.values()),
                           "repeated": sum(n - 1 for n in deliveries.values())}  # fmt: skip
    if missing:
        run.report.problems.append(f"{len(missing)} webhook events never delivered")
