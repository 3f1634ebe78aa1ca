"""shrinklab: ML-enhanced covariance shrinkage.

A network predicts the intensity α and the target weights π of

    Σ̂ = S + α Σ_k π_k (T_k − S)

from p-agnostic features of the data; see ``docs/architecture.md``.
``MLShrinkageCovariance`` is the scikit-learn estimator most users want.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["MLShrinkageCovariance", "MLShrinkageCovarianceSkfolio", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: `import shrinklab` stays cheap
    if name in ("MLShrinkageCovariance", "MLShrinkageCovarianceSkfolio"):
        from shrinklab import sklearn as _sk

        return getattr(_sk, name)
    raise AttributeError(f"module 'shrinklab' has no attribute {name!r}")
