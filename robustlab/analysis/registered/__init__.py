"""The built-in analyses, each one module registering one :class:`~robustlab.analysis.base.
Analysis`: ``logits`` (arXiv:2108.12001), ``margins`` and ``dynamics`` (arXiv:2302.03015),
``jacobian`` (arXiv:2011.13538), ``fisher`` (arXiv:1906.02494). The import order is the order
they run and appear in the report."""

# isort: off
from robustlab.analysis.registered import logits
from robustlab.analysis.registered import margins
from robustlab.analysis.registered import dynamics
from robustlab.analysis.registered import jacobian
from robustlab.analysis.registered import fisher

# isort: on

__all__ = ["logits", "margins", "dynamics", "jacobian", "fisher"]
