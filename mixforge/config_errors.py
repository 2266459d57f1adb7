"""The error type for bad usage or configuration (the CLI maps it to exit code 2).

Its own module so that every layer (names, config models, stages) can raise it without
importing the config models.
"""


class ConfigError(ValueError):
    pass
