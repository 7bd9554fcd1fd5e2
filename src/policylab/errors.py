"""The base of every error caused by user input (a flag, a file, a dataset, a checkpoint).

The command line prints these as one line and exits with status 1; anything else is a bug and keeps its
traceback.
"""


class PolicylabError(Exception):
    """A problem with what the user gave policylab, explained in the message."""
