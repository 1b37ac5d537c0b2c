"""robaudit: audit the adversarial robustness of image classifiers, with and without test-time purification."""

__version__ = "0.1.0"
