"""A Settings shown in a log line or a traceback gives away no secret."""

from __future__ import annotations

from droplet.settings import Settings


def test_the_repr_of_settings_hides_every_secret_and_the_broker_password() -> None:
    settings = Settings(
        broker_url="amqp://fleet:brokerpass@10.0.0.1:5672/%2F,amqp://fleet:brokerpass@10.0.0.2",
        signing_key="fleet-secret-value", etcd_user="droplet", etcd_password="etcd-pass-value",
        dashboard_token="dash-token-value", namespace="prod",
    )
    shown = repr(settings)
    for secret in ("brokerpass", "fleet-secret-value", "etcd-pass-value", "dash-token-value"):
        assert secret not in shown, secret
    assert "signing_key='***'" in shown and "etcd_password='***'" in shown
    assert "fleet:***@10.0.0.1:5672" in shown and "fleet:***@10.0.0.2" in shown
    assert "namespace='prod'" in shown and "etcd_user='droplet'" in shown
    assert str(settings) == shown


def test_an_unset_secret_shows_as_none() -> None:
    assert "signing_key=None" in repr(Settings())
