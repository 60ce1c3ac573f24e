// The real Node SDKs (azure-iot-device + azure-iot-device-mqtt, azure-iothub) against ferrohub.
// Run by scripts/test-interop after the Python suite; it starts its own hub on 127.0.0.1:8883/443.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { spawn, execFileSync } = require('node:child_process');

const REPO = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.FERROHUB_BIN || path.join(REPO, 'target', 'debug', 'ferrohub');
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrohub-node-'));
const hubDir = path.join(base, 'hub');
const config = path.join(hubDir, 'hub.toml');
const rootCa = path.join(hubDir, 'certs', 'root-ca.cert.pem');
let hubProc;
let serviceCs;

function cli(...args) {
  return execFileSync(BIN, args, { encoding: 'utf8' });
}

function waitPort(port) {
  const deadline = Date.now() + 30000;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(); });
      s.on('error', () => (Date.now() > deadline ? reject(new Error(`port ${port}`)) : setTimeout(attempt, 100)));
    };
    attempt();
  });
}

before(async () => {
  cli('hub', 'init', '--dir', hubDir, '--hostname', 'localhost', '--hostname', '127.0.0.1',
    '--mqtt', '127.0.0.1:8883', '--https', '127.0.0.1:443');
  serviceCs = cli('hub', 'connection-string', '--config', config).trim();
  const log = fs.openSync(path.join(base, 'hub.log'), 'a');
  hubProc = spawn(BIN, ['hub', '--config', config], { stdio: ['ignore', log, log], env: { ...process.env, FERROHUB_LOG: 'info' } });
  await waitPort(443);
  await waitPort(8883);
});

after(() => {
  if (hubProc) hubProc.kill('SIGTERM');
});

// The service SDK trusts a custom root only through NODE_EXTRA_CA_CERTS, which node reads at start;
// so registry calls run in a child process that has it set.
function registry(op, arg) {
  const script = `
    const { Registry } = require('azure-iothub');
    const r = Registry.fromConnectionString(process.env.CS);
    const [op, arg] = JSON.parse(process.env.ARGS);
    const done = (err, res) => { console.log(JSON.stringify(err ? { error: err.constructor.name, message: err.message } : res)); };
    if (op === 'create') r.create(arg, done);
    else if (op === 'get') r.get(arg, done);
    else if (op === 'delete') r.delete(arg, done);
  `;
  const out = execFileSync(process.execPath, ['-e', script], {
    cwd: __dirname, encoding: 'utf8',
    env: { ...process.env, NODE_EXTRA_CA_CERTS: rootCa, CS: serviceCs, ARGS: JSON.stringify([op, arg]) },
  });
  return JSON.parse(out.trim().split('\n').pop());
}

function events(deviceId) {
  const out = cli('hub', 'events', '--config', config, '--device', deviceId, '--from-start');
  return out.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

function uid(prefix) {
  return `${prefix}-${Math.random().toString(16).slice(2, 10)}`;
}

// setOptions replaces earlier options, so certificate, key and CA go in one call.
async function sendAll(client, deviceId, n, tag, options = {}) {
  const { Message } = require('azure-iot-device');
  await client.setOptions({ ...options, ca: fs.readFileSync(rootCa, 'utf8') });
  await client.open();
  for (let i = 0; i < n; i++) {
    const m = new Message(JSON.stringify({ i, deviceId }));
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    m.messageId = `${tag}-${i}`;
    m.properties.add('seq', String(i));
    m.properties.add('kind', tag);
    await client.sendEvent(m);
  }
  await client.close();
}

function checkEvents(deviceId, n, tag) {
  const evs = events(deviceId).filter((e) => e.properties.kind === tag);
  assert.strictEqual(evs.length, n);
  assert.deepStrictEqual(evs.map((e) => Number(e.properties.seq)).sort((a, b) => a - b), [...Array(n).keys()]);
  for (const e of evs) {
    assert.strictEqual(e.systemProperties['iothub-connection-device-id'], deviceId);
    assert.strictEqual(e.systemProperties.contentType, 'application/json');
    assert.strictEqual(JSON.parse(e.body).deviceId, deviceId);
  }
}

test('Registry.create without keys gets generated keys; 404 is DeviceNotFound', () => {
  const id = uid('node-sas');
  const d = registry('create', { deviceId: id });
  assert.ok(d.authentication.symmetricKey.primaryKey.length > 20, JSON.stringify(d));
  assert.notStrictEqual(d.authentication.symmetricKey.primaryKey, d.authentication.symmetricKey.secondaryKey);
  const missing = registry('get', uid('node-missing'));
  assert.strictEqual(missing.error, 'DeviceNotFoundError', JSON.stringify(missing));
});

test('a SAS device sends 100 messages over MQTT', async () => {
  const { Client } = require('azure-iot-device');
  const { Mqtt } = require('azure-iot-device-mqtt');
  const id = uid('node-sas');
  const d = registry('create', { deviceId: id });
  const cs = `HostName=localhost;DeviceId=${id};SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`;
  await sendAll(Client.fromConnectionString(cs, Mqtt), id, 100, 'node-sas');
  checkEvents(id, 100, 'node-sas');
});

test('an X.509 CA-signed device sends messages over MQTT', async () => {
  const { Client } = require('azure-iot-device');
  const { Mqtt } = require('azure-iot-device-mqtt');
  const pki = path.join(base, 'pki');
  cli('certs', 'root-ca', '--dir', pki, '--cn', 'Node Root');
  cli('hub', 'ca', 'upload', 'node-root', '--cert', path.join(pki, 'root-ca.cert.pem'), '--config', config);
  const code = cli('hub', 'ca', 'verification-code', 'node-root', '--config', config).trim();
  cli('certs', 'verification-cert', '--dir', pki, '--code', code, '--issuer', 'root-ca');
  cli('hub', 'ca', 'verify', 'node-root', '--cert', path.join(pki, `verification-${code}.cert.pem`), '--config', config);
  const id = uid('node-x509');
  cli('certs', 'device', id, '--dir', pki);
  registry('create', { deviceId: id, authentication: { type: 'certificateAuthority' } });
  const client = Client.fromConnectionString(`HostName=localhost;DeviceId=${id};x509=true`, Mqtt);
  await sendAll(client, id, 100, 'node-x509', {
    cert: fs.readFileSync(path.join(pki, `iot-device-${id}-full-chain.cert.pem`), 'utf8'),
    key: fs.readFileSync(path.join(pki, `iot-device-${id}.key.pem`), 'utf8'),
  });
  checkEvents(id, 100, 'node-x509');
});

test('a wrong key is refused with an UnauthorizedError', async () => {
  const { Client } = require('azure-iot-device');
  const { Mqtt } = require('azure-iot-device-mqtt');
  const id = uid('node-bad');
  registry('create', { deviceId: id });
  const cs = `HostName=localhost;DeviceId=${id};SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=`;
  const client = Client.fromConnectionString(cs, Mqtt);
  client.setOptions({ ca: fs.readFileSync(rootCa, 'utf8') });
  await assert.rejects(client.open(), (err) => err.constructor.name === 'UnauthorizedError');
});

test('twin get and reported update over MQTT', async () => {
  const { Client } = require('azure-iot-device');
  const { Mqtt } = require('azure-iot-device-mqtt');
  const id = uid('node-twin');
  const d = registry('create', { deviceId: id });
  const client = Client.fromConnectionString(`HostName=localhost;DeviceId=${id};SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Mqtt);
  await client.setOptions({ ca: fs.readFileSync(rootCa, 'utf8') });
  await client.open();
  const twin = await client.getTwin();
  assert.ok(twin.properties.desired.$version >= 1);
  await new Promise((resolve, reject) => twin.properties.reported.update({ fw: '2.0' }, (err) => (err ? reject(err) : resolve())));
  const again = await client.getTwin();
  assert.strictEqual(again.properties.reported.fw, '2.0');
  await client.close();
});
