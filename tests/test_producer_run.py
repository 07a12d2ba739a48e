"""The run loop end to end, the source built from CLI arguments, and the producer command."""

from __future__ import annotations

import argparse
import itertools
import logging
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.settings import ConfigurationError, Settings
from marginwatch.base.ticks import Tick, newest_sequence, ticks_from_prices_hash
from marginwatch.cli.embedded_redis import RedisServer, free_port
from marginwatch.producer import binance, cli
from marginwatch.producer.pacing import paced_batches
from marginwatch.producer.publisher import Publisher
from marginwatch.producer.replay import replay_source
from marginwatch.producer.run import SourceArgumentError, build_source, market_spec, run_producer
from marginwatch.producer.scenarios import parse_scenario
from marginwatch.producer.synthetic import MarketSpec, synthetic_source, synthetic_ticks
from marginwatch.producer.validation import TickValidator

T0 = 1_700_000_000_000
KNOWN = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "AAAUSDT", "ZZZUSDT"}
MANY = {f"S{index:03d}USDT" for index in range(200)}


def parse(*argv: str) -> argparse.Namespace:
    """The producer's arguments, parsed as ``marginwatch producer`` would."""
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def settings_for(server: RedisServer | None) -> Settings:
    """Settings pointing at the private server (or at no Redis)."""
    return Settings(redis_url=server.url if server else None, max_jump_ratio=None)


def test_synthetic_market_runs_for_its_duration_into_redis(redis_client: redis.Redis) -> None:
    """Paced at 20 ticks/s for 0.5 s, 3 symbols publish about 30 consistent ticks."""
    source = synthetic_source(MarketSpec(("BTCUSDT", "ETHUSDT", "SOLUSDT"), ticks_per_second=20))
    validator, publisher = TickValidator(KNOWN), Publisher(redis_client)
    started = time.monotonic()
    stats = run_producer(redis_client, source, validator, publisher, None, duration_seconds=0.5)
    assert time.monotonic() - started >= 0.5  # ran for its duration
    assert 20 <= stats.published <= 33
    assert stats.rejects == {}
    stored = ticks_from_prices_hash(redis_client.hgetall(keys.PRICES))
    assert set(stored) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert newest_sequence(stored) == stats.last_sequence == stats.published
    assert redis_client.xlen(keys.TICKS) == stats.published


def test_two_hundred_symbols_burst_publishes_every_tick(redis_client: redis.Redis) -> None:
    """10,000 ticks of 200 symbols, as fast as they come: every one published, in sequence,
    each symbol's newest in the prices hash (speed is the benchmarks' business)."""
    spec = MarketSpec(tuple(sorted(MANY)))
    timed = list(itertools.islice(synthetic_ticks(spec), 10_000))
    validator, publisher = TickValidator(MANY), Publisher(redis_client)
    stats = run_producer(
        redis_client, paced_batches(iter(timed), paced=False), validator, publisher
    )
    assert stats.published == 10_000
    assert int(redis_client.get(keys.TICK_SEQUENCE) or 0) == 10_000
    stored = ticks_from_prices_hash(redis_client.hgetall(keys.PRICES))
    assert len(stored) == 200
    assert max(tick.sequence for tick in stored.values()) == 10_000


def test_stale_refusal_by_redis_is_counted_as_a_reject(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A tick older than the one another producer stored is a 'stale' reject."""
    Publisher(redis_client).publish([Tick("BTCUSDT", Decimal("100"), T0 + 5_000)])
    path = tmp_path / "ticks.csv"
    path.write_text(f"symbol,event_time,mark_price\nBTCUSDT,{T0},99\nETHUSDT,{T0},3500\n")
    source = build_source(parse("--source", "replay", "--file", str(path), "--speed", "0"), KNOWN)
    stats = run_producer(redis_client, source, TickValidator(KNOWN), Publisher(redis_client))
    assert stats.published == 1
    assert stats.rejects == {"stale": 1}
    assert stats.last_reject_messages["stale"] == (
        "event_time: older than the tick stored for BTCUSDT in Redis"
    )


def test_unreachable_redis_fails_before_the_source_starts() -> None:
    """run_producer pings first: no Redis, a ConnectionError at once."""
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    source = synthetic_source(MarketSpec(("BTCUSDT",)))
    with pytest.raises(redis.ConnectionError):
        run_producer(client, source, TickValidator(KNOWN), Publisher(client))


def test_symbol_count_takes_scenario_symbols_and_majors_first() -> None:
    """--symbols 3 with a crash on SOLUSDT: SOLUSDT, then BTCUSDT and ETHUSDT."""
    spec = market_spec(parse("--symbols", "3", "--scenario", "SOLUSDT:-12%:30s"), KNOWN)
    assert spec.symbols == ("SOLUSDT", "BTCUSDT", "ETHUSDT")
    assert spec.scenarios == (parse_scenario("SOLUSDT:-12%:30s"),)
    default = market_spec(parse("--seed", "9", "--rate", "2.5"), KNOWN)
    majors_then_names = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "AAAUSDT", "ZZZUSDT")
    assert default == MarketSpec(majors_then_names, 9, 2.5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--symbols", "7"], "--symbols: 7 asked, 6 symbols known"),
        (["--symbols", "btcusdt,FOOUSDT"], "--symbols: unknown symbol FOOUSDT"),
        (
            ["--symbols", "BTCUSDT", "--scenario", "ETHUSDT:-1%:1s"],
            "--scenario: ETHUSDT is not among the --symbols",
        ),
        (
            ["--scenario", "BTCUSDT:12:30s"],
            "--scenario: scenario 'BTCUSDT:12:30s': expected "
            "SYMBOL:MOVE%:DURATION[@START], e.g. BTCUSDT:-12%:30s@10s",
        ),
        (["--source", "replay"], "--file: required with --source replay"),
        (["--source", "replay", "--file", "none.csv"], "--file: none.csv: no such file"),
        (
            ["--source", "binance", "--symbols", "5"],
            "--symbols: a count applies to --source synthetic; give names",
        ),
    ],
)
def test_bad_arguments_name_the_option(argv: list[str], message: str) -> None:
    """Arguments that make no source raise SourceArgumentError naming the option."""
    with pytest.raises(SourceArgumentError) as caught:
        build_source(parse(*argv), KNOWN)
    assert str(caught.value) == message


def test_symbol_list_filters_a_replay(redis_client: redis.Redis, tmp_path: Path) -> None:
    """With --symbols BTCUSDT a replay drops other symbols silently (not as rejects)."""
    path = tmp_path / "ticks.jsonl"
    path.write_text(
        f'{{"symbol": "BTCUSDT", "event_time": {T0}, "mark_price": "1"}}\n'
        f'{{"symbol": "ETHUSDT", "event_time": {T0}, "mark_price": "2"}}\n'
    )
    args = parse("--source", "replay", "--file", str(path), "--speed", "0", "--symbols", "BTCUSDT")
    stats = run_producer(
        redis_client, build_source(args, KNOWN), TickValidator(KNOWN), Publisher(redis_client)
    )
    assert (stats.published, stats.rejects) == (1, {})
    assert redis_client.hkeys(keys.PRICES) == [b"BTCUSDT"]


def test_cli_runs_a_replay_and_prints_a_summary(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``producer --source replay`` publishes the file and logs the counts."""
    path = tmp_path / "ticks.csv"
    path.write_text(f"symbol,event_time,mark_price\nBTCUSDT,{T0},100\nBTCUSDT,{T0 + 1},150\n")
    args = parse(
        "--source", "replay", "--file", str(path), "--speed", "0", "--max-jump-ratio", "0.2"
    )
    with caplog.at_level(logging.INFO, logger=cli.logger.name):
        assert cli.run(args, settings_for(redis_server), KNOWN) == 0
    assert caplog.messages[-1] == "published 1 ticks; rejects: jump 1"
    assert redis_client.hlen(keys.PRICES) == 1


def test_cli_runs_the_synthetic_market_for_its_duration(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """``producer --duration 0.3 --rate 10 --symbols 2`` publishes both symbols and stops."""
    args = parse(
        "--duration", "0.3", "--rate", "10", "--symbols", "2", "--scenario", "XRPUSDT:-12%:30s"
    )
    assert cli.run(args, settings_for(redis_server), KNOWN) == 0
    assert set(redis_client.hkeys(keys.PRICES)) == {b"XRPUSDT", b"BTCUSDT"}


@pytest.mark.parametrize(
    ("argv", "redis_url", "message"),
    [
        ([], None, "MARGINWATCH_REDIS_URL is not set"),
        (
            ["--scenario", "BTC"],
            "redis://127.0.0.1:1/0",
            "--scenario: scenario 'BTC': "
            "expected SYMBOL:MOVE%:DURATION[@START], e.g. BTCUSDT:-12%:30s@10s",
        ),
    ],
)
def test_cli_configuration_errors_name_the_setting_or_option(
    argv: list[str], redis_url: str | None, message: str
) -> None:
    """A missing Redis URL or a bad option is a configuration error naming it."""
    with pytest.raises(ConfigurationError) as raised:
        cli.run(parse(*argv), Settings(redis_url=redis_url), KNOWN)
    assert str(raised.value) == message


def test_cli_unreachable_redis_raises_redis_error() -> None:
    """A Redis that does not answer raises Redis' connection error (the CLI reports it)."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.ConnectionError):
        cli.run(parse("--duration", "1"), settings, KNOWN)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--rate", "0"], "argument --rate: must be positive: '0'"),
        (["--speed", "-1"], "argument --speed: must be a finite number, not negative: '-1'"),
        (["--symbols", "0"], "argument --symbols: must be at least 1"),
        (["--url", "http://x"], "argument --url: expected a ws:// or wss:// URL: 'http://x'"),
        (["--max-jump-ratio", "0"], "argument --max-jump-ratio: must be a positive number: '0'"),
    ],
)
def test_option_values_are_checked_by_the_parser(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Out-of-range option values are refused by argparse with the option's name."""
    with pytest.raises(SystemExit):
        parse(*argv)
    assert capsys.readouterr().err.strip().endswith(error)


def test_default_url_is_the_binance_mark_price_stream() -> None:
    """The CLI default and the source's default are the same all-market 1 s stream."""
    assert cli.DEFAULT_BINANCE_URL == binance.DEFAULT_URL
    assert parse().url == "wss://fstream.binance.com/ws/!markPrice@arr@1s"


def test_producer_imports_only_the_contract_and_nothing_runs_at_import() -> None:
    """Importing every producer module pulls in no engine, worker or Celery; the CLI module
    alone pulls in no Redis, websockets or numpy."""
    code = (
        "import sys, marginwatch.producer.cli\n"
        "heavy = {'redis', 'websockets', 'numpy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "from marginwatch.producer import run, binance, replay, synthetic\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'celery'"
        " or m.startswith(('marginwatch.engine', 'marginwatch.worker', 'marginwatch.executor'))]\n"
        "assert not bad, bad\n"
        "import threading; assert threading.active_count() == 1\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_redis_failure_while_publishing_is_counted_not_fatal(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A publisher whose Redis is gone drops each batch, counts it, and the run goes on."""
    path = tmp_path / "ticks.csv"
    rows = [f"BTCUSDT,{T0 + i},{100 + i}" for i in range(3)]
    path.write_text("symbol,event_time,mark_price\n" + "\n".join(rows) + "\n")
    source = replay_source(path, speed=0, max_batch=1)
    gone = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    stats = run_producer(
        redis_client, source, TickValidator(KNOWN), Publisher(gone), publish_retry_seconds=0.01
    )
    assert (stats.published, stats.publish_errors, stats.rejects) == (0, 3, {})
