/**
 * A child process for the run-lock race test (test/integration/run-lock-race.test.ts). On {dir} it opens the run
 * store of dir, proves it is alone by creating dir/holding (a second holder at the same moment finds it there),
 * appends the one record of the trial unless it is already stored, holds a few milliseconds, and closes; it answers
 * what happened. On {dir, stay: true} it opens the store and keeps it until killed (a run that will be SIGKILLed).
 */
import { mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { openRunStore } from '../../src/core/eval/records-node.js';

interface Job {
  dir: string;
  stay?: boolean;
}

process.on('message', (job: Job) => {
  void (async () => {
    try {
      const store = await openRunStore(job.dir);
      if (job.stay) {
        process.send!({ held: true, pid: process.pid });
        return;
      }
      let double = false;
      try {
        try {
          await mkdir(join(job.dir, 'holding'));
        } catch {
          double = true;
        }
        const key = { dataset: 'race', id: 'only', condition: 'base' };
        if (!store.has(key)) await store.append({ ...key, pid: process.pid });
        await new Promise((r) => setTimeout(r, Math.random() * 4));
        if (!double) await rmdir(join(job.dir, 'holding'));
      } finally {
        await store.close();
      }
      process.send!({ held: true, double });
    } catch (e) {
      process.send!({ held: false, message: (e as Error).message });
    }
  })();
});
process.send!({ ready: true });
