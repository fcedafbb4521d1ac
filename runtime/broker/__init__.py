"""The broker roles both services use: failover connections, a confirmed publisher, a consumer, a relay.

Every publish is persistent, mandatory and confirmed under the service's own
`user_id`; every delivery is acknowledged after the durable write; every
consumer and relay reconnects by itself. Nothing here declares topology: it
is provisioned from the directory (`deploy`), and service users have no
configure permission.
"""

from __future__ import annotations

from runtime.broker.batches import Outgoing, batch_outgoing
from runtime.broker.connection import (
    BrokerEndpoints,
    FailoverConnector,
    endpoints_from_setting,
    node_of,
    service_endpoints,
    split_amqp_urls,
)
from runtime.broker.consumer import ConsumerPolicy, ConsumerRole, Handled, QueueConsumer, consumers_down
from runtime.broker.management import ManagementAccess, queue_figure, queue_figures
from runtime.broker.publisher import ConfirmedPublisher
from runtime.broker.relay import Relay, publish_window

__all__ = [
    "BrokerEndpoints",
    "ConfirmedPublisher",
    "ConsumerPolicy",
    "ConsumerRole",
    "FailoverConnector",
    "Handled",
    "ManagementAccess",
    "Outgoing",
    "QueueConsumer",
    "Relay",
    "batch_outgoing",
    "consumers_down",
    "endpoints_from_setting",
    "node_of",
    "publish_window",
    "queue_figure",
    "queue_figures",
    "service_endpoints",
    "split_amqp_urls",
]
