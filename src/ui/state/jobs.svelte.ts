/**
 * One long job at a time, by construction. Every long action of the lab (loading a model, comparing base and steered,
 * computing a direction, collecting activations and training a controller, evaluating or resuming, using an
 * artefact) goes through startJob(): it takes the one slot synchronously, in the click's own event handler, before
 * any await, so a second click (a double-click, a click on another panel's button) finds the slot taken and is
 * ignored; it never starts a second run. The LLM worker refuses a second job too (workers/llm-host.ts runJob), so
 * the guarantee holds even for a caller that bypassed this store; this store is what keeps the UI from asking.
 *
 * The running job is named in the header (busy pill and Stop button); cancelJob() stops it wherever it runs (the
 * LLM worker or the controller worker: each job says how it is cancelled, and may change that between stages).
 */

export type JobName = 'load' | 'compare' | 'direction' | 'controller' | 'eval' | 'sweep' | 'artefact';

/** What the header says while a job runs. */
export const JOB_LABELS: Record<JobName, string> = {
  load: 'loading the model',
  compare: 'generating base and steered replies',
  direction: 'computing a direction',
  controller: 'training a controller',
  eval: 'evaluating',
  sweep: 'running a steering sweep',
  artefact: 'switching the direction or controller',
};

export interface RunningJob {
  /** Distinct per job (a handle of an ended job never touches the next one). */
  seq: number;
  name: JobName;
  /** In words, for the busy indicator; a job may refine it per stage. */
  label: string;
  /** performance.now() when it started. */
  started: number;
  /** Stop was asked for; the job is winding down. */
  stopping: boolean;
}

interface Slot {
  job: RunningJob | null;
  /** How the running job is stopped (null: it cannot be, e.g. a model load). */
  cancel: (() => unknown) | null;
}

const slot: Slot = $state({ job: null, cancel: null });
let seq = 0;

/** The running job, or null (reactive). */
export function currentJob(): RunningJob | null {
  return slot.job;
}

export function isBusy(): boolean {
  return slot.job !== null;
}

export interface JobHandle {
  /** Changes what the busy indicator says (e.g. "training a controller: epoch 2 of 4"). */
  setLabel(label: string): void;
  /** Changes how the job is cancelled (e.g. from the LLM worker to the controller worker). */
  setCancel(cancel: (() => unknown) | null): void;
  /** True once Stop was pressed. */
  readonly stopping: boolean;
  /**
   * Sends a worker request unless Stop was pressed already, else rejects with an AbortError. A job first awaits
   * things in the page (prompt sets, the steering request), and a Stop pressed then reaches a worker that has no job
   * to stop yet and is lost: without this, the request would leave afterwards and run to its end. Once the request
   * has left, a later Stop follows it in the worker's message queue and stops it there.
   */
  unlessStopped<T>(request: () => Promise<T>): Promise<T>;
}

/** What unlessStopped() rejects with; panels treat it as any other cancellation. */
function stoppedBeforeStart(): DOMException {
  return new DOMException('cancelled before it started', 'AbortError');
}

/**
 * Runs `fn` as THE job, or returns null at once (doing nothing) when another job holds the slot. The check and the
 * claim happen in the same synchronous call, so two clicks in one frame cannot both pass.
 */
export function startJob<T>(name: JobName, fn: (job: JobHandle) => Promise<T>, cancel: (() => unknown) | null = null): Promise<T> | null {
  if (slot.job) return null;
  const job: RunningJob = { seq: ++seq, name, label: JOB_LABELS[name], started: performance.now(), stopping: false };
  const mine = () => slot.job !== null && slot.job.seq === job.seq;
  slot.job = job;
  slot.cancel = cancel;
  const handle: JobHandle = {
    setLabel: (label) => {
      if (mine()) slot.job!.label = label;
    },
    setCancel: (c) => {
      if (mine()) slot.cancel = c;
    },
    get stopping() {
      return mine() && slot.job!.stopping;
    },
    unlessStopped(request) {
      return handle.stopping ? Promise.reject(stoppedBeforeStart()) : request();
    },
  };
  const release = () => {
    if (mine()) {
      slot.job = null;
      slot.cancel = null;
    }
  };
  let p: Promise<T>;
  try {
    p = fn(handle);
  } catch (e) {
    release();
    return Promise.reject(e);
  }
  return p.finally(release);
}

/** Stops the running job (no-op when idle or when it cannot be stopped). */
export function cancelJob(): void {
  const cancel = slot.cancel;
  if (!slot.job || !cancel || slot.job.stopping) return;
  slot.job.stopping = true;
  // Called at once, in the click's own task: the cancel message leaves for the worker before anything else runs.
  try {
    void Promise.resolve(cancel()).catch(() => undefined);
  } catch {
    // A cancel that failed leaves the job running; the job's own end releases the slot.
  }
}

/** Whether the running job can be stopped now. */
export function canCancel(): boolean {
  return slot.job !== null && slot.cancel !== null && !slot.job.stopping;
}
