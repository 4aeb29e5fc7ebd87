/**
 * A small progress bar on stderr (stdout stays clean for --json). On a terminal it redraws one line; otherwise it
 * prints a line at most every 10 % so logs stay short.
 */
export class ProgressBar {
  private last = -1;
  private readonly tty: boolean;
  private readonly start = performance.now();

  constructor(private readonly label: string, private total: number, private readonly stream: NodeJS.WriteStream = process.stderr) {
    this.tty = !!stream.isTTY;
  }

  update(done: number, total = this.total, note = ''): void {
    this.total = total;
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const secs = (performance.now() - this.start) / 1000;
    if (this.tty) {
      const width = 24;
      const fill = Math.round(frac * width);
      this.stream.write(`\r${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${done}/${total} ${secs.toFixed(1)}s ${note}`.padEnd(100).slice(0, 120));
      if (done >= total) this.stream.write('\n');
      return;
    }
    const step = Math.floor(frac * 10);
    if (step !== this.last || done >= total) {
      if (step === this.last && done < total) return;
      this.last = step;
      this.stream.write(`${this.label}: ${done}/${total} (${secs.toFixed(1)}s)${note ? ` ${note}` : ''}\n`);
    }
  }
}
