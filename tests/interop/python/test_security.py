"""Live sessions end when their credentials go, with the real Python SDKs (azure-iot-device 2.14,
azure-iot-hub 2.7) against a ferrohub hub: keys rotated through the service SDK, and a SAS token
that expires while the device is connected."""

import base64
import hashlib
import hmac
import os
import queue
import time
import urllib.parse

import pytest
from azure.iot.device import IoTHubDeviceClient, MethodResponse
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from test_hub import REFUSED, registry, unique


def new_key():
    return base64.b64encode(os.urandom(32)).decode()


def watched_client(hub, device_id, key):
    """A device client that does not reconnect on its own, and the queue of its connection
    state changes (True/False with the time they were seen)."""
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"
    client = IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=hub.root_pem(), connection_retry=False)
    changes = queue.Queue()
    client.on_connection_state_change = lambda: changes.put((client.connected, time.monotonic()))
    return client, changes


def wait_disconnected(client, changes, within):
    """Seconds until the client saw its connection drop; fails after `within` seconds."""
    started = time.monotonic()
    deadline = started + within
    while time.monotonic() < deadline:
        try:
            connected, at = changes.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if not connected:
            return at - started
    assert not client.connected, f"still connected {within} s later"
    return time.monotonic() - started


def wait_for_log(hub, text, within=5):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if text in hub.log_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"the hub log does not say {text!r}")


def test_rotating_a_devices_keys_disconnects_it_and_the_old_key_is_refused(hub):
    rm = registry(hub)
    victim_id, other_id = unique("py-rotate"), unique("py-bystander")
    victim = rm.create_device_with_sas(victim_id, "", "", "enabled")
    other = rm.create_device_with_sas(other_id, "", "", "enabled")
    old_key = victim.authentication.symmetric_key.primary_key
    client, changes = watched_client(hub, victim_id, old_key)
    bystander, _ = watched_client(hub, other_id, other.authentication.symmetric_key.primary_key)
    client.connect()
    bystander.connect()
    assert client.connected and bystander.connected

    new_primary, new_secondary = new_key(), new_key()
    etag = rm.get_device(victim_id).etag
    rm.update_device_with_sas(victim_id, etag, new_primary, new_secondary, "enabled")
    took = wait_disconnected(client, changes, within=3)
    print(f"disconnected {took:.2f} s after the rotation")
    assert took <= 2.0, f"the session lasted {took:.2f} s after the keys changed"
    wait_for_log(hub, "SAS keys, X.509 thumbprints or authentication type changed")
    assert bystander.connected, "another device's session is untouched"

    # The old key no longer opens the device; the new one does.
    with pytest.raises(REFUSED):
        client.connect()
    client.shutdown()
    fresh, _ = watched_client(hub, victim_id, new_primary)
    fresh.connect()
    assert fresh.connected
    fresh.shutdown()
    bystander.shutdown()


def sas_token(resource, key, expiry):
    """A device SAS token, as the SDKs and `az iot hub generate-sas-token` make them."""
    sr = urllib.parse.quote(resource, safe="")
    signed = hmac.new(base64.b64decode(key), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = urllib.parse.quote(base64.b64encode(signed).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"


def test_nothing_reaches_a_device_after_its_token_expired(hub):
    rm = registry(hub)
    device_id = unique("py-expiry")
    d = rm.create_device_with_sas(device_id, "", "", "enabled")
    expiry = int(time.time()) + 6
    token = sas_token(f"localhost/devices/{device_id}", d.authentication.symmetric_key.primary_key, expiry)
    client = IoTHubDeviceClient.create_from_sastoken(
        token, server_verification_cert=hub.root_pem(), connection_retry=False)
    c2d, methods, patches = queue.Queue(), queue.Queue(), queue.Queue()
    client.on_message_received = lambda m: c2d.put(m.data)
    client.on_twin_desired_properties_patch_received = patches.put

    def answer(req):
        methods.put(req.name)
        client.send_method_response(MethodResponse.create_from_method_request(req, 200, {"ok": True}))

    client.on_method_request_received = answer
    client.connect()
    call = CloudToDeviceMethod(method_name="before", payload={}, response_timeout_in_seconds=5)
    assert rm.invoke_device_method(device_id, call).status == 200
    # The service SDK sends C2D over AMQP, which ferrohub does not serve: the CLI queues it instead.
    hub.cli("hub", "c2d", "send", device_id, "--body", "before")
    assert c2d.get(timeout=5) == b"before"

    time.sleep(max(0.0, expiry - time.time()) + 1.5)
    wait_for_log(hub, "SAS token expired; reconnect with a new one")
    assert not client.connected, "the hub closed the session at its token's expiry"
    call = CloudToDeviceMethod(method_name="after", payload={}, response_timeout_in_seconds=5)
    with pytest.raises(HttpOperationError) as refused:
        rm.invoke_device_method(device_id, call)
    assert refused.value.response.status_code == 404
    assert "DeviceNotOnline" in refused.value.response.text
    hub.cli("hub", "c2d", "send", device_id, "--body", "after")
    twin = rm.get_twin(device_id)
    rm.update_twin(device_id, Twin(properties=TwinProperties(desired={"after": 1})), twin.etag)
    time.sleep(3)
    assert c2d.empty(), "no cloud-to-device message after the expiry"
    assert list(methods.queue) == ["before"], "no method after the expiry"
    assert all("after" not in p for p in patches.queue), "no desired patch after the expiry"
    client.shutdown()
