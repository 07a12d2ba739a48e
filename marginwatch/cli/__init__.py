"""The ``marginwatch`` command line (``main``): the commands, ``status`` and the demo."""
