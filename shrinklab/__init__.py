"""shrinklab: ML-enhanced covariance shrinkage."""

__version__ = "0.1.0"
