"""Credit planning below the tasks: the check, usage and forecast, estimates' helpers, metrics."""
