"""Inference for fitted models (degrees of freedom, tests, intervals); see the modules."""
