"""Mark-price producer: validates ticks and publishes them.

A source (``synthetic``, ``replay`` or ``binance``) yields batches of raw ticks;
``run.run_producer`` validates each with ``validation.TickValidator`` and publishes the valid
ones atomically with ``publisher.Publisher`` (one Lua script call per batch, on
``keys.PRICES``, ``keys.TICK_SEQUENCE`` and ``keys.TICKS``). Rejects are counted by reason in
``run.ProducerStats``; ``cli`` holds the ``marginwatch producer`` options. Of the rest of
marginwatch it imports only the foundations (``marginwatch.base``), and importing any module
here starts nothing.
"""
