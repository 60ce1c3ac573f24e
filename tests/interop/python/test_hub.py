"""The real Python SDKs (azure-iot-hub 2.x, azure-iot-device 2.x) against a ferrohub hub."""

import json
import socket
import ssl
import time
import uuid

import pytest
import requests
from azure.iot.device import IoTHubDeviceClient, Message, X509
from azure.iot.device.exceptions import ClientError, ConnectionFailedError, CredentialError
from azure.iot.hub import IoTHubRegistryManager
from msrest.exceptions import HttpOperationError

from conftest import run

REFUSED = (CredentialError, ConnectionFailedError, ClientError)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def registry(hub):
    return IoTHubRegistryManager.from_connection_string(hub.connection_string)


def send(client, device_id, n, tag):
    client.connect()
    for i in range(n):
        m = Message(json.dumps({"i": i, "device": device_id}))
        m.content_type = "application/json"
        m.content_encoding = "utf-8"
        m.message_id = f"{tag}-{i}"
        m.custom_properties["seq"] = str(i)
        m.custom_properties["kind"] = tag
        m.custom_properties["with space & symbols/=%"] = "a b&c=d"
        client.send_message(m)
    client.shutdown()


def check_events(hub, device_id, n, tag):
    events = [e for e in hub.events(device_id) if e["properties"].get("kind") == tag]
    assert len(events) == n, f"expected {n} events for {device_id}, found {len(events)}"
    seqs = sorted(int(e["properties"]["seq"]) for e in events)
    assert seqs == list(range(n))
    for e in events:
        assert e["deviceId"] == device_id
        sp = e["systemProperties"]
        assert sp["iothub-connection-device-id"] == device_id
        assert sp["contentType"] == "application/json"
        assert sp["contentEncoding"] == "utf-8"
        assert sp["messageId"].startswith(tag)
        assert e["properties"]["with space & symbols/=%"] == "a b&c=d"
        assert json.loads(e["body"])["device"] == device_id
    return events


def test_registry_creates_sas_selfsigned_and_ca_devices(hub):
    rm = registry(hub)
    sas_id, self_id, ca_id = unique("py-sas"), unique("py-self"), unique("py-ca")
    d = rm.create_device_with_sas(sas_id, "", "", "enabled")
    assert d.authentication.type == "sas"
    assert len(d.authentication.symmetric_key.primary_key) > 20
    assert d.authentication.symmetric_key.primary_key != d.authentication.symmetric_key.secondary_key
    thumb = "A" * 40
    d = rm.create_device_with_x509(self_id, thumb, "B" * 64, "enabled")
    assert d.authentication.type == "selfSigned"
    assert d.authentication.x509_thumbprint.primary_thumbprint == thumb
    d = rm.create_device_with_certificate_authority(ca_id, "enabled")
    assert d.authentication.type == "certificateAuthority"
    got = rm.get_device(sas_id)
    assert got.device_id == sas_id and got.etag
    with pytest.raises(HttpOperationError):
        rm.create_device_with_sas(sas_id, "", "", "enabled")  # already exists -> 409
    stats = rm.get_service_statistics()
    assert stats.connected_device_count >= 0


def test_sas_device_sends_100_messages(hub):
    rm = registry(hub)
    device_id = unique("py-sas")
    d = rm.create_device_with_sas(device_id, "", "", "enabled")
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={d.authentication.symmetric_key.primary_key}"
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=hub.root_pem(), connection_retry=False)
    send(client, device_id, 100, "sas")
    events = check_events(hub, device_id, 100, "sas")
    assert json.loads(events[0]["systemProperties"]["iothub-connection-auth-method"])["type"] == "sas"


def test_ca_signed_device_sends_messages(hub, pki):
    device_id = unique("py-x509")
    run("certs", "device", device_id, "--dir", str(pki))
    registry(hub).create_device_with_certificate_authority(device_id, "enabled")
    x509 = X509(cert_file=str(pki / f"iot-device-{device_id}-full-chain.cert.pem"), key_file=str(pki / f"iot-device-{device_id}.key.pem"))
    client = IoTHubDeviceClient.create_from_x509_certificate(
        x509, hostname="localhost", device_id=device_id, server_verification_cert=hub.root_pem(), connection_retry=False
    )
    send(client, device_id, 100, "x509")
    events = check_events(hub, device_id, 100, "x509")
    assert json.loads(events[0]["systemProperties"]["iothub-connection-auth-method"])["type"] == "x509CA"


def test_self_signed_device_sends_messages(hub, tmp_path):
    device_id = unique("py-thumb")
    run("certs", "self-signed", device_id, "--dir", str(tmp_path))
    cert = tmp_path / f"self-signed-{device_id}.cert.pem"
    hub.cli("hub", "device", "create", device_id, "--auth", "self-signed", "--cert", str(cert))
    x509 = X509(cert_file=str(cert), key_file=str(tmp_path / f"self-signed-{device_id}.key.pem"))
    client = IoTHubDeviceClient.create_from_x509_certificate(
        x509, hostname="localhost", device_id=device_id, server_verification_cert=hub.root_pem(), connection_retry=False
    )
    send(client, device_id, 100, "thumb")
    events = check_events(hub, device_id, 100, "thumb")
    assert json.loads(events[0]["systemProperties"]["iothub-connection-auth-method"])["type"] == "x509Certificate"


# ---- the negative matrix: each refusal is an SDK auth error and a logged reason ----------------

def refused(hub, client, reason):
    with pytest.raises(REFUSED):
        client.connect()
    client.shutdown()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if f'code="{reason}"' in hub.log_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"the hub log does not name the reason {reason}")


def ensure_reconnected(client, wait=20):
    """After a hub restart: the SDK retries on its own, but if its first attempt met a hub that was
    not listening yet it may give up; then the application connects again, as an app would. The SDK
    does not re-subscribe either way, so subscriptions are still served from the hub's session."""
    deadline = time.monotonic() + wait
    while not client.connected and time.monotonic() < deadline:
        time.sleep(0.2)
    if not client.connected:
        client.connect()


def sas_client(hub, device_id, key):
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"
    return IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=hub.root_pem(), connection_retry=False)


def x509_client(hub, device_id, cert, key):
    return IoTHubDeviceClient.create_from_x509_certificate(
        X509(cert_file=str(cert), key_file=str(key)), hostname="localhost", device_id=device_id,
        server_verification_cert=hub.root_pem(), connection_retry=False,
    )


KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def test_refuses_unknown_device(hub):
    refused(hub, sas_client(hub, unique("ghost"), KEY), "unknown_device")


def test_refuses_disabled_device(hub):
    device_id = unique("py-off")
    d = registry(hub).create_device_with_sas(device_id, "", "", "disabled")
    refused(hub, sas_client(hub, device_id, d.authentication.symmetric_key.primary_key), "disabled")


def test_refuses_bad_signature(hub):
    device_id = unique("py-badkey")
    registry(hub).create_device_with_sas(device_id, "", "", "enabled")
    refused(hub, sas_client(hub, device_id, KEY), "bad_signature")


def test_refuses_wrong_thumbprint(hub, tmp_path):
    device_id = unique("py-wrongthumb")
    run("certs", "self-signed", device_id, "--dir", str(tmp_path))
    registry(hub).create_device_with_x509(device_id, "C" * 40, "D" * 40, "enabled")
    cert, key = tmp_path / f"self-signed-{device_id}.cert.pem", tmp_path / f"self-signed-{device_id}.key.pem"
    refused(hub, x509_client(hub, device_id, cert, key), "wrong_thumbprint")


def test_refuses_unverified_ca(hub, tmp_path):
    run("certs", "root-ca", "--dir", str(tmp_path), "--cn", "Unverified Root")
    hub.cli("hub", "ca", "upload", "unverified-root", "--cert", str(tmp_path / "root-ca.cert.pem"))
    device_id = unique("py-unverified")
    run("certs", "device", device_id, "--dir", str(tmp_path))
    registry(hub).create_device_with_certificate_authority(device_id, "enabled")
    refused(hub, x509_client(hub, device_id, tmp_path / f"iot-device-{device_id}-full-chain.cert.pem", tmp_path / f"iot-device-{device_id}.key.pem"), "unverified_ca")


def test_refuses_unknown_ca(hub, tmp_path):
    run("certs", "root-ca", "--dir", str(tmp_path), "--cn", "Stranger Root")
    device_id = unique("py-stranger")
    run("certs", "device", device_id, "--dir", str(tmp_path))
    registry(hub).create_device_with_certificate_authority(device_id, "enabled")
    refused(hub, x509_client(hub, device_id, tmp_path / f"iot-device-{device_id}-full-chain.cert.pem", tmp_path / f"iot-device-{device_id}.key.pem"), "unknown_ca")


def test_refuses_cn_mismatch(hub, pki):
    other = unique("py-other")
    run("certs", "device", other, "--dir", str(pki))
    device_id = unique("py-cn")
    registry(hub).create_device_with_certificate_authority(device_id, "enabled")
    refused(hub, x509_client(hub, device_id, pki / f"iot-device-{other}-full-chain.cert.pem", pki / f"iot-device-{other}.key.pem"), "cn_mismatch")


@pytest.mark.parametrize("when,reason", [("expired", "cert_expired"), ("future", "cert_not_yet_valid")])
def test_refuses_cert_outside_validity(hub, pki, when, reason):
    device_id = unique(f"py-{when}")
    start = "2020-01-01T00:00:00Z" if when == "expired" else "2030-01-01T00:00:00Z"
    run("certs", "device", device_id, "--dir", str(pki), "--not-before", start, "--days", "2")
    registry(hub).create_device_with_certificate_authority(device_id, "enabled")
    refused(hub, x509_client(hub, device_id, pki / f"iot-device-{device_id}-full-chain.cert.pem", pki / f"iot-device-{device_id}.key.pem"), reason)


def test_verification_with_another_key_is_refused(hub, tmp_path):
    run("certs", "root-ca", "--dir", str(tmp_path / "a"), "--cn", "PoP Root")
    run("certs", "root-ca", "--dir", str(tmp_path / "b"), "--cn", "PoP Root")
    hub.cli("hub", "ca", "upload", "pop-root", "--cert", str(tmp_path / "a" / "root-ca.cert.pem"))
    code = hub.cli("hub", "ca", "verification-code", "pop-root").stdout.strip()
    run("certs", "verification-cert", "--dir", str(tmp_path / "b"), "--code", code, "--issuer", "root-ca")
    proc = hub.cli("hub", "ca", "verify", "pop-root", "--cert", str(tmp_path / "b" / f"verification-{code}.cert.pem"), check=False)
    assert proc.returncode != 0 and "verification failed" in proc.stderr
    listed = hub.cli("hub", "ca", "list").stdout
    assert "pop-root" in listed and "verified: false" in listed


# ---- raw MQTT: what the SDKs cannot produce ---------------------------------------------------

def tls_socket(hub):
    ctx = ssl.create_default_context(cafile=str(hub.root_ca))
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", 8883), timeout=10), server_hostname="localhost")


def mqtt_string(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def remaining_length(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id, username, password=None, clean=True):
    flags = 0x80 | (0x40 if password is not None else 0) | (0x02 if clean else 0)
    var = mqtt_string("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big")
    payload = mqtt_string(client_id) + mqtt_string(username) + (mqtt_string(password) if password is not None else b"")
    body = var + payload
    return bytes([0x10]) + remaining_length(len(body)) + body


def sas_token(hub, device_id, key, expiry):
    import base64, hashlib, hmac, urllib.parse
    sr = urllib.parse.quote(f"localhost/devices/{device_id}", safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={expiry}"


def raw_connect(hub, device_id, key, expiry=None, clean=True):
    s = tls_socket(hub)
    token = sas_token(hub, device_id, key, expiry or int(time.time()) + 3600)
    s.sendall(connect_packet(device_id, f"localhost/{device_id}/?api-version=2021-04-12", token, clean))
    connack = s.recv(4)
    return s, connack


def test_expired_token_gets_connack_5(hub):
    device_id = unique("py-expired")
    d = registry(hub).create_device_with_sas(device_id, "", "", "enabled")
    s, connack = raw_connect(hub, device_id, d.authentication.symmetric_key.primary_key, expiry=int(time.time()) - 3600)
    assert connack == bytes([0x20, 0x02, 0x00, 0x05])
    s.close()
    assert 'code="expired_token"' in hub.log_text()


def test_publish_to_another_devices_topic_disconnects(hub):
    rm = registry(hub)
    a, b = unique("py-a"), unique("py-b")
    d = rm.create_device_with_sas(a, "", "", "enabled")
    rm.create_device_with_sas(b, "", "", "enabled")
    s, connack = raw_connect(hub, a, d.authentication.symmetric_key.primary_key)
    assert connack == bytes([0x20, 0x02, 0x00, 0x00])
    topic = mqtt_string(f"devices/{b}/messages/events/")
    body = topic + (1).to_bytes(2, "big") + b"spoof"
    s.sendall(bytes([0x32]) + remaining_length(len(body)) + body)
    s.settimeout(5)
    assert s.recv(16) == b"", "the hub must close the connection"
    assert "publish to another identity's topic" in hub.log_text()
    assert all(e["body"] != "spoof" for e in hub.events(b))


def test_malformed_and_oversize_packets_close_only_that_connection(hub):
    s = tls_socket(hub)
    s.sendall(bytes([0xF0, 0x00]))  # reserved packet type 15
    s.settimeout(5)
    assert s.recv(16) == b""
    device_id = unique("py-big")
    d = registry(hub).create_device_with_sas(device_id, "", "", "enabled")
    s, connack = raw_connect(hub, device_id, d.authentication.symmetric_key.primary_key)
    assert connack[-1] == 0
    topic = mqtt_string(f"devices/{device_id}/messages/events/")
    size = 2 * 1024 * 1024  # beyond limits.max_packet_bytes
    s.sendall(bytes([0x30]) + remaining_length(len(topic) + size) + topic + b"x" * 1024)
    assert s.recv(16) == b""
    # The hub still serves everyone else.
    test_sas_device_sends_100_messages(hub)


def test_rest_api_refuses_bad_json_and_unknown_api_version(hub):
    import base64, hashlib, hmac, urllib.parse
    cs = dict(kv.split("=", 1) for kv in hub.connection_string.split(";"))
    expiry = int(time.time()) + 600
    sig = base64.b64encode(hmac.new(base64.b64decode(cs["SharedAccessKey"]), f"localhost\n{expiry}".encode(), hashlib.sha256).digest()).decode()
    auth = f"SharedAccessSignature sr=localhost&sig={urllib.parse.quote(sig, safe='')}&se={expiry}&skn=iothubowner"
    url = "https://localhost/devices/py-json"
    r = requests.put(url + "?api-version=2021-04-12", data="{not json", headers={"Authorization": auth})
    assert r.status_code == 400 and "ErrorCode:ArgumentInvalid" in r.json()["Message"]
    r = requests.get(url + "?api-version=1999-01-01", headers={"Authorization": auth})
    assert r.status_code == 400 and "api-version" in r.json()["Message"]
    r = requests.get(url + "?api-version=2021-04-12", headers={"Authorization": auth.replace("sig=", "sig=AA")})
    assert r.status_code == 401
    r = requests.get("https://localhost/devices/does-not-exist?api-version=2021-04-12", headers={"Authorization": auth})
    assert r.status_code == 404 and r.json()["Message"].startswith("ErrorCode:DeviceNotFound;")


def test_restart_keeps_messages_registry_and_sessions(hub):
    rm = registry(hub)
    device_id = unique("py-restart")
    d = rm.create_device_with_sas(device_id, "", "", "enabled")
    key = d.authentication.symmetric_key.primary_key
    send(sas_client(hub, device_id, key), device_id, 5, "before")
    # A persistent session with a subscription, as the Python SDK keeps (clean_session = 0).
    s, connack = raw_connect(hub, device_id, key, clean=False)
    assert connack == bytes([0x20, 0x02, 0x00, 0x00])
    sub = (7).to_bytes(2, "big") + mqtt_string(f"devices/{device_id}/messages/devicebound/#") + bytes([1])
    s.sendall(bytes([0x82]) + remaining_length(len(sub)) + sub)
    assert s.recv(5) == bytes([0x90, 0x03, 0x00, 0x07, 0x01])
    s.close()
    hub.restart()
    assert rm.get_device(device_id).authentication.symmetric_key.primary_key == key
    s, connack = raw_connect(hub, device_id, key, clean=False)
    assert connack == bytes([0x20, 0x02, 0x01, 0x00]), "session present after restart"
    s.close()
    send(sas_client(hub, device_id, key), device_id, 5, "after")
    check_events(hub, device_id, 5, "before")
    check_events(hub, device_id, 5, "after")


def test_c2d_reaches_the_python_client_before_and_after_a_restart(hub):
    """The SDK subscribes once (clean_session = 0) and never again: after the hub restarts, the
    persisted session is what keeps the client's subscription served."""
    import queue
    device_id = unique("py-c2d")
    d = registry(hub).create_device_with_sas(device_id, "", "", "enabled")
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={d.authentication.symmetric_key.primary_key}"
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=hub.root_pem(), connection_retry_interval=1)
    received = queue.Queue()
    client.on_message_received = received.put
    client.connect()
    hub.cli("hub", "c2d", "send", device_id, "--body", "hello-1", "--prop", "color=red blue")
    m = received.get(timeout=15)
    assert m.data == b"hello-1"
    assert m.custom_properties["color"] == "red blue"
    assert m.message_id
    hub.restart()
    ensure_reconnected(client)
    hub.cli("hub", "c2d", "send", device_id, "--body", "hello-2")
    m = received.get(timeout=60)
    assert m.data == b"hello-2"
    client.shutdown()
    log = hub.log_text().splitlines()
    connects = [l for l in log if device_id in l and "Device connected" in l]
    subscribes = [l for l in log if device_id in l and "Subscribed" in l and "devicebound" in l]
    assert len(connects) >= 2, "the client reconnected after the restart"
    assert len(subscribes) == 1, f"served from the persisted session, not a new SUBSCRIBE: {subscribes}"

def test_service_sends_c2d_over_amqp(hub, monkeypatch):
    """IoTHubRegistryManager.send_c2d_message speaks AMQP (uamqp: SASL MSSBCBS, then a policy
    token on $cbs, then /messages/devicebound); the device receives it over MQTT."""
    import queue
    # uamqp verifies the hub with OpenSSL's default trust store.
    monkeypatch.setenv("SSL_CERT_FILE", str(hub.root_ca))
    device_id = unique("py-amqp-c2d")
    d = registry(hub).create_device_with_sas(device_id, "", "", "enabled")
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={d.authentication.symmetric_key.primary_key}"
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=hub.root_pem())
    received = queue.Queue()
    client.on_message_received = received.put
    client.connect()
    registry(hub).send_c2d_message(device_id, "over amqp", properties={"color": "green", "contentType": "text/plain"})
    m = received.get(timeout=15)
    assert m.data == b"over amqp"
    assert m.custom_properties["color"] == "green"
    client.shutdown()


def test_twin_get_reported_and_desired_before_and_after_a_restart(hub):
    import queue
    from azure.iot.hub.models import QuerySpecification, Twin, TwinProperties
    rm = registry(hub)
    device_id = unique("py-twin")
    d = rm.create_device_with_sas(device_id, "", "", "enabled")
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={d.authentication.symmetric_key.primary_key}"
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=hub.root_pem(), connection_retry_interval=1)
    patches = queue.Queue()
    client.on_twin_desired_properties_patch_received = patches.put
    client.connect()
    twin = client.get_twin()
    assert "$version" in twin["desired"] and "$version" in twin["reported"]
    client.patch_twin_reported_properties({"fw": "1.2", "net": {"ip": "10.0.0.1"}})
    svc = rm.get_twin(device_id)
    assert svc.properties.reported["fw"] == "1.2"
    with pytest.raises(HttpOperationError):
        rm.update_twin(device_id, Twin(properties=TwinProperties(desired={"rate": 1})), "stale-etag")
    rm.update_twin(device_id, Twin(tags={"site": "lab"}, properties=TwinProperties(desired={"rate": 5})), svc.etag)
    p = patches.get(timeout=15)
    assert p["rate"] == 5 and p["$version"] >= 2
    q = rm.query_iot_hub(QuerySpecification(query="SELECT * FROM devices WHERE tags.site = 'lab' AND properties.reported.fw = '1.2'"))
    assert [t.device_id for t in q.items] == [device_id]
    hub.restart()
    ensure_reconnected(client)
    svc = rm.get_twin(device_id)
    assert svc.tags["site"] == "lab"
    rm.update_twin(device_id, Twin(properties=TwinProperties(desired={"rate": 7})), svc.etag)
    deadline = time.monotonic() + 60
    while True:
        p = patches.get(timeout=max(0.1, deadline - time.monotonic()))
        if p.get("rate") == 7:
            break
    assert client.get_twin()["reported"]["fw"] == "1.2"
    client.shutdown()

def test_zz_sas_disabled_hub_wide_refuses_sas_devices(hub):
    """Runs last: it restarts the hub with [auth] disable_device_sas = true, then restores it."""
    device_id = unique("py-nosas")
    d = registry(hub).create_device_with_sas(device_id, "", "", "enabled")
    original = hub.config.read_text()
    assert "disable_device_sas = false" in original
    hub.config.write_text(original.replace("disable_device_sas = false", "disable_device_sas = true"))
    try:
        hub.restart()
        refused(hub, sas_client(hub, device_id, d.authentication.symmetric_key.primary_key), "sas_disabled")
    finally:
        hub.config.write_text(original)
        hub.restart()
