"""Regression tests from an adversarial review of the guarantees: each reproduces one way a
promise of the README was broken (by kills, restarts, races, redeliveries or hostile input),
and holds the fix to it. Their docstrings describe the attack as it was first found."""
