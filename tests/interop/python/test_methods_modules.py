"""Direct methods and module identities with the real Python SDKs (azure-iot-device 2.14,
azure-iot-hub 2.7) against a ferrohub hub."""

import queue
import threading
import time

import pytest
from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodResponse
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from test_hub import ensure_reconnected, registry, unique


def device_client(hub, device_id, key):
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"
    return IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=hub.root_pem(), connection_retry_interval=1)


def answer_methods(client, delay=0.0):
    """Answers every method with status 200 and {"method": name, "echo": payload}."""
    calls = []

    def handler(req):
        calls.append(req.name)
        if delay:
            time.sleep(delay)
        client.send_method_response(
            MethodResponse.create_from_method_request(req, 200, {"method": req.name, "echo": req.payload}))

    client.on_method_request_received = handler
    return calls


def invoke(rm, device_id, name, payload=None, timeout=10, module_id=None):
    method = CloudToDeviceMethod(method_name=name, payload=payload, response_timeout_in_seconds=timeout)
    if module_id:
        return rm.invoke_device_module_method(device_id, module_id, method)
    return rm.invoke_device_method(device_id, method)


def test_direct_method_is_answered_before_and_after_a_restart(hub):
    rm = registry(hub)
    device_id = unique("py-method")
    d = rm.create_device_with_sas(device_id, "", "", "enabled")
    client = device_client(hub, device_id, d.authentication.symmetric_key.primary_key)
    calls = answer_methods(client)
    client.connect()
    result = invoke(rm, device_id, "reboot", {"delay": 3})
    assert result.status == 200
    assert result.payload == {"method": "reboot", "echo": {"delay": 3}}
    hub.restart()
    ensure_reconnected(client)
    deadline = time.monotonic() + 30
    while True:
        try:
            result = invoke(rm, device_id, "again", [1, 2])
            break
        except HttpOperationError as e:  # 404 until the SDK's reconnect has completed
            if e.response.status_code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert result.payload == {"method": "again", "echo": [1, 2]}
    assert calls == ["reboot", "again"]
    client.shutdown()
    subscribes = [l for l in hub.log_text().splitlines()
                  if device_id in l and "Subscribed" in l and "methods" in l]
    assert len(subscribes) == 1, f"served from the persisted session, not a new SUBSCRIBE: {subscribes}"


def test_method_to_offline_device_is_404_and_slow_device_is_504(hub):
    rm = registry(hub)
    device_id = unique("py-slow")
    d = rm.create_device_with_sas(device_id, "", "", "enabled")
    with pytest.raises(HttpOperationError) as offline:
        invoke(rm, device_id, "ping", timeout=5)
    assert offline.value.response.status_code == 404
    assert "DeviceNotOnline" in offline.value.response.text
    client = device_client(hub, device_id, d.authentication.symmetric_key.primary_key)
    answer_methods(client, delay=8)
    client.connect()
    with pytest.raises(HttpOperationError) as slow:
        invoke(rm, device_id, "ping", timeout=5)
    assert slow.value.response.status_code == 504
    assert "GatewayTimeout" in slow.value.response.text
    time.sleep(4)  # the late answer arrives and is dropped; the connection stays up
    assert client.connected
    client.shutdown()


def test_module_client_twin_method_and_output(hub):
    rm = registry(hub)
    device_id, module_id = unique("py-moddev"), "filter"
    rm.create_device_with_sas(device_id, "", "", "enabled")
    m = rm.create_module_with_sas(device_id, module_id, "", "", "")
    key = m.authentication.symmetric_key.primary_key
    assert key, "the hub generates module keys"
    cs = f"HostName=localhost;DeviceId={device_id};ModuleId={module_id};SharedAccessKey={key}"
    client = IoTHubModuleClient.create_from_connection_string(cs, server_verification_cert=hub.root_pem())
    patches = queue.Queue()
    client.on_twin_desired_properties_patch_received = patches.put
    answer_methods(client)
    client.connect()
    twin = client.get_twin()
    assert "$version" in twin["desired"] and "$version" in twin["reported"]
    client.patch_twin_reported_properties({"state": "running"})
    svc = rm.get_module_twin(device_id, module_id)
    assert svc.module_id == module_id
    assert svc.properties.reported["state"] == "running"
    assert "$metadata" in svc.properties.reported
    rm.update_module_twin(device_id, module_id, Twin(properties=TwinProperties(desired={"threshold": 9})), svc.etag)
    p = patches.get(timeout=15)
    assert p["threshold"] == 9 and "$version" in p
    result = invoke(rm, device_id, "flush", {"all": True}, module_id=module_id)
    assert result.status == 200 and result.payload == {"method": "flush", "echo": {"all": True}}
    # The device's own method handler is a different identity: a module call does not reach it.
    with pytest.raises(HttpOperationError) as e:
        invoke(rm, device_id, "flush", timeout=5)
    assert e.value.response.status_code == 404
    msg = Message("alert")
    msg.custom_properties["level"] = "high"
    client.send_message_to_output(msg, "alerts")
    client.shutdown()
    events = [e for e in hub.events(device_id) if e["properties"].get("level") == "high"]
    assert len(events) == 1
    assert events[0]["moduleId"] == module_id
    assert events[0]["systemProperties"]["iothub-connection-module-id"] == module_id
    assert "alerts" in events[0]["systemProperties"].values()
