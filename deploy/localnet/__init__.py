"""The local network: a network of real processes on one machine, as `rogatory dev up` runs it.

`deploy.localnet.network` makes a network's agencies, keys, signed directory,
secrets and files in a state directory; `deploy.localnet.devstack` provisions
its broker, starts the gateway and one agent per agency, supervises and stops
them (`rogatory dev up / down`). The demo, the benchmarks and the end-to-end
and fault tests run on such networks.
"""

from deploy.localnet.devstack import DEFAULT_AMQP_URL, DevStackError, destroy, down, read_stack, up
from deploy.localnet.network import NetworkDescription, NetworkPaths, create_network, load_network

__all__ = [
    "DEFAULT_AMQP_URL",
    "DevStackError",
    "NetworkDescription",
    "NetworkPaths",
    "create_network",
    "destroy",
    "down",
    "load_network",
    "read_stack",
    "up",
]
