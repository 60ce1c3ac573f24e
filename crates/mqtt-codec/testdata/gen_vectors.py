#!/usr/bin/env python3
"""Writes the *.bin test vectors of this directory, built by hand from the MQTT 3.1.1 spec.

They are generated here, independently of the Rust codec, so that the codec's tests compare it
against bytes it did not produce. Run from this directory: `python3 gen_vectors.py`.
"""

import struct


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def packet(first_byte, body):
    return bytes([first_byte]) + varint(len(body)) + body


USERNAME_PY = "myhub.local/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0"
PASSWORD_PY = (
    "SharedAccessSignature sr=myhub.local%2Fdevices%2Fdev1"
    "&sig=Xb0gNHVmJp3kq8l9UZtV0c2xOkzFqKPqkCwC0x5Zy1E%3D&se=1767225600"
)

VECTORS = {
    # azure-iot-device (Python, paho-mqtt underneath): MQTT 3.1.1, flags user name + password,
    # clean session off, keep-alive 60.
    "connect_azure_py_sas.bin": packet(
        0x10,
        string("MQTT") + bytes([4, 0xC0]) + struct.pack(">H", 60)
        + string("dev1") + string(USERNAME_PY) + string(PASSWORD_PY),
    ),
    # X.509 authentication: user name without password, keep-alive 240.
    "connect_x509_no_password.bin": packet(
        0x10,
        string("MQTT") + bytes([4, 0x80]) + struct.pack(">H", 240)
        + string("dev2")
        + string("myhub.local/dev2/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.0"),
    ),
    # Telemetry, QoS 1, packet id 1, with the content-type/encoding property bag.
    "publish_telemetry_qos1.bin": packet(
        0x32,
        string("devices/dev1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8")
        + struct.pack(">H", 1) + b'{"temperature":21.5}',
    ),
    # C2D messages at QoS 1 and twin responses at QoS 0, packet id 2.
    "subscribe_azure.bin": packet(
        0x82,
        struct.pack(">H", 2)
        + string("devices/dev1/messages/devicebound/#") + bytes([1])
        + string("$iothub/twin/res/#") + bytes([0]),
    ),
    # Granted QoS 1, then a refusal.
    "suback_success_failure.bin": packet(0x90, struct.pack(">H", 2) + bytes([0x01, 0x80])),
}

if __name__ == "__main__":
    for name, data in VECTORS.items():
        with open(name, "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")
