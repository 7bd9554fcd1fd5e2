"""Reports: figures of what policies do, and comparisons of several measured policies."""
