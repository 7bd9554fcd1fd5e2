"""The one error type for unusable datasets: it names the file, feature or key and what was expected."""

from policylab.errors import PolicylabError


class DatasetError(PolicylabError, ValueError):
    """A dataset on disk, or a request made of it, is not what policylab can read."""
