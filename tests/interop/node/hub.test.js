// The real Node SDKs (azure-iot-device with azure-iot-device-mqtt and azure-iot-device-amqp,
// azure-iothub) against ferrohub. Run by scripts/test-interop after the Python suite; it starts
// its own hub on 127.0.0.1:8883/443 and AMQP on 127.0.0.1:5671.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { spawn, execFile, execFileSync } = require('node:child_process');
const { promisify } = require('node:util');

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
    '--mqtt', '127.0.0.1:8883', '--https', '127.0.0.1:443', '--amqp', '127.0.0.1:5671');
  serviceCs = cli('hub', 'connection-string', '--config', config).trim();
  const log = fs.openSync(path.join(base, 'hub.log'), 'a');
  hubProc = spawn(BIN, ['hub', '--config', config], { stdio: ['ignore', log, log], env: { ...process.env, FERROHUB_LOG: 'info' } });
  await waitPort(443);
  await waitPort(8883);
  await waitPort(5671);
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
    else if (op === 'list') r.list(done);
  `;
  const out = execFileSync(process.execPath, ['-e', script], {
    cwd: __dirname, encoding: 'utf8',
    env: { ...process.env, NODE_EXTRA_CA_CERTS: rootCa, CS: serviceCs, ARGS: JSON.stringify([op, arg]) },
  });
  return JSON.parse(out.trim().split('\n').pop());
}

// The service SDK (azure-iothub Registry and Client) in a child process, without blocking this one:
// devices in this process answer methods while the child waits for the result.
const SERVICE_SCRIPT = `
  const { Registry, Client } = require('azure-iothub');
  const cs = process.env.CS;
  const [op, arg] = JSON.parse(process.env.ARGS);
  const run = async () => {
    if (op === 'invoke') {
      const res = await Client.fromConnectionString(cs).invokeDeviceMethod(arg.deviceId, arg.method);
      return res.result;
    }
    if (op === 'c2d') {
      // Client.send goes over AMQP (/messages/devicebound), as with IoT Hub.
      const c = Client.fromConnectionString(cs);
      await c.open();
      const { Message } = require('azure-iot-common');
      const m = new Message(arg.body);
      m.messageId = arg.messageId;
      m.ack = 'full';
      m.properties.add('origin', 'node-service');
      await c.send(arg.deviceId, m);
      await c.close();
      return { sent: true };
    }
    if (op === 'tagged-devices') {
      const r = Registry.fromConnectionString(cs);
      for (let i = 0; i < arg.count; i++) {
        const deviceId = arg.prefix + '-' + i;
        await r.create({ deviceId });
        await r.updateTwin(deviceId, { tags: { batch: arg.prefix } }, '*');
      }
      return { created: arg.count };
    }
    if (op === 'query-pages') {
      const q = Registry.fromConnectionString(cs).createQuery(arg.sql, arg.pageSize);
      const pages = [];
      while (q.hasMoreResults) {
        if (pages.length > 10) throw new Error('the query does not end: ' + JSON.stringify(pages));
        const res = await q.nextAsTwin();
        pages.push(res.result.map((t) => t.deviceId));
      }
      return pages;
    }
    throw new Error('unknown op ' + op);
  };
  run().then((res) => console.log(JSON.stringify(res)),
    (err) => console.log(JSON.stringify({
      error: err.constructor.name, message: err.message,
      status: err.response && err.response.statusCode, body: err.responseBody,
    })));
`;

async function service(op, arg) {
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', SERVICE_SCRIPT], {
    cwd: __dirname, encoding: 'utf8', timeout: 120000,
    env: { ...process.env, NODE_EXTRA_CA_CERTS: rootCa, CS: serviceCs, ARGS: JSON.stringify([op, arg]) },
  });
  return JSON.parse(stdout.trim().split('\n').pop());
}

async function openDevice(prefix, transport) {
  const { Client } = require('azure-iot-device');
  const Transport = transport || require('azure-iot-device-mqtt').Mqtt;
  const id = uid(prefix);
  const d = registry('create', { deviceId: id });
  const client = Client.fromConnectionString(`HostName=localhost;DeviceId=${id};SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Transport);
  await client.setOptions({ ca: fs.readFileSync(rootCa, 'utf8') });
  await client.open();
  return { id, client };
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

// A root CA in base/DIR, uploaded to the hub as NAME and verified by proof of possession.
function verifiedCa(dir, name, cn) {
  const pki = path.join(base, dir);
  cli('certs', 'root-ca', '--dir', pki, '--cn', cn);
  cli('hub', 'ca', 'upload', name, '--cert', path.join(pki, 'root-ca.cert.pem'), '--config', config);
  const code = cli('hub', 'ca', 'verification-code', name, '--config', config).trim();
  cli('certs', 'verification-cert', '--dir', pki, '--code', code, '--issuer', 'root-ca');
  cli('hub', 'ca', 'verify', name, '--cert', path.join(pki, `verification-${code}.cert.pem`), '--config', config);
  return pki;
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

test('Registry.list (GET /devices/ with its trailing slash) lists the devices created', () => {
  const id = uid('node-listed');
  registry('create', { deviceId: id });
  const listed = registry('list');
  assert.ok(Array.isArray(listed), JSON.stringify(listed));
  assert.ok(listed.some((d) => d.deviceId === id), JSON.stringify(listed));
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
  const pki = verifiedCa('pki', 'node-root', 'Node Root');
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

test('a direct method is answered by the device; an offline device gets 404 DeviceNotOnline', async () => {
  const { id, client } = await openDevice('node-method');
  client.onDeviceMethod('reboot', (request, response) => {
    response.send(200, { echo: request.payload, method: request.methodName }, () => {});
  });
  // onDeviceMethod subscribes asynchronously; retry while the hub still says 404 (not subscribed).
  let result;
  for (let attempt = 0; attempt < 50; attempt++) {
    result = await service('invoke', { deviceId: id, method: { methodName: 'reboot', payload: { delay: 2 }, responseTimeoutInSeconds: 10 } });
    if (!result.error) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepStrictEqual(result, { status: 200, payload: { echo: { delay: 2 }, method: 'reboot' } });
  await client.close();
  const offline = await service('invoke', { deviceId: id, method: { methodName: 'reboot', responseTimeoutInSeconds: 5 } });
  // The SDK maps a 404 without the DeviceNotFound code to a plain Error, as it does with IoT Hub.
  assert.strictEqual(offline.status, 404, JSON.stringify(offline));
  assert.match(String(offline.body), /ErrorCode:DeviceNotOnline/);
});

test('a cloud-to-device message with no application properties reaches the device', async () => {
  const { id, client } = await openDevice('node-c2d');
  const received = new Promise((resolve) => client.on('message', (msg) => {
    client.complete(msg, () => resolve(msg));
  }));
  // 'message' listeners subscribe asynchronously; the hub queues until the device subscribes.
  cli('hub', 'c2d', 'send', id, '--body', 'plain', '--config', config);
  const msg = await received;
  assert.strictEqual(msg.data.toString(), 'plain');
  assert.deepStrictEqual(msg.properties.propertyList, []);
  assert.ok(msg.messageId, 'the hub assigns a message id');
  await client.close();
});

test('a query over 150 devices comes back as three pages of 50, then stops', async () => {
  const prefix = uid('node-q');
  const made = await service('tagged-devices', { prefix, count: 150 });
  assert.deepStrictEqual(made, { created: 150 });
  const pages = await service('query-pages', { sql: `SELECT * FROM devices WHERE tags.batch = '${prefix}'`, pageSize: 50 });
  assert.ok(!pages.error, JSON.stringify(pages));
  assert.deepStrictEqual(pages.map((p) => p.length), [50, 50, 50]);
  assert.strictEqual(new Set(pages.flat()).size, 150, 'no device twice');
});

// ---- AMQP (azure-iot-device-amqp): SAS keys through $cbs put-token, X.509 by the TLS certificate.

function amqp() {
  return require('azure-iot-device-amqp').Amqp;
}

test('a SAS device sends 100 messages over AMQP', async () => {
  const { Client } = require('azure-iot-device');
  const id = uid('node-amqp-sas');
  const d = registry('create', { deviceId: id });
  const cs = `HostName=localhost;DeviceId=${id};SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`;
  await sendAll(Client.fromConnectionString(cs, amqp()), id, 100, 'node-amqp-sas');
  checkEvents(id, 100, 'node-amqp-sas');
});

test('an X.509 CA-signed device sends messages over AMQP', async () => {
  const { Client } = require('azure-iot-device');
  const pki = verifiedCa('pki-amqp', 'node-amqp-root', 'Node AMQP Root');
  const id = uid('node-amqp-x509');
  cli('certs', 'device', id, '--dir', pki);
  registry('create', { deviceId: id, authentication: { type: 'certificateAuthority' } });
  const client = Client.fromConnectionString(`HostName=localhost;DeviceId=${id};x509=true`, amqp());
  await sendAll(client, id, 20, 'node-amqp-x509', {
    cert: fs.readFileSync(path.join(pki, `iot-device-${id}-full-chain.cert.pem`), 'utf8'),
    key: fs.readFileSync(path.join(pki, `iot-device-${id}.key.pem`), 'utf8'),
  });
  checkEvents(id, 20, 'node-amqp-x509');
});

test('a wrong key over AMQP is refused with an UnauthorizedError', async () => {
  const { Client } = require('azure-iot-device');
  const id = uid('node-amqp-bad');
  registry('create', { deviceId: id });
  const cs = `HostName=localhost;DeviceId=${id};SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=`;
  const client = Client.fromConnectionString(cs, amqp());
  await client.setOptions({ ca: fs.readFileSync(rootCa, 'utf8') });
  await assert.rejects(client.open(), (err) => err.constructor.name === 'UnauthorizedError');
});

test('cloud-to-device over AMQP: complete, reject, abandon and redelivery', async () => {
  const { id, client } = await openDevice('node-amqp-c2d', amqp());
  const seen = [];
  const done = new Promise((resolve, reject) => client.on('message', (msg) => {
    const body = msg.data.toString();
    seen.push(body);
    const settle = (err) => (err ? reject(err) : undefined);
    if (body === 'one') client.complete(msg, settle);
    else if (body === 'two') client.reject(msg, settle);
    else if (body === 'three' && seen.filter((b) => b === 'three').length === 1) client.abandon(msg, settle);
    else client.complete(msg, (err) => (err ? reject(err) : resolve()));
  }));
  for (const body of ['one', 'two', 'three']) cli('hub', 'c2d', 'send', id, '--body', body, '--config', config);
  await done;
  assert.deepStrictEqual(seen, ['one', 'two', 'three', 'three']);
  await client.close();
});

test('the service sends cloud-to-device over AMQP (Client.send) to an AMQP device', async () => {
  const { id, client } = await openDevice('node-amqp-svc', amqp());
  const received = new Promise((resolve) => client.on('message', (msg) => {
    client.complete(msg, () => resolve(msg));
  }));
  await new Promise((r) => setTimeout(r, 500));
  const sent = await service('c2d', { deviceId: id, body: 'from node service', messageId: 'svc-node-1' });
  assert.deepStrictEqual(sent, { sent: true });
  const msg = await received;
  assert.strictEqual(msg.data.toString(), 'from node service');
  assert.strictEqual(msg.messageId, 'svc-node-1');
  assert.strictEqual(msg.properties.getValue('origin'), 'node-service');
  await client.close();
});

test('twin get and reported update over AMQP', async () => {
  const { client } = await openDevice('node-amqp-twin', amqp());
  const twin = await client.getTwin();
  assert.ok(twin.properties.desired.$version >= 1);
  await new Promise((resolve, reject) => twin.properties.reported.update({ fw: '3.0' }, (err) => (err ? reject(err) : resolve())));
  const again = await client.getTwin();
  assert.strictEqual(again.properties.reported.fw, '3.0');
  await client.close();
});

test('a direct method over AMQP is answered by the device', async () => {
  const { id, client } = await openDevice('node-amqp-method', amqp());
  client.onDeviceMethod('reboot', (request, response) => {
    response.send(200, { echo: request.payload, method: request.methodName }, () => {});
  });
  let result;
  for (let attempt = 0; attempt < 50; attempt++) {
    result = await service('invoke', { deviceId: id, method: { methodName: 'reboot', payload: { delay: 3 }, responseTimeoutInSeconds: 10 } });
    if (!result.error) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepStrictEqual(result, { status: 200, payload: { echo: { delay: 3 }, method: 'reboot' } });
  await client.close();
});
