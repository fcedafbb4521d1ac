"""`python -m agents`: run one agency's agent with settings from the environment."""

from agents.service import main

main()
