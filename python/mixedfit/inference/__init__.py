"""Inference for fitted models: intervals, simulation, refits and the parametric bootstrap."""
