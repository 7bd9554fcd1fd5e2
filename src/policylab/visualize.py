"""`from policylab.visualize import visualize_action_predictions`: the public name of the figure in report/."""

from policylab.report.plots import visualize_action_predictions

__all__ = ["visualize_action_predictions"]
