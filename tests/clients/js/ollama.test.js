// The official `ollama` JavaScript client (npm) against Corral's native API.
// `cargo xtask test` runs it with CORRAL_URL and CORRAL_API_KEY set.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Ollama } from 'ollama';

const host = process.env.CORRAL_URL;
const key = process.env.CORRAL_API_KEY;
const client = new Ollama({ host, headers: { Authorization: `Bearer ${key}` } });
const messages = [{ role: 'user', content: 'Why is the sky blue?' }];

test('streamed chat arrives chunk by chunk and ends with metrics', async () => {
  const parts = [];
  for await (const part of await client.chat({
    model: 'llama3.2',
    messages,
    stream: true,
    options: { num_predict: 10 },
  })) {
    parts.push(part);
  }
  assert.equal(parts.length, 11, JSON.stringify(parts));
  assert.ok(parts.slice(0, -1).every((p) => !p.done));
  const last = parts.at(-1);
  assert.equal(last.done, true);
  assert.equal(last.done_reason, 'length');
  assert.equal(last.eval_count, 10);
  assert.ok(parts.map((p) => p.message.content).join('').trim().length > 0);
});

test('list shows the fleet\'s models', async () => {
  const { models } = await client.list();
  const names = models.map((m) => m.model);
  assert.ok(names.includes('llama3.2:latest'), names.join(','));
});

test('pull reports progress and the model appears', async () => {
  const progress = [];
  for await (const p of await client.pull({ model: 'phi3', stream: true })) {
    progress.push(p);
  }
  assert.equal(progress[0].status, 'pulling manifest');
  assert.ok(progress.some((p) => p.completed > 0 && p.total > 0), JSON.stringify(progress));
  assert.equal(progress.at(-1).status, 'success');
  const { models } = await client.list();
  assert.ok(models.map((m) => m.model).includes('phi3:latest'));
  await client.delete({ model: 'phi3' });
});

test('a request without a key is refused with 401', async () => {
  const anonymous = new Ollama({ host });
  await assert.rejects(anonymous.list(), (err) => {
    assert.equal(err.status_code, 401);
    assert.match(err.error, /Not authenticated/);
    return true;
  });
});
