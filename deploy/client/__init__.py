"""Clients of a running network, as an agency's system is: the agent API, attachment transfers, sample documents.

`deploy.client.agent_api` calls one agent's HTTP API (submit, inbox,
evidence; `429` waited out); `deploy.client.transfer` streams attachment
files to and from an agent, resuming where a transfer stopped;
`deploy.client.samples` reads the fictional sample documents of the
project. The command line, the demo, the benchmarks and the tests use them;
nothing here starts or provisions anything.
"""

from deploy.client.agent_api import AgentApiError, AgentClient, poll
from deploy.client.samples import ACKNOWLEDGEMENT_SAMPLE, REQUEST_SAMPLE, REQUESTED, REQUESTING, sample
from deploy.client.transfer import (
    CHUNK_BYTES,
    TransferError,
    attachment_entry,
    download_attachment,
    file_sha256,
    upload_file,
    upload_offset,
)

__all__ = [
    "ACKNOWLEDGEMENT_SAMPLE",
    "CHUNK_BYTES",
    "REQUESTED",
    "REQUESTING",
    "REQUEST_SAMPLE",
    "AgentApiError",
    "AgentClient",
    "TransferError",
    "attachment_entry",
    "download_attachment",
    "file_sha256",
    "poll",
    "sample",
    "upload_file",
    "upload_offset",
]
