"""How a candidate version goes live: the phases and their transitions
(:mod:`~workbench.deploy.rollout.phases`), the checks a candidate passes
(:mod:`~workbench.deploy.rollout.verification`) and output agreement with stable
(:mod:`~workbench.deploy.rollout.agreement`).

Kept light: import the submodule you need.
"""
