"""How a candidate version goes live: the phases and their transitions
(:mod:`~workbench.deploy.rollout.phases`), output agreement with stable
(:mod:`~workbench.deploy.rollout.agreement`) and the canary's analysis and controller.
The checks a candidate passes probe the deployment's state, so they live beside it
(:mod:`~workbench.deploy.verification`).

Kept light: import the submodule you need.
"""
