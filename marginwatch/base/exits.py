"""Exit statuses of every ``marginwatch`` command, each written once."""

EXIT_OK = 0
# Redis (or another service) could not be reached.
EXIT_UNAVAILABLE = 1
# Invalid input or configuration: one line on stderr names the field.
EXIT_INVALID_INPUT = 2
