"""`python -m provider_sim`: the same as the `provider-sim` console script."""

from provider_sim.main import main

main()
