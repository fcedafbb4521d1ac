"""RFC 3161 time-stamps: a token counts only over the exact bytes, from a TSA the directory trusts."""

from __future__ import annotations

import pytest

from protocol.errors import ErrorCode, ProofInvalid
from runtime.timestamps import TimestampClient, TimestampUnavailable, verify_timestamp
from tests.support.tsa import TimestampAuthorityKeys, running_tsa

CHECKPOINT = b"rogatory.test/log\n42\nq2n8kbYRN3ybcTlOnQgVSdPmI0ZDuWg81C4WfLJHbsM=\n\n"


@pytest.fixture(scope="module")
def keys() -> TimestampAuthorityKeys:
    return TimestampAuthorityKeys.generate("Rogatory Test TSA")


async def stamped(keys: TimestampAuthorityKeys, data: bytes = CHECKPOINT) -> bytes:
    async with running_tsa(keys) as tsa:
        client = TimestampClient(tsa.url, timeout_s=10)
        try:
            token, trusted = await client.stamp(data, [tsa.root_der])
        finally:
            await client.close()
    assert trusted.authority == "CN=Rogatory Test TSA"
    return token


async def test_a_token_from_a_trusted_tsa_verifies_over_the_bytes_it_stamped(keys: TimestampAuthorityKeys) -> None:
    token = await stamped(keys)
    trusted = verify_timestamp(token, CHECKPOINT, [keys.root_der])
    assert trusted.root == "CN=Rogatory Test TSA Root"
    assert trusted.serial_number > 0
    assert trusted.time.tzinfo is not None


async def test_a_token_over_other_bytes_is_refused(keys: TimestampAuthorityKeys) -> None:
    token = await stamped(keys)
    with pytest.raises(ProofInvalid) as refused:
        verify_timestamp(token, CHECKPOINT.replace(b"42", b"43"), [keys.root_der])
    assert refused.value.code is ErrorCode.TIMESTAMP_INVALID


async def test_a_token_from_a_tsa_the_directory_does_not_list_is_refused(keys: TimestampAuthorityKeys) -> None:
    token = await stamped(keys)
    stranger = TimestampAuthorityKeys.generate("Another TSA")
    with pytest.raises(ProofInvalid, match="does not verify"):
        verify_timestamp(token, CHECKPOINT, [stranger.root_der])
    with pytest.raises(ProofInvalid, match="no time-stamp authority is trusted"):
        verify_timestamp(token, CHECKPOINT, [])


async def test_a_token_with_any_byte_changed_is_refused(keys: TimestampAuthorityKeys) -> None:
    token = await stamped(keys)
    genuine = verify_timestamp(token, CHECKPOINT, [keys.root_der])
    caught = 0
    for position in range(len(token)):
        forged = bytearray(token)
        forged[position] ^= 0x01
        try:
            said = verify_timestamp(bytes(forged), CHECKPOINT, [keys.root_der])
        except ProofInvalid:
            caught += 1
        else:
            # a few bytes are outside what is signed (version numbers, the signer's algorithm label): a flip there
            # may pass, and must then say exactly what the genuine token says
            assert said == genuine
    assert caught >= len(token) - 16


async def test_a_tsa_that_is_down_is_a_transient_failure(keys: TimestampAuthorityKeys) -> None:
    async with running_tsa(keys) as tsa:
        tsa.down = True
        client = TimestampClient(tsa.url, timeout_s=10)
        try:
            with pytest.raises(TimestampUnavailable, match="503"):
                await client.stamp(CHECKPOINT, [tsa.root_der])
        finally:
            await client.close()
    assert tsa.refused == 1
