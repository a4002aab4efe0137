"""Code both sides use: settings, errors, jobs, preprocessing, metrics, the broker interface."""
