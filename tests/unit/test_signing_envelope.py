"""droplet.signing (the frame and its HMAC) and droplet.proto.envelope (the message body)."""

from __future__ import annotations

import pytest

from droplet.errors import DropletError, SignatureError
from droplet.proto import envelope, pb
from droplet.proto.envelope import MalformedMessageError
from droplet.signing import Signer

KEY = "fleet-secret"


# -- signing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"x", b"\x00\x01\x02" * 100])
def test_unsigned_seal_and_open_round_trip(payload: bytes) -> None:
    signer = Signer(None)
    framed = signer.seal(payload)

    assert framed != payload, "the payload is framed even without a key"
    assert signer.open(framed) == payload
    assert signer.enabled is False


@pytest.mark.parametrize("key", [KEY, KEY.encode()])
def test_signed_seal_and_open_round_trip(key: str | bytes) -> None:
    signer = Signer(key)
    framed = signer.seal(b"payload")

    assert signer.enabled is True
    assert signer.open(framed) == b"payload"
    assert len(framed) > len(b"payload") + 32, "a 32-byte tag travels with the payload"


def test_str_and_bytes_keys_sign_identically() -> None:
    assert Signer(KEY).seal(b"p") == Signer(KEY.encode()).seal(b"p")


def test_empty_key_means_unsigned() -> None:
    assert Signer("").enabled is False
    assert Signer("").seal(b"p") == Signer(None).seal(b"p")


def test_tampered_payload_is_refused() -> None:
    signer = Signer(KEY)
    framed = bytearray(signer.seal(b"transfer 10 coins"))
    framed[-1] ^= 0x01

    with pytest.raises(SignatureError):
        signer.open(bytes(framed))


def test_tampered_tag_is_refused() -> None:
    signer = Signer(KEY)
    framed = bytearray(signer.seal(b"payload"))
    framed[5] ^= 0xFF

    with pytest.raises(SignatureError):
        signer.open(bytes(framed))


def test_wrong_key_is_refused() -> None:
    framed = Signer(KEY).seal(b"payload")

    with pytest.raises(SignatureError, match="does not verify"):
        Signer("another-secret").open(framed)


def test_unsigned_blob_is_refused_when_a_key_is_set() -> None:
    framed = Signer(None).seal(b"payload")

    with pytest.raises(SignatureError, match="not signed"):
        Signer(KEY).open(framed)


def test_truncated_signed_blob_is_refused() -> None:
    framed = Signer(KEY).seal(b"payload")

    with pytest.raises(SignatureError):
        Signer(KEY).open(framed[:10])


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\xffjunk", b"hello", b"\x03" + b"a" * 40])
@pytest.mark.parametrize("key", [None, KEY])
def test_garbage_without_a_frame_is_refused(garbage: bytes, key: str | None) -> None:
    with pytest.raises(SignatureError, match="no Droplet frame"):
        Signer(key).open(garbage)


def test_signature_error_has_the_unauthorized_code() -> None:
    with pytest.raises(SignatureError) as caught:
        Signer(KEY).open(b"\x01abc")

    assert isinstance(caught.value, DropletError)
    assert caught.value.code == pb.UNAUTHORIZED


# -- envelope --------------------------------------------------------------------------------


def sample_messages() -> list[pb.Message]:
    call = pb.FunctionCall(name="incr", request_id=3, response_key="rk", call_id="c1")
    call.arguments.values.add(type=pb.PICKLE, body=b"\x80\x05K\x01.")
    return [
        pb.Message(call=call),
        pb.Message(response=pb.GenericResponse(success=True, response_id="r1")),
        pb.Message(delete_dag=pb.DeleteDag()),
        pb.Message(function=pb.Function(name="f", body=b"code")),
    ]


@pytest.mark.parametrize("key", [None, KEY])
def test_encode_decode_round_trip_keeps_every_message_in_order(key: str | None) -> None:
    signer = Signer(key)
    messages = sample_messages()

    decoded = envelope.decode(envelope.encode(messages, signer), signer)

    assert decoded == messages
    assert [m.WhichOneof("kind") for m in decoded] == ["call", "response", "delete_dag",
                                                        "function"]
    assert decoded[0].call.arguments.values[0].body == b"\x80\x05K\x01."


def test_encode_accepts_a_generator() -> None:
    signer = Signer(None)
    body = envelope.encode((m for m in sample_messages()), signer)

    assert len(envelope.decode(body, signer)) == 4


def test_decode_refuses_a_body_signed_with_another_key() -> None:
    body = envelope.encode(sample_messages(), Signer(KEY))

    with pytest.raises(SignatureError):
        envelope.decode(body, Signer("other"))


def test_decode_refuses_an_unsigned_body_when_signing() -> None:
    body = envelope.encode(sample_messages(), Signer(None))

    with pytest.raises(SignatureError):
        envelope.decode(body, Signer(KEY))


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xff\xff\xff", b"hello world", b"\x0a\x05abc", b"\x0a\x03\xff\xff\xff"],
)
def test_decode_of_garbage_is_malformed(payload: bytes) -> None:
    signer = Signer(None)

    with pytest.raises(MalformedMessageError, match="not a Droplet envelope"):
        envelope.decode(signer.seal(payload), signer)


def test_decode_of_signed_garbage_is_malformed() -> None:
    signer = Signer(KEY)

    with pytest.raises(MalformedMessageError):
        envelope.decode(signer.seal(b"\xff\xfe\xfd"), signer)


def test_empty_envelope_is_refused() -> None:
    signer = Signer(None)
    body = envelope.encode([], signer)

    with pytest.raises(MalformedMessageError, match="empty envelope"):
        envelope.decode(body, signer)


def test_malformed_message_error_is_an_invalid_request() -> None:
    with pytest.raises(DropletError) as caught:
        envelope.decode(Signer(None).seal(b""), Signer(None))

    assert isinstance(caught.value, MalformedMessageError)
    assert caught.value.code == pb.INVALID_REQUEST
