"""Locust scenarios against a running raydio (`make loadtest`); see loadtests/run.py."""
