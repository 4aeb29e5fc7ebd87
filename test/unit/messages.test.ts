/**
 * Every message names the user's path and what to do; recovery is reported; killed writes leave no temp files; a
 * full disk during eval says so; non-UTF-8 input is refused with file and byte offset; TensorFlow.js keeps quiet;
 * the production build ships no debug page. (Issue: the OS error with a hidden temp file's name instead of --out,
 * "short write (167 of 580 bytes)", "CSV file is empty" without a file, tfjs's banner on stderr, U+FFFD without a
 * warning, temp files of killed writes left forever, the worker debug page in `npm run build`.)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import '../../src/core/controller/backend.js';
import { loadUserFile } from '../../src/core/data/node.js';
import { openRunStore } from '../../src/core/eval/records-node.js';
import { writeFileAtomic } from '../../src/core/util/atomic-write.js';
import { decodeUtf8, firstInvalidUtf8 } from '../../src/core/util/utf8.js';
import viteConfig from '../../vite.config.js';
import { testDir } from '../helpers/tmp.js';

afterEach(() => vi.restoreAllMocks());

/** The pid of a process that has finished (so no process holds it, barring reuse within the test). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

describe('TensorFlow.js in Node', () => {
  it('prints no banner on stderr when the CPU backend is first used', async () => {
    const warn = vi.spyOn(console, 'warn');
    await tf.setBackend('cpu');
    tf.tensor([1, 2, 3]).dataSync();
    expect(warn.mock.calls.flat().join(' ')).not.toMatch(/tfjs-node|TensorFlow\.js in Node/);
  });
});

describe('the atomic writer', () => {
  it("names the user's path and what to do, never the temp file", async () => {
    const dir = testDir('steerlab-msg-');
    const missing = join(dir, 'no-such-folder', 'out.json');
    await expect(writeFileAtomic(missing, 'x')).rejects.toThrow(`cannot write ${missing}: the folder ${join(dir, 'no-such-folder')} does not exist; create it first`);
    mkdirSync(join(dir, 'taken'));
    const err = await writeFileAtomic(join(dir, 'taken'), 'x').then(() => null, (e: Error) => e);
    expect(err?.message).toBe(`cannot write ${join(dir, 'taken')}: it is a folder; give a file name`);
    expect(err?.message).not.toMatch(/\.tmp-/);
    expect(readdirSync(dir).sort()).toEqual(['taken']);
  });

  it('the next write of a file removes the temp files of killed writers, and keeps those of live ones', async () => {
    const dir = testDir('steerlab-msg-');
    const dead = `.out.json.tmp-${deadPid()}-0123abcd`;
    const live = `.out.json.tmp-${process.pid}-89abcdef`;
    writeFileSync(join(dir, dead), 'half');
    writeFileSync(join(dir, live), 'in progress');
    await writeFileAtomic(join(dir, 'out.json'), '{}');
    expect(readdirSync(dir).sort()).toEqual([live, 'out.json']);
  });
});

describe('a full disk during eval', () => {
  it('says the disk is full, names records.jsonl, keeps what was written and says how to resume', async () => {
    const dir = testDir('steerlab-msg-');
    const store = await openRunStore(dir);
    await store.append({ dataset: 'd', id: '1', condition: 'c', output: 'ok' });
    // The disk fills up: a short write, then ENOSPC, as the kernel reports it.
    const probe = await open(join(dir, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { write: (...a: unknown[]) => Promise<{ bytesWritten: number }> };
    await probe.close();
    let calls = 0;
    vi.spyOn(proto, 'write').mockImplementation(async () => {
      calls++;
      if (calls === 1) return { bytesWritten: 7 };
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    });
    const err = await store.append({ dataset: 'd', id: '2', condition: 'c', output: 'x'.repeat(500) }).then(() => null, (e: Error) => e);
    vi.restoreAllMocks();
    const file = join(dir, 'records.jsonl');
    expect(err?.message).toMatch(new RegExp(`^cannot write ${file}: the disk is full; free space on the disk holding ${dir} and run the command again`));
    expect(err?.message).toContain('the 1 records before it are safe, and running the same command again resumes after them');
    expect(err?.message).not.toMatch(/short write/);
    await store.close();
    // The partial line was cut back: the file holds exactly the first record.
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(1);
  });
});

describe('user files', () => {
  it('an empty CSV file is named in the error', async () => {
    const dir = testDir('steerlab-msg-');
    const file = join(dir, 'prompts.csv');
    writeFileSync(file, '\n\n');
    await expect(loadUserFile(file, { textColumn: 'prompt', label: 'harmful' })).rejects.toThrow(`${file}: CSV file is empty`);
  });

  it('bytes that are not UTF-8 are refused with the file, the byte offset and the line', async () => {
    const dir = testDir('steerlab-msg-');
    const file = join(dir, 'latin1.jsonl');
    writeFileSync(file, Buffer.concat([Buffer.from('{"prompt":"ok"}\n{"prompt":"caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]));
    await expect(loadUserFile(file, { textColumn: 'prompt', label: 'harmful' })).rejects.toThrow(`${file} is not UTF-8 text: byte 0xe9 at offset 30 (line 2) does not form a UTF-8 character; save the file as UTF-8 and try again`);
  });

  it('the UTF-8 check agrees with the platform decoder on valid text and finds overlongs, surrogates and truncation', () => {
    const good = new TextEncoder().encode('plain ✓ é 😀 \u{10FFFF}');
    expect(firstInvalidUtf8(good)).toBe(-1);
    expect(decodeUtf8(good, 'x')).toBe('plain ✓ é 😀 \u{10FFFF}');
    for (const [bytes, at] of [[[0x61, 0xc0, 0xaf], 1], [[0xed, 0xa0, 0x80], 0], [[0x61, 0x62, 0xe2, 0x82], 2], [[0xf4, 0x90, 0x80, 0x80], 0], [[0xff], 0]] as const) {
      expect(firstInvalidUtf8(Uint8Array.from(bytes))).toBe(at);
      expect(() => new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes))).toThrow();
    }
  });
});

describe('the production build', () => {
  it('ships the lab page only, not the worker debug page', () => {
    const input = viteConfig.build?.rollupOptions?.input as Record<string, string>;
    expect(Object.keys(input)).toEqual(['main']);
    expect(Object.values(input).some((p) => p.includes('debug'))).toBe(false);
    expect(existsSync(join(process.cwd(), 'src/ui/debug/index.html'))).toBe(true); // still there for development
  });
});
