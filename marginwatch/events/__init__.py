"""Account events from the venue's trading core, pure: their models (``models``), Binance's
rules for applying them (``rules``), and the ``ACCOUNT_UPDATE`` mirror (``account_update``)."""
