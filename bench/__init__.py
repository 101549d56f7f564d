"""`make bench`: raydio against the in-process limit and against its peers, side by side, on one machine."""
