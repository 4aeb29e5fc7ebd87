/**
 * Temp files of writers that were killed (Node). Every temp file Steerlab writes carries its writer's pid in its
 * name; the next write to the same place removes those whose writer no longer runs, so a killed write leaves no
 * file behind for long. A pid that a live process holds is left alone (it may be a writer at work).
 */
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/** Whether a process with this pid exists (EPERM: it does, owned by someone else). */
export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the files of `dir` whose name matches `pattern` (group 1: the writer's pid) when that pid is gone. */
export function removeDeadWritersTemps(dir: string, pattern: RegExp): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const n of names) {
    const m = pattern.exec(n);
    if (!m || pidExists(Number(m[1]))) continue;
    rmSync(join(dir, n), { force: true });
    removed.push(n);
  }
  return removed;
}

/** A file name as a literal inside a RegExp. */
export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
