"""The error every dataset reader raises."""


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file."""
