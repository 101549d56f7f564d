"""Serve deployments: each wraps one model with batching, autoscaling options and a health check."""
