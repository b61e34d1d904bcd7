/**
 * A one-line progress bar on stderr, drawn only when stderr is a terminal
 * (pipes and CI logs stay clean).
 */
export class ProgressBar {
  readonly #total: number;
  readonly #label: string;
  readonly #enabled: boolean;
  readonly #stream: NodeJS.WriteStream;
  readonly #started = Date.now();
  #lastDraw = 0;

  constructor(label: string, total: number, stream: NodeJS.WriteStream = process.stderr) {
    this.#label = label;
    this.#total = Math.max(1, total);
    this.#enabled = Boolean(stream.isTTY);
    this.#stream = stream;
  }

  update(done: number): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (now - this.#lastDraw < 100 && done < this.#total) return;
    this.#lastDraw = now;
    const frac = Math.min(1, done / this.#total);
    const width = 30;
    const filled = Math.round(frac * width);
    const elapsed = (now - this.#started) / 1000;
    const rate = elapsed > 0 ? done / elapsed : 0;
    const eta = rate > 0 ? (this.#total - done) / rate : 0;
    this.#stream.write(
      `\r${this.#label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${this.#total} ` +
        `${rate.toFixed(1)}/s eta ${eta.toFixed(0)}s `,
    );
  }

  finish(): void {
    if (this.#enabled) this.#stream.write("\n");
  }
}
