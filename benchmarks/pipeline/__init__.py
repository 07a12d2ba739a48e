"""Pipeline benchmark: the real marginwatch pipeline at Binance's mark-price cadence.

    python -m benchmarks.pipeline            # 200,000 accounts, 200 symbols, 120 s
    python -m benchmarks.pipeline --accounts 20000 --seconds 20 --naive-seconds 10
    python -m benchmarks.pipeline --stress 'BTCUSDT:-20%' --stress '*:-10%'   # workers run stress

Starts a private redis-server, publishes one round of the synthetic market's start prices,
generates a book near those marks (topped up to about 3 positions per account) and stores it in
``--partitions`` partitions. Then runs the executor, two partition workers (half the partitions
each) and the synthetic producer (every symbol ticking once per second at its own moment in the
second; staggered crashes so margin calls keep arriving) as ``python -m marginwatch``
subprocesses, and samples the backlog every second. Positions evaluated are counted from the
workers' ``/metrics`` when they serve it, else from Redis keyspace notifications on each
partition's ``evaluated`` key (every finished evaluation writes it once) times the partition's
positions. Afterwards it runs the naive baseline (``naive_baseline.py``: one Celery task per
account per tick) on the same book and Redis, and prints a figures block.

Every daemon reads the bracket tables of ``brackets.json`` (``MARGINWATCH_BRACKETS_FILE``): the
shipped ones and, for ``--symbols`` past them, synthetic symbols (``SYN0001USDT``, ...) reusing
their brackets (``benchmarks.symbols``). It, the daemon logs, ``timeline.csv`` (per second:
evaluation lag, queues, margin calls and their latency) and, with ``--py-spy``, raw py-spy
stacks of every worker and executor stay in a temporary directory (printed). ``--executors``
and ``--partitions`` are deployment knobs. ``--stress SCENARIO`` (repeatable) has the workers
compute those stress scenarios every ``--stress-interval`` seconds per partition
(``MARGINWATCH_STRESS_SCENARIOS``), so that runs with and without compare; the figures block
then gives the computations' own duration, from the workers' ``/metrics``. Ctrl-C or SIGTERM
stops every child process and the server.
"""
