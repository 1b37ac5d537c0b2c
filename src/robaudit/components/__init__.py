"""Component discovery: the ``Registry`` class every component registers with, the ``catalog`` that reads the
registrations from source without importing them, and installed ``plugins``."""
