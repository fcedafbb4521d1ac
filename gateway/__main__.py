"""`python -m gateway`: run one gateway with settings from the environment."""

from gateway.service import main

main()
