/**
 * The run-folder lock under real concurrency (issue: with a stale lock left by a killed run, two or three processes
 * held the same --out at once and wrote the same record twice; a live unrelated process reusing the dead writer's
 * pid blocked the folder forever).
 *
 * Eight long-lived child processes (test/helpers/lock-racer.ts) are told at the same moment to open the same run
 * folder, which holds the lock left by a SIGKILLed writer, exactly as a killed `lab eval` leaves it. In every trial:
 * no two children may hold the folder at once (each checks with an exclusive mkdir while it holds), the one record
 * of the trial is written exactly once, at least one child gets the folder, every other one is refused with a
 * message naming the holder, and no lock file is left once all have finished.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRunStore } from '../../src/core/eval/records-node.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RACER = join(repo, 'test/helpers/lock-racer.ts');
const PROCESSES = 8;
const TRIALS = 40;

type Reply = { ready?: true; held?: boolean; double?: boolean; message?: string; pid?: number };

const root = mkdtempSync(join(tmpdir(), 'steerlab-lock-race-'));
let racers: ChildProcess[] = [];

function start(): ChildProcess {
  return fork(RACER, [], { cwd: repo, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
}

function next(child: ChildProcess): Promise<Reply> {
  return new Promise((res, rej) => {
    const onExit = (code: number | null) => rej(new Error(`racer ${child.pid} exited (${code}) before answering`));
    child.once('exit', onExit);
    child.once('message', (m: Reply) => {
      child.off('exit', onExit);
      res(m);
    });
  });
}

/** A folder holding what a SIGKILLed writer leaves: its lock (and an empty records file). */
async function killedRunFolder(): Promise<string> {
  const dir = mkdtempSync(join(root, 'killed-'));
  const victim = start();
  await next(victim);
  victim.send({ dir, stay: true });
  expect(await next(victim)).toMatchObject({ held: true });
  const gone = new Promise((r) => victim.once('exit', r));
  victim.kill('SIGKILL');
  await gone;
  return dir;
}

function copyFolder(from: string, to: string): void {
  for (const f of readdirSync(from)) copyFileSync(join(from, f), join(to, f));
}

const lockFiles = (dir: string) => readdirSync(dir).filter((f) => f.includes('.lock'));

beforeAll(async () => {
  racers = Array.from({ length: PROCESSES }, start);
  await Promise.all(racers.map(next));
}, 120_000);

afterAll(() => {
  for (const r of racers) r.kill();
  rmSync(root, { recursive: true, force: true });
});

describe('run-folder lock', () => {
  it(`${PROCESSES} processes racing for a folder with a stale lock, ${TRIALS} trials: one holder at a time, no duplicate record`, async () => {
    const template = await killedRunFolder();
    expect(lockFiles(template).length).toBeGreaterThan(0);
    let doubleHolders = 0;
    let duplicates = 0;
    let holders = 0;
    const refusals = new Set<string>();
    for (let t = 0; t < TRIALS; t++) {
      const dir = mkdtempSync(join(root, `trial-${t}-`));
      copyFolder(template, dir);
      const replies = racers.map(next);
      for (const r of racers) r.send({ dir });
      const got = await Promise.all(replies);
      holders += got.filter((g) => g.held).length;
      doubleHolders += got.filter((g) => g.double).length;
      const lines = readFileSync(join(dir, 'records.jsonl'), 'utf8').split('\n').filter((l) => l !== '');
      duplicates += lines.length - 1;
      expect(lines.length, `trial ${t}: the record must be written once`).toBe(1);
      expect(got.some((g) => g.held), `trial ${t}: someone must get the folder`).toBe(true);
      for (const g of got.filter((x) => !x.held)) refusals.add(g.message!.replace(/\d+/g, 'N').replace(/\/tmp\/\S+/g, 'DIR'));
      expect(lockFiles(dir), `trial ${t}: lock files left behind`).toEqual([]);
    }
    console.log(`lock race: ${TRIALS} trials x ${PROCESSES} processes: ${holders} opens succeeded (one after another), ${doubleHolders} double holders, ${duplicates} duplicate records`);
    expect(doubleHolders).toBe(0);
    expect(duplicates).toBe(0);
    // A refused process hears who holds the folder and what to do.
    for (const m of refusals) expect(m).toMatch(/^run folder DIR is in use by process N on .* Wait for it to finish or stop it \(kill N\)/);
  }, 300_000);

  it('a live unrelated process that reuses the dead writer\'s pid does not block the folder', async () => {
    const dir = await killedRunFolder();
    const [lock] = lockFiles(dir);
    expect(lock).toBeDefined();
    // Pretend the dead writer's pid now belongs to a live, unrelated process: this test's own parent.
    const file = join(dir, lock!);
    const text = readFileSync(file, 'utf8').trim();
    writeFileSync(file, /^\d+$/.test(text) ? `${process.ppid}\n` : JSON.stringify({ ...JSON.parse(text), pid: process.ppid }));
    const store = await openRunStore(dir);
    try {
      expect(store.report.staleLocks.map((l) => l.pid)).toEqual([process.ppid]);
    } finally {
      await store.close();
    }
    expect(lockFiles(dir)).toEqual([]);
  }, 60_000);
});
