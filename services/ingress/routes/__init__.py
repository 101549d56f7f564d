"""REST routers; each module exports ``router``."""
