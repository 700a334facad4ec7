"""Inference for fitted models: degrees of freedom and tests, intervals, simulation, refits
and the parametric bootstrap; see the modules."""
