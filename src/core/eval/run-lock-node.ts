/**
 * One writer per run folder (Node), correct when several processes start at once and after a crash.
 *
 * Every process that wants the folder writes its own lock file, `<name>.lock-<token>` (token: 16 random hex digits),
 * holding who it is: pid, the process's start time (so a pid reused by an unrelated process is not mistaken for the
 * writer), host and boot, the command line and when. The file appears with its whole content at once (written to a
 * private temp file, then hard-linked into place). The process then lists the folder:
 *
 *   - a lock of a process that no longer runs (dead pid, another start time, another boot) is stale: removed, and
 *     reported as taken over;
 *   - a lock in state `held`, or one written on another host (whose processes cannot be seen from here), blocks:
 *     the open fails with a message naming the holder and how to clear the lock;
 *   - another live process still deciding (`contending`): the one with the smaller token waits for the others to
 *     step back; the others remove their file, wait a little and try again;
 *   - nothing else left: the process marks its file `held` (atomic replace) and owns the folder until release().
 *
 * Why this is safe: a process only holds after a listing, taken after its own file existed, showed no other live
 * lock; two processes that both did that would each have had to list before the other's file existed, which the
 * order "create, then list" rules out. Stale locks are only ever removed for dead processes, which stay dead, so a
 * takeover can never remove a live writer's lock (the classic stat-then-unlink race of mtime-based lock libraries).
 * Release removes the file: a finished or failed command leaves nothing behind.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { escapeRegExp, pidExists, removeDeadWritersTemps } from '../util/temp-files-node.js';

export interface LockOwner {
  pid: number;
  /** Process start time as the OS reports it (Linux: clock ticks since boot); null where it cannot be read. */
  start: string | null;
  host: string;
  /** Linux boot id: a pid and start time from before a reboot name no running process. */
  boot: string | null;
  token: string;
  /** ISO time the lock was written. */
  since: string;
  /** The command line of the process (for the message a blocked user reads). */
  command: string;
  state: 'contending' | 'held';
}

export class RunLockError extends Error {
  readonly code = 'RUN_LOCKED';
  constructor(message: string, readonly lockFile: string, readonly holder: LockOwner | null) {
    super(message);
    this.name = 'RunLockError';
  }
}

export interface RunLock {
  /** This process's lock file. */
  readonly file: string;
  /** Locks of processes that no longer run, removed while taking the folder. */
  readonly staleTakenOver: readonly LockOwner[];
  release(): Promise<void>;
}

export interface AcquireOptions {
  /** How long to wait for live processes that are still deciding (never for a holder). Default 30 s. */
  contentionTimeoutMs?: number;
}

const TOKEN_RE = /^[0-9a-f]{16}$/;

function readOr(file: string): string | null {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

/** The start time of a process, or null when it cannot be read (no such process, or no way to ask). */
export function processStartTime(pid: number): string | null {
  if (process.platform === 'linux') {
    const stat = readOr(`/proc/${pid}/stat`);
    if (stat === null) return null;
    // Fields after the command name (which may hold spaces and parentheses): state is field 3, starttime field 22.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  }
  try {
    const out = execFileSync('ps', ['-o', 'lstart=', '-p', String(pid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return out === '' ? null : out;
  } catch {
    return null;
  }
}

const BOOT = process.platform === 'linux' ? readOr('/proc/sys/kernel/random/boot_id') : null;
const HOST = hostname();

function me(token: string): LockOwner {
  return {
    pid: process.pid,
    start: processStartTime(process.pid),
    host: HOST,
    boot: BOOT,
    token,
    since: new Date().toISOString(),
    command: process.argv.slice(1).join(' ').slice(0, 500),
    state: 'contending',
  };
}

/** 'dead' only when certain: same host and boot, and the pid is gone or now belongs to a process started later. */
export function ownerLiveness(o: LockOwner): 'alive' | 'dead' | 'unknown' {
  if (o.host !== HOST) return 'unknown';
  if (o.boot !== null && BOOT !== null && o.boot !== BOOT) return 'dead';
  if (!pidExists(o.pid)) return 'dead';
  const start = processStartTime(o.pid);
  if (o.start !== null && start !== null && start !== o.start) return 'dead';
  return 'alive';
}

function parseOwner(text: string): LockOwner | null {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (!Number.isSafeInteger(o.pid) || typeof o.host !== 'string' || typeof o.token !== 'string' || (o.state !== 'held' && o.state !== 'contending')) return null;
    return {
      pid: o.pid!,
      start: typeof o.start === 'string' ? o.start : null,
      host: o.host,
      boot: typeof o.boot === 'string' ? o.boot : null,
      token: o.token,
      since: typeof o.since === 'string' ? o.since : '?',
      command: typeof o.command === 'string' ? o.command : '?',
      state: o.state,
    };
  } catch {
    return null;
  }
}

/** Writes `owner` to a new file at `file`, all at once (temp file + hard link); fails if `file` exists. */
async function createWhole(file: string, owner: LockOwner): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, `${JSON.stringify(owner)}\n`, { flag: 'w' });
  try {
    await fs.link(tmp, file);
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

/** Replaces the content of our own lock file atomically (the name never disappears in between). */
async function replaceWhole(file: string, owner: LockOwner): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, `${JSON.stringify(owner)}\n`);
  await fs.rename(tmp, file);
}

interface Seen {
  file: string;
  owner: LockOwner | null;
}

async function otherLocks(dir: string, prefix: string, mine: string): Promise<Seen[]> {
  // Temp files of lock writers killed between writing and linking (their pid is in the name).
  removeDeadWritersTemps(dir, new RegExp(`^${escapeRegExp(prefix)}[0-9a-f]{16}\\.(\\d+)\\.tmp$`));
  const names = await fs.readdir(dir);
  const out: Seen[] = [];
  for (const n of names) {
    if (!n.startsWith(prefix) || !TOKEN_RE.test(n.slice(prefix.length))) continue;
    const file = path.join(dir, n);
    if (file === mine) continue;
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // stepped back meanwhile
      throw err;
    }
    out.push({ file, owner: parseOwner(text) });
  }
  return out;
}

export function describeHolder(dir: string, s: Seen): string {
  const o = s.owner;
  if (o === null) {
    return `run folder ${dir} is locked by ${s.file}, which Steerlab cannot read; if no run is using the folder, delete that file and run the command again`;
  }
  const who = `process ${o.pid} on ${o.host} (since ${o.since}: ${o.command})`;
  if (o.pid === process.pid && o.host === HOST) {
    return `run folder ${dir} is already open in this process (lock ${s.file}): close the other store of this folder first`;
  }
  if (o.host !== HOST) {
    return (
      `run folder ${dir} is in use by ${who}; Steerlab cannot see processes of another host. ` +
      `Wait for that run to finish; if it no longer runs, delete ${s.file} and run the command again`
    );
  }
  return (
    `run folder ${dir} is in use by ${who}. Wait for it to finish or stop it (kill ${o.pid}), then run the command ` +
    `again to resume; if that process is not a Steerlab run, delete ${s.file}`
  );
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Takes the run folder for this process (see the module comment). `name` is the records file the lock guards. */
export async function acquireRunLock(dir: string, name: string, options: AcquireOptions = {}): Promise<RunLock> {
  const timeout = options.contentionTimeoutMs ?? 30_000;
  const token = randomBytes(8).toString('hex');
  const prefix = `${name}.lock-`;
  const file = path.join(dir, `${prefix}${token}`);
  const owner = me(token);
  const stale: LockOwner[] = [];
  const deadline = Date.now() + timeout;
  let mine = false;
  let pause = 2;
  try {
    for (;;) {
      if (!mine) {
        await createWhole(file, owner);
        mine = true;
      }
      let wait = false;
      let stepBack = false;
      let contender: Seen | null = null;
      for (const s of await otherLocks(dir, prefix, file)) {
        if (s.owner === null) throw new RunLockError(describeHolder(dir, s), s.file, null);
        const life = ownerLiveness(s.owner);
        if (life === 'dead') {
          stale.push(s.owner);
          await fs.rm(s.file, { force: true });
          continue;
        }
        if (s.owner.state === 'held' || life === 'unknown' || s.owner.pid === process.pid) throw new RunLockError(describeHolder(dir, s), s.file, s.owner);
        contender = s;
        if (s.owner.token < token) stepBack = true;
        else wait = true;
      }
      if (!wait && !stepBack) {
        await replaceWhole(file, { ...owner, state: 'held' });
        const lock: RunLock = {
          file,
          staleTakenOver: stale,
          release: async () => {
            await fs.rm(file, { force: true });
          },
        };
        return lock;
      }
      if (Date.now() > deadline) throw new RunLockError(describeHolder(dir, contender!), contender!.file, contender!.owner);
      if (stepBack) {
        await fs.rm(file, { force: true });
        mine = false;
      }
      await sleep(pause + Math.random() * pause);
      pause = Math.min(pause * 2, 50);
    }
  } catch (err) {
    if (mine) await fs.rm(file, { force: true });
    throw err;
  }
}

/** The lock file of Steerlab versions before this one (`<name>.lock`, a bare pid): removed when its pid is gone. */
export async function removeOldStaleLock(dir: string, name: string): Promise<number | null> {
  const file = path.join(dir, `${name}.lock`);
  const text = await fs.readFile(file, 'utf8').catch(() => null);
  if (text === null) return null;
  const pid = Number.parseInt(text.trim(), 10);
  if (Number.isSafeInteger(pid) && pid > 0 && pidExists(pid)) return null;
  await fs.rm(file, { force: true });
  return Number.isSafeInteger(pid) ? pid : -1;
}
