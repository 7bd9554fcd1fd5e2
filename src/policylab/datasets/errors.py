"""The one error type for unusable datasets: it names the file, feature or key and what was expected."""


class DatasetError(ValueError):
    """A dataset on disk, or a request made of it, is not what policylab can read."""
